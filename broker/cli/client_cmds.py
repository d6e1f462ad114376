"""`netbroker send`, `recv`, `unsubscribe` and `stat`: one client connection to a broker,
for one command.

A destination is a queue name, or `topic://NAME` for a topic (`queue://NAME` names a
queue explicitly): ActiveMQ's spelling, and the CLI's counterpart of STOMP's
`/topic/NAME`."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from broker.cli.arguments import destination, header, int_range, positive_float
from broker.cli.errors import EXIT_USAGE, CliError, reason, say
from broker.cli.progress import Progress
from broker.cli.render import as_json, header_block

DEFAULT_URL = "127.0.0.1:61616"


def client_options(p: argparse.ArgumentParser) -> None:
    """The options every client command takes: where the broker is, how long to try."""
    p.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="broker address, host:port or failover:(a,b) (ssl://host:port: TLS), "
        "optionally after user:password@ "
        "(visible in ps: prefer --user with NETBROKER_PASSWORD or --password-file) "
        "[%(default)s]",
    )
    p.add_argument(
        "--user",
        default=None,
        help="user to authenticate as (or NETBROKER_USER); the password comes from "
        "NETBROKER_PASSWORD or --password-file, never the command line",
    )
    p.add_argument(
        "--password-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="file holding the password (mode 0600)",
    )
    p.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="FILE",
        help="CA (PEM) the broker's certificate is verified against; turns TLS on "
        "(or NETBROKER_CA)",
    )
    p.add_argument(
        "--connect-timeout",
        type=positive_float(),
        default=30.0,
        metavar="SECONDS",
        help="give up when no broker accepts within this (a plain address "
        "is tried once; a failover URL until its own timeout) [%(default)s]",
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "send",
        help="send messages to a queue, or publish them to a topic",
        description="Send BODY (or a file's bytes) COUNT times to DEST: a queue "
        "name, or topic://NAME to publish to a topic (every subscription to it "
        "gets a copy; with none, the broker drops it). Persistent by default: "
        "each send is answered once the broker holds it durably (for a topic, "
        "once every durable subscription's copy is).",
    )
    client_options(p)
    p.add_argument(
        "queue", metavar="DEST", type=destination, help="QUEUE, queue://QUEUE or topic://TOPIC"
    )
    p.add_argument("body", metavar="BODY", nargs="?", help="the message body (UTF-8 text)")
    p.add_argument("--file", metavar="F", help="take the body from file F ('-': stdin)")
    p.add_argument(
        "--count",
        type=int_range(1, None),
        default=1,
        metavar="N",
        help="send the message N times, pipelined [%(default)s]",
    )
    p.add_argument(
        "--non-persistent",
        action="store_true",
        help="held in memory only; lost if the broker stops",
    )
    p.add_argument(
        "--priority", type=int_range(0, 9), metavar="P", help="0 (lowest) to 9 (highest) [4]"
    )
    p.add_argument(
        "--ttl",
        type=positive_float(),
        metavar="SECONDS",
        help="expire (to DLQ.<queue>) if not consumed within this",
    )
    p.add_argument(
        "--header",
        type=header,
        action="append",
        default=[],
        metavar="K=V",
        help="a message header; repeat for more",
    )
    p.set_defaults(handler=_cmd_send)

    p = sub.add_parser(
        "recv",
        help="receive messages from a queue, or subscribe to a topic",
        description="Receive up to COUNT messages from DEST, acknowledging "
        "each once written out. Exits 1 if fewer than COUNT arrive. DEST is a "
        "queue name, or topic://PATTERN to subscribe to a topic ('*' matches one "
        "dot-separated segment, '>' the rest): without --durable the "
        "subscription sees only what is published while it is open; with "
        "--durable NAME --client-id ID the broker keeps messages for it "
        "between runs (remove it with 'netbroker unsubscribe').",
    )
    client_options(p)
    p.add_argument(
        "queue",
        metavar="DEST",
        type=destination,
        help="QUEUE, queue://QUEUE or topic://PATTERN",
    )
    p.add_argument(
        "--durable",
        metavar="NAME",
        default="",
        help="a topic: the durable subscription NAME (with --client-id)",
    )
    p.add_argument(
        "--client-id",
        metavar="ID",
        default="",
        help="the client id a durable subscription belongs to",
    )
    p.add_argument(
        "--count",
        type=int_range(1, None),
        default=1,
        metavar="N",
        help="stop after N messages [%(default)s]",
    )
    p.add_argument(
        "--timeout",
        type=positive_float(),
        default=5.0,
        metavar="SECONDS",
        help="stop when no message arrives within this [%(default)s]",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write bodies to FILE, byte for byte, back to back (default: "
        "print each body on stdout, newline-terminated)",
    )
    p.add_argument(
        "--prefetch",
        type=int_range(1, None),
        metavar="K",
        help="deliveries the broker may push ahead of acks [min(N, 1000)]",
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--show-headers",
        action="store_true",
        help="print each message's id, priority, redelivered flag and headers before its body",
    )
    shown.add_argument(
        "--json",
        action="store_true",
        help="print each message as one JSON object (every field; a body that is not "
        "UTF-8 as body_base64)",
    )
    p.set_defaults(handler=_cmd_recv)

    p = sub.add_parser(
        "unsubscribe",
        help="remove a durable topic subscription",
        description="Remove durable subscription NAME of client ID and every "
        "message the broker keeps for it. Refused while a subscriber holds it.",
    )
    client_options(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--client-id", metavar="ID", required=True)
    p.set_defaults(handler=_cmd_unsubscribe)

    p = sub.add_parser(
        "stat",
        help="show a broker's queues and components",
        description="Show the broker's name and role, its queues and its "
        "components: each bridge (outbound ones by connector, e.g. "
        "'static:127.0.0.1:61617'; inbound ones as 'from BROKER') with its "
        "state (connecting, up, backoff) and detail (peer, messages "
        "forwarded, or the last error).",
    )
    client_options(p)
    p.set_defaults(handler=_cmd_stat)


def _cmd_send(args: argparse.Namespace) -> int:
    return run_client(args, _send(args))


def _cmd_recv(args: argparse.Namespace) -> int:
    return run_client(args, _recv(args))


def _cmd_unsubscribe(args: argparse.Namespace) -> int:
    return run_client(args, _unsubscribe(args))


def _cmd_stat(args: argparse.Namespace) -> int:
    return run_client(args, _stat(args))


def run_client(args: argparse.Namespace, coro: Awaitable[int]) -> int:
    from broker.client import BrokerError, ConnectionLost

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except ConnectionLost as e:
        raise CliError(f"lost the connection to {args.url}: {reason(e)}") from None
    except BrokerError as e:
        raise CliError(f"{args.url}: {reason(e)}") from None
    except ValueError as e:  # the client's own argument checks
        raise CliError(str(e), code=EXIT_USAGE) from None


def credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The user and password the options and environment give (None: the URL's)."""
    from broker.credentials import PASSWORD_ENV, USER_ENV
    from broker.security.secrets import SecretFileError, read_secret

    user = args.user or os.environ.get(USER_ENV) or None
    password = os.environ.get(PASSWORD_ENV) or None
    if args.password_file is not None:
        try:
            password = read_secret(args.password_file, "password")
        except SecretFileError as e:
            raise CliError(f"--password-file: {e}", code=EXIT_USAGE) from None
    if password is not None and user is None and "@" not in args.url:
        raise CliError(
            "a password was given (NETBROKER_PASSWORD or --password-file) but no user: "
            "give --user or NETBROKER_USER",
            code=EXIT_USAGE,
        )
    return user, password


