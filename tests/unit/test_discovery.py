"""Discovery's pure parts: TXT records, instance names, advertised addresses, and the
selector that decides which discovered brokers to bridge to."""

from __future__ import annotations

import pytest

from discovery.records import (
    SERVICE_TYPE,
    Advert,
    BadRecord,
    advertised_hosts,
    check_interfaces,
    format_address,
    token_digest,
)
from discovery.selection import Me, PeerSelector, Sighting

ME = Me(broker="a", group="A", discovery_group="default", token_digest="", protocol=1)


def advert(broker: str, group: str = "", **kw: object) -> Advert:
    fields: dict[str, object] = {
        "role": "standalone",
        "discovery_group": "default",
        "protocol": 1,
        "token_digest": "",
        "incarnation": "1",
    }
    fields.update(kw)
    return Advert(broker=broker, group=group, **fields)  # type: ignore[arg-type]


def sighting(broker: str, group: str = "", address: str = "", **kw: object) -> Sighting:
    ad = advert(broker, group, **kw)
    addresses = (address,) if address else (f"127.0.0.1:{1000 + len(broker)}",)
    return Sighting(ad.instance_name, ad, addresses)


# -- records -------------------------------------------------------------------------


def test_txt_round_trip_as_zeroconf_decodes_it() -> None:
    ad = advert("b", "B", role="master", token_digest=token_digest("s3cret"), incarnation="ab12")
    txt = ad.txt()
    assert txt["txtvers"] == "1" and txt["dgroup"] == "default" and txt["proto"] == "1"
    assert "s3cret" not in "".join(txt.values())
    assert Advert.from_txt(txt) == ad
    # zeroconf hands over bytes (properties) or str (decoded_properties)
    assert Advert.from_txt({k.encode(): v.encode() for k, v in txt.items()}) == ad


def test_no_token_leaves_the_key_out() -> None:
    assert "token" not in advert("b").txt()
    assert token_digest("") == ""
    assert token_digest("x") != token_digest("y") and len(token_digest("x")) == 16


@pytest.mark.parametrize(
    ("txt", "reason"),
    [
        ({}, "TXT version"),
        ({"txtvers": "2", "broker": "b"}, "TXT version '2'"),
        ({"txtvers": "1", "role": "master", "dgroup": "d", "proto": "1"}, "without 'broker'"),
        ({"txtvers": "1", "broker": "b", "role": "m", "dgroup": "d", "proto": "x"}, "protocol"),
        (
            {"txtvers": "1", "broker": "b", "role": "m", "dgroup": "d", "proto": "1", "token": "Z"},
            "token digest",
        ),
    ],
)
def test_foreign_or_damaged_records_are_refused(txt: dict[str, str], reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        Advert.from_txt(txt)


def test_instance_names_are_stable_short_labels() -> None:
    assert advert("b").instance_name == f"b@default.{SERVICE_TYPE}"
    # a restart (new incarnation) keeps the name, so it replaces its stale record
    assert advert("b", incarnation="2").instance_name == advert("b").instance_name
    # another cluster's "b" on the same segment gets another name
    assert advert("b", token_digest=token_digest("t")).instance_name != advert("b").instance_name
    long = advert("x" * 64, discovery_group="eu-west.prod").instance_name
    label = long.removesuffix("." + SERVICE_TYPE)
    assert "." not in label and len(label) <= 63


def test_interfaces_must_be_ip_addresses() -> None:
    assert check_interfaces(["127.0.0.1", " 10.0.0.1", "127.0.0.1"]) == ("127.0.0.1", "10.0.0.1")
    with pytest.raises(ValueError, match="not an IP address"):
        check_interfaces(["eth0"])
    with pytest.raises(ValueError, match="no discovery interface"):
        check_interfaces([])


def test_advertised_hosts() -> None:
    assert advertised_hosts("127.0.0.1", ["127.0.0.1"]) == ("127.0.0.1",)
    assert advertised_hosts("0.0.0.0", ["10.0.0.1", "10.1.0.1"]) == ("10.0.0.1", "10.1.0.1")
    assert advertised_hosts("10.0.0.1", ["10.0.0.1"]) == ("10.0.0.1",)
    # a loopback listener advertised to the LAN would send peers to their own loopback
    with pytest.raises(ValueError, match=r"listen on 0\.0\.0\.0 or on 10\.0\.0\.1"):
        advertised_hosts("127.0.0.1", ["10.0.0.1"])
    with pytest.raises(ValueError, match="host name"):
        advertised_hosts("localhost", ["127.0.0.1"])
    assert format_address("::1", 5) == "[::1]:5" and format_address("10.0.0.1", 5) == "10.0.0.1:5"


# -- selection -----------------------------------------------------------------------


def targets(selector: PeerSelector) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {k: (t.broker, t.addresses) for k, t in selector.targets().items()}


def test_eligible_peers_become_targets_by_group() -> None:
    s = PeerSelector(ME)
    s.seen(sighting("b", "B", "h:1"))
    s.seen(sighting("c", "", "h:2"))
    assert targets(s) == {"B": ("b", ("h:1",)), "c": ("c", ("h:2",))}
    assert s.refused == {}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (sighting("b", "B", discovery_group="other"), None),  # not ours: not even listed
        (sighting("a", "X"), None),  # this broker's own record
        (sighting("a2", "A"), "a member of this broker's group 'A'"),
        (sighting("b", "B", token_digest=token_digest("t")), "another cluster"),
        (sighting("b", "B", protocol=2), "bridge protocol 2; this broker speaks 1"),
        (sighting("b", "B", role="slave"), "role 'slave'"),
        (Sighting("b@default", advert("b", "B"), ()), "no address"),
    ],
)
def test_ineligible_records(record: Sighting, reason: str | None) -> None:
    s = PeerSelector(ME)
    s.seen(record)
    assert s.targets() == {}
    if reason is None:
        assert s.refused == {}
    else:
        (refusal,) = s.refused.values()
        assert refusal.startswith(f"{record.advert.broker}: {reason}")


