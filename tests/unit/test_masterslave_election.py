"""Unit tests for the election rule and the ZooKeeper node data (masterslave.election)."""

from __future__ import annotations

import json

import pytest

from masterslave.election import (
    Elect,
    IsrState,
    Keep,
    Member,
    Wait,
    choose_master,
    epoch_span,
    fresh_quorum,
    latest_nodes,
    min_insync_default,
    parse_seq,
)


def member(
    id: str,
    position: int = 0,
    *,
    epoch: int = 1,
    weight: int = 1,
    seq: int | None = None,
    elected: int | None = None,
) -> Member:
    return Member(
        id=id,
        address=f"127.0.0.1:{62000 + ord(id[0])}",
        client=f"127.0.0.1:{61000 + ord(id[0])}",
        position=position,
        epoch=epoch,
        weight=weight,
        seq=ord(id[0]) if seq is None else seq,
        elected=elected,
    )


def isr(master: str, *members: str, epoch: int = 4) -> IsrState:
    history = tuple((e, 100 * e) for e in range(1, epoch + 1))
    return IsrState(epoch, master, frozenset({master, *members}), history)


# ---- choose_master: in-sync groups ---------------------------------------------------


def test_highest_position_wins() -> None:
    members = [member("a", 10), member("b", 30), member("c", 20)]
    assert choose_master(members, isr("a", "b", "c"), 3) == Elect("b")


def test_equal_positions_then_higher_weight() -> None:
    members = [member("a", 30, weight=1), member("b", 30, weight=5), member("c", 29, weight=9)]
    assert choose_master(members, isr("a", "b", "c"), 3) == Elect("b")


def test_equal_position_and_weight_then_older_node() -> None:
    members = [member("a", 30, seq=7), member("b", 30, seq=3), member("c", 30, seq=5)]
    assert choose_master(members, isr("a", "b", "c"), 3) == Elect("b")


def test_input_order_does_not_matter() -> None:
    members = [member("a", 30, seq=7), member("b", 30, seq=3), member("c", 30, seq=5)]
    state = isr("a", "b", "c")
    assert choose_master(members[::-1], state, 3) == choose_master(members, state, 3)


def test_never_a_member_outside_the_in_sync_set() -> None:
    # c has the highest position and weight, but is not in sync: it may lack writes the
    # master acknowledged (its high position could be an unacknowledged divergent tail).
    members = [member("b", 10), member("c", 999, weight=100, seq=0)]
    assert choose_master(members, isr("a", "b"), 3) == Elect("b")


def test_wait_with_reason_when_no_in_sync_member_is_present() -> None:
    decision = choose_master([member("c", 5000)], isr("b"), 2)
    assert isinstance(decision, Wait)
    assert decision.reason.startswith("no in-sync member present (in-sync: b; present: c)")


def test_wait_reason_lists_sorted_ids_and_none() -> None:
    decision = choose_master([], isr("b", "a"), 2)
    assert isinstance(decision, Wait)
    assert "(in-sync: a, b; present: none)" in decision.reason


def test_pair_fails_over_to_in_sync_slave_alone() -> None:
    # The refinement over ActiveMQ's replicas/2+1 rule: one member of a pair is enough
    # when it is in sync.
    assert choose_master([member("c", 5)], isr("b", "c"), 2) == Elect("c")


def test_keep_a_live_elected_master() -> None:
    members = [member("b", 10, elected=4), member("c", 999)]
    assert choose_master(members, isr("b", "c", epoch=4), 2) == Keep("b")


def test_elected_for_an_older_epoch_is_not_kept() -> None:
    # b claims epoch 3 but the in-sync node is at 4: b is not the master of this epoch.
    members = [member("b", 10, elected=3), member("c", 20)]
    assert choose_master(members, isr("b", "c", epoch=4), 2) == Elect("c")


def test_elected_member_that_is_not_the_isr_master_is_not_kept() -> None:
    members = [member("b", 10), member("c", 5, elected=4)]
    assert choose_master(members, isr("b", "c", epoch=4), 2) == Elect("b")


def test_master_between_writing_isr_and_marking_itself_is_elected_again() -> None:
    # The winner wrote the new epoch (in-sync: itself) but has not yet set `elected`:
    # every member still names it, so nobody else acts.
    members = [member("b", 10), member("c", 999)]
    assert choose_master(members, isr("b", epoch=5), 2) == Elect("b")