CA_ENV = "NETBROKER_CA"


def ca_of(args: argparse.Namespace) -> Path | None:
    """The CA file --ca or NETBROKER_CA names (None: none, plaintext unless ssl://)."""
    ca: Path | None = getattr(args, "ca", None)
    if ca is None and os.environ.get(CA_ENV):
        ca = Path(os.environ[CA_ENV])
    return ca


def masked(url: str) -> str:
    """The URL as messages show it: a password in it replaced by ***."""
    if "@" not in url:
        return url
    userinfo, _, rest = url.rpartition("@")
    return f"{userinfo.partition(':')[0]}:***@{rest}"


async def connect(args: argparse.Namespace) -> Any:
    from broker.client import Client, ConnectionLost

    user, password = credentials(args)
    url, args.url = args.url, masked(args.url)
    try:
        return await asyncio.wait_for(
            Client.connect(url, user=user, password=password, ca=ca_of(args)),
            args.connect_timeout,
        )
    except TimeoutError:
        raise CliError(
            f"cannot connect to {args.url}: no broker answered within {args.connect_timeout:g} s"
        ) from None
    except ValueError as e:  # a malformed URL
        raise CliError(f"--url: {e}", code=EXIT_USAGE) from None
    except ConnectionLost as e:
        if "connection refused" in e.message.lower() and not args.url.startswith("failover:"):
            raise CliError(
                f"cannot connect to {args.url}: connection refused (is a broker running there?)"
            ) from None
        raise CliError(e.message) from None  # it says which addresses refused and why
    except Exception as e:
        raise CliError(f"cannot connect to {args.url}: {reason(e)}") from None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _rate(n: int, seconds: float, nbytes: int | None = None) -> str:
    if seconds <= 0:
        return ""
    text = f"{n / seconds:,.0f} msg/s"
    if nbytes is not None and nbytes >= 1024 * 1024:
        text += f", {nbytes / seconds / (1024 * 1024):,.1f} MiB/s"
    return text


