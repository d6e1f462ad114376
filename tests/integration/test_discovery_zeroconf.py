"""The zeroconf adapter with real mDNS on 127.0.0.1, two instances in one process.

Events must arrive on the caller's loop (not zeroconf's thread), advertising must not
block that loop, withdrawing must reach the other side at once, and advertising again
right after a withdrawal (a demoted broker promoted again) must work although the
goodbye is still in zeroconf's own cache for a second.

Each test uses a discovery group of its own, so it never sees other tests' brokers.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator

import pytest

from discovery.records import Advert
from discovery.selection import Sighting
from discovery.service import DiscoveryService, Registration
from tests.support.aio import run


class Watcher:
    """A browsing DiscoveryService that records what it sees, on the test's loop."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.service = DiscoveryService(["127.0.0.1"])
        self.events: list[tuple[str, str, Sighting | None]] = []
        self.changed = asyncio.Event()
        self.loop_thread = threading.get_ident()

    def start(self) -> None:
        self.service.start(asyncio.get_running_loop(), self._seen, self._gone)

    def _seen(self, sighting: Sighting) -> None:
        assert threading.get_ident() == self.loop_thread, "event outside the broker's loop"
        if sighting.advert.discovery_group == self.group:
            self.events.append(("seen", sighting.instance, sighting))
            self.changed.set()

    def _gone(self, instance: str) -> None:
        assert threading.get_ident() == self.loop_thread
        self.events.append(("gone", instance, None))
        self.changed.set()

    async def next(self, kind: str, instance: str, timeout: float = 10) -> Sighting | None:
        deadline = time.monotonic() + timeout
        while True:
            for i, (k, name, sighting) in enumerate(self.events):
                if k == kind and name == instance:
                    del self.events[: i + 1]
                    return sighting
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} of {instance} in {timeout}s: {self.events}")
            self.changed.clear()
            with _suppress_timeout():
                await asyncio.wait_for(self.changed.wait(), left)


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *_: object) -> bool:
        return kind is TimeoutError


def advert(group: str, incarnation: str = "1", role: str = "standalone") -> Advert:
    return Advert("b", "B", role, group, 1, "", incarnation)


@pytest.fixture
def group() -> str:
    return f"t{secrets.token_hex(6)}"


async def _services(group: str) -> AsyncIterator[tuple[Watcher, DiscoveryService]]:
    watcher = Watcher(group)
    watcher.start()
    other = DiscoveryService(["127.0.0.1"])
    other.start(asyncio.get_running_loop(), lambda s: None, lambda n: None)
    try:
        yield watcher, other
    finally:
        await other.close()
        await watcher.service.close()


def test_advertise_is_seen_and_withdraw_is_seen_at_once(group: str) -> None:
    async def scenario() -> None:
        async for watcher, other in _services(group):
            ad = advert(group)
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            future = other.advertise([Registration(ad, ("127.0.0.1",), 4242)])
            # Probing takes ~1.7 s, but not on our loop: advertise returns at once and
            # the loop stays free meanwhile.
            assert time.monotonic() - started < 0.1
            lag = await _loop_lag(loop, 1.0)
            assert lag < 0.1, f"the loop stalled {lag:.3f}s"
            await asyncio.wrap_future(future)
            sighting = await watcher.next("seen", ad.instance_name)
            print(f"seen {time.monotonic() - started:.2f}s after advertise")
            assert sighting is not None
            assert sighting.advert == ad and sighting.addresses == ("127.0.0.1:4242",)
            assert other.states() == {ad.instance_name: "advertised"}

            withdrawn = time.monotonic()
            await asyncio.wrap_future(other.withdraw())
            await watcher.next("gone", ad.instance_name, timeout=2)
            print(f"gone {time.monotonic() - withdrawn:.3f}s after withdraw")
            assert other.states() == {}

    run(scenario())


