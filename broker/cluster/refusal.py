"""How a topology's problems travel through pydantic and come out as `FILE: KEY.PATH: reason`.

Validators (schema.py's types and models, rules.py's cross-key rules) raise `refuse(reason,
at)`: a PydanticCustomError carrying our reason word for word and, where the problem sits
below the value being validated, the rest of its key path. `topology_error` picks the
error an operator should see first and writes its location as a KEY.PATH.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from broker.cluster.errors import TopologyError, key_path

KeyPath = tuple[str | int, ...]

# Stands for a group's name in what a group's own validators say: a group's value does not
# know the key it is filed under; its location does, and fills the name in.
GROUP = "{group}"

# YAML keys a file must give: where they are missing, what goes there.
REQUIRED = {
    "groups": "required: the groups and their brokers",
    "brokers": "required: the group's brokers and their ports",
    "port": "required: the broker's client port",
    "uri": "required: the connector's URI",
}


def refuse(reason: str, at: KeyPath = (), *, in_group: bool = False) -> PydanticCustomError:
    """A refusal for a validator to raise: `reason` exactly as the operator reads it, `at`
    the key path below the value being validated; `in_group` when `reason` names the
    group by GROUP."""
    return PydanticCustomError(
        "topology", "{reason}", {"reason": reason, "at": at, "in_group": in_group}
    )


def describe(value: object) -> str:
    """A value as the error text shows it: in YAML's words where Python's would confuse."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def unknown_key(key: object, allowed: Sequence[str]) -> str:
    """The reason for a key the section does not know, with a did-you-mean hint."""
    hint = difflib.get_close_matches(str(key), allowed, n=1)
    if hint:
        return f"unknown key; did you mean {hint[0]!r}?"
    return "unknown key; expected one of " + ", ".join(sorted(allowed))


def topology_error(
    error: ValidationError, raw: Any, source: str, keys: Mapping[int, Sequence[str]]
) -> TopologyError:
    """The TopologyError for the first problem, as the file reads top to bottom.

    pydantic checks a section's declared keys before its unknown ones; a person reads a
    mapping's keys before what is inside them, so an unknown key outranks any problem
    deeper in the mapping that holds it. `keys`: the keys a section at that depth allows.
    """
    errors = error.errors()
    first = errors[0]
    loc = first["loc"]
    # A bad name is read before the mapping it names: the key's own section does not
    # outrank it, only the sections around it.
    item = loc[:-1] if loc and loc[-1] == "[key]" else loc
    outer = [
        e
        for e in errors
        if _is_unknown_key(e)
        and len(e["loc"]) - 1 < len(item)
        and tuple(item[: len(e["loc"]) - 1]) == tuple(e["loc"][:-1])
    ]
    if outer:
        first = min(outer, key=lambda e: len(e["loc"]))
    return _as_topology_error(first, raw, source, keys)


def _is_option_key(e: ErrorDetails) -> bool:
    # A connector's options are its extra keys; one that is no string is refused there.
    loc = e["loc"]
    return e["type"] == "invalid_key" and len(loc) == 5 and loc[2] == "connectors"


def _is_unknown_key(e: ErrorDetails) -> bool:
    return e["type"] in ("extra_forbidden", "invalid_key") and not _is_option_key(e)


def _as_topology_error(
    e: ErrorDetails, raw: Any, source: str, keys: Mapping[int, Sequence[str]]
) -> TopologyError:
    path = _key_path(e["loc"], raw)
    ctx = e.get("ctx") or {}
    if e["type"] == "topology":
        reason = str(ctx["reason"])
        if ctx.get("in_group") and len(path) >= 2:
            reason = reason.replace(GROUP, str(path[1]))
        path = (*path, *ctx.get("at", ()))
    elif e["type"] == "missing" and path and str(path[-1]) in REQUIRED:
        reason = REQUIRED[str(path[-1])]
    elif _is_option_key(e):
        reason = f"option names must be strings, got {describe(e['input'])}"
        path = path[:-1]
    elif _is_unknown_key(e) and len(path) - 1 in keys:
        reason = unknown_key(path[-1], keys[len(path) - 1])
    else:  # a check without words of its own: pydantic's
        reason = e["msg"]
    return TopologyError(source, key_path(path) or None, reason)


def _key_path(loc: tuple[str | int, ...], raw: Any) -> KeyPath:
    """pydantic's location as the topology's key path: mapping keys as strings (a YAML
    key may be a number), list positions as indexes, pydantic's own markers dropped."""
    out: list[str | int] = []
    node = raw
    for part in loc:
        if part == "[key]":
            break
        if isinstance(node, Mapping):
            out.append(str(part))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if 0 <= part < len(node) else None
        else:
            out.append(part)
            node = None
    return tuple(out)
