"""Key paths into a scenario document, written as in the file: `machine.cpus`, `sysctl.min_free_kbytes`,
`machine.node[0].zones.Normal`, `task[2].program[1].pages`.

A path is set on the raw (parsed, not yet validated) document, so the value then goes through the same schema
checks as a value written in the file. Standard library only: the CLI validates sweeps before anything heavy
is imported.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from oomemu.errors import ScenarioError

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def parse_key_path(path: str) -> tuple[str | int, ...]:
    """`task[1].count` -> ("task", 1, "count"); a malformed path is a ScenarioError naming it."""
    if not isinstance(path, str) or not path:
        raise ScenarioError(f"key path {path!r}: must be a non-empty string like \"machine.cpus\"")
    steps: list[str | int] = []
    for part in path.split("."):
        match = _STEP.fullmatch(part)
        if match is None:
            raise ScenarioError(f"key path {path!r}: {part!r} is not a key (letters, digits, _) with optional "
                                f"[index]es", path=path)
        steps.append(match.group(1))
        steps.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(steps)


def set_key_path(document: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `document` with `value` at `path`. Tables on the way are created if absent; an index
    must name an existing array element (the arrays' other elements are the file's)."""
    doc = copy.deepcopy(dict(document))
    steps = parse_key_path(path)
    node: Any = doc
    for i, step in enumerate(steps[:-1]):
        nxt = steps[i + 1]
        node = _child(node, step, path, make=dict if isinstance(nxt, str) else None)
    _assign(node, steps[-1], value, path)
    return doc


def get_key_path(document: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """The raw value at `path`, or `default` if any step is absent."""
    node: Any = document
    for step in parse_key_path(path):
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def _child(node: Any, step: str | int, path: str, make: type | None) -> Any:
    if isinstance(step, int):
        if not isinstance(node, list) or step >= len(node):
            have = len(node) if isinstance(node, list) else 0
            raise ScenarioError(f"key path {path!r}: index [{step}] does not exist (the scenario has {have})",
                                path=path)
        return node[step]
    if not isinstance(node, dict):
        raise ScenarioError(f"key path {path!r}: {step!r} is inside a value that is not a table", path=path)
    if step not in node:
        if make is None:
            raise ScenarioError(f"key path {path!r}: the scenario has no array {step!r} to index", path=path)
        node[step] = make()
    return node[step]


def _assign(node: Any, step: str | int, value: Any, path: str) -> None:
    if isinstance(step, int):
        _child(node, step, path, None)
        node[step] = copy.deepcopy(value)
    elif isinstance(node, dict):
        node[step] = copy.deepcopy(value)
    else:
        raise ScenarioError(f"key path {path!r}: {step!r} is inside a value that is not a table", path=path)


def short_name(path: str) -> str:
    """The last key of a path, for column headers and file names: `sysctl.min_free_kbytes` -> `min_free_kbytes`."""
    return path.rsplit(".", 1)[-1]
