"""Assembles one broker process from its config and runs it until told to stop.

This module and the CLI are the only places that may import every layer; as later
layers arrive (network connectors, discovery, group membership) they are built here and
handed the broker's interfaces. It makes no decisions of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys

from broker.config import BrokerConfig
from broker.core import Broker
from broker.errors import StartupError
from broker.gate import ServiceGate
from broker.server import build_server
from broker.store import Store
from netconnector.network import Network
from netconnector.uri import ConnectorError, parse_connector

log = logging.getLogger("netbroker")


def _check_data_dir(config: BrokerConfig) -> None:
    path = config.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create data directory {path}: {exc.strerror}") from exc
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"data directory {path} is not readable and writable")


async def serve(config: BrokerConfig, stop: asyncio.Event) -> None:
    for uri in config.connectors:
        try:
            parse_connector(uri)
        except ConnectorError as exc:
            raise StartupError(f"connector {exc}") from exc
    _check_data_dir(config)
    store = Store(config.data_dir / "store")
    try:
        broker = Broker(config, store)
        gate = ServiceGate()
        network = Network(broker, gate, group=config.group, token=config.token)
        for uri in config.connectors:
            network.add_connector(parse_connector(uri))
        server, port = build_server(config, broker, gate, extra=[network.install])
        if port != config.port:
            config = dataclasses.replace(config, port=port)
            broker.config = config
        await broker.start()
        await server.start()
        network.start()
        log.info(
            "broker %s listening on %s, data in %s",
            config.name,
            config.client_address,
            config.data_dir,
        )
        print(f"netbroker: broker {config.name} listening on {config.client_address}", flush=True)
        try:
            await stop.wait()
        finally:
            log.info("broker %s stopping", config.name)
            await network.stop()
            await server.stop(grace=1.0)
            await broker.stop()
    finally:
        store.close()


def run(config: BrokerConfig) -> int:
    """Run a broker in the foreground until SIGTERM or SIGINT; returns the exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    asyncio.run(main())
    return 0