def test_matching_token_is_eligible_and_a_missing_one_is_not() -> None:
    digest = token_digest("cluster-1")
    s = PeerSelector(Me("a", "A", "default", digest, 1))
    s.seen(sighting("b", "B", token_digest=digest))
    s.seen(sighting("c", "C"))
    assert list(targets(s)) == ["B"]
    assert "another cluster" in s.refused[sighting("c", "C").instance]


def test_a_standalone_broker_outside_any_group_excludes_only_itself() -> None:
    s = PeerSelector(Me("a", "", "default", "", 1))
    s.seen(sighting("b", ""))
    s.seen(sighting("a", ""))
    assert list(targets(s)) == ["b"]


def test_removal_and_a_change_of_address() -> None:
    s = PeerSelector(ME)
    b = sighting("b", "B", "h:1")
    s.seen(b)
    s.seen(sighting("b", "B", "h:9", incarnation="2"))  # restarted elsewhere, same name
    assert targets(s) == {"B": ("b", ("h:9",))}
    s.gone(b.instance)
    assert targets(s) == {}
    s.gone("never-seen")  # a removal of an unknown record is harmless


def test_a_record_turning_ineligible_leaves_the_targets() -> None:
    s = PeerSelector(ME)
    s.seen(sighting("b", "B"))
    s.seen(sighting("b", "B", protocol=7))
    assert s.targets() == {}
    s.seen(sighting("b", "B"))
    assert list(s.targets()) == ["B"] and s.refused == {}


def test_the_group_s_latest_record_wins_and_the_older_one_is_the_fallback() -> None:
    s = PeerSelector(ME)
    b = sighting("b", "B", "h:1", role="master")
    c = sighting("c", "B", "h:2", role="master")
    s.seen(b)  # b was master, then was killed: its record lingers in the cache
    s.seen(c)  # c took over
    assert targets(s) == {"B": ("c", ("h:2",))}
    s.seen(b)  # b is master again (it advertises anew)
    assert targets(s) == {"B": ("b", ("h:1",))}
    s.gone(b.instance)  # b withdrew: c's record is the one left to try
    assert targets(s) == {"B": ("c", ("h:2",))}


def test_two_records_at_one_address_are_one_broker() -> None:
    s = PeerSelector(ME)
    s.seen(sighting("old", "", "h:1"))  # renamed and restarted on the same port
    s.seen(sighting("new", "", "h:1"))
    s.seen(sighting("other", "", "h:2"))
    assert targets(s) == {"new": ("new", ("h:1",)), "other": ("other", ("h:2",))}
