"""A group member's role as a plain state machine: events in, actions out, no I/O.

`GroupMember` (masterslave/group.py) feeds in what ZooKeeper and the replication side
report and carries out the actions this returns; every decision is made here, so it can
be tested directly and deterministically (time comes in with the events).

Events: the ZooKeeper session's state (`Connected`, `Suspended`, `Lost`), `Alive` (a
ZooKeeper round trip begun at a given time was answered), `Tick` (a `WakeAt` came due),
`Registered`, `GroupRead` (the members and in-sync node as just read), `TookOver` /
`TakeOverFailed` (the outcome of a `TakeOver`), `Fenced` (the leader may no longer
acknowledge), `MasterGone` (the process of the master we follow is known dead) and
`Shutdown`.

Actions: `Register`, `ReadGroup`, `TakeOver`, `Serve`, `StopServing` (close the gate with
a refusal, which ends every open stream, then tear down the core), `Follow`,
`StopFollowing`, `Refuse` (change the refusal while not serving), `UpdateNode` and
`WakeAt`.

Why a suspended master keeps serving for a while (docs/semantics.md, "Master/slave groups"):
kazoo drops its connection when one heartbeat ping goes unanswered for 1/6 to 2/5 of the
session timeout (its read deadline with random jitter), but the server expires the
session only after the whole timeout without hearing from us, and until then no other
member can be elected. Acknowledgements do not rest on the session at all: a master
acknowledges only what every in-sync member holds and changes the in-sync node only with
a version check, so the member that replaces it holds every acknowledged write whatever
the old one does meanwhile. So a master goes on serving while its connection is suspended,
until its session *could* have expired — `grace` times the session timeout after the start of
the last ZooKeeper round trip known to have been answered (the server touched the session
after that start) — and stops then unless the connection came back. (The
default grace, 0.9, stops it 0.1 s before the earliest expiry with a 1 s session; the
server rounds expiry up to its next tick, so the real expiry is later still.) A blip of
a few hundred milliseconds under load then costs nothing, and a master cut off for real still
stops before anyone else can be elected. A lost (expired) session stops it at once; so
does a version conflict on the in-sync node, or another master named in it.

Why a slave may replace a master whose session has not expired yet (docs/semantics.md,
"A master seen dead"): a kill -9 is visible at once to the slaves, whose replication
streams break and whose reconnects are refused, nothing listening on the master's port
any more (masterslave/liveness.py). Waiting for ZooKeeper to expire the dead master's
session then only costs time (1-1.5 s with a 1 s session). So `MasterGone` for the master
a slave follows marks that master's member node dead, and the election
(`choose_master(..., dead=...)`) treats it as absent from then on; if the rule then
elects this member, it takes over with the same version-checked in-sync node write as
ever. That write is what fences the old master, whatever became of it: it acknowledges
only what every in-sync member holds (this one too), and can take this member out of
the set only by writing the same node, which fails once the epoch moved. Trusted only
under the quorum sync modes (`fast_takeover`): under `local_*` the master acknowledges
without its slaves, and only the session's expiry keeps two masters from overlapping.
A frozen or starved master still accepts connections (its kernel does), so it is
replaced only when its session could have expired, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.server.status import Role
from masterslave.election import (
    Elect,
    IsrState,
    Keep,
    Member,
    Wait,
    choose_master,
    latest_nodes,
    present_members,
)

# ---- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    """Connected to ZooKeeper: the same session again after `Suspended`, a new one after
    `Lost` (or at start)."""

    now: float


@dataclass(frozen=True)
class Suspended:
    """The connection dropped; the session may still be alive at the server."""

    now: float


@dataclass(frozen=True)
class Lost:
    """The session is gone (expired): our ephemeral node has been deleted."""

    now: float


@dataclass(frozen=True)
class Alive:
    """A ZooKeeper request sent no earlier than `sent_at` was answered."""

    sent_at: float


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class Registered:
    """Our member node was created (in the current session)."""


@dataclass(frozen=True)
class GroupRead:
    """The group as just read: member nodes, the in-sync node (None if absent) and its
    version, and whether our own node is among the members."""

    members: tuple[Member, ...]
    isr: IsrState | None
    isr_version: int
    node_present: bool


@dataclass(frozen=True)
class TookOver:
    """The in-sync node now names us master at `epoch`; the new core is built."""

    epoch: int


@dataclass(frozen=True)
class TakeOverFailed:
    reason: str


@dataclass(frozen=True)
class Fenced:
    """The leader found it may no longer acknowledge (in-sync node changed under it)."""

    reason: str


@dataclass(frozen=True)
class MasterGone:
    """The process of the master whose member node has sequence number `seq` is gone: a
    replication stream to it had been open, and then a connection to its port was
    refused (masterslave/liveness.py)."""

    seq: int


@dataclass(frozen=True)
class Shutdown:
    pass


Event = (
    Connected | Suspended | Lost | Alive | Tick | Registered | GroupRead | TookOver
    | TakeOverFailed | Fenced | MasterGone | Shutdown
)  # fmt: skip

# ---- actions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Register:
    pass


@dataclass(frozen=True)
class ReadGroup:
    pass


@dataclass(frozen=True)
class TakeOver:
    """Write the next epoch to the in-sync node (version check), then build the core.

    `min_epoch` is the highest epoch any present member reports (the adapter also takes
    its store's)."""

    isr: IsrState | None
    isr_version: int
    min_epoch: int


@dataclass(frozen=True)
class Serve:
    epoch: int


@dataclass(frozen=True)
class StopServing:
    """Close the gate with `refusal` (ending every open stream), stop the leader and the
    core; `clean` stops the core in an orderly way (shutdown) instead of aborting it."""

    reason: str
    role: Role
    refusal: str
    clean: bool = False


@dataclass(frozen=True)
class Follow:
    master: Member
    epoch: int


@dataclass(frozen=True)
class StopFollowing:
    pass


@dataclass(frozen=True)
class Refuse:
    role: Role
    refusal: str


@dataclass(frozen=True)
class UpdateNode:
    pass


@dataclass(frozen=True)
class WakeAt:
    at: float


Action = (
    Register | ReadGroup | TakeOver | Serve | StopServing | Follow | StopFollowing | Refuse
    | UpdateNode | WakeAt
)  # fmt: skip


class MemberRole:
    """One member's role: `Role.ELECTING`, `Role.SLAVE` or `Role.MASTER`.

    `fast_takeover`: whether `MasterGone` counts (the group's sync mode is a quorum one;
    see the module docstring)."""

    def __init__(
        self,
        me: str,
        group: str,
        replicas: int,
        session_timeout: float,
        grace: float = 0.9,
        *,
        fast_takeover: bool = True,
    ) -> None:
        if not 0 < grace <= 1:
            raise ValueError(f"grace must be in (0, 1], got {grace}")
        self.me = me
        self.group = group
        self.replicas = replicas
        self.session_timeout = session_timeout
        self.grace = grace
        self.role = Role.ELECTING
        self.epoch = 0
        self.master: Member | None = None
        self.session = "connecting"
        self.registered = False
        self.alive_at: float | None = None
        self.taking_over = False
        self.stopped = False
        self.waiting_reason = "starting"
        self.decision: object = None
        # Registered member ids as last read: only these may follow a master.
        self.members: frozenset[str] = frozenset()
        self.fast_takeover = fast_takeover
        # Sequence numbers of member nodes whose process is known gone (`MasterGone`);
        # dropped once the node is (its session expired).
        self.dead: set[int] = set()
        self._refused: tuple[Role, str] | None = None
        # Elections this member saw end: each new epoch it entered, as master or slave
        # (its first at start included); and how many of them it won.
        self.elections = 0
        self.became_master = 0
        self._counted_epoch = 0

    # -- what the adapter shows ---------------------------------------------------------

    def refusal(self) -> str:
        where = f"group {self.group}"
        if self.role == Role.SLAVE and self.master is not None:
            return (
                f"broker {self.me} is a slave in {where}; "
                f"the master is {self.master.id} at {self.master.client}"
            )
        return f"broker {self.me} in {where} is not serving: {self.waiting_reason}"

    def deadline(self) -> float | None:
        """When a master must stop serving unless ZooKeeper answers again meanwhile.

        Whatever kazoo reports: its connection can look up while nothing is answered
        (requests in flight stand in for its pings)."""
        if self.role != Role.MASTER:
            return None
        if self.alive_at is None:
            return float("-inf")  # no answer on record: no grace to give
        return self.alive_at + self.grace * self.session_timeout

    # -- events -------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        if self.stopped and not isinstance(event, Shutdown):
            return []
        match event:
            case Connected():
                self.session = "connected"
                return [ReadGroup()] if self.registered else [Register()]
            case Suspended(now):
                self.session = "suspended"
                return self._check_deadline(now)
            case Lost():
                self.session = "lost"
                self.registered = False
                if self.role == Role.MASTER:
                    return self._step_down("lost the ZooKeeper session")
                return self._refuse()
            case Alive(sent_at):
                if self.alive_at is None or sent_at > self.alive_at:
                    self.alive_at = sent_at
                return []
            case Tick(now):
                return self._check_deadline(now)
            case Registered():
                self.registered = True
                return [UpdateNode(), ReadGroup()] if self.role == Role.MASTER else [ReadGroup()]
            case GroupRead():
                return self._group_read(event)
            case TookOver(epoch):
                return self._took_over(epoch)
            case TakeOverFailed(reason):
                self.taking_over = False
                self.waiting_reason = reason
                return [ReadGroup()]
            case Fenced(reason):
                return self._step_down(reason) if self.role == Role.MASTER else []
            case MasterGone(seq):
                return self._master_gone(seq)
            case Shutdown():
                if self.stopped:
                    return []
                self.stopped = True
                actions: list[Action] = [StopFollowing()]
                if self.role == Role.MASTER:
                    self.waiting_reason = "broker is shutting down"
                    self.role = Role.ELECTING
                    actions.insert(
                        0,
                        StopServing(self.waiting_reason, Role.ELECTING, self.refusal(), clean=True),
                    )
                return actions
        raise TypeError(f"not an event: {event!r}")

    def _check_deadline(self, now: float) -> list[Action]:
        deadline = self.deadline()
        if deadline is None:
            return []
        if now >= deadline:
            state = "suspended" if self.session == "suspended" else "no answer"
            return self._step_down(
                f"lost contact with ZooKeeper ({state}; the session may have expired by "
                f"now, {now - (self.alive_at or now):.2f}s after the last answer)"
            )
        return [WakeAt(deadline)]

    def _step_down(self, reason: str, master: Member | None = None) -> list[Action]:
        self.role = Role.ELECTING
        self.waiting_reason = reason
        if master is not None:
            self.waiting_reason += f"; the master is {master.id} at {master.client}"
        self.master = None
        refusal = self.refusal()
        self._refused = (Role.ELECTING, refusal)
        return [StopServing(reason, Role.ELECTING, refusal), UpdateNode(), ReadGroup()]

    def _refuse(self) -> list[Action]:
        wanted = (self.role, self.refusal())
        if wanted == self._refused:
            return []
        self._refused = wanted
        return [Refuse(*wanted)]

    def _master_gone(self, seq: int) -> list[Action]:
        # Only about the master this slave follows: its stream is what showed the death,
        # and a report about any other node (one followed earlier, say) is stale.
        followed = self.master
        if (
            not self.fast_takeover
            or self.role != Role.SLAVE
            or followed is None
            or followed.seq != seq
            or seq in self.dead
        ):
            return []
        self.dead.add(seq)
        return [ReadGroup()]

    def _entered(self, epoch: int) -> None:
        """Count an election that ended at `epoch` (once, however it was learnt)."""
        if epoch > self._counted_epoch:
            self._counted_epoch = epoch
            self.elections += 1

    def _took_over(self, epoch: int) -> list[Action]:
        self.taking_over = False
        self.role = Role.MASTER
        self.epoch = epoch
        self._entered(epoch)
        self.became_master += 1
        self.master = None
        self._refused = None
        actions: list[Action] = [Serve(epoch), UpdateNode()]
        if self.session == "lost":
            return actions + self._step_down("lost the ZooKeeper session while taking over")
        deadline = self.deadline()
        assert deadline is not None
        actions.append(WakeAt(deadline))
        return actions

    def _group_read(self, view: GroupRead) -> list[Action]:
        self.members = frozenset(latest_nodes(view.members))
        self.dead &= {m.seq for m in view.members}
        present = present_members(view.members, self.dead)
        if not view.node_present:
            self.registered = False
            if self.session == "connected":
                return [Register()]
            return self._step_down("our member node is gone") if self.role == Role.MASTER else []
        isr = view.isr
        actions: list[Action] = []
        if self.role == Role.MASTER:
            if isr is not None and isr.master == self.me and isr.epoch == self.epoch:
                return []
            winner = present.get(isr.master) if isr is not None else None
            actions += self._step_down("another member was elected", winner)
            actions.remove(ReadGroup())  # deciding on this very view below
        if self.taking_over:
            return actions
        decision = choose_master(view.members, isr, self.replicas, self.dead)
        self.decision = decision
        if isinstance(decision, Wait):
            self.waiting_reason = decision.reason
            return actions + self._wait()
        chosen = decision.member_id if isinstance(decision, Elect) else decision.master_id
        if chosen == self.me:
            if self.role == Role.MASTER:
                return actions
            self.taking_over = True
            min_epoch = max((m.epoch for m in view.members), default=0)
            if self.role == Role.SLAVE:
                actions.append(StopFollowing())
                self.role = Role.ELECTING
                self.master = None
            return [*actions, TakeOver(isr, view.isr_version, min_epoch)]
        master = present.get(chosen)
        # The chosen member is master once it has written the in-sync node for its
        # epoch; its own node's "elected" mark may follow a moment later, and is not
        # watched, so the in-sync node is what counts here.
        is_master = isinstance(decision, Keep) or (isr is not None and isr.master == chosen)
        if not (is_master and master is not None):
            self.waiting_reason = f"waiting for {chosen} to take over"
            return actions + self._wait()
        epoch = isr.epoch if isr is not None else 0
        current = self.master
        if (
            self.role == Role.SLAVE
            and current is not None
            and (current.id, current.address, self.epoch) == (master.id, master.address, epoch)
        ):
            return actions
        self.role, self.master, self.epoch = Role.SLAVE, master, epoch
        self._entered(epoch)
        return [*actions, Follow(master, epoch), *self._refuse()]

    def _wait(self) -> list[Action]:
        if self.role == Role.SLAVE and self.master is not None:
            return []  # keep following until the new master is known
        self.role = Role.ELECTING
        return self._refuse()
