"""The member role machine, driven directly: events in, actions out, time passed in."""

from __future__ import annotations

from collections.abc import Sequence

from broker.server.status import Role
from masterslave.election import IsrState, Member
from masterslave.role import (
    Alive,
    Connected,
    Fenced,
    Follow,
    GroupRead,
    Lost,
    MemberRole,
    ReadGroup,
    Refuse,
    Register,
    Registered,
    Serve,
    Shutdown,
    StopFollowing,
    StopServing,
    Suspended,
    TakeOver,
    TakeOverFailed,
    Tick,
    TookOver,
    UpdateNode,
    WakeAt,
)


def member(id: str, seq: int, elected: int | None = None, position: int = 10) -> Member:
    return Member(id, f"127.0.0.1:{seq}00", f"127.0.0.1:{seq}01", position, 1, 1, seq, elected)


def isr(master: str, epoch: int, *insync: str) -> IsrState:
    return IsrState(epoch, master, frozenset({master, *insync}), ((epoch, 0),))


def view(*members: Member, state: IsrState | None = None, present: bool = True) -> GroupRead:
    return GroupRead(tuple(members), state, 3 if state else -1, present)


def master_b(epoch: int = 2) -> MemberRole:
    """b, master at `epoch` with c in sync, connected, last heard from ZooKeeper at t=10."""
    m = MemberRole("b", "B", 2, session_timeout=1.0, grace=0.8)
    assert m.handle(Connected(0)) == [Register()]
    assert m.handle(Registered()) == [ReadGroup()]
    actions = m.handle(view(member("b", 1), member("c", 2), state=isr("b", epoch - 1, "c")))
    assert [type(a) for a in actions] == [TakeOver]
    m.handle(Alive(1.0))  # the in-sync node's write, say
    assert m.handle(TookOver(epoch)) == [Serve(epoch), UpdateNode(), WakeAt(1.8)]
    m.handle(Alive(10.0))
    assert m.role == Role.MASTER
    return m


def stops(actions: Sequence[object]) -> StopServing:
    found = [a for a in actions if isinstance(a, StopServing)]
    assert len(found) == 1, actions
    return found[0]


def test_suspended_then_reconnected_same_session_keeps_serving() -> None:
    m = master_b()
    assert m.handle(Suspended(10.3)) == [WakeAt(10.8)]
    assert m.handle(Connected(10.5)) == [ReadGroup()]
    m.handle(Alive(10.5))
    assert m.handle(Tick(10.8)) == [WakeAt(11.3)]  # the deadline moved on
    assert m.role == Role.MASTER
    # The session is the same: the group still names us, nothing to do.
    assert m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c"))) == []


def test_suspended_past_the_possible_expiry_stops_serving() -> None:
    m = master_b()
    assert m.handle(Suspended(10.3)) == [WakeAt(10.8)]
    assert m.handle(Tick(10.7)) == [WakeAt(10.8)]  # early wake-up: not yet
    actions = m.handle(Tick(10.8))
    stop = stops(actions)
    assert "lost contact with ZooKeeper" in stop.reason and stop.role == Role.ELECTING
    assert "lost contact with ZooKeeper" in stop.refusal
    assert ReadGroup() in actions  # reconsiders as soon as ZooKeeper answers again
    assert m.role == Role.ELECTING


def test_connected_but_unanswered_stops_serving() -> None:
    m = master_b()
    assert m.handle(Tick(1.8)) == [WakeAt(10.8)]  # answered at 10.0 meanwhile
    stop = stops(m.handle(Tick(10.9)))
    assert "no answer" in stop.reason


def test_suspended_long_after_the_last_answer_stops_at_once() -> None:
    m = master_b()
    stops(m.handle(Suspended(11.0)))  # the last answer began at 10.0: 0.8 s grace gone


def test_suspended_then_lost_stops_at_once_and_registers_again() -> None:
    m = master_b()
    m.handle(Suspended(10.3))
    actions = m.handle(Lost(10.4))
    assert "lost the ZooKeeper session" in stops(actions).reason
    assert m.handle(Connected(11.0)) == [Register()]  # a new session: a new node
    assert m.handle(Registered()) == [ReadGroup()]


def test_slave_is_untouched_by_a_suspension() -> None:
    m = MemberRole("c", "B", 2, 1.0, grace=0.8)
    m.handle(Connected(0))
    m.handle(Registered())
    actions = m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c")))
    assert actions[0] == Follow(member("b", 1, 2), 2)
    assert (
        isinstance(actions[1], Refuse) and "the master is b at 127.0.0.1:101" in actions[1].refusal
    )
    assert m.handle(Suspended(5)) == [] and m.handle(Tick(50)) == []
    assert m.role == Role.SLAVE


