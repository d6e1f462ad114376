"""The typed status model (broker/server/status.py) and how Admin.Status carries it.

The words each report renders are pinned to what the layers wrote before the typed fields
existed: `netbroker up/status` and operators still read them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import pytest

from broker.config import BrokerConfig
from broker.pb import admin_pb2
from broker.server.admin import (
    LINK_STATES,
    ROLES,
    AdminService,
    bridge_pb,
    group_pb,
    link_state_of,
    role_of,
)
from broker.server.gate import ServiceGate
from broker.server.status import (
    BridgeStatus,
    ComponentStatus,
    GroupStatus,
    LinkState,
    ReplicaLag,
    Report,
    Role,
)
from masterslave.lockfile import LockfileMember
from netconnector.host import LinkHost
from netconnector.link import Link
from netconnector.uri import parse_connector
from tests.support.aio import run

# ---- the words -----------------------------------------------------------------------


def test_a_master_reports_epoch_position_and_in_sync_set() -> None:
    group = GroupStatus("B", Role.MASTER, epoch=3, position=1042, in_sync=("b", "c"))
    assert group.component() == ComponentStatus(
        "group", "B", "master", "epoch 3, position 1042, in-sync b,c"
    )


def test_a_slave_reports_its_master_position_and_last_error() -> None:
    group = GroupStatus(
        "B", Role.SLAVE, position=1040, master="b", master_address="127.0.0.1:61617"
    )
    assert group.component() == ComponentStatus(
        "group", "B", "slave", "master b at 127.0.0.1:61617, position 1040"
    )
    failing = GroupStatus(
        "B", Role.SLAVE, position=7, master="b", master_address="h:1",
        replication_error="UNAVAILABLE: gone",
    )  # fmt: skip
    assert (
        failing.detail() == "master b at h:1, position 7, last replication error: UNAVAILABLE: gone"
    )


def test_an_electing_member_says_why_it_waits() -> None:
    group = GroupStatus("B", Role.ELECTING, waiting="new group: waiting for 2 of 2 members")
    assert group.component() == ComponentStatus(
        "group", "B", "electing", "new group: waiting for 2 of 2 members"
    )


def test_a_lockfile_member_reports_its_lock(tmp_path: Path) -> None:
    config = BrokerConfig(name="b", port=1, data_dir=tmp_path / "b", group="B")
    member = LockfileMember(config, tmp_path / "shared", ServiceGate(), _NoHooks())
    [group] = member.status()
    assert group.component() == ComponentStatus(
        "group", "B", "slave", f"lock {tmp_path / 'shared' / 'master.lock'}"
    )


@pytest.mark.parametrize(
    ("bridge", "detail"),
    [
        (BridgeStatus("static:h:1", LinkState.CONNECTING), "-"),
        (BridgeStatus("static:h:1", LinkState.CONNECTING, address="h:1"), "h:1"),
        (
            BridgeStatus("static:h:1", LinkState.UP, peer="b", address="h:1", forwarded=12),
            "b@h:1, forwarded 12",
        ),
        (
            BridgeStatus(
                "static:h:1", LinkState.BACKOFF, address="h:1", last_error="UNAVAILABLE: no"
            ),
            "h:1, UNAVAILABLE: no",
        ),
        (
            # The peer stays known after the link dropped; no session, no count.
            BridgeStatus("static:h:1", LinkState.BACKOFF, peer="b", address="h:1", last_error="x"),
            "b@h:1, x",
        ),
        (BridgeStatus("from b", LinkState.UP, peer="b", inbound=True, received=7), "received 7"),
    ],
)
def test_a_bridge_reports_where_then_what(bridge: BridgeStatus, detail: str) -> None:
    assert bridge.component() == ComponentStatus("bridge", bridge.label, bridge.state.value, detail)


def test_a_link_reports_typed_values() -> None:
    link = Link(cast(LinkHost, None), parse_connector("static:(127.0.0.1:1)"), ("127.0.0.1:1",))
    assert link.status() == BridgeStatus("static:127.0.0.1:1", LinkState.CONNECTING)
    link.address, link.state, link.detail = "127.0.0.1:1", LinkState.BACKOFF, "refused"
    assert link.status().component().detail == "127.0.0.1:1, refused"


# ---- the wire ------------------------------------------------------------------------


def test_every_role_and_link_state_has_a_wire_value_and_back() -> None:
    assert set(ROLES) == set(Role) and set(LINK_STATES) == set(LinkState)
    for role, wire in ROLES.items():
        assert admin_pb2.Role.Name(wire) == f"ROLE_{role.name}"
        assert role_of(wire) is role
    for state, wire_state in LINK_STATES.items():
        assert admin_pb2.LinkState.Name(wire_state) == f"LINK_{state.name}"
        assert link_state_of(wire_state) is state
    assert role_of(admin_pb2.ROLE_UNKNOWN) is None
    assert link_state_of(admin_pb2.LINK_STATE_UNKNOWN) is None


def test_optional_numbers_are_absent_when_not_reported() -> None:
    electing = group_pb(GroupStatus("B", Role.ELECTING, waiting="starting"))
    assert not electing.HasField("epoch") and not electing.HasField("position")
    master = group_pb(GroupStatus("B", Role.MASTER, epoch=1, position=0, in_sync=("b",)))
    assert (master.epoch, master.position, list(master.in_sync)) == (1, 0, ["b"])
    assert master.HasField("position")  # position 0 is a position
    assert not bridge_pb(BridgeStatus("static:h:1", LinkState.CONNECTING)).HasField("forwarded")
    assert bridge_pb(BridgeStatus("x", LinkState.UP, forwarded=0)).HasField("forwarded")
    idle = bridge_pb(BridgeStatus("x", LinkState.UP, forwarded=0, unacknowledged=0))
    assert idle.HasField("unacknowledged") and idle.last_error_at == 0
    assert not bridge_pb(BridgeStatus("x", LinkState.BACKOFF)).HasField("unacknowledged")


def test_lags_and_elections_reach_the_wire() -> None:
    lags = (ReplicaLag("c", 5, 0.25), ReplicaLag("d", 9, math.inf))
    g = group_pb(GroupStatus("B", Role.MASTER, epoch=2, lags=lags, elections=3, became_master=2))
    assert [(x.follower, x.entries, x.seconds) for x in g.lags] == [
        ("c", 5, 0.25),
        ("d", 9, math.inf),
    ]
    assert (g.elections, g.became_master) == (3, 2)


def test_status_carries_words_and_fields() -> None:
    gate = ServiceGate()
    gate.close(Role.ELECTING, "broker b is electing")
    reports: list[Report] = [
        GroupStatus("B", Role.SLAVE, position=5, master="c", master_address="h:2"),
        BridgeStatus("static:h:1", LinkState.UP, peer="x", address="h:1", forwarded=3),
        BridgeStatus("from y", LinkState.UP, peer="y", inbound=True, received=4),
        ComponentStatus("discovery", "multicast://default", "advertised", "0 peers"),
    ]
    gate.sources.append(lambda: reports)
    service = AdminService(BrokerConfig(name="b", port=1, data_dir=Path("unused")), gate, 0)
    st = run(service.Status(admin_pb2.StatusRequest(), None))  # type: ignore[arg-type]
    assert (st.role, st.role_kind, st.refusal) == (
        "electing", admin_pb2.ROLE_ELECTING, "broker b is electing"
    )  # fmt: skip
    assert [(c.kind, c.name, c.state, c.detail) for c in st.components] == [
        ("group", "B", "slave", "master c at h:2, position 5"),
        ("bridge", "static:h:1", "up", "x@h:1, forwarded 3"),
        ("bridge", "from y", "up", "received 4"),
        ("discovery", "multicast://default", "advertised", "0 peers"),
    ]
    assert (st.group.role, st.group.master, st.group.master_address, st.group.position) == (
        admin_pb2.ROLE_SLAVE, "c", "h:2", 5
    )  # fmt: skip
    assert [(b.label, b.state, b.peer, b.inbound) for b in st.bridges] == [
        ("static:h:1", admin_pb2.LINK_UP, "x", False),
        ("from y", admin_pb2.LINK_UP, "y", True),
    ]


def test_a_standalone_broker_reports_no_group() -> None:
    gate = ServiceGate()
    service = AdminService(BrokerConfig(name="a", port=1, data_dir=Path("unused")), gate, 0)
    st = run(service.Status(admin_pb2.StatusRequest(), None))  # type: ignore[arg-type]
    assert (st.role, st.role_kind) == ("standalone", admin_pb2.ROLE_STANDALONE)
    assert not st.HasField("group") and not st.bridges and not st.components


class _NoHooks:
    def attach(self, broker: object) -> None:
        raise AssertionError("not promoted in this test")

    async def detach(self) -> None:
        raise AssertionError("not promoted in this test")
