"""Whether a member's process is gone: a TCP connection to its replication port refused.

A member's replication port is bound when its process starts and stays bound until the
process has left ZooKeeper (broker/app.py closes the port only after the member's clean
stop, which deletes its node) or dies. While the process lives, the kernel answers a
connection attempt by completing the handshake itself (into the listen backlog), whether
the process is busy, starved or SIGSTOPped; only when the backlog is full does it drop
the attempt (Linux never answers a full backlog with a reset unless
`tcp_abort_on_overflow` is set). So "connection refused" means no socket listens on that
port: the process that published it is dead. Anything else (connected, timed out, no
route, a reset after connecting) proves nothing and is reported as `False`.

The one way for a live process to look refused is a middlebox rejecting the connection
on its behalf (a firewall's REJECT rule). The failover that follows is then unneeded but
still safe: docs/semantics.md ("A master seen dead") shows why the election may trust
this answer only in the quorum sync modes, where no acknowledgement rests on it.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from broker.address import parse_address

#: How long one probe may wait for the handshake: a live but overloaded host can take a
#: while, and the answer that matters (a refusal) comes at once.
PROBE_TIMEOUT = 0.5
#: Probes after a stream broke, and the pause between them: a dying process's
#: connections close a moment before its listening socket does (seen here: in most
#: kills the first probe, 1-4 ms after the stream broke, still connected, and one 10 ms
#: later was refused).
PROBES = 5
PROBE_SPACING = 0.005

# connect() errors saying the address cannot be used from this host at all (::1 with
# IPv6 disabled, say): neither a listener nor a refusal.
_NOT_HERE = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


async def refused(address: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if a TCP connection to `address` (`host:port`) is refused; False otherwise.

    A name is resolved, and every address it stands for must refuse ("localhost" may be
    both ::1 and 127.0.0.1, of which a member listens on one)."""
    try:
        parsed = parse_address(address)
    except ValueError:
        return False
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(
            loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError):
        return False
    refusals = 0
    for family, kind, proto, _name, where in found:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # a family this host cannot use (IPv6 disabled): no evidence
        with sock:
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, where), timeout)
            except ConnectionRefusedError:
                refusals += 1
                continue
            except OSError as exc:
                if exc.errno in _NOT_HERE:
                    continue  # no such local address: nothing could listen there
                return False
            except TimeoutError:
                return False
            return False  # something listens there
    return refusals > 0


async def gone(address: str, probes: int = PROBES, spacing: float = PROBE_SPACING) -> bool:
    """Whether the process listening at `address` is gone: one of `probes` connection
    attempts, `spacing` seconds apart, was refused. For use just after a stream to it
    broke."""
    for attempt in range(probes):
        if attempt:
            await asyncio.sleep(spacing)
        if await refused(address):
            return True
    return False
