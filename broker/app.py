"""Assembles one broker process from its config and runs it until told to stop.

This module and the CLI are the only places that import every layer: the broker core,
network connectors and group membership are built here and handed each other's
interfaces. It makes no decisions of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import ssl
import sys
import time
from pathlib import Path

import grpc

from broker.config import BrokerConfig, Election
from broker.core.broker import Broker
from broker.core.store import Store, StoreDamaged
from broker.errors import StartupError
from broker.security.authenticator import Authenticator
from broker.security.errors import SecurityError
from broker.security.secrets import SecretFileError, read_secret
from broker.security.settings import load_settings
from broker.security.tls import TlsError, TlsMaterial, load_material, server_ssl_context
from broker.server.gate import ServiceGate
from broker.server.guard import CallGuard
from broker.server.listen import build_server
from broker.server.metrics import MetricsEndpoint, serve_metrics
from broker.server.status import Role
from broker.server.tls import server_credentials
from broker.stomp.frames import Limits
from broker.stomp.transport import StompServer
from masterslave.election import min_insync_default
from masterslave.group import GroupConfig, GroupMember
from masterslave.lockfile import LockfileMember
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


def _group_config(config: BrokerConfig, tls: TlsMaterial | None) -> GroupConfig:
    # The config's own rules made sure a ZooKeeper member has an ensemble and a port.
    return GroupConfig(
        name=config.group,
        zookeeper=config.zookeeper,
        zk_path=config.zk_path or f"/netbroker/groups/{config.group}",
        replication_host=config.host,
        replication_port=config.replication_port,
        replicas=config.replicas,
        sync=config.sync,
        min_insync=config.min_insync or min_insync_default(config.replicas),
        weight=config.weight,
        session_timeout=config.session_timeout,
        lag_timeout=config.lag_timeout,
        commit_timeout=config.commit_timeout,
        token=config.token,
        tls=tls,
        members=config.group_members,
    )


def _replication_server(
    config: BrokerConfig, member: GroupMember, tls: TlsMaterial | None
) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
            ("grpc.so_reuseport", 0),
        ]
    )
    member.install(server)
    address = f"{config.host}:{config.replication_port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            # Mutual TLS: only a certificate the CA signed gets a connection; which member
            # it names is checked per stream (masterslave.replication).
            bound = server.add_secure_port(address, server_credentials(tls, peers=True))
    except RuntimeError:
        bound = 0
    if not bound:
        raise StartupError(f"cannot listen for replication on {address}: port in use")
    return server


def _open_store(config: BrokerConfig) -> Store:
    """The broker's store, verified. A damaged store is never served: a standalone
    broker refuses to start (StoreDamaged names the file; the operator decides whether to
    restore or discard it), while a group member keeps the damaged copy aside and starts
    from an empty store that takes a bulk copy from the master before it may be elected."""
    path = config.data_dir / "store"
    member = config.election is Election.ZOOKEEPER
    try:
        store = Store(path)
        try:
            # A standalone broker's start reads every message anyway (and checks it).
            store.verify(messages=member)
        except BaseException:
            store.close(flush=False)
            raise
        return store
    except StoreDamaged as exc:
        if not member:
            raise
        aside = _aside_name(path, time.time())
        path.rename(aside)
        log.error(
            "%s; moved it to %s and starting empty: this member takes a full copy from "
            "the master of group %s and is not electable until it has it",
            exc,
            aside,
            config.group,
        )
    store = Store(path)
    store.mark_reset()
    return store


def _aside_name(path: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    candidate = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    return candidate


def _authenticator(config: BrokerConfig) -> Authenticator | None:
    """The users file's authenticator; None when there is none (every client is let in)."""
    if config.users_file is None:
        return None
    try:
        settings = load_settings(config.users_file)
    except SecurityError as exc:
        raise StartupError(str(exc)) from None
    log.info(
        "%d users from %s; anonymous clients %s, %s",
        len(settings.users),
        config.users_file,
        "let in" if settings.anonymous_allowed else "refused",
        "authorization map" if settings.authorization else "no authorization map",
    )
    return Authenticator(settings)


def _stomp_ssl(tls: TlsMaterial) -> ssl.SSLContext:
    try:
        return server_ssl_context(tls)
    except TlsError as exc:
        raise StartupError(str(exc)) from None


def _tls(config: BrokerConfig) -> TlsMaterial | None:
    """The broker's certificate, key and CA, read once at start (None: plaintext)."""
    if config.tls_cert is None or config.tls_key is None or config.tls_ca is None:
        return None
    try:
        material = load_material(config.tls_cert, config.tls_key, config.tls_ca)
    except TlsError as exc:
        raise StartupError(str(exc)) from None
    log.info("TLS on every port: certificate %s, CA %s", config.tls_cert, config.tls_ca)
    return material