def _messages(n: int) -> str:
    return f"{n:,} message{'s' if n != 1 else ''}"


def _read_body(args: argparse.Namespace) -> bytes:
    if args.body is not None and args.file is not None:
        raise CliError("send: give BODY or --file, not both", code=EXIT_USAGE)
    if args.file == "-":
        return sys.stdin.buffer.read()
    if args.file is not None:
        try:
            return Path(args.file).read_bytes()
        except OSError as e:
            raise CliError(f"{args.file}: {e.strerror or e}") from None
    if args.body is None:
        raise CliError(
            "send: give a message BODY or --file F (--file - reads stdin)", code=EXIT_USAGE
        )
    return str(args.body).encode()


def _label(dest: tuple[str, str]) -> str:
    kind, name = dest
    return f"topic {name}" if kind == "topic" else name


async def _send(args: argparse.Namespace) -> int:
    body = _read_body(args)
    options: dict[str, Any] = {"persistent": not args.non_persistent}
    if args.header:
        options["headers"] = dict(args.header)
    if args.priority is not None:
        options["priority"] = args.priority
    if args.ttl is not None:
        options["ttl"] = args.ttl

    client = await connect(args)
    try:
        started = time.monotonic()
        message_id = None
        kind, name = args.queue
        if args.count == 1:
            send = client.publish if kind == "topic" else client.send
            message_id = await send(name, body, **options)
        else:
            await _send_many(client, args, body, options)
        elapsed = time.monotonic() - started
    finally:
        await client.close()
    rate = _rate(args.count, elapsed, args.count * len(body)) if args.count > 1 else ""
    detail = rate or (f"id {message_id}" if message_id else "")
    print(
        f"sent {_messages(args.count)} to {_label(args.queue)} in {elapsed:.3f} s"
        + (f" ({detail})" if detail else ""),
        flush=True,
    )
    return 0


async def _send_many(
    client: Any, args: argparse.Namespace, body: bytes, options: dict[str, Any]
) -> None:
    """Pipelined sends: the producer keeps many unanswered; callbacks count the answers.

    Futures are not kept: a million of them would cost more memory than the messages.
    """
    progress = Progress(args.count, "sent")
    acked = 0
    failures: list[BaseException] = []

    def done(fut: asyncio.Future[Any]) -> None:
        nonlocal acked
        if fut.cancelled():
            failures.append(asyncio.CancelledError("send cancelled"))
        elif fut.exception() is not None:
            failures.append(fut.exception())  # type: ignore[arg-type]
        else:
            acked += 1
            progress.update(acked)

    from broker.client import BrokerError

    producer = client.producer()
    kind, name = args.queue
    send = producer.publish if kind == "topic" else producer.send
    interrupted = False
    try:
        for _ in range(args.count):
            if failures:
                break
            try:
                fut = await send(name, body, **options)
            except BrokerError as e:  # the producer has failed for good (connection lost)
                failures.append(e)
                break
            fut.add_done_callback(done)
        try:
            await producer.flush()
        except BrokerError as e:
            if not failures:
                failures.append(e)
    except asyncio.CancelledError:  # Ctrl-C
        interrupted = True
        raise
    finally:
        try:
            # Also after Ctrl-C: what is on its way gets its answer, so the count below
            # is what the broker holds (a second Ctrl-C stops at once).
            await producer.close()
        finally:
            progress.close()
            if interrupted:
                say(
                    f"interrupted: {acked:,} of {_messages(args.count)} sent (acknowledged) "
                    f"to {_label(args.queue)}"
                )
    if failures:
        raise CliError(
            f"sent {acked:,} of {_messages(args.count)} to {_label(args.queue)}, then: "
            f"{reason(failures[0])}"
        )


