"""The scenario schema: the resolved dataclasses, and for every key its checker, default and help.

This is the one source for validation (load.py walks it), for printing a scenario back (scenario_to_dict) and
for documentation (iterate SCHEMA's keys). Defaults are written as a user would write them in TOML and go
through the same checkers as user input, so a default can never be out of range.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import reduce
from operator import or_
from types import MappingProxyType
from typing import Any, Protocol

from oomemu.config.units import (
    GiB, PAGE_SIZE, PAGES_ALLOWED, SIZE_ALLOWED, format_key, format_size, format_value, invalid, is_int,
    is_size, parse_pages, parse_size,
)
from oomemu.config.profiles import DEFAULT_KERNEL, KERNELS, SWITCH, Features, features_for
from oomemu.errors import ScenarioError


class FrozenMap(dict):
    """A read-only, hashable dict: still a plain dict to json.dumps, pickle and isinstance checks."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__} is read-only")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        # The default dict-subclass pickle refills through __setitem__, which is blocked.
        return (type(self), (dict(self),))

    def __copy__(self) -> FrozenMap:
        return self

    def __deepcopy__(self, memo: dict) -> FrozenMap:
        return self


# --- The resolved scenario ----------------------------------------------------------------------------


PCT_MAX_DEPTH = 65     # d - 1 change points: control.MAX_CHANGES words in the controller block


@dataclass(frozen=True, slots=True)
class Op:
    """One step of a task's program: the op name and its fully defaulted, resolved arguments.

    Sizes are resolved to pages (or "all" for free), gfp to its int with the text in `gfp_name`, and nested
    programs (fork, clone_vm, thread) to tuples of Op. `op["pages"]` and `op.get("cpu")` read the arguments.
    """

    op: str
    args: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    def __contains__(self, key: str) -> bool:
        return key in self.args

    def get(self, key: str, default: Any = None) -> Any:
        """An argument, or `default` if this op has no such argument."""
        return self.args.get(key, default)


@dataclass(frozen=True, slots=True)
class NodeCfg:
    """One NUMA node: its zone sizes in bytes, keyed "DMA", "DMA32", "Normal" (all present, 0 = no zone)."""

    zones: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class MachineCfg:
    """[machine]: the emulated hardware and the kernel behaviour profile."""

    cpus: int
    hz: int
    kernel: str
    swap: int
    max_tasks: int
    nodes: tuple[NodeCfg, ...]


@dataclass(frozen=True, slots=True)
class SysctlCfg:
    """[sysctl]: the vm.* knobs, with kernel semantics."""

    panic_on_oom: int
    oom_kill_allocating_task: int
    oom_dump_tasks: int
    min_free_kbytes: int
    lowmem_reserve_ratio: tuple[int, int, int]
    hung_task_timeout_secs: int = 120
    hung_task_warnings: int = 10
    overcommit_memory: int = 0
    overcommit_ratio: int = 50
    overcommit_kbytes: int = 0


@dataclass(frozen=True, slots=True)
class TaskCfg:
    """One [[task]] group: `count` tasks that run the same program."""

    comm: str
    count: int
    cpu: str | int
    oom_score_adj: int
    uid: int
    caps: tuple[str, ...]
    kthread: bool
    program: tuple[Op, ...]
    mm: Mapping[str, int] | None = None  # memory the task already holds at boot (MM_PRESET), or None
    cgroup: str = "/"                    # the memory cgroup the group's tasks start in ("/" is the root)
    mems: tuple[int, ...] | None = None  # cpuset.mems of the task's cpuset (None: every node, the top cpuset)
    cpuset: str | None = None            # the cpuset's path ("/job"); None: "/" (or "/mems<N>" with mems)
    mempolicy: Mapping[str, Any] | None = None   # { mode, nodes } (set_mempolicy), None: the default policy


@dataclass(frozen=True, slots=True)
class CgroupCfg:
    """One [[cgroup]]: a memory cgroup named by its path; its parents are the path's prefixes."""

    name: str
    limit: int | None                    # memory.limit_in_bytes in bytes, None = unlimited
    oom_kill_disable: bool = False
    swappiness: int | None = None        # None: the default (60), only meaningful with swap
    oom_group: bool = False              # memory.oom.group (profiles with memcg_oom_group)


@dataclass(frozen=True, slots=True)
class RunCfg:
    """[run]: how long and how the run goes."""

    seconds: float
    seed: int
    trace: bool
    stall_jiffies: int
    schedule: str = "free"
    pct_depth: int = 3
    pct_steps: int = 0
    step_ns: int = 1000
    wall_seconds: float = 600.0
    watchdog_ms: int = 5000
    trace_limit: int = 4 << 30