def _with_broker_credential(config: BrokerConfig) -> BrokerConfig:
    """The config with the broker credential file's secret as its token: what bridges
    and replication present and require."""
    if config.broker_credential_file is None:
        return config
    try:
        secret = read_secret(config.broker_credential_file, "broker credential")
    except SecretFileError as exc:
        raise StartupError(str(exc)) from None
    return dataclasses.replace(config, token=secret)


async def serve(config: BrokerConfig, stop: asyncio.Event) -> None:
    for uri in config.connectors:
        try:
            parse_connector(uri)
        except ConnectorError as exc:
            raise StartupError(f"connector {exc}") from exc
    _check_data_dir(config)
    config = _with_broker_credential(config)
    authenticator = _authenticator(config)
    tls = _tls(config)
    gate = ServiceGate()
    network = Network(config, gate, tls)
    if authenticator is not None:
        network.authorization = authenticator.settings.authorization
    server, port = build_server(
        config, gate, extra=[network.install], guard=CallGuard(authenticator), tls=tls
    )
    config = dataclasses.replace(config, port=port)
    gate.client_address = config.client_address
    store: Store | None = None
    damage: list[StoreDamaged] = []

    def damaged(exc: StoreDamaged) -> None:
        # Found while serving: stop (a group fails over to an in-sync member; the next
        # start refuses or re-syncs) and exit non-zero, rather than serve around a hole.
        if not damage:
            log.error("%s; stopping", exc)
            damage.append(exc)
            stop.set()

    member: GroupMember | LockfileMember | None = None
    replication: grpc.aio.Server | None = None
    broker: Broker | None = None
    metrics: MetricsEndpoint | None = None
    stomp: StompServer | None = None
    if config.stomp_port:
        # It answers only while the gate serves (a slave's STOMP clients get an ERROR).
        stomp = StompServer(
            gate, config.host, config.stomp_port, name=config.name,
            limits=Limits(max_body=config.max_message_bytes), authenticator=authenticator,
            ssl=None if tls is None else _stomp_ssl(tls),
        )  # fmt: skip
    try:
        if config.election is Election.LOCKFILE:
            member = LockfileMember(config, config.shared_dir or config.data_dir, gate, network)
        else:
            store = _open_store(config)
            if config.election is Election.ZOOKEEPER:
                member = GroupMember(config, _group_config(config, tls), store, gate, network)
                replication = _replication_server(config, member, tls)
            else:
                broker = Broker(config, store)
                await broker.start()
        if config.metrics_port:
            store_dir = (config.shared_dir or config.data_dir) / "store"
            metrics = serve_metrics(config.name, gate, store_dir, config.host, config.metrics_port)
            log.info("metrics at http://%s:%d/metrics", config.host, metrics.port)
        if stomp is not None:
            # Bound first: a port in use stops the start before anything serves (until
            # the gate opens its connections are refused with "broker is starting").
            try:
                await stomp.start()
            except OSError as exc:
                raise StartupError(str(exc)) from exc
        await server.start()
        if replication is not None:
            await replication.start()
        if member is not None:
            await member.start()
        elif broker is not None:
            gate.open(broker, role=Role.STANDALONE)
            network.attach(broker)
        log.info(
            "broker %s listening on %s, data in %s",
            config.name,
            config.client_address,
            config.data_dir,
        )
        if stomp is not None:
            log.info("broker %s: STOMP on %s:%d", config.name, config.host, stomp.port)
        print(f"netbroker: broker {config.name} listening on {config.client_address}", flush=True)
        if store is not None:
            store.on_damaged = damaged
        try:
            await stop.wait()
        finally:
            log.info("broker %s stopping", config.name)
            if member is not None:
                await member.stop()
            else:
                gate.close(Role.STOPPED, f"broker {config.name} is shutting down")
                await network.detach()
            if stomp is not None:
                await stomp.stop(f"broker {config.name} is shutting down")
            await server.stop(grace=1.0)
            if replication is not None:
                await replication.stop(grace=0.5)
            if broker is not None:
                await broker.stop()
    finally:
        if metrics is not None:
            metrics.close()
        # Zeroconf's thread and sockets (records were withdrawn by detach).
        await network.close()
        if store is not None:
            store.close()
    if damage:
        raise damage[0]


def run(config: BrokerConfig) -> int:
    """Run a broker in the foreground until SIGTERM or SIGINT; returns the exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    # A broker allocates many short-lived objects per message; collecting the young
    # generation every 700 allocations cost ~2% of a send. Cycles are rare here.
    gc.set_threshold(50_000, 20, 20)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    asyncio.run(main())
    return 0