def test_advertising_again_right_after_a_withdrawal(group: str) -> None:
    """Demoted, then promoted again at once: the second record goes out (after the
    goodbye has left zeroconf's own cache) and peers see the new incarnation."""

    async def scenario() -> None:
        async for watcher, other in _services(group):
            first = advert(group, "1", role="master")
            other.advertise([Registration(first, ("127.0.0.1",), 4242)])
            await watcher.next("seen", first.instance_name)
            await asyncio.wrap_future(other.withdraw())
            await watcher.next("gone", first.instance_name, timeout=2)
            second = advert(group, "2", role="master")
            again = time.monotonic()
            other.advertise([Registration(second, ("127.0.0.1",), 4343)])
            sighting = await watcher.next("seen", second.instance_name, timeout=15)
            print(f"seen again {time.monotonic() - again:.2f}s after advertising anew")
            assert sighting is not None and sighting.advert.incarnation == "2"
            assert sighting.addresses == ("127.0.0.1:4343",)

    run(scenario())


def test_withdraw_during_probing_advertises_nothing(group: str) -> None:
    async def scenario() -> None:
        async for watcher, other in _services(group):
            control = DiscoveryService(["127.0.0.1"])
            control.start(asyncio.get_running_loop(), lambda s: None, lambda n: None)
            try:
                ad = advert(group)
                # The control: same group, another broker, advertised as soon as `ad` is
                # withdrawn. It starts probing a few hundred ms after `ad` did (more than
                # zeroconf's 150-250 ms random probe delay spreads them), so the watcher
                # sees it only after it would have seen `ad`, had `ad` gone out.
                ctl = Advert("ctl", "CTL", "standalone", group, 1, "", "1")
                other.advertise([Registration(ad, ("127.0.0.1",), 4242)])
                await _wait_registering(other, ad.instance_name, timeout=1.0)
                assert other.states() == {ad.instance_name: "probing"}
                await asyncio.wrap_future(other.withdraw())
                control.advertise([Registration(ctl, ("127.0.0.1",), 4343)])
                # Positive control: the watcher was browsing the group all along, and saw
                # the control. (Not `watcher.next`: it drops the events before the one it
                # finds, which would hide a sighting of `ad`.)
                sighting = await _wait_seen(watcher, ctl.instance_name, timeout=10)
                assert sighting.advert == ctl
                assert control.states() == {ctl.instance_name: "advertised"}
                assert [e for e in watcher.events if e[1] == ad.instance_name] == []
                assert other.states() == {}
            finally:
                await control.close()

    run(scenario())


def test_close_says_goodbye(group: str) -> None:
    async def scenario() -> None:
        async for watcher, _ in _services(group):
            third = DiscoveryService(["127.0.0.1"])
            third.start(asyncio.get_running_loop(), lambda s: None, lambda n: None)
            ad = advert(group)
            third.advertise([Registration(ad, ("127.0.0.1",), 4242)])
            await watcher.next("seen", ad.instance_name)
            await third.close()
            await watcher.next("gone", ad.instance_name, timeout=2)
            await third.close()  # idempotent

    run(scenario())


def test_an_interface_address_not_on_this_host_fails_at_start() -> None:
    async def scenario() -> None:
        service = DiscoveryService(["192.0.2.77"])  # TEST-NET-1: on no interface here
        with pytest.raises(OSError):
            service.start(asyncio.get_running_loop(), lambda s: None, lambda n: None)

    run(scenario())


async def _wait_registering(service: DiscoveryService, instance: str, timeout: float) -> None:
    """Until `service` has started registering `instance` (its state shows)."""
    deadline = time.monotonic() + timeout
    while instance not in service.states():
        if time.monotonic() > deadline:
            raise AssertionError(f"{instance} not registering in {timeout}s")
        await asyncio.sleep(0.005)


async def _wait_seen(watcher: Watcher, instance: str, timeout: float) -> Sighting:
    """Until the watcher has seen `instance`; unlike `Watcher.next`, keeps every event."""
    deadline = time.monotonic() + timeout
    while True:
        for kind, name, sighting in watcher.events:
            if kind == "seen" and name == instance and sighting is not None:
                return sighting
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no sighting of {instance} in {timeout}s: {watcher.events}")
        watcher.changed.clear()
        with _suppress_timeout():
            await asyncio.wait_for(watcher.changed.wait(), left)


async def _loop_lag(loop: asyncio.AbstractEventLoop, seconds: float) -> float:
    """The worst delay of a 10 ms timer over `seconds`: how blocked the loop was."""
    worst = 0.0
    end = loop.time() + seconds
    while loop.time() < end:
        before = loop.time()
        await asyncio.sleep(0.01)
        worst = max(worst, loop.time() - before - 0.01)
    return worst