async def _recv(args: argparse.Namespace) -> int:
    kind, name = args.queue
    if kind == "queue" and (args.durable or args.client_id):
        raise CliError(
            "recv: --durable and --client-id are for topics (topic://NAME)", code=EXIT_USAGE
        )
    if args.durable and not args.client_id:
        raise CliError("recv: --durable needs --client-id", code=EXIT_USAGE)
    if args.client_id and not args.durable:
        raise CliError("recv: --client-id needs --durable NAME", code=EXIT_USAGE)
    if args.output and (args.json or args.show_headers):
        raise CliError(
            "recv: --output writes bodies only; --json and --show-headers print to stdout",
            code=EXIT_USAGE,
        )
    target: dict[str, Any] = {"queue": name}
    if kind == "topic":
        target = {"topic": name, "subscription": args.durable, "client_id": args.client_id}
    # Open the output first so that a bad path fails before any message is taken.
    try:
        sink = open(args.output, "wb") if args.output else None  # noqa: SIM115
    except OSError as e:
        raise CliError(f"{args.output}: {e.strerror or e}") from None
    # A consumer holds at most `prefetch` unacknowledged messages; those not consumed go
    # back on close with their redelivery count raised, so never ask for more than needed.
    prefetch = args.prefetch or min(args.count, 1000)
    progress = Progress(args.count, "received") if args.count > 1 else None
    received = 0
    started = time.monotonic()
    interrupted = False
    try:
        client = await connect(args)
        try:
            consumer = await client.subscribe(**target, prefetch=prefetch, auto_ack=False)
            try:
                while received < args.count:
                    delivery = await consumer.receive(timeout=args.timeout)
                    if delivery is None:
                        break
                    body = bytes(delivery.body)
                    # Written (and flushed) before the ack: a crash in between redelivers
                    # the message rather than losing it.
                    if sink is not None:
                        sink.write(body)
                        sink.flush()
                    elif args.json:
                        line = as_json(delivery.message, delivery.redelivered) + "\n"
                        sys.stdout.buffer.write(line.encode())
                        sys.stdout.buffer.flush()
                    elif args.show_headers:
                        block = header_block(delivery.message, delivery.redelivered)
                        text = "\n".join(block) + "\n\n"
                        out = sys.stdout.buffer
                        out.write(text.encode())
                        out.write(body if body.endswith(b"\n") else body + b"\n")
                        out.write(b"\n")
                        out.flush()
                    else:
                        out = sys.stdout.buffer
                        out.write(body if body.endswith(b"\n") else body + b"\n")
                        out.flush()
                    await _maybe_await(delivery.ack())
                    received += 1
                    if progress:
                        progress.update(received)
            finally:
                await consumer.close()
        finally:
            await client.close()
    except asyncio.CancelledError:  # Ctrl-C
        interrupted = True
        raise
    finally:
        if progress:
            progress.close()
        if sink is not None:
            sink.close()
        if interrupted:
            say(
                f"interrupted: {received:,} of {_messages(args.count)} received (acknowledged) "
                f"from {_label(args.queue)}"
            )
    elapsed = time.monotonic() - started
    if received < args.count:
        say(
            f"received {received:,} of {_messages(args.count)} from {_label(args.queue)}: no "
            f"message arrived within {args.timeout:g} s"
        )
        return 1
    if args.count > 1 or sink is not None:
        rate = _rate(received, elapsed)
        say(
            f"received {_messages(received)} from {_label(args.queue)} in {elapsed:.3f} s"
            + (f" ({rate})" if args.count > 1 and rate else "")
            + (f", written to {args.output}" if sink is not None else "")
        )
    return 0


async def _unsubscribe(args: argparse.Namespace) -> int:
    client = await connect(args)
    try:
        await client.unsubscribe(args.client_id, args.name)
    finally:
        await client.close()
    print(f"removed durable subscription {args.name} of client {args.client_id}", flush=True)
    return 0


def _uptime(started_ms: int) -> str:
    if started_ms <= 0:
        return "?"
    s = max(0, int(time.time() - started_ms / 1000))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{s}s" if minutes else f"{s}s"


async def _stat(args: argparse.Namespace) -> int:
    from broker.cluster.report import format_table

    client = await connect(args)
    try:
        st = await client.status()
        queues = await client.queues()
        topics = await client.topics()
    finally:
        await client.close()
    print(
        f"broker {st.name}  role {st.role}  address {st.client_address}  "
        f"version {st.version or '?'}  up {_uptime(st.started_ms)}"
    )
    print()
    if queues:
        rows = [
            (q.name, q.depth, q.pending, q.in_flight, q.enqueued, q.dequeued, q.consumers)
            for q in sorted(queues, key=lambda q: q.name)
        ]
        print(
            format_table(
                ("queue", "depth", "pending", "in-flight", "enqueued", "dequeued", "consumers"),
                rows,
            )
        )
    else:
        print("no queues")
    if topics.topics:
        print()
        sub_rows = [
            (
                t.name,
                f"{s.client_id}/{s.subscription}" if s.durable else "(non-durable)",
                "yes" if s.active else "no",
                s.depth,
                s.pending,
                s.in_flight,
                s.enqueued,
                s.dequeued,
            )
            for t in topics.topics
            for s in t.subscribers
        ]
        print(
            format_table(
                ("topic", "subscription", "active", "depth", "pending", "in-flight",
                 "enqueued", "dequeued"),
                sub_rows,
            )
        )  # fmt: skip
    if topics.published:
        print(f"topic messages published {topics.published:,}, dropped {topics.dropped:,}")
    if st.components:
        print()
        component_rows = [(c.kind, c.name, c.state, c.detail) for c in st.components]
        print(format_table(("component", "name", "state", "detail"), component_rows))
    sys.stdout.flush()
    return 0
