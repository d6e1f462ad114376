"""`netbroker browse` and `purge`: an operator's look into one queue, and its clearing."""

from __future__ import annotations

import argparse

from broker.cli.arguments import int_range
from broker.cli.client_cmds import client_options, connect, run_client
from broker.cli.errors import CliError
from broker.cli.render import as_json, preview


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "browse",
        help="show a queue's pending messages without taking them",
        description="Show up to --limit pending messages of QUEUE in the order they "
        "would be delivered (priority first), without taking them: id, priority, "
        "redelivery count, persistence, headers and the start of the body; with "
        "--json one JSON object per message, every field and the whole body.",
    )
    client_options(p)
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument(
        "--limit",
        type=int_range(1, 10_000),
        default=20,
        metavar="N",
        help="at most N messages [%(default)s]",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.set_defaults(handler=lambda args: run_client(args, _browse(args)))

    p = sub.add_parser(
        "purge",
        help="remove every pending message of a queue",
        description="Remove every pending message of QUEUE (those a consumer holds "
        "stay with it until acknowledged or returned) and say how many went.",
    )
    client_options(p)
    p.add_argument("queue", metavar="QUEUE")
    p.set_defaults(handler=lambda args: run_client(args, _purge(args)))


async def _browse(args: argparse.Namespace) -> int:
    client = await connect(args)
    try:
        known = {q.name for q in await client.queues()}
        if args.queue not in known:
            raise CliError(f"{args.url}: no queue named {args.queue!r}")
        messages = await client.browse(args.queue, args.limit)
    finally:
        await client.close()
    if args.json:
        for message in messages:
            print(as_json(message), flush=False)
        return 0
    if not messages:
        print(f"{args.queue}: no pending messages")
        return 0
    rows = [
        (
            m.id,
            m.priority,
            m.redelivery_count,
            "yes" if m.persistent else "no",
            ", ".join(f"{k}={v}" for k, v in sorted(m.headers.items())) or "-",
            preview(m.body),
        )
        for m in messages
    ]
    from broker.cluster.report import format_table

    print(format_table(("id", "priority", "redelivered", "persistent", "headers", "body"), rows))
    return 0


async def _purge(args: argparse.Namespace) -> int:
    client = await connect(args)
    try:
        purged = await client.purge(args.queue)
    finally:
        await client.close()
    print(f"purged {purged:,} message{'s' if purged != 1 else ''} from {args.queue}")
    return 0
