"""The python-zeroconf adapter: advertise this broker, browse for the others.

Zeroconf runs on a thread with an event loop of its own (`use_asyncio=False`), never on
the broker's loop: registering a service probes the network for ~1.7 s, and mDNS traffic
from a busy segment should not queue behind message dispatch (nor the other way round,
delaying probe answers). Everything crosses between the two loops explicitly:

* records found or changed reach the broker's loop through `loop.call_soon_threadsafe`,
  already resolved into `Sighting`s (or the instance name of a record that went away),
  and so do the states of this broker's own records (for its status report);
* `advertise` and `withdraw` are scheduled onto zeroconf's loop and return futures the
  broker may await (`asyncio.wrap_future`) or not.

Zeroconf is always given the configured interfaces explicitly: with none it would send
on every interface of the host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from zeroconf import (
    DNSQuestionType,
    IPVersion,
    NonUniqueNameException,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from discovery.records import SERVICE_TYPE, Advert, BadRecord, format_address
from discovery.selection import Sighting

log = logging.getLogger("netbroker.discovery")

# How long to wait for a record's SRV/TXT/address answers after the browser saw its name.
RESOLVE_TIMEOUT_MS = 3000
# Retrying a registration that met a conflict: another live broker holds the name, or
# our own goodbye from a moment ago is still in the cache (it expires after 1 s).
CONFLICT_RETRY = (1.0, 10.0)


@dataclass(frozen=True)
class Registration:
    """One service to advertise: the record and where this broker listens."""

    advert: Advert
    hosts: tuple[str, ...]
    port: int


class DiscoveryService:
    """Zeroconf on its own thread, advertising and browsing `_netbroker._tcp.local.`."""

    def __init__(self, interfaces: Sequence[str]) -> None:
        self.interfaces = list(interfaces)
        self._zc: Zeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._broker_loop: asyncio.AbstractEventLoop | None = None
        self._on_seen: Callable[[Sighting], None] = lambda s: None
        self._on_gone: Callable[[str], None] = lambda name: None
        # Zeroconf-loop state: the records to say goodbye for on withdrawal, the tasks
        # registering, the resolve generation per name (a resolve that finishes after a
        # removal is dropped).
        self._records: dict[str, ServiceInfo] = {}
        self._registering: list[asyncio.Task[None]] = []
        self._closed = False
        self._lock: asyncio.Lock | None = None
        self._generation: dict[str, int] = {}
        # Broker-loop state, for the status report: changes arrive through `_deliver`.
        self._states: dict[str, str] = {}

    # -- broker-loop side ---------------------------------------------------------

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_seen: Callable[[Sighting], None],
        on_gone: Callable[[str], None],
    ) -> None:
        """Open the mDNS sockets on the interfaces and start browsing.

        Raises OSError when an interface cannot be used (e.g. an address not on this
        host). Blocks only while sockets open and the thread starts (milliseconds).
        """
        self._broker_loop, self._on_seen, self._on_gone = loop, on_seen, on_gone
        versions = {ipaddress.ip_address(i).version for i in self.interfaces}
        version = (
            IPVersion.All
            if len(versions) > 1
            else IPVersion.V6Only
            if 6 in versions
            else IPVersion.V4Only
        )
        # use_asyncio=False: a thread and loop of its own even though the broker's loop
        # is running (zeroconf would otherwise attach to it).
        zc = Zeroconf(interfaces=self.interfaces, ip_version=version, use_asyncio=False)
        self._zc = zc
        try:
            self._submit(self._start_browser()).result(timeout=10)
        except BaseException:
            self._zc = None
            zc.close()
            raise
        log.info("discovery browsing %s on %s", SERVICE_TYPE, ", ".join(self.interfaces))

    def advertise(self, registrations: Sequence[Registration]) -> concurrent.futures.Future[None]:
        """Replace what is advertised. Returns at once; probing goes on in the background
        (its outcome shows in `states`). The future resolves once older records are
        withdrawn and the new registration has started."""
        return self._submit(self._set(list(registrations)))

    def withdraw(self) -> concurrent.futures.Future[None]:
        """Withdraw every record now: probing stops, and each record gets its goodbye
        (also one still probing: see `_unregister_all`). The future resolves once the
        goodbyes are sent (three, 125 ms apart, as zeroconf sends them)."""
        return self._submit(self._set([]))

    def states(self) -> dict[str, str]:
        """Instance name -> "probing", "advertised" or "conflict: ...", for the status."""
        return dict(self._states)

    async def close(self) -> None:
        """Withdraw (goodbyes), stop browsing, close the sockets and the thread."""
        zc = self._zc
        if zc is None or self._closed:
            return
        try:
            await asyncio.wrap_future(self._submit(self._shutdown()))
        except Exception:
            log.exception("discovery: withdrawing at shutdown failed")
        self._closed = True
        # Zeroconf.close() joins its thread: not on the broker's loop.
        await asyncio.to_thread(zc.close)

    def _submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        zc = self._zc
        if zc is None or zc.loop is None or self._closed:
            coro.close()
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done
        return asyncio.run_coroutine_threadsafe(coro, zc.loop)

    def _deliver(self, callback: Callable[[Any], None], value: object) -> None:
        loop = self._broker_loop
        if loop is None:
            return
        # The broker's loop is gone at the very end of a shutdown: nothing to tell it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, value)

    def _apply_state(self, change: tuple[str | None, str | None]) -> None:
        """On the broker's loop: (name, state) sets one, (name, None) drops it, (None,
        None) drops them all."""
        name, state = change
        if name is None:
            self._states.clear()
        elif state is None:
            self._states.pop(name, None)
        else:
            self._states[name] = state

    # -- zeroconf-loop side -------------------------------------------------------

    def _set_state(self, name: str | None, state: str | None) -> None:
        """Tell the broker's loop of a record's state (see `_apply_state`)."""
        self._deliver(self._apply_state, (name, state))

    async def _start_browser(self) -> None:
        assert self._zc is not None
        self._lock = asyncio.Lock()
        self._browser = AsyncServiceBrowser(
            self._zc, SERVICE_TYPE, handlers=[self._on_change], question_type=DNSQuestionType.QM
        )

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        generation = self._generation.get(name, 0) + 1
        self._generation[name] = generation
        if state_change is ServiceStateChange.Removed:
            log.debug("discovery: %s removed", name)
            self._deliver(self._on_gone, name)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name, generation))
        task.add_done_callback(_log_failure)

    async def _resolve(self, zc: Zeroconf, name: str, generation: int) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zc, RESOLVE_TIMEOUT_MS):
            log.debug("discovery: %s did not resolve in %d ms", name, RESOLVE_TIMEOUT_MS)
            return
        if self._generation.get(name) != generation:
            return  # removed or changed again meanwhile; a later resolve reports it
        try:
            advert = Advert.from_txt(info.decoded_properties)
        except BadRecord as exc:
            log.debug("discovery: ignoring %s: %s", name, exc)
            return
        port = info.port or 0
        addresses = tuple(format_address(h, port) for h in info.parsed_addresses()) if port else ()
        log.debug("discovery: %s is %s at %s", name, advert, addresses)
        self._deliver(self._on_seen, Sighting(name, advert, addresses))

    async def _set(self, registrations: list[Registration]) -> None:
        assert self._lock is not None
        async with self._lock:
            await self._unregister_all()
            loop = asyncio.get_running_loop()
            for registration in registrations:
                task = loop.create_task(self._register(registration))
                task.add_done_callback(_log_failure)
                self._registering.append(task)

    async def _unregister_all(self) -> None:
        assert self._zc is not None
        zc = self._zc
        tasks, self._registering = self._registering, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_state(None, None)
        goodbyes = []
        for name, info in list(self._records.items()):
            del self._records[name]
            # Also for a record still probing: peers may hold a crashed predecessor's
            # record of this name, which only a goodbye removes before it expires.
            goodbyes.append(await zc.async_unregister_service(info))
            log.info("discovery: withdrew %s", name)
        for goodbye in goodbyes:
            await goodbye

    async def _register(self, reg: Registration) -> None:
        assert self._zc is not None
        zc = self._zc
        name = reg.advert.instance_name
        info = ServiceInfo(
            SERVICE_TYPE,
            name,
            port=reg.port,
            properties=reg.advert.txt(),
            parsed_addresses=list(reg.hosts),
        )
        delay = CONFLICT_RETRY[0]
        while True:
            self._records[name] = info
            self._set_state(name, "probing")
            try:
                announcing = await zc.async_register_service(info)
            except NonUniqueNameException:
                # A live broker holds the name: not ours to say goodbye for.
                del self._records[name]
                reason = f"conflict: another broker holds the name {name}; retrying"
                self._set_state(name, reason)
                log.warning("discovery: %s", reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONFLICT_RETRY[1])
                continue
            self._set_state(name, "advertised")
            log.info("discovery: advertising %s at %s port %d", name, reg.hosts, reg.port)
            await announcing
            return

    async def _shutdown(self) -> None:
        await self._set([])
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("discovery task failed", exc_info=task.exception())