@dataclass(frozen=True, slots=True)
class ExpectCfg:
    """[expect]: what the run must show; None means "not checked"."""

    kills_min: int | None
    kills_max: int | None
    victims: tuple[str, ...] | None
    never_killed: tuple[str, ...]
    panic: bool | None
    verdict: str | None
    min_rate: float | None = None
    verdict_not: tuple[str, ...] = ()
    killed_in: str | None = None        # every kill is a memcg OOM kill of a task in this cgroup's subtree
    tasks: tuple[Mapping[str, Any], ...] = ()   # [[expect.task]]: how tasks of a comm must have ended
    kill_cpuset: str | None = None              # every victim was in this cpuset


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole validated scenario: `name` is the file stem, `source` the file path (or "<default>")."""

    name: str
    source: str
    machine: MachineCfg
    sysctl: SysctlCfg
    tasks: tuple[TaskCfg, ...]
    run: RunCfg
    expect: ExpectCfg
    debug_break: tuple[str, ...]
    features: Any = features_for(DEFAULT_KERNEL)     # the profile's switches with [kernel] features applied
    feature_overrides: Mapping[str, bool] = FrozenMap()   # [kernel] features as written
    cgroups: tuple[CgroupCfg, ...] = ()   # [[cgroup]] as written, in file order (parents implied by paths)


# --- Error wording shared by the checkers ---------------------------------------------------------------


def join_path(path: str, key: str) -> str:
    """The key path of `key` inside the table at `path` ("" is the document root)."""
    return f"{path}.{format_key(key)}" if path else format_key(key)


def suggest(word: Any, choices: tuple[str, ...]) -> str:
    """' (did you mean "X"?)' for the closest of `choices` to `word` (case-insensitive), or ""."""
    if not isinstance(word, str):
        return ""
    by_folded = {c.casefold(): c for c in choices}
    close = difflib.get_close_matches(word.casefold(), list(by_folded), n=1)
    return f' (did you mean "{by_folded[close[0]]}"?)' if close else ""


def missing(path: str, allowed: str, label: str | None = None) -> ScenarioError:
    """The error for a required key that is absent."""
    required_by = f"required by {label}; " if label else ""
    return ScenarioError(f"{path}: missing; {required_by}must be {allowed}", path=path)


def unknown_key(path: str, key: str, names: tuple[str, ...], label: str | None = None) -> ScenarioError:
    """The error for a key the table does not have, with the allowed keys and a did-you-mean."""
    where = f" for {label}" if label else ""
    return ScenarioError(
        f"{path}: unknown key{where}; allowed: {', '.join(names)}{suggest(key, names)}", path=path)


# --- Checkers: each validates one raw TOML value at a key path and returns it resolved -----------------


class Checker(Protocol):
    """Validates a raw value found at `path` and returns it resolved; `allowed` says what it accepts."""

    @property
    def allowed(self) -> str: ...

    def __call__(self, value: Any, path: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Int:
    """An integer in lo..hi (either bound optional), or one of the isolated values in `also`."""

    lo: int | None = None
    hi: int | None = None
    also: tuple[int, ...] = ()
    text: str | None = None  # overrides the generated description of what is allowed

    @property
    def allowed(self) -> str:
        if self.text:
            return self.text
        if self.lo is not None and self.hi is not None:
            return f"an integer from {self.lo} to {self.hi}"
        if self.lo is not None:
            return f"an integer >= {self.lo}"
        return "an integer"

    def __call__(self, value: Any, path: str) -> int:
        if is_int(value) and (value in self.also or self._in_range(value)):
            return value
        raise invalid(path, value, "must be " + self.allowed)

    def _in_range(self, value: int) -> bool:
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)


@dataclass(frozen=True, slots=True)
class Number:
    """A finite int or float with lo < value <= hi, resolved to float."""

    lo: float
    hi: float
    unit: str = ""

    @property
    def allowed(self) -> str:
        return f"a number{self.unit} > {self.lo} and <= {self.hi}"

    def __call__(self, value: Any, path: str) -> float:
        ok = (is_int(value) or isinstance(value, float)) and math.isfinite(value) and self.lo < value <= self.hi
        if not ok:
            raise invalid(path, value, "must be " + self.allowed)
        return float(value)


@dataclass(frozen=True, slots=True)
class Bool:
    """true or false."""

    allowed: str = "true or false"

    def __call__(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise invalid(path, value, "must be " + self.allowed)
        return value


@dataclass(frozen=True, slots=True)
class Text:
    """Any string."""

    allowed: str = "a string"

    def __call__(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise invalid(path, value, "must be " + self.allowed)
        return value


@dataclass(frozen=True, slots=True)
class Choice:
    """One of a fixed set of values, matched with its type (so 1 never passes for true, nor "250" for 250)."""

    values: tuple[Any, ...]
    noun: str | None = None  # set: word the error as "unknown NOUN; allowed: a, b" (op names, break names)

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(format_value(v) for v in self.values)

    def __call__(self, value: Any, path: str) -> Any:
        for choice in self.values:
            if type(value) is type(choice) and value == choice:
                return choice
        if self.noun:
            reason = f"unknown {self.noun}; allowed: {', '.join(map(str, self.values))}"
        else:
            reason = "must be " + self.allowed
        names = tuple(v for v in self.values if isinstance(v, str))
        raise invalid(path, value, reason + suggest(value, names))


@dataclass(frozen=True, slots=True)
class Comm:
    """A task name as the kernel keeps it: 1 to 15 printable ASCII characters (TASK_COMM_LEN 16 with NUL)."""

    allowed: str = "a name of 1 to 15 printable ASCII characters, not all spaces"

    def __call__(self, value: Any, path: str) -> str:
        ok = (isinstance(value, str) and 1 <= len(value) <= 15
              and all(" " <= ch <= "~" for ch in value) and value.strip() != "")
        if not ok:
            raise invalid(path, value, "must be " + self.allowed)
        return value


@dataclass(frozen=True, slots=True)
class Size:
    """A size in bytes (see units.parse_size), a multiple of `multiple`, at most `maximum`."""

    multiple: int = 1
    maximum: int | None = None
    minimum: int | None = None

    @property
    def allowed(self) -> str:
        text = SIZE_ALLOWED
        if self.multiple > 1:
            text += f", a multiple of {format_size(self.multiple)}"
        if self.minimum is not None:
            text += f", at least {format_size(self.minimum)}"
        if self.maximum is not None:
            text += f", at most {format_size(self.maximum)}"
        return text

    def __call__(self, value: Any, path: str) -> int:
        nbytes = parse_size(value, path)
        if nbytes % self.multiple:
            raise invalid(path, value, f"must be a multiple of {format_size(self.multiple)}")
        if self.maximum is not None and nbytes > self.maximum:
            raise invalid(path, value, f"must be at most {format_size(self.maximum)}")
        if self.minimum is not None and nbytes < self.minimum:
            raise invalid(path, value, f"must be at least {format_size(self.minimum)}")
        return nbytes


@dataclass(frozen=True, slots=True)
class Pages:
    """A page count >= 1 (an int counts pages; a size string is converted), or "all" if `all_ok`."""

    all_ok: bool = False

    @property
    def allowed(self) -> str:
        text = PAGES_ALLOWED.replace(">= 0", ">= 1")
        return text + ', or "all"' if self.all_ok else text

    def __call__(self, value: Any, path: str) -> int | str:
        if self.all_ok and value == "all":
            return "all"
        # Only a well-formed amount reaches parse_pages, whose own wording knows neither ">= 1" nor "all".
        if not ((is_int(value) and value >= 0) or (isinstance(value, str) and is_size(value))):
            raise invalid(path, value, "must be " + self.allowed)
        pages = parse_pages(value, path)
        if pages < 1:
            raise invalid(path, value, "must be at least 1 page")
        return pages


@dataclass(frozen=True, slots=True)
class GfpFlags:
    """GFP flag names joined by "|", resolved to (int, "NAME|NAME") through oomemu.include.gfp.GFP_NAMES."""

    allowed: str = 'GFP flag names joined by "|", e.g. "GFP_KERNEL|__GFP_NOFAIL"'

    def __call__(self, value: Any, path: str) -> tuple[int, str]:
        # Imported here, not at module level: `import oomemu.config` stays light, and the flag table is
        # owned by include/gfp.py.
        from oomemu.include.gfp import GFP_NAMES

        if not isinstance(value, str):
            raise invalid(path, value, "must be " + self.allowed)
        names = tuple(part.strip() for part in value.split("|"))
        if not all(names):
            raise invalid(path, value, "must be " + self.allowed)
        for name in names:
            if name not in GFP_NAMES:
                composites = ", ".join(sorted(n for n in GFP_NAMES if not n.startswith("__")))
                raise invalid(path, value, f'unknown gfp flag "{name}"; allowed: {composites}, or __GFP_* bits,'
                                           f' joined by "|"{suggest(name, tuple(GFP_NAMES))}')
        return reduce(or_, (GFP_NAMES[n] for n in names), 0), "|".join(names)


@dataclass(frozen=True, slots=True)
class Cpu:
    """A CPU: one of the names in `named`, or an index >= 0 (load.py checks it against machine.cpus)."""

    named: tuple[str, ...]

    @property
    def allowed(self) -> str:
        names = ", ".join(format_value(n) for n in self.named)
        return f"{names} or a CPU index (an integer from 0 to machine.cpus - 1)"

    def __call__(self, value: Any, path: str) -> str | int:
        if isinstance(value, str) and value in self.named:
            return value
        if is_int(value) and value >= 0:
            return value
        raise invalid(path, value, "must be " + self.allowed + suggest(value, self.named))


@dataclass(frozen=True, slots=True)
class CgroupPath:
    """A cgroup path: "/" then names joined by "/" (each 1 to 63 characters of A-Z a-z 0-9 . _ -), at most 8
    deep; `root_ok` also accepts "/" itself."""

    root_ok: bool = True

    @property
    def allowed(self) -> str:
        root = '"/" or ' if self.root_ok else ""
        return root + 'a path like "/batch/job1" (names of A-Z a-z 0-9 . _ -, at most 8 deep)'

    def __call__(self, value: Any, path: str) -> str:
        if isinstance(value, str) and value == "/" and self.root_ok:
            return value
        ok = isinstance(value, str) and value.startswith("/") and len(value) <= 512
        parts = value[1:].split("/") if ok else []
        ok = ok and 1 <= len(parts) <= 8 and all(
            0 < len(p) < 64 and p not in (".", "..") and all(c.isascii() and (c.isalnum() or c in "._-") for c in p)
            for p in parts)
        if not ok:
            raise invalid(path, value, "must be " + self.allowed)
        return value


@dataclass(frozen=True, slots=True)
class Limit:
    """memory.limit_in_bytes: a size of at least one page (rounded up to whole pages), or "max" (unlimited)."""

    @property
    def allowed(self) -> str:
        return f'"max" or {SIZE_ALLOWED}, at least one page ({format_size(PAGE_SIZE)})'

    def __call__(self, value: Any, path: str) -> int | None:
        if value == "max":
            return None
        nbytes = parse_size(value, path)
        if nbytes < PAGE_SIZE:
            raise invalid(path, value, f"must be at least one page ({format_size(PAGE_SIZE)}), or \"max\"")
        return nbytes


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list whose items all pass `item`, resolved to a tuple; `dedupe` drops repeats, keeping order."""

    item: Checker
    allowed: str
    min_len: int = 0
    max_len: int | None = None
    dedupe: bool = False

    def __call__(self, value: Any, path: str) -> tuple[Any, ...]:
        ok = isinstance(value, (list, tuple)) and len(value) >= self.min_len
        if not ok or (self.max_len is not None and len(value) > self.max_len):
            raise invalid(path, value, "must be " + self.allowed)
        items = tuple(self.item(v, f"{path}[{i}]") for i, v in enumerate(value))
        return tuple(dict.fromkeys(items)) if self.dedupe else items


