"""One outbound link: a Bridge/Link call kept open to a peer, retried on a capped backoff.

A link goes to a fixed address (static) or through a rotation of addresses (masterslave:,
or the members of a discovered group). Every failure is retried on a short capped backoff
(never ActiveMQ's ever-growing one), and the link's state and last error are reported
through the admin API. What it needs from the network is its `LinkHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import cast

import grpc

from broker.pb import bridge_pb2
from broker.reconnect import KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, AddressRotation, Backoff
from broker.security.tls import tls_failure
from broker.server.status import BridgeStatus, LinkState
from broker.server.tls import peer_channel_credentials
from netconnector.hello import opener_terms, path_name_of, refusal
from netconnector.host import LinkHost
from netconnector.outbox import LINK_METHOD, Frame, Outbox, serialize_frame
from netconnector.session import BridgeSession
from netconnector.uri import ConnectorSpec

log = logging.getLogger("netbroker.connector")


# How often a masterslave: link asks again while the group's members say they are
# electing: the new master is reached within this of opening.
ELECTING_POLL = 0.1


class LinkRefused(Exception):
    pass


class Link:
    """One outbound link: to a fixed address (static) or a rotation (masterslave)."""

    def __init__(self, network: LinkHost, spec: ConnectorSpec, addresses: tuple[str, ...]):
        self.network = network
        self.spec = spec
        self.addresses = addresses
        self.rotation = AddressRotation(addresses)
        self.label = f"{spec.name}" if len(addresses) > 1 else f"{spec.kind}:{addresses[0]}"
        self.state = LinkState.CONNECTING
        # Why the link is not up (the last error), if it is not.
        self.detail = ""
        self.address = ""
        self.peer = ""
        self.session: BridgeSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected_at = 0.0
        # When the link last failed or dropped (Unix seconds, for metrics); 0: never.
        self.error_at = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.label)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> BridgeStatus:
        session = self.session
        return BridgeStatus(
            self.label,
            self.state,
            peer=self.peer,
            address=self.address,
            forwarded=session.forwarded if session is not None else None,
            last_error=self.detail or self._refusals(),
            unacknowledged=session.unacknowledged if session is not None else None,
            last_error_at=self.error_at,
        )

    def _refusals(self) -> str:
        session = self.session
        if session is None or not session.unauthorized:
            return ""
        return f"refused {session.unauthorized} forwarded messages; last: {session.last_refusal}"

    async def _run(self) -> None:
        spec = self.spec
        backoff = Backoff(
            max(spec.initial_reconnect_delay_ms, 1) / 1000, spec.max_reconnect_delay_ms / 1000
        )
        # One pass over the addresses is one attempt: a masterslave: link tries every
        # member before it waits, so a new master is never left waiting a whole backoff
        # step while the link tries the dead one.
        untried = len(self.addresses)
        # A member that answers "not serving" (slave, electing) is alive and its group is
        # about to have a master: poll it briefly instead of backing off.
        electing = False
        logged = ""
        while True:
            self.address = self.rotation.next()
            self.state = LinkState.CONNECTING
            try:
                await self._link(self.address)
                self.detail = "link closed by peer"
            except asyncio.CancelledError:
                raise
            except LinkRefused as exc:
                self.detail = str(exc)
            except grpc.aio.AioRpcError as exc:
                self.detail = f"{exc.code().name}: {exc.details()}"
                cause = tls_failure(exc.details() or "") if self.network.tls else None
                if cause is not None:
                    self.detail = f"{cause} ({self.detail})"
                # gRPC's own words for "nothing listens there"; anything else with
                # UNAVAILABLE is a broker that answered and refused.
                electing |= exc.code() == grpc.StatusCode.UNAVAILABLE and not (
                    exc.details() or ""
                ).startswith("failed to connect")
            except Exception as exc:  # a bridge must never die silently
                log.exception("link %s to %s failed", self.label, self.address)
                self.detail = f"{type(exc).__name__}: {exc}"
            self.error_at = time.time()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Stopped while grpc.aio turned the cancel into an error of the call
                # (CANCELLED): the link must end, not retry forever.
                raise asyncio.CancelledError
            untried -= 1
            if self.connected_at:
                # A link that was up and broke starts over from the short delay, with
                # every address to try: the peer (or the group's next master) is most
                # likely back in moments.
                backoff.reset()
                untried = len(self.addresses) - 1
            self.connected_at = 0.0
            if untried > 0:
                continue
            untried = len(self.addresses)
            delay = min(ELECTING_POLL, backoff.next()) if electing else backoff.next()
            electing = False
            self.state = LinkState.BACKOFF
            if self.detail != logged:  # a group electing for long would flood the log
                logged = self.detail
                log.info(
                    "link %s to %s: %s; retrying in %.2fs",
                    self.label, self.address, self.detail, delay,
                )  # fmt: skip
            await asyncio.sleep(delay)

    async def _link(self, address: str) -> None:
        spec = self.spec
        network = self.network
        options = [
            # keepAliveMs bounds how long a silent peer is trusted, but a link must
            # notice a frozen master before its group has elected a new one (so that
            # it reaches the new one as soon as it serves), as clients do: ping at
            # least every 300 ms and give up an unanswered ping after at most 800 ms.
            ("grpc.keepalive_time_ms", min(spec.keep_alive_ms, KEEPALIVE_INTERVAL_MS)),
            ("grpc.keepalive_timeout_ms", min(spec.keep_alive_ms, KEEPALIVE_TIMEOUT_MS)),
            # A frozen peer keeps its connection open: without this gRPC waits 60 s for
            # a ping answer, whatever keepalive_timeout says.
            ("grpc.http2.ping_timeout_ms", min(spec.keep_alive_ms, KEEPALIVE_TIMEOUT_MS)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", network.config.max_message_bytes + 2**20),
            ("grpc.max_send_message_length", network.config.max_message_bytes + 2**20),
            # Reconnects are ours to pace; gRPC's own backoff would add seconds, and a
            # subchannel shared with an earlier channel would inherit its backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # Also how long one connection attempt may take (gRPC's default is 20 s): a
            # frozen member accepts TCP but never completes HTTP/2's handshake, and the
            # link must go on to the next member instead of waiting on it.
            ("grpc.min_reconnect_backoff_ms", 1000),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        tls = network.tls
        channel = (
            grpc.aio.insecure_channel(address, options=options)
            if tls is None
            else grpc.aio.secure_channel(address, peer_channel_credentials(tls), options=options)
        )
        async with channel:
            call: grpc.aio.StreamStreamCall[Frame, bridge_pb2.BridgeFrame]
            call = channel.stream_stream(
                LINK_METHOD,
                request_serializer=serialize_frame,
                response_deserializer=bridge_pb2.BridgeFrame.FromString,
            )()
            await call.write(bridge_pb2.BridgeFrame(hello=network.hello(spec)))
            # read() is typed as "EOF or a frame" with EOF a plain object, so a frame is
            # told apart by that identity and then cast (here and below).
            first = await call.read()
            if first is grpc.aio.EOF or not cast(bridge_pb2.BridgeFrame, first).HasField("hello"):
                raise LinkRefused("peer closed the link without a hello")
            hello = cast(bridge_pb2.BridgeFrame, first).hello
            refused = refusal(hello, network.name, "")
            if refused is not None:
                call.cancel()
                raise LinkRefused(refused)
            terms = opener_terms(spec, hello.broker, path_name_of(hello))
            broker = network.broker
            if broker is None:
                raise LinkRefused("this broker is not serving")
            outbox = Outbox()
            self.peer = hello.broker
            self.session = network.open_session(broker, terms, outbox)
            self.state = LinkState.UP
            self.detail = ""
            self.connected_at = time.monotonic()
            log.info("link %s up to %s at %s", self.label, hello.broker, address)

            async def write() -> None:
                async for frame in outbox:
                    await call.write(frame)

            writer = asyncio.create_task(write())
            try:
                while True:
                    frame = await call.read()
                    if frame is grpc.aio.EOF:
                        return
                    self.session.on_frame(cast(bridge_pb2.BridgeFrame, frame))
            finally:
                outbox.close()
                writer.cancel()
                # A write to a call the peer already ended raises InvalidStateError ("RPC
                # already finished"): escaping here, it skipped close_session, and the
                # dead session's consumers kept their in-flight messages for ever.
                with contextlib.suppress(
                    asyncio.CancelledError, asyncio.InvalidStateError, grpc.aio.AioRpcError
                ):
                    await writer
                network.close_session(self.session)
                self.session = None
                self.peer = ""
