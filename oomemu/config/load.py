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
MAX_PROGRAM_DEPTH = 16       # fork/clone_vm/thread programs nested in programs (schema.OpTable enforces it)


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
    except RecursionError:
        raise ScenarioError(f"{source}: tables or arrays nested too deeply to read (programs may nest at most "
                            f"{MAX_PROGRAM_DEPTH} deep)", source=source) from None
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
        _check_expect(sections["expect"])
        features = _kernel_features(sections["machine"].kernel, sections["kernel"])
        _check_cgroups(sections["cgroup"], sections["task"], sections["machine"], features,
                       sections["expect"].killed_in)
    except RecursionError:
        raise ScenarioError(f"{source}: nested too deeply (programs may nest at most {MAX_PROGRAM_DEPTH} deep)",
                            source=source) from None
    except ScenarioError as error:
        error.source = source
        raise
    return Scenario(name=name, source=source, machine=sections["machine"], sysctl=sections["sysctl"],
                    tasks=sections["task"], run=sections["run"], expect=sections["expect"],
                    debug_break=sections["debug"], features=features, feature_overrides=sections["kernel"],
                    cgroups=sections["cgroup"])


def _load_file(path: Path, *, name: str, source: str) -> Scenario:
    """Read and load one scenario file."""
    return load_scenario_text(_read_text(path, source), name=name, source=source)


MAX_FILE_BYTES = 1 << 20     # a scenario is a few KiB; this many bytes means the path is not one


def _read_text(path: Path, source: str) -> str:
    """The text of a scenario file; every way of failing to read it is a ScenarioError. Only a regular file of
    at most MAX_FILE_BYTES is read (a FIFO would block, /dev/zero never end)."""
    import stat
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ScenarioError(f"scenario file not found: {source}", source=source) from None
    except OSError as error:
        raise ScenarioError(f"cannot read scenario file {source}: {error.strerror}", source=source) from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError(f"scenario path is a directory, not a file: {source}", source=source)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode) else
                "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else
                "not a regular file")
        raise ScenarioError(f"scenario path is {kind}, not a regular file: {source}", source=source)
    if st.st_size > MAX_FILE_BYTES:
        raise ScenarioError(f"scenario file {source} is {st.st_size:,} bytes; a scenario may be at most "
                            f"{MAX_FILE_BYTES:,}", source=source)
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
        _check_lock_pairing(task.program, f"{path}.program")
        _check_numa(task, path, machine)
    _check_task_count(tasks, machine.max_tasks)


def cgroup_paths(cgroups) -> list[str]:
    """Every memory cgroup of the scenario, parents first: the [[cgroup]] names and the parents their paths
    imply, in file order (root "/" not included)."""
    out: dict[str, None] = {}
    for cg in cgroups:
        parts = cg.name[1:].split("/")
        for depth in range(1, len(parts) + 1):
            out.setdefault("/" + "/".join(parts[:depth]))
    return list(out)


def _check_cgroups(cgroups, tasks: tuple[TaskCfg, ...], machine: MachineCfg, features: Any,
                   expect_in: str | None = None) -> None:
    """Cgroup names are unique; swappiness needs swap, oom_group a profile that has memory.oom.group; every
    cgroup a task or an op names exists. Parents come from the paths, so no cycle can be written."""
    seen: set[str] = set()
    for i, cg in enumerate(cgroups):
        if cg.name in seen:
            raise invalid(f"cgroup[{i}].name", cg.name, "is already a [[cgroup]] above; each name once")
        seen.add(cg.name)
        if cg.swappiness is not None and not machine.swap:
            raise invalid(f"cgroup[{i}].swappiness", cg.swappiness,
                          "needs swap (machine.swap > 0); without swap nothing can be swapped")
        if cg.oom_group and not features.memcg_oom_group:
            raise invalid(f"cgroup[{i}].oom_group", True,
                          f'needs the memcg_oom_group switch (4.19+), which machine.kernel = "{machine.kernel}" '
                          "does not have; set kernel.features.memcg_oom_group = true or use a later kernel")
    known = set(cgroup_paths(cgroups)) | {"/"}
    choices = ", ".join(format_value(c) for c in sorted(known))

    def need(name: str, path: str) -> None:
        if name not in known:
            raise invalid(path, name, f"is not a [[cgroup]] of this scenario; known: {choices}")

    if expect_in is not None:
        need(expect_in, "expect.killed_in")
    for i, task in enumerate(tasks):
        need(task.cgroup, f"task[{i}].cgroup")
        for op, op_path in iter_ops(task.program, f"task[{i}].program"):
            if op.op in ("cgroup_move", "memcg_limit"):
                need(op["cgroup"], f"{op_path}.cgroup")
            if op.op == "cgroup_move" and task.kthread:
                raise invalid(f"{op_path}.op", op.op, "a kernel thread (kthread = true) stays in the root cgroup")