@dataclass(frozen=True, slots=True)
class CpusetName:
    """A cpuset's path: "/" or "/" followed by names of letters, digits, "-", "_" and ".", joined by "/"."""

    allowed: str = 'a cpuset path such as "/" or "/job" (names of letters, digits, "-", "_", ".")'

    def __call__(self, value: Any, path: str) -> str:
        import re
        ok = isinstance(value, str) and len(value) <= 64 and (
            value == "/" or re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", value) is not None)
        if not ok:
            raise invalid(path, value, "must be " + self.allowed)
        return value


class _Required:
    """The default of a key that must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a table: its checker, its default and a line of help.

    `default` is REQUIRED (the key must be given), None (absent means None, unchecked), or a value written as
    in a scenario file, which goes through `check` like user input.
    """

    name: str
    check: Checker
    default: Any = REQUIRED
    help: str = ""


@dataclass(frozen=True, slots=True)
class Table:
    """A TOML table with a fixed set of keys; `build(resolved, path)` turns the resolved keys into a result."""

    keys: tuple[Key, ...]
    build: Callable[[dict[str, Any], str], Any] | None = None
    label: str | None = None  # names the table in key errors: 'op "fault"'
    allowed: str = "a table"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)

    def __call__(self, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise invalid(path, value, "must be " + self.allowed)
        names = self.names
        # Unknown keys first: a misspelt required key is better reported as the typo than as "missing".
        for key in value:
            if key not in names:
                raise unknown_key(join_path(path, key), key, names, self.label)
        resolved = {key.name: self._resolve(key, value, path) for key in self.keys}
        return self.build(resolved, path) if self.build else FrozenMap(resolved)

    def _resolve(self, key: Key, table: Mapping[str, Any], path: str) -> Any:
        """The resolved value of one key: given, defaulted, or a `missing` error."""
        key_path = join_path(path, key.name)
        if key.name in table:
            return key.check(table[key.name], key_path)
        if key.default is REQUIRED:
            raise missing(key_path, key.check.allowed, self.label)
        if key.default is None:
            return None
        return key.check(key.default, key_path)


_KILLS_ALLOWED = ("a table { min = N, max = N } (integers >= 0, each optional, min <= max), "
                  "or one integer >= 0 for an exact count")


@dataclass(frozen=True, slots=True)
class Kills:
    """expect.kills: a table { min = N, max = N } (each optional), or one integer for an exact count."""

    allowed: str = _KILLS_ALLOWED

    def __call__(self, value: Any, path: str) -> tuple[int | None, int | None]:
        if is_int(value):
            count = Int(0, text=self.allowed)(value, path)
            return count, count
        bounds = _KILLS(value, path)
        low, high = bounds["min"], bounds["max"]
        if low is not None and high is not None and low > high:
            raise invalid(path, value, "min must not be larger than max")
        return low, high


@dataclass(frozen=True, slots=True)
class OpTable:
    """One op of a program: a table whose "op" key selects which keys the rest of it may have (OPS)."""

    allowed: str = 'a table with an "op" key, e.g. { op = "sleep", ms = 5 }'

    def __call__(self, value: Any, path: str) -> Op:
        if not isinstance(value, Mapping):
            raise invalid(path, value, "must be " + self.allowed)
        depth = path.count(".program[") - 1     # the task's own program is depth 0
        if depth > MAX_PROGRAM_DEPTH:
            raise ScenarioError(f"{path}: programs nested {depth} deep; at most {MAX_PROGRAM_DEPTH} (a fork, "
                                f"clone_vm or thread inside a child's program counts one)", path=path)
        op_name = Choice(tuple(OPS), noun="op")
        if "op" not in value:
            raise missing(join_path(path, "op"), op_name.allowed)
        return OPS[op_name(value["op"], join_path(path, "op"))](value, path)


def iter_ops(program: tuple[Op, ...], path: str) -> Iterator[tuple[Op, str]]:
    """Every op of `program` and of the programs nested in it, pre-order, with its key path."""
    for i, op in enumerate(program):
        op_path = f"{path}[{i}]"
        yield op, op_path
        if "program" in op:
            yield from iter_ops(op["program"], f"{op_path}.program")


# --- The keys ---------------------------------------------------------------------------------------------

MAX_ORDER_BLOCK = 1024 * PAGE_SIZE  # zones are whole MAX_ORDER (order-10) blocks, so the buddy lists tile them
MAX_ZONE = 64 * GiB
MAX_MS = 3_600_000  # no single step outlasts the longest run (run.seconds <= 3600)
CAPS = ("CAP_SYS_ADMIN", "CAP_SYS_RESOURCE")
BREAKS = ("skip_zone_scan_lock", "skip_clear_zonelist_oom", "double_free_victim", "pick_lowest_badness",
          "sigkill_wakes_uninterruptible", "ignore_oom_score_adj_min", "nonatomic_bitops", "memcg_uncharge_leak")
# A kernel thread has no mm (PF_KTHREAD): only these ops make sense in its program.
KTHREAD_OPS = ("kmalloc", "kfree", "thread", "oom_score_adj", "sleep", "spin", "exit", "repeat", "wait", "sysrq")

MAX_PROGRAM_DEPTH = 16   # programs nested in programs (fork / clone_vm / thread); oomemu/config/load.py says so
PROGRAM = ListOf(OpTable(), allowed='a list of 1 or more op tables, e.g. [{ op = "sleep", ms = 5 }]', min_len=1)
_COUNT = Int(1, 10000)
_ADJ = Int(-1000, 1000)
_CHUNK = Key("chunk", Int(1, 4096), 16, "faults per user-space step (each fault returns to user space)")
_PAGES = Key("pages", Pages(), help='how much: an int is pages, a string a size ("64MiB")')
_MS = Key("ms", Number(0, MAX_MS, unit=" of milliseconds"), help="duration in milliseconds")
# NUMA node lists (cpuset.mems, mempolicy nodes); load.py checks each node against machine.node
MPOL_MODES = ("bind", "preferred", "interleave")
NODE_LIST = ListOf(Int(0, 63), allowed="a list of NUMA node ids (integers from 0 to machine.node count - 1)",
                   dedupe=True)
NODES = ListOf(Int(0, 63), allowed="a list of 1 or more NUMA node ids (integers from 0 to machine.node count - 1)",
               min_len=1, dedupe=True)
MEMPOLICY = Table((
    Key("mode", Choice(MPOL_MODES, noun="mempolicy mode"), help="MPOL_BIND, MPOL_PREFERRED or MPOL_INTERLEAVE"),
    Key("nodes", NODE_LIST, (), "the policy's nodes (bind and interleave need at least one)"),
), allowed='a table { mode = "bind" | "preferred" | "interleave", nodes = [...] }')


def _spawn_keys(process: bool) -> tuple[Key, ...]:
    """Keys of fork/clone_vm (process=True: a new process) and of thread (process=False)."""
    keys = (Key("program", PROGRAM, help="the child's own program"),
            Key("count", _COUNT, 1, "how many children"))
    if process:
        keys += (Key("comm", Comm(), None, "the child's name (absent: the parent's)"),)
    keys += (Key("cpu", Cpu(("same", "any")), "same", '"same" (the parent\'s CPU), "any" or an index'),)
    if process:
        keys += (Key("oom_score_adj", _ADJ, None, "the child's oom_score_adj (absent: inherited)"),)
    return keys


def _build_op(resolved: dict[str, Any], path: str) -> Op:
    """An Op from an op table's resolved keys; gfp splits into its int and its text."""
    args = dict(resolved)
    name = args.pop("op")
    if "gfp" in args:
        args["gfp"], args["gfp_name"] = args["gfp"]
    return Op(name, FrozenMap(args))


# The vm sysctls a program may write at run time (op "sysctl", as `echo 1 > /proc/sys/vm/panic_on_oom`), with
# the values [sysctl] accepts for each; oomemu/kernel/sysctl.py keeps them in the shared segment.
RUNTIME_SYSCTLS: Mapping[str, Int] = MappingProxyType({
    "panic_on_oom": Int(0, 2), "oom_kill_allocating_task": Int(0, 1), "oom_dump_tasks": Int(0, 1),
    "min_free_kbytes": Int(128, 65536)})


def _build_sysctl_op(resolved: dict[str, Any], path: str) -> Op:
    """The sysctl op, its value checked against the range of the sysctl it names."""
    RUNTIME_SYSCTLS[resolved["name"]](resolved["value"], join_path(path, "value"))
    return _build_op(resolved, path)


def _op_table(name: str, keys: tuple[Key, ...]) -> Table:
    """The table of one op: its "op" key (already checked by OpTable) followed by its own keys."""
    return Table((Key("op", Choice((name,))),) + keys, build=_build_op, label=f'op "{name}"')


OPS: Mapping[str, Table] = MappingProxyType({
    "fault": _op_table("fault", (_PAGES, _CHUNK, Key("gfp", GfpFlags(), "GFP_HIGHUSER_MOVABLE",
                                                     "gfp mask of the page faults"))),
    "read": _op_table("read", (_PAGES, _CHUNK, Key("exec", Bool(), False,
                                                   "map the pages executable (program text: reclaim keeps them "
                                                   "active while they are referenced)"))),
    "kmalloc": _op_table("kmalloc", (_PAGES, Key("order", Int(0, 10), 0, "allocation order"),
                                     Key("gfp", GfpFlags(), "GFP_KERNEL", "gfp mask"))),
    "kfree": _op_table("kfree", ()),
    "free": _op_table("free", (Key("pages", Pages(all_ok=True), help='anonymous pages to release, or "all"'),)),
    "fork": _op_table("fork", _spawn_keys(process=True)),
    "clone_vm": _op_table("clone_vm", _spawn_keys(process=True)),
    "thread": _op_table("thread", _spawn_keys(process=False)),
    "lock": _op_table("lock", (Key("what", Choice(("mmap_sem",)), "mmap_sem"),
                               Key("mode", Choice(("read", "write")), "read"))),
    "unlock": _op_table("unlock", (Key("what", Choice(("mmap_sem",)), "mmap_sem"),)),
    "oom_score_adj": _op_table("oom_score_adj", (Key("value", _ADJ, help="the new oom_score_adj"),)),
    "sleep": _op_table("sleep", (_MS, Key("state", Choice(("interruptible", "killable", "uninterruptible")),
                                          "interruptible", "the sleep's task state (nanosleep is interruptible)"))),
    "spin": _op_table("spin", (_MS,)),
    "exit": _op_table("exit", (Key("code", Int(0, 255), 0, "exit status"),)),
    "repeat": _op_table("repeat", (Key("times", Int(0), 0, "0 = forever"),)),
    "wait": _op_table("wait", ()),
    "sysrq": _op_table("sysrq", (Key("key", Choice(("f",)), "f", "f = manual OOM kill"),)),
    "cgroup_move": _op_table("cgroup_move", (Key("cgroup", CgroupPath(), help="the memory cgroup to move this "
                                                 "task's process to (a write to its cgroup.procs)"),)),
    "memcg_limit": _op_table("memcg_limit", (
        Key("cgroup", CgroupPath(root_ok=False), help="the memory cgroup whose limit to set"),
        Key("limit", Limit(), help='the new memory.limit_in_bytes, or "max"'),
        Key("oom_kill_disable", Bool(), None, "also write memory.oom_control (absent: unchanged)"))),
    "mmap": _op_table("mmap", (_PAGES, _CHUNK,
                               Key("touch", Bool(), True, "fault every page in after the mapping (as LTP's alloc_mem)"),
                               Key("on_enomem", Choice(("continue", "exit")), "continue",
                                   'what the program does when mmap fails with ENOMEM: go on, or exit(ENOMEM)'))),
    "set_mems": _op_table("set_mems", (Key("nodes", NODES, help="the task's new cpuset.mems"),)),
    "set_mempolicy": _op_table("set_mempolicy", (
        Key("mode", Choice(MPOL_MODES + ("default",), noun="mempolicy mode"), help="the new policy"),
        Key("nodes", NODE_LIST, (), "its nodes"))),
    "kill": _op_table("kill", (Key("comm", Comm(), help="SIGKILL every other process of this name (kill(2))"),)),
    "sysctl": Table((Key("op", Choice(("sysctl",))),
                     Key("name", Choice(tuple(RUNTIME_SYSCTLS)), help="the vm sysctl to write (/proc/sys/vm/NAME)"),
                     Key("value", Int(), help="the value written; each sysctl's [sysctl] range applies")),
                    build=_build_sysctl_op, label='op "sysctl"'),
    "touch": _op_table("touch", (Key("pages", Pages(all_ok=True), "all",
                                     'pages of the task\'s own memory to access again, or "all"'),
                                 Key("chunk", Int(1, 4096), 64, "pages accessed per user-space step"),
                                 Key("what", Choice(("all", "anon", "file")), "all", "which of its pages"),
                                 Key("via", Choice(("mapping", "read")), "mapping",
                                     '"mapping": loads and stores through its mappings (the PTE accessed bit; '
                                     'swapped-out pages fault back in); "read": read(2) of its cached file '
                                     'pages (mark_page_accessed)'))),
})

_ZONE = Size(multiple=MAX_ORDER_BLOCK, maximum=MAX_ZONE)
NODE = Table((
    Key("zones", Table((Key("DMA", _ZONE, 0), Key("DMA32", _ZONE, 0), Key("Normal", _ZONE, 0))),
        MappingProxyType({}), "zone sizes; missing zones are 0"),
), build=lambda r, _: NodeCfg(zones=r["zones"]))

_DEFAULT_NODES = (MappingProxyType({"zones": MappingProxyType({"DMA": "16MiB", "DMA32": "0", "Normal": "112MiB"})}),)

MACHINE = Table((
    Key("cpus", Int(1, 64), 2, "CPU worker processes"),
    Key("hz", Choice((100, 250, 300, 1000)), 250, "jiffies per second"),
    Key("kernel", Choice(KERNELS), DEFAULT_KERNEL, "kernel behaviour profile (oomemu/config/profiles.py)"),
    Key("swap", Size(multiple=PAGE_SIZE, maximum=MAX_ZONE), "0", "swap space"),
    Key("max_tasks", Int(16, 200000), 512, "task table size"),
    Key("node", ListOf(NODE, min_len=1, max_len=8,
                       allowed="an array of 1 to 8 tables ([[machine.node]])"), _DEFAULT_NODES, "NUMA nodes"),
), build=lambda r, _: MachineCfg(cpus=r["cpus"], hz=r["hz"], kernel=r["kernel"], swap=r["swap"],
                                 max_tasks=r["max_tasks"], nodes=r["node"]))

SYSCTL = Table((
    Key("panic_on_oom", Int(0, 2), 0, "vm.panic_on_oom"),
    Key("oom_kill_allocating_task", Int(0, 1), 0, "vm.oom_kill_allocating_task"),
    Key("oom_dump_tasks", Int(0, 1), 1, "vm.oom_dump_tasks"),
    Key("min_free_kbytes", Int(128, 65536, also=(0,),
                               text="0 (computed by the kernel formula) or an integer from 128 to 65536"),
        0, "vm.min_free_kbytes"),
    Key("lowmem_reserve_ratio", ListOf(Int(1), allowed="a list of 3 integers >= 1 (DMA, DMA32, Normal)",
                                       min_len=3, max_len=3), (256, 256, 32), "vm.lowmem_reserve_ratio"),
    Key("hung_task_timeout_secs", Int(0, 86400), 120,
        "kernel.hung_task_timeout_secs: report tasks blocked in D longer than this (0 = off)"),
    Key("hung_task_warnings", Int(-1, 1000000), 10, "kernel.hung_task_warnings: reports left (-1 = no limit)"),
    Key("overcommit_memory", Int(0, 2), 0, "vm.overcommit_memory: 0 heuristic, 1 always, 2 never (mmap ENOMEM)"),
    Key("overcommit_ratio", Int(0, 1000000), 50, "vm.overcommit_ratio: % of RAM in CommitLimit (mode 2)"),
    Key("overcommit_kbytes", Int(0), 0, "vm.overcommit_kbytes: CommitLimit's RAM part in kB, instead of the ratio"),
), build=lambda r, _: SysctlCfg(**r))

# A task's memory as it stands at boot, e.g. rebuilt from a kernel OOM report's task dump (oomemu import):
# page counts; nr_ptes and total_vm default to what the mapped pages imply.
_PAGE_COUNT = Int(0, 1 << 40)
MM_PRESET = Table((
    Key("anon", _PAGE_COUNT, 0, "anonymous pages mapped (MM_ANONPAGES)"),
    Key("file", _PAGE_COUNT, 0, "page-cache pages mapped (MM_FILEPAGES)"),
    Key("swapents", _PAGE_COUNT, 0, "pages swapped out (MM_SWAPENTS); needs machine.swap room"),
    Key("nr_ptes", _PAGE_COUNT, None, "page-table pages (absent: one per 512 pages of total_vm)"),
    Key("total_vm", _PAGE_COUNT, None, "mapped virtual size in pages (absent: anon + file + swapents)"),
), allowed="a table { anon = N, file = N, swapents = N, nr_ptes = N, total_vm = N } of page counts")

TASK = Table((
    Key("comm", Comm(), "task", "the task name"),
    Key("count", _COUNT, 1, "how many tasks run this program"),
    Key("cpu", Cpu(("any",)), "any", '"any" or a CPU index'),
    Key("oom_score_adj", _ADJ, 0, "initial oom_score_adj"),
    Key("uid", Int(0, 65535), 1000, "user id (0 = root)"),
    Key("caps", ListOf(Choice(CAPS), allowed="a list of " + ", ".join(CAPS), dedupe=True), (), "capabilities"),
    Key("kthread", Bool(), False, "a kernel thread (PF_KTHREAD, no mm)"),
    Key("program", PROGRAM, help="the ops each task runs"),
    Key("mm", MM_PRESET, None, "memory each task of the group holds at boot, before its program runs"),
    Key("cgroup", CgroupPath(), "/", 'the memory cgroup the tasks start in (a [[cgroup]] name, or "/")'),
    Key("mems", NODES, None, "cpuset.mems: the nodes the task may allocate from (absent: every node)"),
    Key("cpuset", CpusetName(), None, 'the cpuset\'s path, e.g. "/job" (absent: "/", or "/mems<N>" with mems)'),
    Key("mempolicy", MEMPOLICY, None, 'set_mempolicy(): { mode = "bind" | "preferred" | "interleave", nodes = [...] }'),
), build=lambda r, _: TaskCfg(**r))

MAX_CGROUPS = 1024
CGROUP = Table((
    Key("name", CgroupPath(root_ok=False), help='the cgroup\'s path, e.g. "/batch/job1" (parents are implied)'),
    Key("limit", Limit(), "max", "memory.limit_in_bytes"),
    Key("oom_kill_disable", Bool(), False, "memory.oom_control: tasks wait instead of an OOM kill"),
    Key("swappiness", Int(0, 100), None, "memory.swappiness (needs machine.swap; absent: 60)"),
    Key("oom_group", Bool(), False, "memory.oom.group: an OOM kill takes the whole cgroup (4.19+ profiles)"),
), build=lambda r, _: CgroupCfg(**r))

# [run] schedule: free mode and the controlled modes (DESIGN §8, oomemu/control.py)
SCHEDULES = ("free", "random", "pct", "replay")

RUN = Table((
    Key("seconds", Number(0, 3600), 10.0, "wall-clock deadline"),
    Key("seed", Int(0), 1, "workload randomness"),
    Key("trace", Bool(), True, "record trace.msgpack"),
    Key("stall_jiffies", Int(0), 0, "end a run that makes no progress for this long (0 = off)"),
    Key("schedule", Choice(SCHEDULES, noun="schedule"), "free",
        "free (real concurrency) or a controlled mode: random, pct, replay"),
    Key("pct_depth", Int(1, PCT_MAX_DEPTH), 3, "pct: the bug depth d (d - 1 priority change points)"),
    Key("pct_steps", Int(0), 0, "pct: the expected number of steps the change points are drawn over (0 = 20000)"),
    Key("step_ns", Int(1, 1_000_000), 1000, "controlled modes: virtual nanoseconds each step costs"),
    Key("wall_seconds", Number(0, 86400), 600, "controlled modes: wall-clock safety limit (seconds)"),
    Key("watchdog_ms", Int(100, 3_600_000, also=(0,), text="0 (off) or an integer from 100 to 3600000"), 5000,
        "report a CPU or kswapd process whose heartbeat stops for this long (emulator-stall)"),
    Key("trace_limit", Size(minimum=1 << 20, maximum=1 << 40), "4GiB",
        "the most trace.msgpack may take; the run ends when it is reached (less if the disk has less room)"),
), build=lambda r, _: RunCfg(**r))

_COMMS = ListOf(Comm(), allowed="a list of task names (comm)")
# How a process ended (report.json "tasks"): killed by SIGKILL, exited by itself, or still alive at the end.
TASK_ENDINGS = ("killed", "exited", "alive")
KILLED_BY = ("oom", "allocating_task", "sysrq", "memcg", "signal")
EXPECT_TASK = Table((
    Key("comm", Comm(), help="the processes this applies to (every one of that name must match)"),
    Key("ended", ListOf(Choice(TASK_ENDINGS), allowed="a list of " + ", ".join(TASK_ENDINGS), min_len=1,
                        dedupe=True), None, "how each may have ended"),
    Key("killed_by", ListOf(Choice(KILLED_BY), allowed="a list of " + ", ".join(KILLED_BY), min_len=1,
                            dedupe=True), None, "if killed: by which path"),
    Key("exit_code", Int(0, 255), None, "if exited: with this status (12 = ENOMEM)"),
    Key("enomem", Kills(), None, "how many ENOMEM failures each saw ({ min = N, max = N } or N)"),
    Key("min_count", Int(0), 1, "at least this many processes of that name must have existed"),
), allowed="an array of tables ([[expect.task]])")
_KILLS = Table((Key("min", Int(0), None), Key("max", Int(0), None)), allowed=_KILLS_ALLOWED)

# Every verdict a run can reach (oomemu/report.py and oomemu/check/races.py decide them).
VERDICTS = ("no-oom-kill", "oom-kill", "panic", "livelock", "extra-kill", "parallel-kills", "pinned-mm", "abort-storm", "allocating-task-storm", "reserve-exhaustion", "stall", "thrashing")

EXPECT = Table((
    Key("kills", Kills(), None, "how many OOM kills"),
    Key("victims", _COMMS, None, "every victim's comm is one of these"),
    Key("never_killed", _COMMS, (), "comms no kill may hit"),
    Key("panic", Bool(), None, "whether the run panics"),
    Key("verdict", Choice(VERDICTS, noun="verdict"), None, "the verdict the run must reach"),
    Key("min_rate", Number(0, 1), None, "with --repeat: the least fraction of runs that reach `verdict` "
                                         "(a single run then does not require it)"),
    Key("verdict_not", ListOf(Choice(VERDICTS, noun="verdict"), allowed="a list of verdicts", dedupe=True), (),
        "verdicts the run must not reach"),
    Key("killed_in", CgroupPath(), None, "every kill is a memcg OOM kill of a task in this cgroup's subtree"),
    Key("task", ListOf(EXPECT_TASK, allowed="an array of tables ([[expect.task]])"), (),
        "how the processes of a comm ended (report.json tasks)"),
    Key("kill_cpuset", CpusetName(), None, "every victim was in this cpuset"),
), build=lambda r, _: ExpectCfg(*(r["kills"] or (None, None)), victims=r["victims"],
                                never_killed=r["never_killed"], panic=r["panic"], verdict=r["verdict"],
                                min_rate=r["min_rate"], verdict_not=r["verdict_not"], killed_in=r["killed_in"],
                                tasks=r["task"], kill_cpuset=r["kill_cpuset"]))

DEBUG = Table((
    Key("break", ListOf(Choice(BREAKS, noun="break"), allowed="a list of " + ", ".join(BREAKS), dedupe=True),
        (), "injected bugs"),
), build=lambda r, _: r["break"])



@dataclass(frozen=True, slots=True)
class FeatureSwitches:
    """[kernel] features = { name = true|false }: single switches of oomemu/config/profiles.py."""

    allowed: str = "a table of switch names set to true or false"

    def __call__(self, value: Any, path: str) -> Mapping[str, bool]:
        if not isinstance(value, Mapping):
            raise invalid(path, value, "must be " + self.allowed)
        names = tuple(SWITCH)
        out = {}
        for name, on in value.items():
            if name not in SWITCH:
                raise unknown_key(join_path(path, name), name, names, "a kernel switch")
            out[name] = Bool()(on, join_path(path, name))
        return FrozenMap(out)


KERNEL = Table((
    Key("features", FeatureSwitches(), MappingProxyType({}), "switches turned on or off on top of machine.kernel"),
), build=lambda r, _: r["features"])

_EMPTY = MappingProxyType({})
SCHEMA = Table((
    Key("machine", MACHINE, _EMPTY, "the emulated machine"),
    Key("kernel", KERNEL, _EMPTY, "kernel switches"),
    Key("sysctl", SYSCTL, _EMPTY, "vm.* sysctls"),
    Key("cgroup", ListOf(CGROUP, max_len=MAX_CGROUPS,
                         allowed=f"an array of at most {MAX_CGROUPS} tables ([[cgroup]])"), (), "memory cgroups"),
    Key("task", ListOf(TASK, allowed="an array of tables ([[task]])"), (), "task groups"),
    Key("run", RUN, _EMPTY, "run control"),
    Key("expect", EXPECT, _EMPTY, "what the run must show"),
    Key("debug", DEBUG, _EMPTY, "debugging aids"),
))


# --- Back to plain data -----------------------------------------------------------------------------------


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """The resolved scenario as plain data shaped like a scenario file (sizes in bytes, pages as counts).

    JSON- and TOML-serialisable (absent optional values are left out, as TOML has no null), and it validates
    back to an equal Scenario. The name and source are not part of it.
    """
    machine, sysctl, run = scenario.machine, scenario.sysctl, scenario.run
    return {
        "machine": {"cpus": machine.cpus, "hz": machine.hz, "kernel": machine.kernel, "swap": machine.swap,
                    "max_tasks": machine.max_tasks,
                    "node": [{"zones": dict(node.zones)} for node in machine.nodes]},
        "kernel": {"features": dict(scenario.feature_overrides)},
        "sysctl": {"panic_on_oom": sysctl.panic_on_oom, "oom_kill_allocating_task": sysctl.oom_kill_allocating_task,
                   "oom_dump_tasks": sysctl.oom_dump_tasks, "min_free_kbytes": sysctl.min_free_kbytes,
                   "lowmem_reserve_ratio": list(sysctl.lowmem_reserve_ratio),
                   "hung_task_timeout_secs": sysctl.hung_task_timeout_secs,
                   "hung_task_warnings": sysctl.hung_task_warnings,
                   "overcommit_memory": sysctl.overcommit_memory, "overcommit_ratio": sysctl.overcommit_ratio,
                   "overcommit_kbytes": sysctl.overcommit_kbytes},
        "cgroup": [_cgroup_to_dict(cg) for cg in scenario.cgroups],
        "task": [_task_to_dict(task) for task in scenario.tasks],
        "run": {"seconds": run.seconds, "seed": run.seed, "trace": run.trace, "stall_jiffies": run.stall_jiffies,
                "schedule": run.schedule, "pct_depth": run.pct_depth, "pct_steps": run.pct_steps,
                "step_ns": run.step_ns, "wall_seconds": run.wall_seconds,
                "watchdog_ms": run.watchdog_ms, "trace_limit": run.trace_limit},
        "expect": _expect_to_dict(scenario.expect),
        "debug": {"break": list(scenario.debug_break)},
    }


def _task_to_dict(task: TaskCfg) -> dict[str, Any]:
    """One [[task]] table."""
    return {"comm": task.comm, "count": task.count, "cpu": task.cpu, "oom_score_adj": task.oom_score_adj,
            "uid": task.uid, "caps": list(task.caps), "kthread": task.kthread,
            "program": [_op_to_dict(op) for op in task.program], "cgroup": task.cgroup,
            **({"mm": {k: v for k, v in task.mm.items() if v is not None}} if task.mm is not None else {}),
            **({"mems": list(task.mems)} if task.mems is not None else {}),
            **({"cpuset": task.cpuset} if task.cpuset is not None else {}),
            **({"mempolicy": {"mode": task.mempolicy["mode"], "nodes": list(task.mempolicy["nodes"])}}
               if task.mempolicy is not None else {})}


def _cgroup_to_dict(cg: CgroupCfg) -> dict[str, Any]:
    """One [[cgroup]] table."""
    table: dict[str, Any] = {"name": cg.name, "limit": "max" if cg.limit is None else cg.limit,
                             "oom_kill_disable": cg.oom_kill_disable, "oom_group": cg.oom_group}
    if cg.swappiness is not None:
        table["swappiness"] = cg.swappiness
    return table


def _op_to_dict(op: Op) -> dict[str, Any]:
    """One op table; gfp goes back to its text, which is what the loader reads."""
    table: dict[str, Any] = {"op": op.op}
    for key, value in op.args.items():
        if key == "gfp_name" or (value is None and op.op != "memcg_limit"):
            continue
        if op.op == "memcg_limit" and key == "limit" and value is None:
            value = "max"
        elif value is None:
            continue
        if key == "gfp":
            value = op["gfp_name"]
        elif key == "program":
            value = [_op_to_dict(child) for child in value]
        elif isinstance(value, tuple):
            value = list(value)
        table[key] = value
    return table


def _expect_to_dict(expect: ExpectCfg) -> dict[str, Any]:
    """The [expect] table, leaving out what is not checked."""
    table: dict[str, Any] = {}
    kills = {"min": expect.kills_min, "max": expect.kills_max}
    if any(v is not None for v in kills.values()):
        table["kills"] = {k: v for k, v in kills.items() if v is not None}
    if expect.victims is not None:
        table["victims"] = list(expect.victims)
    table["never_killed"] = list(expect.never_killed)
    if expect.panic is not None:
        table["panic"] = expect.panic
    if expect.verdict is not None:
        table["verdict"] = expect.verdict
    if expect.min_rate is not None:
        table["min_rate"] = expect.min_rate
    if expect.verdict_not:
        table["verdict_not"] = list(expect.verdict_not)
    if expect.killed_in is not None:
        table["killed_in"] = expect.killed_in
    if expect.tasks:
        table["task"] = [_expect_task_to_dict(t) for t in expect.tasks]
    if expect.kill_cpuset is not None:
        table["kill_cpuset"] = expect.kill_cpuset
    return table


def _expect_task_to_dict(want: Mapping[str, Any]) -> dict[str, Any]:
    """One [[expect.task]] table."""
    table: dict[str, Any] = {}
    for key, value in want.items():
        if value is None:
            continue
        if key == "enomem":
            value = {k: v for k, v in zip(("min", "max"), value) if v is not None}
        elif isinstance(value, tuple):
            value = list(value)
        table[key] = value
    return table