def test_newest_node_of_a_restarted_member_counts() -> None:
    # b was master (epoch 4), was killed and restarted before its old session expired.
    # The old node still says elected=4; the new one must not be "kept" as master.
    old = member("b", 50, seq=1, elected=4)
    new = member("b", 40, seq=9)
    c = member("c", 45, seq=2)
    assert choose_master([old, new, c], isr("b", "c"), 2) == Elect("c")


def test_dead_master_with_live_session_is_kept() -> None:
    # ZooKeeper cannot tell yet: until the session expires the node stands.
    members = [member("b", 50, seq=1, elected=4), member("c", 45, seq=2)]
    assert choose_master(members, isr("b", "c"), 2) == Keep("b")


def test_newer_epoch_beats_longer_older_tail() -> None:
    # Only reachable without an in-sync node, but the ranking is shared: c holds the
    # newer lineage; b's longer log ends in a tail of an older epoch.
    members = [member("b", 2001, epoch=4), member("c", 1995, epoch=5)]
    assert choose_master(members, None, 2) == Elect("c")


# ---- choose_master: fresh groups -----------------------------------------------------


@pytest.mark.parametrize(("replicas", "needed"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_fresh_quorum(replicas: int, needed: int) -> None:
    assert fresh_quorum(replicas) == needed


def test_fresh_group_waits_for_majority() -> None:
    decision = choose_master([member("a", 7)], None, 3)
    assert isinstance(decision, Wait)
    assert "2 of 3" in decision.reason
    assert "present: a" in decision.reason


def test_fresh_pair_needs_both_members() -> None:
    assert isinstance(choose_master([member("b")], None, 2), Wait)
    assert choose_master([member("b", seq=2), member("c", seq=1)], None, 2) == Elect("c")


def test_fresh_single_member_group_elects_itself() -> None:
    assert choose_master([member("a")], None, 1) == Elect("a")


def test_fresh_group_duplicates_of_one_id_count_once() -> None:
    decision = choose_master([member("a", seq=1), member("a", seq=2)], None, 3)
    assert isinstance(decision, Wait)


def test_fresh_group_with_majority_picks_most_up_to_date() -> None:
    members = [member("a", 5), member("b", 9)]
    assert choose_master(members, None, 3) == Elect("b")


def test_replicas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="replicas"):
        choose_master([member("a")], None, 0)


# ---- min_insync_default ------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "expected"), [(1, 1), (2, 1), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)]
)
def test_min_insync_default(replicas: int, expected: int) -> None:
    assert min_insync_default(replicas) == expected


def test_min_insync_default_rejects_zero() -> None:
    with pytest.raises(ValueError):
        min_insync_default(0)


# ---- Member ------------------------------------------------------------------------


def test_member_parse_design_example_and_roundtrip() -> None:
    raw = (
        b'{"id": "b", "address": "127.0.0.1:62621", "client": "127.0.0.1:61617",'
        b' "position": 1042, "epoch": 3, "weight": 1, "elected": null}'
    )
    m = Member.parse(raw, 12)
    assert m == Member("b", "127.0.0.1:62621", "127.0.0.1:61617", 1042, 3, 1, 12, None)
    assert Member.parse(m.to_bytes(), 12) == m
    assert "seq" not in json.loads(m.to_bytes())