def _memory_nodes(machine: MachineCfg) -> list[int]:
    """node_states[N_MEMORY]: the nodes that have memory."""
    return [nid for nid, node in enumerate(machine.nodes) if any(node.zones.values())]


def _check_nodes(nodes, path: str, machine: MachineCfg) -> None:
    """Every node of a nodemask exists and has memory (cpuset.mems and set_mempolicy refuse others)."""
    with_memory = _memory_nodes(machine)
    for i, nid in enumerate(nodes):
        if nid >= len(machine.nodes):
            raise invalid(f"{path}[{i}]", nid, f"names a missing node: the machine has {len(machine.nodes)} "
                          f"node(s), 0 to {len(machine.nodes) - 1} ([[machine.node]])")
        if nid not in with_memory:
            raise invalid(f"{path}[{i}]", nid, "names a node without memory (all its zones are 0)")


def _check_mempolicy(policy, path: str, machine: MachineCfg, mems) -> None:
    """A policy's nodes exist; bind and interleave need at least one, and they must meet the cpuset's mems."""
    mode, nodes = policy["mode"], policy["nodes"]
    _check_nodes(nodes, f"{path}.nodes", machine)
    if mode in ("bind", "interleave") and not nodes:
        raise invalid(f"{path}.nodes", [], f'must name at least one node for mode = "{mode}"')
    if mode != "default" and nodes and mems is not None and not set(nodes) & set(mems):
        raise invalid(f"{path}.nodes", list(nodes), f"must meet the task's mems {list(mems)} (set_mempolicy: EINVAL)")


def _check_numa(task: TaskCfg, path: str, machine: MachineCfg) -> None:
    """mems, mempolicy and the set_mems / set_mempolicy ops name nodes that exist."""
    if task.mems is not None:
        _check_nodes(task.mems, f"{path}.mems", machine)
    if task.mempolicy is not None:
        _check_mempolicy(task.mempolicy, f"{path}.mempolicy", machine, task.mems)
    if task.kthread and (task.mems is not None or task.mempolicy is not None):
        raise invalid(f"{path}.mempolicy" if task.mempolicy is not None else f"{path}.mems",
                      list(task.mems or ()) or dict(task.mempolicy), "a kernel thread (kthread = true) stays in "
                      "the top cpuset with the default policy")
    for op, op_path in iter_ops(task.program, f"{path}.program"):
        if op.op == "set_mems":
            _check_nodes(op["nodes"], f"{op_path}.nodes", machine)
        elif op.op == "set_mempolicy":
            _check_mempolicy(op, op_path, machine, None)


def _check_cpu(cpu: str | int, path: str, cpus: int, named: tuple[str, ...]) -> None:
    """A CPU index must name one of the machine's CPUs."""
    if isinstance(cpu, int) and cpu >= cpus:
        names = ", ".join(format_value(n) for n in named)
        raise invalid(path, cpu, f"must be {names} or a CPU index from 0 to {cpus - 1} (machine.cpus = {cpus})")


def _check_lock_pairing(program, path: str) -> None:
    """In one program (each runs in its own task), an `unlock` must follow a `lock` it releases."""
    held = 0
    for i, op in enumerate(program):
        if op.op == "lock":
            held += 1
        elif op.op == "unlock":
            if not held:
                raise invalid(f"{path}[{i}].op", "unlock", "has no `lock` before it in this program to release "
                              "(each program runs in its own task)")
            held -= 1
        if "program" in op:
            _check_lock_pairing(op["program"], f"{path}[{i}].program")


def _check_expect(expect) -> None:
    """[expect] keys that contradict each other."""
    if expect.kills_min is not None and expect.kills_max is not None and expect.kills_min > expect.kills_max:
        raise invalid("expect.kills", {"min": expect.kills_min, "max": expect.kills_max},
                      "min must not be larger than max")
    if expect.verdict is not None and expect.verdict in expect.verdict_not:
        raise invalid("expect.verdict_not", list(expect.verdict_not),
                      f"must not list {expect.verdict!r}, the verdict expect.verdict requires")
    if expect.victims is not None and expect.kills_min and set(expect.victims) <= set(expect.never_killed):
        raise invalid("expect.never_killed", list(expect.never_killed),
                      f"excludes every allowed victim {list(expect.victims)} while expect.kills requires a kill")


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
