"""Who should be a group's master: the election rule as a plain function over node data.

The kazoo adapter reads the group's member nodes (`<zkPath>/members/m-<seq>`) and its
in-sync node (`<zkPath>/isr`), turns them into `Member`s and an `IsrState`, and asks
`choose_master` what to do. The answer is one of:

* `Keep(master_id)`: the in-sync set's master is present and has marked itself elected
  for the current epoch; nobody acts.
* `Elect(member_id)`: that member should become master. Only the named member acts: it
  writes `new_epoch(...)` (masterslave.isr) to the in-sync node with a version check
  (create-if-absent for a fresh group), then sets `elected` to the new epoch in its own
  member node and opens its client port. Every other member waits for it.
* `Wait(reason)`: nobody may become master; the group is unavailable (not lossy) and
  shows `reason` in its status.

Rules (docs/semantics.md, "Master/slave groups"):

* Only a member of the in-sync set may become master: the in-sync set is exactly the
  members that hold every write the master acknowledged, so electing anyone else could
  lose acknowledged writes. If none of them is present, the group waits.
* Among eligible members present: the most up-to-date log, then the higher weight, then
  the older node (lower ZooKeeper sequence number). "Most up-to-date" is compared as
  (epoch of the last applied entry, position). Among in-sync members that is the same as
  comparing positions alone, because every in-sync log is a prefix of the master's log, so
  a longer prefix never has an older last epoch. It differs only for a fresh election over
  stores that already hold data (see below), where a member holding a long tail of an
  older epoch must not beat one holding the newer lineage.
* Fresh group (no in-sync node yet): wait until a majority of `replicas`
  (`replicas // 2 + 1`; for a pair that is both members) is present, then every present
  member is eligible. Creating the in-sync node is atomic, so two halves could not both
  start the group anyway; the majority is there because a missing in-sync node does not
  prove the stores are empty (an embedded ZooKeeper restarted with a fresh data directory
  loses it while the brokers keep their stores). Requiring a majority means the winner is
  the most up-to-date of a majority rather than of whoever started first.

A member whose store was found damaged and replaced by an empty one marks its node
`"resync": true` until a bulk copy from the master is complete. It is never eligible
meanwhile, even when the in-sync set still lists it (the set was written before its
store was lost, and an empty store must not win an election).

Positions in member nodes are written when a member registers, is promoted and steps
down, not as it replicates, so they may be stale at election time. That affects only
which eligible member wins, never safety: any in-sync member holds every acknowledged
write.

A member that restarts before its previous ZooKeeper session expires is briefly present
twice under the same id. Only its newest node (highest sequence number) counts: that one
describes the running process; the older one belongs to a dead session (and may still
claim `elected`, which must not keep a dead master in place).

A member node may also be known dead before ZooKeeper expires its session: a slave that
had a replication stream open to the master's process, saw it break and then had a
connection to the same port refused knows that no process listens there any more
(masterslave/liveness.py; docs/semantics.md, "A master seen dead"). The caller passes
such nodes' sequence numbers as `dead`; they count as absent, exactly as if their
session had expired (and an id whose newest node is dead is absent: an older node of it
is older still). Nothing else changes: the in-sync rule alone decides who may win, so a
wrong `dead` can cost availability (an unneeded failover) but never an acknowledged
write (the version-checked in-sync node write fences the member it wrongly passed over).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def _int_field(data: dict[str, Any], key: str, what: str, *, minimum: int = 0) -> int:
    value = data.get(key)
    # bool is an int in Python; `true` as a position is malformed, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what}: {key!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what}: {key!r} must be >= {minimum}, got {value}")
    return value


def _str_field(data: dict[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_seq(node_name: str) -> int:
    """The sequence number of an ephemeral sequential node, e.g. 12 for `m-0000000012`.

    ZooKeeper appends a 10-digit counter to the requested name; a lower number was
    created earlier, which is how "the older node" is decided.
    """
    digits = node_name.rsplit("/", 1)[-1][-10:]
    if len(digits) != 10 or not digits.isdigit():
        raise ValueError(f"not a sequential node name: {node_name!r}")
    return int(digits)


@dataclass(frozen=True)
class Member:
    """One group member as its ephemeral node describes it.

    `position` is the last log position in its store and `epoch` the epoch of the entry
    at that position (0 when it holds nothing). `seq` is not in the JSON: it is the node's
    sequence number (`parse_seq`). `elected` is the epoch this member was elected master
    for, or None while it is not master. `resync` is true while its store, reset after
    damage, waits for a complete bulk copy (never eligible meanwhile).
    """

    id: str
    address: str
    client: str
    position: int
    epoch: int
    weight: int
    seq: int
    elected: int | None = None
    resync: bool = False

    @classmethod
    def parse(cls, data: bytes, seq: int) -> Member:
        """Parse a member node's JSON; `seq` comes from the node's name.

        `epoch` and `weight` may be absent (0 and 1): older nodes omit epoch.
        Raises ValueError naming the offending field.
        """
        what = f"member node {seq}"
        obj = _load_object(data, what)
        elected = obj.get("elected")
        if elected is not None and (
            not isinstance(elected, int) or isinstance(elected, bool) or elected < 1
        ):
            raise ValueError(f"{what}: 'elected' must be null or an epoch >= 1, got {elected!r}")
        resync = obj.get("resync", False)
        if not isinstance(resync, bool):
            raise ValueError(f"{what}: 'resync' must be true or false, got {resync!r}")
        return cls(
            id=_str_field(obj, "id", what),
            address=_str_field(obj, "address", what),
            client=_str_field(obj, "client", what),
            position=_int_field(obj, "position", what),
            epoch=_int_field({"epoch": obj.get("epoch", 0)}, "epoch", what),
            weight=_int_field({"weight": obj.get("weight", 1)}, "weight", what),
            seq=seq,
            elected=elected,
            resync=resync,
        )

    def to_bytes(self) -> bytes:
        """The node's JSON (without `seq`, which ZooKeeper assigns)."""
        return json.dumps(
            {
                "id": self.id,
                "address": self.address,
                "client": self.client,
                "position": self.position,
                "epoch": self.epoch,
                "weight": self.weight,
                "elected": self.elected,
                # Only when set: nodes of members that were never reset stay as they were.
                **({"resync": True} if self.resync else {}),
            },
            separators=(",", ":"),
        ).encode()


