"""A STOMP server that does nothing, for measuring the client: the floor under the STOMP
benchmark's figures on this machine.

    python -m scripts.benchkit.stomp_null --port P [--size 1024] [--push N]

It answers CONNECT with CONNECTED, every `receipt` header with a RECEIPT, and discards
everything else; after each SUBSCRIBE it writes `--push` MESSAGE frames at once (built
before, written in large chunks), with bodies the benchmark's consumers read
(scripts/benchkit/marks.py). Whatever rate a stomp.py client reaches against it is what
that client can do at most here, with a server that costs nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from broker.stomp.frames import FrameParser, Limits, ProtocolError
from scripts.benchkit.marks import Bodies


def messages(count: int, size: int, subscription: bytes, destination: bytes) -> list[bytes]:
    """The MESSAGE frames of one subscription, in chunks of 1,000."""
    bodies = Bodies(size)
    stamp = time.perf_counter_ns()
    chunks: list[bytes] = []
    frames: list[bytes] = []
    for seq in range(count):
        body = bodies.body(seq, stamp)
        frames.append(
            b"MESSAGE\nsubscription:" + subscription + b"\nmessage-id:" + str(seq).encode()
            + b"\ndestination:" + destination + b"\nack:" + str(seq).encode()
            + b"\ncontent-length:" + str(len(body)).encode() + b"\n\n" + body + b"\x00"
        )  # fmt: skip
        if len(frames) == 1000:
            chunks.append(b"".join(frames))
            frames = []
    if frames:
        chunks.append(b"".join(frames))
    return chunks


async def serve(args: argparse.Namespace) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The broker's own codec: the cost of parsing is the same on both ends.
        parser = FrameParser(Limits(max_body=64 * 1024 * 1024))
        try:
            while data := await reader.read(1 << 20):
                for frame in parser.feed(data):
                    if frame.command in ("CONNECT", "STOMP"):
                        writer.write(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00")
                    receipt = frame.headers.get("receipt")
                    if receipt is not None:
                        writer.write(f"RECEIPT\nreceipt-id:{receipt}\n\n\x00".encode())
                    if frame.command == "SUBSCRIBE":
                        sub = frame.headers.get("id", "0").encode()
                        dest = frame.headers.get("destination", "").encode()
                        for chunk in messages(args.push, args.size, sub, dest):
                            writer.write(chunk)
                            await writer.drain()
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ProtocolError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", args.port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--push", type=int, default=20_000, help="MESSAGEs per SUBSCRIBE")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