def test_elected_while_a_stale_node_of_ours_exists() -> None:
    # b restarted before its old session expired: its old node still claims "elected".
    m = MemberRole("b", "B", 2, 1.0, grace=0.8)
    m.handle(Connected(0))
    m.handle(Registered())
    # The new node is the most up to date; the old one must not count as "elected".
    old, new = member("b", 1, elected=2), member("b", 7, position=20)
    actions = m.handle(view(old, new, member("c", 2), state=isr("b", 2, "c")))
    assert actions == [TakeOver(isr("b", 2, "c"), 3, 1)]
    assert m.handle(view(old, new, member("c", 2), state=isr("b", 2, "c"))) == []  # once
    m.handle(Alive(4.0))
    assert m.handle(TookOver(3)) == [Serve(3), UpdateNode(), WakeAt(4.8)]


def test_fenced_by_an_in_sync_rewrite_stops_and_follows_the_new_master() -> None:
    m = master_b(epoch=2)
    actions = m.handle(view(member("b", 1, 2), member("c", 2, 3), state=isr("c", 3, "b")))
    stop = stops(actions)
    assert "another member was elected" in stop.reason
    assert "the master is c at 127.0.0.1:201" in stop.refusal
    follow = [a for a in actions if isinstance(a, Follow)]
    assert follow == [Follow(member("c", 2, 3), 3)]
    assert actions.index(stop) < actions.index(follow[0])
    assert m.role == Role.SLAVE and m.master is not None and m.master.id == "c"


def test_fenced_by_the_leader() -> None:
    m = master_b()
    stop = stops(m.handle(Fenced("the in-sync node was changed by another member")))
    assert "changed by another member" in stop.refusal
    assert m.handle(Fenced("again")) == []  # already stepped down


def test_demoted_then_re_elected() -> None:
    m = master_b(epoch=2)
    m.handle(Suspended(10.3))
    actions = m.handle(Tick(10.8))
    stops(actions)
    assert ReadGroup() in actions
    # ZooKeeper is back, same session; our node still says elected 2 (the update failed).
    assert m.handle(Connected(11.0)) == [ReadGroup()]
    actions = m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c")))
    assert actions == [TakeOver(isr("b", 2, "c"), 3, 1)]
    m.handle(Alive(11.1))  # the in-sync node written
    assert m.handle(TookOver(3)) == [Serve(3), UpdateNode(), WakeAt(11.9)]
    assert m.role == Role.MASTER and m.epoch == 3


def test_lost_race_reads_again_and_follows_the_winner() -> None:
    m = MemberRole("b", "B", 2, 1.0, grace=0.8)
    m.handle(Connected(0))
    m.handle(Registered())
    m.handle(view(member("b", 1), member("c", 2)))  # fresh group: b wins on age
    assert m.handle(TakeOverFailed("another member took over first")) == [ReadGroup()]
    actions = m.handle(view(member("b", 1), member("c", 2, 1), state=isr("c", 1)))
    assert [type(a) for a in actions] == [Follow, Refuse]
    assert m.role == Role.SLAVE and "the master is c" in m.refusal()


def test_our_node_gone_registers_again() -> None:
    m = master_b()
    assert m.handle(view(member("c", 2), state=isr("b", 2, "c"), present=False)) == [Register()]


def test_suspended_master_taking_over_gets_a_deadline() -> None:
    m = MemberRole("b", "B", 2, 1.0, grace=0.8)
    m.handle(Connected(0))
    m.handle(Registered())
    m.handle(Alive(5.0))
    m.handle(view(member("b", 1), member("c", 2), state=isr("b", 1, "c")))
    m.handle(Suspended(5.1))
    assert m.handle(TookOver(2)) == [Serve(2), UpdateNode(), WakeAt(5.8)]
    m2 = MemberRole("b", "B", 2, 1.0, grace=0.8)
    m2.handle(Connected(0))
    m2.handle(Registered())
    m2.handle(view(member("b", 1), member("c", 2), state=isr("b", 1, "c")))
    m2.handle(Lost(1))
    assert stops(m2.handle(TookOver(2)))


def test_shutdown_stops_cleanly_once() -> None:
    m = master_b()
    actions = m.handle(Shutdown())
    assert stops(actions).clean and StopFollowing() in actions
    assert m.handle(Tick(100)) == [] and m.handle(Connected(100)) == []