@dataclass(frozen=True)
class IsrState:
    """The group's `<zkPath>/isr` node: epoch, master, in-sync set and epoch history.

    `history` lists (epoch, start) in increasing epoch order, `start` being the master's
    position when that epoch began: its first entry of the epoch is `start + 1`. The last
    entry is the current epoch. Epochs increase; starts normally do too (see
    `epoch_span` for when they do not). Nothing here trims old entries (each failover
    adds about 15 bytes); code treats an epoch missing from the history as unknown, so
    trimming would only turn some catch-ups into bulk copies.
    """

    epoch: int
    master: str
    isr: frozenset[str]
    history: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        _validate_isr(self.epoch, self.master, self.isr, self.history)

    @classmethod
    def parse(cls, data: bytes) -> IsrState:
        """Parse the node's JSON; raises ValueError saying what is wrong."""
        what = "isr node"
        obj = _load_object(data, what)
        epoch = _int_field(obj, "epoch", what, minimum=1)
        master = _str_field(obj, "master", what)
        members = obj.get("isr")
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise ValueError(f"{what}: 'isr' must be a list of member ids, got {members!r}")
        if len(set(members)) != len(members):
            raise ValueError(f"{what}: 'isr' lists a member twice: {members!r}")
        raw_history = obj.get("history")
        if not isinstance(raw_history, list):
            raise ValueError(f"{what}: 'history' must be a list, got {raw_history!r}")
        history: list[tuple[int, int]] = []
        for item in raw_history:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
            ):
                raise ValueError(
                    f"{what}: each history entry must be [epoch, start position], got {item!r}"
                )
            history.append((item[0], item[1]))
        return cls(epoch, master, frozenset(members), tuple(history))

    def to_bytes(self) -> bytes:
        """The node's JSON; `isr` sorted so equal states give equal bytes."""
        return json.dumps(
            {
                "epoch": self.epoch,
                "master": self.master,
                "isr": sorted(self.isr),
                "history": [[e, s] for e, s in self.history],
            },
            separators=(",", ":"),
        ).encode()

    def start_of(self, epoch: int) -> int:
        """The position at which `epoch` began (its first entry is one past it).

        Raises KeyError for an epoch not in the history.
        """
        for e, start in self.history:
            if e == epoch:
                return start
        raise KeyError(f"epoch {epoch} is not in the history")

    def end_of(self, epoch: int) -> int | None:
        """The last position that can belong to `epoch` in the current log.

        That is the lowest start of any later epoch (see `epoch_span`); None for the
        current epoch, which is still open. Raises KeyError for an epoch not
        in the history.
        """
        span = epoch_span(self.history, epoch)
        if span is None:
            raise KeyError(f"epoch {epoch} is not in the history")
        return span[1]


def epoch_span(history: Sequence[tuple[int, int]], epoch: int) -> tuple[int, int | None] | None:
    """(start, end) of `epoch` in an (epoch, start) history, or None if it is not there.

    Entries of `epoch` lie in `start + 1 .. end`. `end` is the lowest start of any later
    epoch, not simply the next one's: a later epoch that began lower superseded
    everything after its start. None as `end` means `epoch` is the current one.
    """
    for i, (e, start) in enumerate(history):
        if e == epoch:
            later = [s for _e, s in history[i + 1 :]]
            return start, (min(later) if later else None)
    return None


