"""The broker's RocksDB store: key layout, recovery scans and batched writes.

Key layout (raw bytes, byte-wise order):

    m <queue utf-8> 0x00 <9 - priority> <seq: 8 bytes BE>  -> serialized Message
    i <message id utf-8>                                   -> visits: 2 bytes BE
                                                              (duplicate check)
    c <ack number: 8 bytes BE>                             -> ids consumed together, each
                                                              a varint length and the id;
                                                              the first has this number
                                                              (oldest first, for pruning)
    a <ack number: 8 bytes BE>                             -> one consumed id (stores
                                                              written before `c` keys)
    h <queue utf-8> 0x00 <9 - priority>                    -> highest seq dispatched
    s <client id utf-8> 0x00 <subscription name utf-8>     -> a durable topic
                                                              subscription: its pattern,
                                                              0x00, its queue
    x <name utf-8>                                         -> a record a plugged-in
                                                              layer keeps (opaque bytes)
    z <name>                                               -> meta values (8 bytes BE)

Ordering messages by inverted priority and then sequence makes a forward scan of a
queue's prefix the dispatch order, so paging in is a plain range scan.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

from rocksdict import (
    BlockBasedOptions,
    DBRecoveryMode,
    Options,
    Rdict,
    RdictIter,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from broker.core.wire import varint
from broker.errors import StartupError

# A write is a list of (key, value) pairs; a value of None deletes the key. The same
# list is what a replication log would carry, so it stays a plain value.
Op = tuple[bytes, bytes | None]

META_SEQ = b"zseq"
META_ACK = b"zack"
# The log position of the last write and the group epoch it was written in.
META_POS = b"zpos"
META_EPOCH = b"zepoch"
# Present while this store was reset after damage and has not yet received a complete
# bulk copy from its group's master: such a store lacks acknowledged writes, so its
# member must not be elected, even if a stale in-sync set still lists it.
META_RESYNC = b"zresync"
# The position a reset store claims: one entry of epoch 0, which no master's history
# holds, so the master's catch-up plan is always a bulk copy (a stream from 0 would
# never tell the member when it has caught up). Epoch 0 ranks below every real log.
RESET_POSITION = 1


# A file RocksDB names in an error: a path, or a bare table/log/manifest name.
_FILE_IN_ERROR = re.compile(r"/\S+\.(?:sst|log)\b|MANIFEST-\d+|CURRENT|\b\d+\.(?:sst|log)\b")


class StoreDamaged(StartupError):
    """The store failed verification: a checksum mismatch, or a log that is corrupt
    before its end. `file` is the damaged file when RocksDB names it."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        found = _FILE_IN_ERROR.search(detail)
        name = found.group(0) if found else ""
        self.file = (
            name if name.startswith("/") else str(path / name) if name else _log_files(path, detail)
        )
        where = self.file or str(path)
        super().__init__(f"store {path} is damaged ({where}): {detail}")


def _log_files(path: Path, detail: str) -> str:
    """RocksDB's log-replay errors ("bad record length", "checksum mismatch") name no
    file: name the write-ahead logs it was replaying."""
    if "record" not in detail and "checksum" not in detail:
        return ""
    try:
        return ", ".join(str(p) for p in sorted(path.glob("*.log")))
    except OSError:
        return ""


def _is_corruption(text: str) -> bool:
    return "Corruption" in text or "checksum" in text.lower()


def message_key(queue: str, priority: int, seq: int) -> bytes:
    return message_key_prefix(queue, priority) + seq.to_bytes(8, "big")


def message_key_prefix(queue: str, priority: int) -> bytes:
    """The part of a message key before the sequence number."""
    return b"m" + queue.encode() + b"\x00" + bytes((9 - priority,))


def queue_prefix(queue: str) -> bytes:
    return b"m" + queue.encode() + b"\x00"


def parse_message_key(key: bytes) -> tuple[str, int, int]:
    """(queue, priority, seq) of a message key."""
    sep = key.index(b"\x00", 1)
    return key[1:sep].decode(), 9 - key[sep + 1], int.from_bytes(key[sep + 2 :], "big")


def mark_key(queue: str, priority: int) -> bytes:
    return b"h" + queue.encode() + b"\x00" + bytes((9 - priority,))


def record_key(name: str) -> bytes:
    return b"x" + name.encode()


def subscription_key(client_id: str, name: str) -> bytes:
    return b"s" + client_id.encode() + b"\x00" + name.encode()


def subscription_record(pattern: str, queue: str) -> bytes:
    return pattern.encode() + b"\x00" + queue.encode()


def id_key(message_id: str) -> bytes:
    return b"i" + message_id.encode()


def id_key_bytes(message_id: bytes) -> bytes:
    return b"i" + message_id


def ack_key(n: int) -> bytes:
    return b"a" + n.to_bytes(8, "big")


def consumed_key(n: int) -> bytes:
    return b"c" + n.to_bytes(8, "big")


def encode_ids(ids: list[bytes]) -> bytes:
    """Ids consumed together, for one `c` key."""
    return b"".join(varint(len(mid)) + mid for mid in ids)