def test_member_parse_defaults_epoch_and_weight() -> None:
    m = Member.parse(b'{"id":"b","address":"x:1","client":"x:2","position":0}', 3)
    assert (m.epoch, m.weight, m.elected) == (0, 1, None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"address":"x:1","client":"x:2","position":0}', "'id'"),
        (b'{"id":"b","address":"x:1","client":"x:2","position":"7"}', "'position'"),
        (b'{"id":"b","address":"x:1","client":"x:2","position":true}', "'position'"),
        (b'{"id":"b","address":"x:1","client":"x:2","position":-1}', "'position'"),
        (b'{"id":"b","address":"x:1","client":"x:2","position":0,"elected":0}', "'elected'"),
        (b'{"id":"b","address":"","client":"x:2","position":0}', "'address'"),
    ],
)
def test_member_parse_rejects_malformed(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Member.parse(raw, 1)


def test_parse_seq() -> None:
    assert parse_seq("m-0000000012") == 12
    assert parse_seq("/netbroker/groups/B/members/m-0000000007") == 7
    with pytest.raises(ValueError):
        parse_seq("m-12")


def test_latest_nodes_keeps_highest_seq() -> None:
    nodes = latest_nodes([member("b", seq=5), member("b", seq=9), member("c", seq=1)])
    assert nodes["b"].seq == 9
    assert set(nodes) == {"b", "c"}


# ---- IsrState ----------------------------------------------------------------------


EXAMPLE = b'{"epoch": 4, "master": "b", "isr": ["b", "c"], "history": [[1, 0], [2, 530], [3, 1042], [4, 2001]]}'  # noqa: E501


def test_isr_parse_example_and_roundtrip() -> None:
    state = IsrState.parse(EXAMPLE)
    assert state == IsrState(
        4, "b", frozenset({"b", "c"}), ((1, 0), (2, 530), (3, 1042), (4, 2001))
    )
    assert IsrState.parse(state.to_bytes()) == state


def test_isr_to_bytes_is_deterministic() -> None:
    a = IsrState(1, "b", frozenset({"c", "b", "d"}), ((1, 0),))
    b = IsrState(1, "b", frozenset({"d", "b", "c"}), ((1, 0),))
    assert a.to_bytes() == b.to_bytes()
    assert json.loads(a.to_bytes())["isr"] == ["b", "c", "d"]


def test_start_and_end_of_epochs() -> None:
    state = IsrState.parse(EXAMPLE)
    assert state.start_of(3) == 1042
    assert state.end_of(3) == 2001
    assert state.start_of(4) == 2001
    assert state.end_of(4) is None
    with pytest.raises(KeyError):
        state.start_of(9)
    with pytest.raises(KeyError):
        state.end_of(9)


def test_epoch_span_uses_lowest_later_start() -> None:
    # Epoch 6 began below epoch 5's start (its master had lost an in-memory tail), so
    # epoch 4 really ends at 1995, not at 2001.
    history = [(4, 1042), (5, 2001), (6, 1995)]
    assert epoch_span(history, 4) == (1042, 1995)
    assert epoch_span(history, 5) == (2001, 1995)
    assert epoch_span(history, 6) == (1995, None)
    assert epoch_span(history, 3) is None


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"master": "b", "isr": ["b"], "history": [[1, 0]]}, "'epoch'"),
        ({"epoch": 0, "master": "b", "isr": ["b"], "history": [[0, 0]]}, "'epoch'"),
        ({"epoch": 1, "isr": ["b"], "history": [[1, 0]]}, "'master'"),
        ({"epoch": 1, "master": "b", "isr": "b", "history": [[1, 0]]}, "'isr'"),
        ({"epoch": 1, "master": "b", "isr": ["b", 3], "history": [[1, 0]]}, "'isr'"),
        ({"epoch": 1, "master": "b", "isr": ["b", "b"], "history": [[1, 0]]}, "twice"),
        ({"epoch": 1, "master": "b", "isr": ["c"], "history": [[1, 0]]}, "not in the in-sync"),
        ({"epoch": 1, "master": "b", "isr": ["b"]}, "'history'"),
        ({"epoch": 1, "master": "b", "isr": ["b"], "history": []}, "history is empty"),
        ({"epoch": 1, "master": "b", "isr": ["b"], "history": [[1]]}, "history entry"),
        ({"epoch": 1, "master": "b", "isr": ["b"], "history": [[1, "0"]]}, "history entry"),
        ({"epoch": 2, "master": "b", "isr": ["b"], "history": [[2, 5], [2, 6]]}, "increase"),
        ({"epoch": 2, "master": "b", "isr": ["b"], "history": [[1, 0]]}, "current 2"),
        ({"epoch": 1, "master": "b", "isr": ["b"], "history": [[1, -1]]}, "bad history"),
    ],
)
def test_isr_parse_rejects_malformed(obj: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IsrState.parse(json.dumps(obj).encode())


def test_isr_parse_rejects_non_json() -> None:
    with pytest.raises(ValueError, match="isr node: not valid JSON"):
        IsrState.parse(b"\xff\xfe")


# -- a member whose store was reset after damage ------------------------------------


def _node(mid: str, seq: int, position: int, resync: bool = False) -> Member:
    return Member(mid, f"127.0.0.1:{7000 + seq}", f"127.0.0.1:{8000 + seq}", position, 1, 1, seq,
                  resync=resync)  # fmt: skip


def test_a_resyncing_member_is_never_elected_even_when_the_isr_lists_it() -> None:
    isr = IsrState(1, "b", frozenset({"b", "c"}), ((1, 0),))
    # b (the master) is gone; c is in the stale in-sync set but its store was reset.
    decision = choose_master([_node("c", 2, 1, resync=True)], isr, replicas=2)
    assert isinstance(decision, Wait)
    assert "re-syncing" in decision.reason
    # Once its bulk copy is complete it is an ordinary in-sync member again.
    assert choose_master([_node("c", 2, 5000)], isr, replicas=2) == Elect("c")


def test_a_resyncing_member_does_not_win_over_an_in_sync_one() -> None:
    isr = IsrState(1, "a", frozenset({"a", "b", "c"}), ((1, 0),))
    members = [_node("b", 2, 10), _node("c", 3, 10**9, resync=True)]
    assert choose_master(members, isr, replicas=3) == Elect("b")


def test_a_fresh_group_does_not_elect_a_resyncing_member() -> None:
    members = [_node("b", 1, 0), _node("c", 2, 1, resync=True)]
    assert choose_master(members, None, replicas=2) == Elect("b")
    assert isinstance(choose_master([_node("c", 2, 1, resync=True)], None, replicas=1), Wait)


def test_resync_flag_round_trips_and_is_absent_when_unset() -> None:
    flagged = _node("c", 2, 1, resync=True)
    assert Member.parse(flagged.to_bytes(), 2) == flagged
    plain = _node("c", 2, 1)
    assert b"resync" not in plain.to_bytes()
    assert Member.parse(plain.to_bytes(), 2) == plain
    with pytest.raises(ValueError, match="resync"):
        Member.parse(b'{"id":"c","address":"x","client":"y","position":1,"resync":1}', 2)


# ---- choose_master: a master known dead ------------------------------------------------


def test_a_dead_master_still_claiming_elected_is_replaced_by_an_in_sync_member() -> None:
    # a was killed; its session has not expired, so its node is there and says elected.
    members = [member("a", 50, seq=1, elected=4), member("b", 40, seq=2)]
    assert choose_master(members, isr("a", "b"), 2) == Keep("a")
    assert choose_master(members, isr("a", "b"), 2, dead={1}) == Elect("b")


def test_a_dead_master_with_nobody_else_in_sync_leaves_the_group_waiting() -> None:
    # b may lack writes a acknowledged alone: knowing a dead changes nothing about that.
    members = [member("a", 50, seq=1, elected=4), member("b", 40, seq=2)]
    decision = choose_master(members, isr("a"), 2, dead={1})
    assert isinstance(decision, Wait) and "no in-sync member present" in decision.reason


def test_knowing_the_master_dead_never_elects_outside_the_in_sync_set() -> None:
    members = [
        member("a", 50, seq=1, elected=4),
        member("b", 10, seq=2),
        member("c", 999, weight=100, seq=0),
    ]
    assert choose_master(members, isr("a", "b"), 3, dead={1}) == Elect("b")


def test_group_of_three_with_a_dead_master_ranks_the_other_in_sync_members() -> None:
    members = [member("a", 50, seq=1, elected=4), member("b", 30, seq=2), member("c", 40, seq=3)]
    assert choose_master(members, isr("a", "b", "c"), 3, dead={1}) == Elect("c")


def test_a_dead_node_of_an_id_hides_its_older_nodes_too() -> None:
    # a's newest node is dead; an older node of a (an even older session) must not stand in.
    members = [member("a", 50, seq=1, elected=4), member("a", 50, seq=5), member("b", 40, seq=2)]
    assert choose_master(members, isr("a", "b"), 2, dead={5}) == Elect("b")


def test_a_restarted_member_is_not_dead_with_its_old_node() -> None:
    # a died (node 1) and came back (node 5, not elected): the new process counts.
    members = [member("a", 50, seq=1, elected=4), member("a", 60, seq=5), member("b", 40, seq=2)]
    assert choose_master(members, isr("a", "b"), 2, dead={1}) == Elect("a")


def test_dead_nodes_count_as_absent_in_a_fresh_group() -> None:
    members = [member("a", seq=1), member("b", seq=2)]
    assert choose_master(members, None, 2) == Elect("a")
    assert isinstance(choose_master(members, None, 2, dead={1}), Wait)  # 1 of 2 present
    three = [*members, member("c", seq=3)]
    assert choose_master(three, None, 3, dead={1}) == Elect("b")