def _validate_isr(
    epoch: int, master: str, isr: frozenset[str], history: tuple[tuple[int, int], ...]
) -> None:
    what = "isr state"
    if epoch < 1:
        raise ValueError(f"{what}: epoch must be >= 1, got {epoch}")
    if master not in isr:
        # The master holds every write it acknowledged by definition; a state without it
        # was not written by this code.
        raise ValueError(f"{what}: master {master!r} is not in the in-sync set {sorted(isr)}")
    if not history:
        raise ValueError(f"{what}: history is empty")
    # Starts may decrease: a member that lost an in-memory tail (quorum_mem, power loss)
    # can still be the best one left, and its epoch then starts below the previous one.
    for (e1, _s1), (e2, _s2) in itertools.pairwise(history):
        if e2 <= e1:
            raise ValueError(f"{what}: history epochs must increase: {e1} then {e2}")
    for e, s in history:
        if e < 1 or s < 0:
            raise ValueError(f"{what}: bad history entry [{e}, {s}]")
    if history[-1][0] != epoch:
        raise ValueError(
            f"{what}: the last history entry is epoch {history[-1][0]}, not the current {epoch}"
        )


@dataclass(frozen=True)
class Elect:
    """`member_id` should become master (only that member acts on this)."""

    member_id: str


@dataclass(frozen=True)
class Wait:
    """Nobody may become master now; `reason` is a sentence for the group's status."""

    reason: str


@dataclass(frozen=True)
class Keep:
    """The current master is alive and elected for the current epoch."""

    master_id: str


Decision = Elect | Wait | Keep


def fresh_quorum(replicas: int) -> int:
    """Members that must be present before a group with no in-sync node elects anyone."""
    _check_replicas(replicas)
    return replicas // 2 + 1


def min_insync_default(replicas: int) -> int:
    """Default `min_insync`: a majority for three or more members, 1 for a pair or a single.

    A pair cannot have a majority of two without stopping at the first failure; the
    in-sync set is what makes its failover safe instead (docs/semantics.md).
    """
    _check_replicas(replicas)
    return replicas // 2 + 1 if replicas >= 3 else 1


def _check_replicas(replicas: int) -> None:
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")


def latest_nodes(members: Iterable[Member]) -> dict[str, Member]:
    """One member per id: its newest node (highest seq), see the module docstring."""
    latest: dict[str, Member] = {}
    for m in members:
        seen = latest.get(m.id)
        if seen is None or m.seq > seen.seq:
            latest[m.id] = m
    return latest


def rank_key(member: Member) -> tuple[int, int, int, int]:
    """Sort key, best first: newest log (epoch, position), then weight, then older node."""
    return (-member.epoch, -member.position, -member.weight, member.seq)


def _ids(ids: Iterable[str]) -> str:
    listed = sorted(ids)
    return ", ".join(listed) if listed else "none"


def present_members(members: Iterable[Member], dead: Collection[int] = ()) -> dict[str, Member]:
    """The members that count as present, one per id: each id's newest node, unless that
    node is known dead (its sequence number is in `dead`)."""
    return {i: m for i, m in latest_nodes(members).items() if m.seq not in dead}


def choose_master(
    members: Sequence[Member],
    isr: IsrState | None,
    replicas: int,
    dead: Collection[int] = (),
) -> Decision:
    """Decide the group's master from its member nodes and its in-sync node.

    `members` are the nodes present under `<zkPath>/members` (any order, duplicates of
    an id allowed); `isr` is the parsed in-sync node or None if it does not exist yet;
    `replicas` is the group's configured size, used only for a fresh group. `dead` holds
    the sequence numbers of member nodes whose process is known to be gone (see the
    module docstring): they count as absent.
    """
    _check_replicas(replicas)
    present = present_members(members, dead)

    if isr is None:
        needed = fresh_quorum(replicas)
        if len(present) < needed:
            return Wait(
                f"new group: waiting for {needed} of {replicas} members to be present "
                f"before the first election (present: {_ids(present)})"
            )
        eligible = [m for m in present.values() if not m.resync]
        if not eligible:
            return Wait(
                f"new group: every present member is re-syncing a reset store "
                f"({_ids(present)}); waiting for one that holds its data"
            )
    else:
        master = present.get(isr.master)
        if master is not None and master.elected == isr.epoch:
            return Keep(master.id)
        listed = [m for m in present.values() if m.id in isr.isr]
        eligible = [m for m in listed if not m.resync]
        if listed and not eligible:
            return Wait(
                f"in-sync member {_ids(m.id for m in listed)} present but re-syncing a "
                f"store reset after damage (in-sync: {_ids(isr.isr)}); waiting for a member "
                f"that holds every acknowledged write"
            )
        if not eligible:
            return Wait(
                f"no in-sync member present (in-sync: {_ids(isr.isr)}; "
                f"present: {_ids(present)}); waiting for one to return"
            )

    return Elect(min(eligible, key=rank_key).id)