def decode_ids(value: bytes) -> list[bytes]:
    ids: list[bytes] = []
    pos = 0
    while pos < len(value):
        length = shift = 0
        while True:
            byte = value[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        ids.append(value[pos : pos + length])
        pos += length
    return ids


def _after(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix`."""
    return prefix[:-1] + bytes((prefix[-1] + 1,))


class Store:
    """Synchronous access to one broker's RocksDB. One writer: the broker's loop."""

    def __init__(self, path: Path) -> None:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Refuse a store RocksDB finds inconsistent instead of opening what it can read.
        options.set_paranoid_checks(True)
        # A record cut short at the end of the log is a write torn by a crash (never an
        # acknowledged one: acknowledged writes were synced whole); a bad record with
        # more log after it is damage. The default (point in time) silently stops at the
        # first bad record and drops every write after it.
        options.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records())
        table = BlockBasedOptions()
        # Most duplicate checks ask for ids that are absent: a bloom filter answers
        # those without reading a block.
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        # The same for the memtable, where recent ids live: without it each miss is a
        # skip-list seek, the single largest cost of a send (measured: 4x fewer misses/s).
        options.set_memtable_prefix_bloom_ratio(0.1)
        options.set_memtable_whole_key_filtering(True)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(path), options)
        except PermissionError as exc:
            raise StartupError(f"data directory {path} is not writable: {exc.strerror}") from exc
        except Exception as exc:
            text = str(exc)
            if "lock" in text.lower():
                raise StartupError(
                    f"data directory {path} is in use by another broker (RocksDB lock held)"
                ) from exc
            if _is_corruption(text):
                raise StoreDamaged(path, text) from exc
            raise StartupError(f"cannot open store in {path}: {text}") from exc
        self._sync = WriteOptions()
        self._sync.sync = True
        self._nosync = WriteOptions()
        self.path = path
        # Called once a reset store has received a complete bulk copy.
        self.on_resynced: Callable[[], None] | None = None
        # Called when damage is found while serving (a block read for paging failing its
        # checksum): the assembly stops the broker rather than serve around the hole.
        self.on_damaged: Callable[[StoreDamaged], None] | None = None

    def close(self, flush: bool = True) -> None:
        # Flushed at a clean stop, the data lives in checksummed tables and the log
        # holds nothing: damage to the log of a cleanly stopped broker loses nothing.
        # A store found damaged is closed as it is (a flush could fail on the damage
        # and hide the report of it).
        try:
            if flush:
                self._db.flush()
        finally:
            self._db.close()

    def verify(self, messages: bool = True) -> None:
        """Read every block of the store (or every one outside the message keys, which a
        broker's start reads anyway) so that a checksum mismatch is found now, not when
        a message is paged in. Raises StoreDamaged."""
        ranges = [(b"\x00", b"m"), (b"n", b"\xff" * 16)]
        if messages:
            ranges.append((b"m", b"n"))
        for start, end in ranges:
            ro = ReadOptions()
            ro.set_iterate_upper_bound(end)
            it = self._db.iter(ro)
            it.seek(start)
            while it.valid():
                it.next()
            self._check(it)

    def _check(self, it: RdictIter) -> None:
        try:
            it.status()
        except Exception as exc:
            raise self._damaged(str(exc)) from exc

    def _damaged(self, detail: str) -> StoreDamaged:
        damage = StoreDamaged(self.path, detail)
        if self.on_damaged is not None:
            self.on_damaged(damage)
        return damage

    @property
    def resync_pending(self) -> bool:
        return self._db.get(META_RESYNC) is not None

    def mark_reset(self) -> None:
        """This (new, empty) store replaces a damaged one: it must take a bulk copy
        before its member may be elected."""
        self.write(
            [(META_RESYNC, b"\x01"), (META_POS, RESET_POSITION.to_bytes(8, "big"))], sync=True
        )

    def finish_resync(self) -> None:
        """A bulk copy completed: this store holds the master's state again."""
        if not self.resync_pending:
            return
        self.write([(META_RESYNC, None)], sync=True)
        if self.on_resynced is not None:
            self.on_resynced()

    def clear(self) -> None:
        """Delete everything (a follower about to receive a bulk copy); a pending resync
        stays pending until the copy is complete."""
        pending = self.resync_pending
        self._db.delete_range(b"\x00", b"\xff" * 16)
        if pending:
            self.mark_reset()

    def scan_all(self, after: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` pairs with keys > `after`, in key order (for bulk copies)."""
        out: list[tuple[bytes, bytes]] = []
        # Checked: a copy cut short by a bad block would give a slave half a store.
        for key, value in self._range(after + b"\x00", b"\xff" * 16):
            out.append((key, value))
            if len(out) >= limit:
                break
        return out

    def write(self, ops: Sequence[Op], sync: bool) -> None:
        batch = WriteBatch(raw_mode=True)
        put = batch.put
        delete = batch.delete
        for key, value in ops:
            if value is None:
                delete(key)
            else:
                put(key, value)
        self._db.write(batch, self._sync if sync else self._nosync)

    def sync_wal(self) -> None:
        """fsync every write made so far (lets other threads run meanwhile)."""
        self._db.flush_wal(True)

    def visits_of(self, message_ids: list[str]) -> dict[str, int]:
        """How many times each message was stored here, in one lookup; ids never stored
        (or forgotten) are left out."""
        if not message_ids:
            return {}
        try:
            # A list of keys gets the list of their values (None where absent).
            values = cast("list[bytes | None]", self._db.get([id_key(mid) for mid in message_ids]))
        except Exception as exc:
            if _is_corruption(str(exc)):
                raise self._damaged(str(exc)) from exc
            raise
        return {
            mid: int.from_bytes(value, "big")
            for mid, value in zip(message_ids, values, strict=True)
            if value is not None
        }

    def meta(self, key: bytes) -> int:
        value = self._db.get(key)
        return int.from_bytes(value, "big") if value else 0

    def _range(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        ro = ReadOptions()
        ro.set_iterate_upper_bound(end)
        last: bytes | None = None
        # The store is opened raw: every key and value is bytes.
        items = cast(Iterator[tuple[bytes, bytes]], self._db.items(from_key=start, read_opt=ro))
        for last, value in items:
            yield last, value
        # `items` ends quietly on a read error (a block failing its checksum) as if the
        # range ended there. A raw iterator placed where it stopped tells which it was;
        # one seek per range read to its end costs less than stepping the whole range
        # through the raw iterator's four calls per key.
        check = ReadOptions()
        check.set_iterate_upper_bound(end)
        it = self._db.iter(check)
        it.seek(start if last is None else last + b"\x00")
        self._check(it)

    def queue_counts(self) -> dict[str, list[int]]:
        """How many messages each queue holds, by priority (index 0 to 9), by one scan of
        the message keys."""
        counts: dict[str, list[int]] = {}
        for key, _ in self._range(b"m", b"n"):
            sep = key.index(b"\x00", 1)
            queue = key[1:sep].decode()
            by_priority = counts.get(queue)
            if by_priority is None:
                by_priority = counts[queue] = [0] * 10
            by_priority[9 - key[sep + 1]] += 1
        return counts

    def dispatch_marks(self) -> dict[str, dict[int, int]]:
        """queue -> priority -> highest sequence number dispatched before the last stop."""
        marks: dict[str, dict[int, int]] = {}
        for key, value in self._range(b"h", b"i"):
            sep = key.index(b"\x00", 1)
            marks.setdefault(key[1:sep].decode(), {})[9 - key[sep + 1]] = int.from_bytes(
                value, "big"
            )
        return marks

    def records(self, prefix: str) -> list[tuple[str, bytes]]:
        """The plugged-in layers' records whose names start with `prefix`."""
        start = record_key(prefix)
        return [(key[1:].decode(), value) for key, value in self._range(start, _after(start))]

    def subscriptions(self) -> list[tuple[str, str, str, str]]:
        """Every durable topic subscription: (client id, name, pattern, queue)."""
        out: list[tuple[str, str, str, str]] = []
        for key, value in self._range(b"s", b"t"):
            client_id, name = key[1:].decode().split("\x00", 1)
            pattern, queue = value.decode().split("\x00", 1)
            out.append((client_id, name, pattern, queue))
        return out

    def scan_queue(
        self, queue: str, priority: int, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, message) of one priority with seq > after_seq, in order."""
        start = message_key(queue, priority, after_seq + 1)
        end = message_key(queue, priority, 0)[:-8] + b"\xff" * 8 + b"\x00"
        out: list[tuple[int, bytes]] = []
        for key, value in self._range(start, end):
            out.append((int.from_bytes(key[-8:], "big"), value))
            if len(out) >= limit:
                break
        return out

    def queue_items(self, queue: str) -> Iterator[tuple[bytes, bytes]]:
        prefix = queue_prefix(queue)
        return self._range(prefix, _after(prefix))

    def oldest_ack(self) -> int:
        """The number of the oldest remembered consumed id, 0 when none."""
        numbers = [
            int.from_bytes(key[1:], "big")
            for prefix in (b"a", b"c")
            for key, _ in itertools.islice(self._range(prefix, _after(prefix)), 1)
        ]
        return min(numbers, default=0)

    def consumed_batches(self, first: int, count: int) -> list[tuple[bytes, int, list[bytes]]]:
        """(key, number of its first id, ids) of the remembered consumed ids whose keys are
        numbered from `first` to `first + count - 1`, in order."""
        batches = [
            (key, int.from_bytes(key[1:], "big"), [value])
            for key, value in self._range(ack_key(first), ack_key(first + count))
        ]
        batches.extend(
            (key, int.from_bytes(key[1:], "big"), decode_ids(value))
            for key, value in self._range(consumed_key(first), consumed_key(first + count))
        )
        batches.sort(key=lambda batch: batch[1])
        return batches
