"""Scenario loading: TOML text → the whole document validated against the schema → a Scenario.

Nothing is started from a scenario that does not validate as a whole; the first error found raises a
one-line ScenarioError that names the key path, the value and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oomemu.config.schema import (
    KTHREAD_OPS, SCHEMA, MachineCfg, Scenario, TaskCfg, iter_ops,
)
from oomemu.config.profiles import features_for, missing_dependency
from oomemu.config.units import format_value, invalid
from oomemu.errors import ScenarioError

DEFAULT_SCENARIO_PATH = Path(__file__).with_name("default.toml")


def load_scenario(path: str | os.PathLike[str] | None = None) -> Scenario:
    """The scenario in the TOML file at `path` (None: the built-in default); its name is the file stem."""
    if path is None:
        return _load_file(DEFAULT_SCENARIO_PATH, name="default", source="<default>")
    return _load_file(Path(path), name=Path(path).stem, source=os.fspath(path))


def load_scenario_text(text: str, name: str = "<string>", *, source: str | None = None) -> Scenario:
    """The scenario in TOML `text`; `source` (default: `name`) is what error messages and Scenario cite."""
    source = name if source is None else source
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{source}: TOML syntax error: {error}", source=source) from None
    return scenario_from_dict(document, name=name, source=source)


def scenario_from_dict(document: Mapping[str, Any], *, name: str, source: str) -> Scenario:
    """The scenario in an already parsed document (TOML or JSON shaped, e.g. scenario_to_dict's output)."""
    if not isinstance(document, Mapping):
        raise ScenarioError(f"{source}: a scenario must be a table of sections, not {format_value(document)}",
                            source=source)
    try:
        sections = SCHEMA(document, "")
        _check_machine(sections["machine"], document)
        _check_tasks(sections["task"], sections["machine"])
        features = _kernel_features(sections["machine"].kernel, sections["kernel"])
    except ScenarioError as error:
        error.source = source
        raise
    return Scenario(name=name, source=source, machine=sections["machine"], sysctl=sections["sysctl"],
                    tasks=sections["task"], run=sections["run"], expect=sections["expect"],
                    debug_break=sections["debug"], features=features, feature_overrides=sections["kernel"])


def _load_file(path: Path, *, name: str, source: str) -> Scenario:
    """Read and load one scenario file."""
    return load_scenario_text(_read_text(path, source), name=name, source=source)


def _read_text(path: Path, source: str) -> str:
    """The text of a scenario file; every way of failing to read it is a ScenarioError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"scenario file not found: {source}", source=source) from None
    except IsADirectoryError:
        raise ScenarioError(f"scenario path is a directory, not a file: {source}", source=source) from None
    except OSError as error:
        raise ScenarioError(f"cannot read scenario file {source}: {error.strerror}", source=source) from None
    try:
        # utf-8-sig: an editor's byte-order mark is not worth an error.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ScenarioError(f"{source}: not UTF-8 text (bad byte at offset {error.start})", source=source) from None


# --- Checks that span keys (the schema checks each key on its own) ---------------------------------------


def _check_machine(machine: MachineCfg, document: Mapping[str, Any]) -> None:
    """Node 0 must have a Normal zone."""
    if machine.nodes[0].zones["Normal"] > 0:
        return
    raw = _lookup(document, ("machine", "node", 0, "zones", "Normal"), default=0)
    raise invalid("machine.node[0].zones.Normal", raw, "must be larger than 0 on node 0")


def _kernel_features(kernel: str, overrides: Mapping[str, bool]) -> Any:
    """The profile's switches with [kernel] features applied; a switch on without one it needs is an error
    naming both."""
    features = features_for(kernel, overrides)
    bad = missing_dependency(features)
    if bad is not None:
        name, need = bad
        if need in overrides:
            where = "set in kernel.features" if name in overrides else f'on in machine.kernel = "{kernel}"'
            raise invalid(f"kernel.features.{need}", False,
                          f"{name} ({where}) needs {need}; also set kernel.features.{name} = false")
        raise invalid(f"kernel.features.{name}", True,
                      f'needs {need}, which machine.kernel = "{kernel}" does not have; '
                      f"also set kernel.features.{need} = true")
    return features


def _check_tasks(tasks: tuple[TaskCfg, ...], machine: MachineCfg) -> None:
    """CPU indices exist, the task table can hold every group, and kernel threads only run mm-less ops."""
    for i, task in enumerate(tasks):
        path = f"task[{i}]"
        _check_cpu(task.cpu, f"{path}.cpu", machine.cpus, ("any",))
        if task.kthread and task.mm is not None:
            raise invalid(f"{path}.mm", dict(task.mm), "a kernel thread (kthread = true) has no mm")
        for op, op_path in iter_ops(task.program, f"{path}.program"):
            if "cpu" in op:
                _check_cpu(op["cpu"], f"{op_path}.cpu", machine.cpus, ("same", "any"))
            if task.kthread and op.op not in KTHREAD_OPS:
                raise invalid(f"{op_path}.op", op.op, "a kernel thread (kthread = true) has no mm; allowed: "
                              + ", ".join(KTHREAD_OPS))
    _check_task_count(tasks, machine.max_tasks)


def _check_cpu(cpu: str | int, path: str, cpus: int, named: tuple[str, ...]) -> None:
    """A CPU index must name one of the machine's CPUs."""
    if isinstance(cpu, int) and cpu >= cpus:
        names = ", ".join(format_value(n) for n in named)
        raise invalid(path, cpu, f"must be {names} or a CPU index from 0 to {cpus - 1} (machine.cpus = {cpus})")


def _check_task_count(tasks: tuple[TaskCfg, ...], max_tasks: int) -> None:
    """The task groups' tasks at start must fit in the task table (children need room too, later)."""
    total = sum(task.count for task in tasks)
    running = 0
    for i, task in enumerate(tasks):
        running += task.count
        if running > max_tasks:
            raise invalid(f"task[{i}].count", task.count,
                          f"the [[task]] groups start {total} tasks, more than machine.max_tasks = {max_tasks}")


def _lookup(document: Any, keys: tuple[str | int, ...], default: Any) -> Any:
    """The raw value at a key path of the parsed document, or `default` if any step is absent."""
    for key in keys:
        try:
            document = document[key]
        except (KeyError, IndexError, TypeError):
            return default
    return document
