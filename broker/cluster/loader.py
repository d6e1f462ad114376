"""Reading a topology file: bounded, safe YAML, then the schema.

`load(path, ...)` is the only function that touches the file system. The YAML loader
refuses arbitrary objects, a key given twice in one mapping (plain loaders keep the last
silently) and alias bombs; a file larger than MAX_FILE_BYTES is not read at all. Syntax
errors become TopologyErrors naming file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from broker.cluster.errors import TopologyError, key_path
from broker.cluster.model import ConnectorParser, Topology
from broker.cluster.schema import validate


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys.

    Plain YAML loaders keep the last of two equal keys silently, which would make a
    second broker `b:` in a group quietly replace the first.
    """


class _DuplicateKey(yaml.constructor.ConstructorError):
    """Valid YAML, but a key given twice in one mapping."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges; explicit keys may override merged ones
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:
            continue  # unhashable key: construct_mapping reports it
        if first != key_node.start_mark.line:
            raise _DuplicateKey(
                None,
                None,
                f"duplicate key {key!r} (first at line {first + 1})",
                key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# A topology is a few hundred nodes; aliases (`*defaults`, merges) may repeat some of
# them, but a document that expands past this is an alias bomb, refused before anything
# walks it (one of nine nested lists of nine took 55 s to exhaust memory).
MAX_EXPANDED_NODES = 100_000
# A topology file is a few KiB; this bounds what the parser is ever handed.
MAX_FILE_BYTES = 1024 * 1024


class _AliasBomb(Exception):
    def __init__(self, key: str, size: int) -> None:
        super().__init__(key)
        self.key = key
        self.size = size


def _children(node: yaml.Node) -> list[tuple[str | int | None, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[str | int | None, yaml.Node]] = []
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else None
            out += [(None, k), (name, v)]
        return out
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Nodes each node stands for once every alias is expanded, by id(node).

    The composer hands an alias the very node its anchor names, so memoising by identity
    makes this linear in the document, whatever the expansion. (A recursive alias
    cannot occur: PyYAML refuses it while composing.)
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids = [child for _, child in _children(node)]
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in kids)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in kids if id(child) not in sizes)
    return sizes


def _check_expansion(root: yaml.Node) -> None:
    sizes = _expanded_sizes(root)
    total = sizes[id(root)]
    if total <= MAX_EXPANDED_NODES:
        return
    # Name the innermost key whose value alone is too large: where the bomb is.
    path: list[str | int] = []
    node = root
    while True:
        worst = max(
            ((name, child) for name, child in _children(node) if name is not None),
            key=lambda item: sizes[id(item[1])],
            default=None,
        )
        if worst is None or sizes[id(worst[1])] <= MAX_EXPANDED_NODES:
            break
        path.append(worst[0])
        node = worst[1]
    while path and isinstance(path[-1], int):
        path.pop()  # the key names the bomb; list indices inside it say nothing more
    raise _AliasBomb(key_path(tuple(path)), total)


class _CheckedLoader(_Loader):
    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return self.construct_document(node)


def parse(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors become TopologyErrors naming file and line."""
    try:
        # A SafeLoader subclass: no arbitrary objects, no duplicate keys, no alias bombs.
        return yaml.load(text, Loader=_CheckedLoader)
    except _AliasBomb as e:
        raise TopologyError(
            source,
            e.key or None,
            f"aliases expand to more than {MAX_EXPANDED_NODES:,} YAML nodes "
            f"({e.size:,}): refusing an alias bomb",
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        reason = e.problem or e.context or "not valid"
        if not isinstance(e, _DuplicateKey):
            reason = f"invalid YAML: {reason}"
        if mark is None:
            raise TopologyError(source, None, reason) from None
        raise TopologyError(
            source, None, reason, line=mark.line + 1, column=mark.column + 1
        ) from None
    except yaml.YAMLError as e:
        raise TopologyError(source, None, f"invalid YAML: {e}") from None


def load(path: str | Path, parse_connector: ConnectorParser) -> Topology:
    """Read, parse and validate a topology file. Raises TopologyError."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES and Path(path).is_file():
            raise TopologyError(
                source,
                None,
                f"is {size:,} bytes; a topology file may be at most {MAX_FILE_BYTES:,}",
            )
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(source, None, "no such file") from None
    except IsADirectoryError:
        raise TopologyError(source, None, "is a directory, not a topology file") from None
    except UnicodeDecodeError:
        raise TopologyError(source, None, "not UTF-8 text") from None
    except OSError as e:
        raise TopologyError(source, None, e.strerror or str(e)) from None
    return validate(parse(text, source), source, parse_connector)
