"""The member role machine, driven directly: events in, actions out, time passed in."""

from __future__ import annotations

from collections.abc import Sequence

from broker.server.status import Role
from masterslave.election import Elect, IsrState, Member, Wait
from masterslave.role import (
    Alive,
    Connected,
    Fenced,
    Follow,
    GroupRead,
    Lost,
    MasterGone,
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


# ---- a master seen dead (MasterGone) ------------------------------------------------------


def slave_c(*, fast_takeover: bool = True, in_sync: bool = True) -> MemberRole:
    """c, a slave following b (node 1, elected for epoch 2), c in sync unless told."""
    m = MemberRole("c", "B", 2, 1.0, grace=0.8, fast_takeover=fast_takeover)
    m.handle(Connected(0))
    m.handle(Registered())
    state = isr("b", 2, "c") if in_sync else isr("b", 2)
    actions = m.handle(view(member("b", 1, 2), member("c", 2), state=state))
    assert actions[0] == Follow(member("b", 1, 2), 2)
    assert m.role == Role.SLAVE
    return m


def test_a_slave_seeing_its_master_dead_takes_over_before_the_session_expires() -> None:
    m = slave_c()
    assert m.handle(MasterGone(1)) == [ReadGroup()]
    # b's node is still there, still elected: only the fact that it is dead moves c.
    state = isr("b", 2, "c")
    actions = m.handle(view(member("b", 1, 2), member("c", 2), state=state))
    assert actions == [StopFollowing(), TakeOver(state, 3, 1)]
    assert m.handle(MasterGone(1)) == []  # no longer following anyone
    m.handle(Alive(0.5))
    assert m.handle(TookOver(3)) == [Serve(3), UpdateNode(), WakeAt(1.3)]
    assert m.role == Role.MASTER


def test_a_dead_master_is_only_replaced_by_an_in_sync_member() -> None:
    m = slave_c(in_sync=False)
    assert m.handle(MasterGone(1)) == [ReadGroup()]
    # c may lack writes b acknowledged alone: it keeps trying to follow, and waits.
    assert m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2))) == []
    assert m.role == Role.SLAVE
    assert isinstance(m.decision, Wait) and "no in-sync member present" in m.decision.reason


def test_master_gone_about_another_node_is_ignored() -> None:
    m = slave_c()
    assert m.handle(MasterGone(7)) == []  # not the node c follows (an older one, say)
    assert m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c"))) == []
    assert m.role == Role.SLAVE


def test_master_gone_is_not_trusted_without_a_quorum_sync_mode() -> None:
    # Under local_* the master acknowledges without its slaves: only the session's
    # expiry keeps two masters from overlapping.
    m = slave_c(fast_takeover=False)
    assert m.handle(MasterGone(1)) == []
    assert m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c"))) == []
    assert m.role == Role.SLAVE


def test_master_gone_means_nothing_to_a_master() -> None:
    m = master_b()
    assert m.handle(MasterGone(2)) == []
    assert m.role == Role.MASTER


def test_a_dead_master_loses_a_version_race_like_any_other() -> None:
    # c's in-sync write meets a version conflict: b had shrunk the set before dying.
    m = slave_c()
    m.handle(MasterGone(1))
    m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c")))
    assert m.handle(TakeOverFailed("another member took over first")) == [ReadGroup()]
    actions = m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2)))
    assert [type(a) for a in actions] == [Refuse]
    assert isinstance(m.decision, Wait) and m.role == Role.ELECTING


def test_the_dead_fact_ends_with_the_node() -> None:
    m = slave_c(in_sync=False)
    m.handle(MasterGone(1))
    m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2)))
    assert m.dead == {1}
    # b's session expired (node 1 gone) and b came back as node 3, not elected yet.
    m.handle(view(member("c", 2), member("b", 3), state=isr("b", 2)))
    assert m.dead == set()
    assert isinstance(m.decision, Elect) and m.decision.member_id == "b"


def test_group_of_three_waits_for_the_better_member_to_take_over() -> None:
    m = MemberRole("c", "B", 3, 1.0, grace=0.8)
    m.handle(Connected(0))
    m.handle(Registered())
    a, b, c = member("a", 1, 2, position=50), member("b", 2, position=40), member("c", 3)
    state = IsrState(2, "a", frozenset({"a", "b", "c"}), ((2, 0),))
    assert m.handle(view(a, b, c, state=state))[0] == Follow(a, 2)
    assert m.handle(MasterGone(1)) == [ReadGroup()]
    # b holds the longer log: c goes on following (trying to) until b has taken over.
    assert m.handle(view(a, b, c, state=state)) == []
    assert m.waiting_reason == "waiting for b to take over" and m.role == Role.SLAVE
    new = IsrState(3, "b", frozenset({"b"}), ((2, 0), (3, 40)))
    actions = m.handle(view(a, b, c, state=new))
    assert actions[0] == Follow(b, 3) and m.master == b


def test_elections_count_each_new_epoch_entered_and_the_ones_won() -> None:
    m = slave_c()
    assert (m.elections, m.became_master) == (1, 0)  # joined b's epoch 2
    # The same master again after a stream blip is no new election.
    m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c")))
    assert (m.elections, m.became_master) == (1, 0)
    m.handle(MasterGone(1))
    m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c")))
    m.handle(Alive(0.5))
    m.handle(TookOver(3))
    assert (m.elections, m.became_master) == (2, 1)
    # Fenced by a newer master, c follows it: one more, not won.
    m.handle(view(member("b", 3, 4), member("c", 2, 3), state=isr("b", 4, "c")))
    assert m.role == Role.SLAVE
    assert (m.elections, m.became_master) == (3, 1)


def test_a_master_re_elected_counts_each_win() -> None:
    m = master_b(epoch=2)
    assert (m.elections, m.became_master) == (1, 1)
    m.handle(Suspended(10.3))
    m.handle(Tick(10.8))
    m.handle(Connected(11.0))
    m.handle(view(member("b", 1, 2), member("c", 2), state=isr("b", 2, "c")))
    m.handle(Alive(11.1))
    m.handle(TookOver(3))
    assert (m.elections, m.became_master) == (2, 2)
