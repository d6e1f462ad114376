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


def frames(buffer: bytearray) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Take the complete frames (command, headers) off the front of `buffer`."""
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    while True:
        while bytes(buffer[:1]) in (b"\n", b"\r"):  # heart-beats
            del buffer[:1]
        end = buffer.find(b"\n\n")
        if end < 0:
            return out
        lines = bytes(buffer[:end]).replace(b"\r", b"").split(b"\n")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            headers.setdefault(key, value)
        start = end + 2
        length = headers.get(b"content-length")
        stop = start + int(length) if length is not None else buffer.find(b"\x00", start)
        if stop < 0 or len(buffer) <= stop:
            return out
        del buffer[: stop + 1]
        out.append((lines[0], headers))


async def serve(args: argparse.Namespace) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        try:
            while data := await reader.read(1 << 20):
                buffer += data
                for command, headers in frames(buffer):
                    if command in (b"CONNECT", b"STOMP"):
                        writer.write(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00")
                    if b"receipt" in headers:
                        writer.write(b"RECEIPT\nreceipt-id:" + headers[b"receipt"] + b"\n\n\x00")
                    if command == b"SUBSCRIBE":
                        sub, dest = headers.get(b"id", b"0"), headers.get(b"destination", b"")
                        for chunk in messages(args.push, args.size, sub, dest):
                            writer.write(chunk)
                            await writer.drain()
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
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
