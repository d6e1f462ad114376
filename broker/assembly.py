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
        gate = ServiceGate()
        network = Network(config, gate)
        server, port = build_server(config, gate, extra=[network.install])
        config = dataclasses.replace(config, port=port)
        gate.client_address = config.client_address
        broker = Broker(config, store)
        await broker.start()
        await server.start()
        gate.open(broker, role="standalone")
        network.attach(broker)
        log.info(
            "broker %s listening on %s, data in %s",
            config.name, config.client_address, config.data_dir,
        )  # fmt: skip
        print(f"netbroker: broker {config.name} listening on {config.client_address}", flush=True)
        try:
            await stop.wait()
        finally:
            log.info("broker %s stopping", config.name)
            gate.close("stopped", f"broker {config.name} is shutting down")
            await network.detach()
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
