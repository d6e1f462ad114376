"""Topology files cannot exhaust memory: alias bombs and huge files are refused fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from broker.cluster import loader
from broker.cluster.errors import TopologyError
from broker.cluster.loader import MAX_FILE_BYTES
from netconnector.uri import parse_connector

ROOT = Path(__file__).resolve().parents[2]


def bomb(levels: int = 9) -> str:
    """ab_c.yaml with a billion-laughs alias bomb in A's excludedDestinations."""
    lines = ['x0: &x0 ["q.a", "q.b", "q.c", "q.d", "q.e", "q.f", "q.g", "q.h", "q.i"]']
    for i in range(1, levels):
        refs = ", ".join([f"*x{i - 1}"] * 9)
        lines.append(f"x{i}: &x{i} [{refs}]")
    reference = (ROOT / "topologies" / "ab_c.yaml").read_text()
    text = reference.replace(
        '      - uri: "masterslave:(b,c)"\n',
        '      - uri: "masterslave:(b,c)"\n'
        f"        excludedDestinations: [{', '.join([f'*x{levels - 1}'] * 9)}]\n",
    )
    assert text != reference
    # Anchors must come before their aliases: put them under a key of their own first.
    header = "\n".join(f"  {line}" for line in lines)
    return f"anchors:\n{header}\n{text}"


def test_alias_bomb_is_refused_quickly_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    started = time.monotonic()
    with pytest.raises(TopologyError) as caught:
        loader.load(path, parse_connector)
    took = time.monotonic() - started
    print(f"alias bomb refused in {took * 1000:.1f} ms: {caught.value}")
    assert took < 1.0
    message = str(caught.value)
    assert message.startswith(f"{path}: groups.A.connectors[0].excludedDestinations: ")
    assert "alias" in message


def test_moderate_aliases_still_load(tmp_path: Path) -> None:
    """Anchors and merges for shared settings are ordinary YAML and stay accepted."""
    reference = (ROOT / "topologies" / "ab_c.yaml").read_text()
    text = reference.replace(
        '      - uri: "masterslave:(b,c)"\n',
        '      - uri: "masterslave:(b,c)"\n'
        '        excludedDestinations: &ex ["audit.>", "tmp.*"]\n',
    ).replace(
        '      - uri: "static:(a)"\n',
        '      - uri: "static:(a)"\n        excludedDestinations: *ex\n',
    )
    assert text.count("excludedDestinations") == 2
    path = tmp_path / "aliases.yaml"
    path.write_text(text)
    t = loader.load(path, parse_connector)
    assert all(
        c.options.get("excludedDestinations") == ["audit.>", "tmp.*"]
        for g in t.groups
        for c in g.connectors
    )


def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    started = time.monotonic()
    with pytest.raises(TopologyError) as caught:
        loader.load(path, parse_connector)
    print(f"{caught.value} ({(time.monotonic() - started) * 1000:.1f} ms)")
    assert str(caught.value).startswith(f"{path}: is ")
    assert "at most" in str(caught.value)
