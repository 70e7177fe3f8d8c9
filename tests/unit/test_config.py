"""Scenario configuration: units, schema defaults, whole-file validation and its one-line errors."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import types

import pytest

from oomemu import errors
from oomemu.config import (
    DEFAULT_SCENARIO_PATH, Scenario, ScenarioError, load_scenario, load_scenario_text, parse_size, scenario_to_dict,
)
from oomemu.config import load as load_module
from oomemu.config.load import scenario_from_dict
from oomemu.config.schema import FrozenMap, Op
from oomemu.config.units import format_size, format_value, parse_pages

MiB = 1 << 20

# Used only if oomemu.include.gfp cannot be imported (it is written independently of this package).
_STUB_GFP_NAMES = {"GFP_KERNEL": 0xd0, "GFP_ATOMIC": 0x20, "GFP_HIGHUSER_MOVABLE": 0x200da, "__GFP_NOFAIL": 0x800}


@pytest.fixture(autouse=True)
def gfp_names(monkeypatch):
    """The GFP_NAMES table the loader resolves against: the real one, or a stub while it does not import."""
    try:
        from oomemu.include.gfp import GFP_NAMES
    except ImportError:
        stub = types.ModuleType("oomemu.include.gfp")
        stub.GFP_NAMES = dict(_STUB_GFP_NAMES)
        monkeypatch.setitem(sys.modules, "oomemu.include.gfp", stub)
        return stub.GFP_NAMES
    return GFP_NAMES


def load(text: str) -> Scenario:
    return load_scenario_text(textwrap.dedent(text))


def error_of(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        load(text)
    return str(info.value)


FULL = """
[machine]
cpus = 4
hz = 1000
kernel = "3.16"
swap = "256MiB"
max_tasks = 1024
[[machine.node]]
zones = { DMA = "16MiB", DMA32 = "1GiB", Normal = "64MiB" }
[[machine.node]]
zones = { Normal = "128 mib" }

[sysctl]
panic_on_oom = 2
oom_kill_allocating_task = 1
oom_dump_tasks = 0
min_free_kbytes = 1024
lowmem_reserve_ratio = [128, 64, 16]

[[task]]
comm = "memhog"
count = 3
cpu = 2
oom_score_adj = 500
uid = 0
caps = ["CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]
program = [
  { op = "fault", pages = "64MiB", chunk = 32, gfp = "GFP_KERNEL | __GFP_NOFAIL" },
  { op = "read", pages = 100 },
  { op = "kmalloc", pages = 8, order = 3 },
  { op = "free", pages = "all" },
  { op = "fork", program = [{ op = "fault", pages = 1 }], count = 2, comm = "child", cpu = 3, oom_score_adj = -17 },
  { op = "clone_vm", program = [{ op = "sleep", ms = 1 }] },
  { op = "thread", program = [{ op = "spin", ms = 2.5 }], cpu = "any" },
  { op = "lock", mode = "write" },
  { op = "unlock" },
  { op = "oom_score_adj", value = -1000 },
  { op = "sleep", ms = 5 },
  { op = "wait" },
  { op = "sysrq" },
  { op = "exit", code = 3 },
  { op = "repeat", times = 2 },
]

[[task]]
comm = "kworker"
kthread = true
program = [{ op = "kmalloc", pages = 1, gfp = "GFP_ATOMIC" }, { op = "sleep", ms = 10 }, { op = "repeat" }]

[run]
seconds = 2
seed = 42
trace = false
stall_jiffies = 500

[expect]
kills = { min = 1, max = 3 }
victims = ["memhog", "child"]
never_killed = ["init"]
panic = false
verdict = "oom-kill"

[debug]
break = ["skip_zone_scan_lock", "pick_lowest_badness"]
"""


# --- units --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, nbytes", [
    (0, 0), ("0", 0), (4096, 4096), ("4096", 4096), ("10B", 10), ("1K", 1024), ("1KiB", 1024), ("1kb", 1024),
    ("2M", 2 * MiB), ("2MiB", 2 * MiB), ("2mb", 2 * MiB), ("64 MiB", 64 * MiB), ("1G", 1 << 30),
    ("1GiB", 1 << 30), ("3gB", 3 << 30), ("1.5K", 1536), (" 16MiB ", 16 * MiB),
])
def test_parse_size_accepts_ints_and_unit_strings(value, nbytes):
    """Sizes are bytes as an int, or a number with a case-insensitive 1024-based unit."""
    assert parse_size(value, "x") == nbytes


@pytest.mark.parametrize("value", [-1, "-1MiB", "MiB", "12 parsecs", "1T", "", True, 1.5, None, [1], "1.3B"])
def test_parse_size_rejects_garbage_naming_the_path(value):
    """A bad size is a ScenarioError that starts with the key path and the value."""
    with pytest.raises(ScenarioError) as info:
        parse_size(value, "machine.swap")
    assert str(info.value).startswith(f"machine.swap = {format_value(value)}: must be ")
    assert info.value.path == "machine.swap"


def test_parse_pages_counts_ints_as_pages_and_sizes_as_bytes():
    """An int is a page count; a size string is converted at 4KiB per page and must be whole pages."""
    assert parse_pages(7, "p") == 7
    assert parse_pages("64MiB", "p") == 16384
    assert parse_pages("8K", "p") == 2
    with pytest.raises(ScenarioError, match=r'^p = "6K": must be a multiple of 4KiB'):
        parse_pages("6K", "p")
    with pytest.raises(ScenarioError, match=r"^p = true: must be a page count"):
        parse_pages(True, "p")


@pytest.mark.parametrize("nbytes, text", [(0, "0"), (4096, "4KiB"), (16 * MiB, "16MiB"), (1 << 31, "2GiB"),
                                          (1000, "1000B"), (1536, "1536B")])
def test_format_size_prints_the_shortest_exact_unit(nbytes, text):
    """format_size picks the largest unit that divides the size exactly."""
    assert format_size(nbytes) == text


# --- a full file and the defaults ---------------------------------------------------------------------


def test_full_file_resolves_every_field(gfp_names):
    """Every section and op of a complete file resolves to typed, defaulted values."""
    s = load(FULL)
    m = s.machine
    assert (m.cpus, m.hz, m.kernel, m.swap, m.max_tasks) == (4, 1000, "3.16", 256 * MiB, 1024)
    assert [dict(n.zones) for n in m.nodes] == [
        {"DMA": 16 * MiB, "DMA32": 1 << 30, "Normal": 64 * MiB}, {"DMA": 0, "DMA32": 0, "Normal": 128 * MiB}]
    sc = s.sysctl
    assert (sc.panic_on_oom, sc.oom_kill_allocating_task, sc.oom_dump_tasks, sc.min_free_kbytes,
            sc.lowmem_reserve_ratio) == (2, 1, 0, 1024, (128, 64, 16))
    memhog, kworker = s.tasks
    assert (memhog.comm, memhog.count, memhog.cpu, memhog.oom_score_adj, memhog.uid, memhog.kthread) == (
        "memhog", 3, 2, 500, 0, False)
    assert memhog.caps == ("CAP_SYS_ADMIN", "CAP_SYS_RESOURCE")
    ops = memhog.program
    assert [op.op for op in ops] == ["fault", "read", "kmalloc", "free", "fork", "clone_vm", "thread", "lock",
                                     "unlock", "oom_score_adj", "sleep", "wait", "sysrq", "exit", "repeat"]
    assert dict(ops[0].args) == {"pages": 16384, "chunk": 32, "gfp_name": "GFP_KERNEL|__GFP_NOFAIL",
                                 "gfp": gfp_names["GFP_KERNEL"] | gfp_names["__GFP_NOFAIL"]}
    assert dict(ops[1].args) == {"pages": 100, "chunk": 16, "exec": False}
    assert dict(ops[2].args) == {"pages": 8, "order": 3, "gfp": gfp_names["GFP_KERNEL"], "gfp_name": "GFP_KERNEL"}
    assert ops[3]["pages"] == "all"
    fork = ops[4]
    assert (fork["count"], fork["comm"], fork["cpu"], fork["oom_score_adj"]) == (2, "child", 3, -17)
    assert fork["program"] == (Op("fault", FrozenMap(pages=1, chunk=16, gfp=gfp_names["GFP_HIGHUSER_MOVABLE"],
                                                     gfp_name="GFP_HIGHUSER_MOVABLE")),)
    assert dict(ops[5].args) == {"program": (Op("sleep", FrozenMap(ms=1.0, state="interruptible")),), "count": 1, "comm": None,
                                 "cpu": "same", "oom_score_adj": None}
    assert dict(ops[6].args) == {"program": (Op("spin", FrozenMap(ms=2.5)),), "count": 1, "cpu": "any"}
    assert dict(ops[7].args) == {"what": "mmap_sem", "mode": "write"}
    assert dict(ops[8].args) == {"what": "mmap_sem"}
    assert ops[9]["value"] == -1000
    assert ops[10]["ms"] == 5.0 and isinstance(ops[10]["ms"], float)
    assert dict(ops[11].args) == {} and ops[12]["key"] == "f"
    assert ops[13]["code"] == 3 and ops[14]["times"] == 2
    assert kworker.kthread and kworker.program[0]["gfp"] == gfp_names["GFP_ATOMIC"]
    assert (s.run.seconds, s.run.seed, s.run.trace, s.run.stall_jiffies) == (2.0, 42, False, 500)
    e = s.expect
    assert (e.kills_min, e.kills_max, e.victims, e.never_killed, e.panic, e.verdict) == (
        1, 3, ("memhog", "child"), ("init",), False, "oom-kill")
    assert s.debug_break == ("skip_zone_scan_lock", "pick_lowest_badness")


def test_empty_file_gets_every_default():
    """With no sections at all, every key takes its documented default."""
    s = load("")
    m = s.machine
    assert (m.cpus, m.hz, m.kernel, m.swap, m.max_tasks) == (2, 250, "3.14", 0, 512)
    assert [dict(n.zones) for n in m.nodes] == [{"DMA": 16 * MiB, "DMA32": 0, "Normal": 112 * MiB}]
    sc = s.sysctl
    assert (sc.panic_on_oom, sc.oom_kill_allocating_task, sc.oom_dump_tasks, sc.min_free_kbytes,
            sc.lowmem_reserve_ratio) == (0, 0, 1, 0, (256, 256, 32))
    assert s.tasks == ()
    assert (s.run.seconds, s.run.seed, s.run.trace, s.run.stall_jiffies) == (10.0, 1, True, 0)
    e = s.expect
    assert (e.kills_min, e.kills_max, e.victims, e.never_killed, e.panic, e.verdict) == (
        None, None, None, (), None, None)
    assert s.debug_break == ()
    assert (s.name, s.source) == ("<string>", "<string>")


def test_task_keys_default_except_program(gfp_names):
    """A task needs only a program; its other keys and its ops' optional fields default."""
    task, = load('[[task]]\nprogram = [{ op = "fault", pages = 4 }]').tasks
    assert (task.comm, task.count, task.cpu, task.oom_score_adj, task.uid, task.caps, task.kthread) == (
        "task", 1, "any", 0, 1000, (), False)
    assert dict(task.program[0].args) == {"pages": 4, "chunk": 16, "gfp": gfp_names["GFP_HIGHUSER_MOVABLE"],
                                          "gfp_name": "GFP_HIGHUSER_MOVABLE"}


def test_partial_sections_keep_the_other_defaults():
    """Giving one key of a section leaves the section's other keys at their defaults."""
    s = load("[machine]\ncpus = 8\n[run]\nseed = 0\n[[machine.node]]\nzones = { Normal = \"4MiB\" }")
    assert (s.machine.cpus, s.machine.hz, s.run.seed, s.run.seconds) == (8, 250, 0, 10.0)
    assert dict(s.machine.nodes[0].zones) == {"DMA": 0, "DMA32": 0, "Normal": 4 * MiB}


def test_expect_kills_accepts_one_bound_or_an_exact_count():
    """kills may give only min, only max, or one integer meaning exactly that many."""
    assert (load("[expect]\nkills = { max = 0 }").expect.kills_min,
            load("[expect]\nkills = { max = 0 }").expect.kills_max) == (None, 0)
    exact = load("[expect]\nkills = 2").expect
    assert (exact.kills_min, exact.kills_max) == (2, 2)


def test_debug_break_and_caps_drop_repeats():
    """Listing the same break or capability twice means it once, in first-seen order."""
    s = load('[debug]\nbreak = ["double_free_victim", "double_free_victim", "skip_zone_scan_lock"]')
    assert s.debug_break == ("double_free_victim", "skip_zone_scan_lock")


# --- errors -------------------------------------------------------------------------------------------

ONE_OP = '[[task]]\nprogram = [{op}]\n'


@pytest.mark.parametrize("text, message", [
    # unknown keys, at several depths, with did-you-mean
    ("tasks = []", 'tasks: unknown key; allowed: machine, kernel, sysctl, cgroup, task, run, expect, debug (did you mean "task"?)'),
    ("[machine]\ncpu = 2",
     'machine.cpu: unknown key; allowed: cpus, hz, kernel, swap, max_tasks, node (did you mean "cpus"?)'),
    ("[[machine.node]]\nzone = {}", 'machine.node[0].zone: unknown key; allowed: zones (did you mean "zones"?)'),
    ('[[machine.node]]\nzones = { normal = "16MiB" }',
     'machine.node[0].zones.normal: unknown key; allowed: DMA, DMA32, Normal (did you mean "Normal"?)'),
    ("[sysctl]\nxyzzy = 1", "sysctl.xyzzy: unknown key; allowed: panic_on_oom, oom_kill_allocating_task, "
                            "oom_dump_tasks, min_free_kbytes, lowmem_reserve_ratio, "
     "hung_task_timeout_secs, hung_task_warnings, overcommit_memory, overcommit_ratio, overcommit_kbytes"),
    ('[[task]]\nprogam = []', 'task[0].progam: unknown key; allowed: comm, count, cpu, oom_score_adj, uid, caps, '
                              'kthread, program, mm, cgroup, mems, cpuset, mempolicy (did you mean "program"?)'),
    (ONE_OP.format(op='{ op = "fault", pages = 1, chunks = 4 }'),
     'task[0].program[0].chunks: unknown key for op "fault"; allowed: op, pages, chunk, gfp (did you mean "chunk"?)'),
    (ONE_OP.format(op='{ op = "fork", program = [{ op = "sleep", msec = 1 }] }'),
     'task[0].program[0].program[0].msec: unknown key for op "sleep"; allowed: op, ms, state (did you mean "ms"?)'),
    ("[expect]\nkills = { mni = 1 }", 'expect.kills.mni: unknown key; allowed: min, max (did you mean "min"?)'),
    ('["odd key"]\nx = 1', '"odd key": unknown key; allowed: machine, kernel, sysctl, cgroup, task, run, expect, debug'),
    # wrong type
    ('[machine]\ncpus = "2"', 'machine.cpus = "2": must be an integer from 1 to 64'),
    ("[machine]\nkernel = 3.14", 'machine.kernel = 3.14: must be one of "3.14", "3.16", "3.19", "4.2", "4.6", "4.7", "4.9", "4.17", "5.1", "6.1"'),
    ('[machine]\nhz = "250"', "machine.hz = \"250\": must be one of 100, 250, 300, 1000"),
    ("[run]\ntrace = 1", "run.trace = 1: must be true or false"),
    ('[run]\nseconds = "10"', 'run.seconds = "10": must be a number > 0 and <= 3600'),
    ("machine = 3", "machine = 3: must be a table"),
    ('[task]\ncomm = "x"', 'task = {comm = "x"}: must be an array of tables ([[task]])'),
    ("[sysctl]\nlowmem_reserve_ratio = 256", "sysctl.lowmem_reserve_ratio = 256: must be a list of 3 integers >= 1 "
                                             "(DMA, DMA32, Normal)"),
    # bool is not an int
    ("[machine]\ncpus = true", "machine.cpus = true: must be an integer from 1 to 64"),
    ("[sysctl]\npanic_on_oom = false", "sysctl.panic_on_oom = false: must be an integer from 0 to 2"),
    ("[machine]\nhz = true", "machine.hz = true: must be one of 100, 250, 300, 1000"),
    # out of range
    ("[machine]\ncpus = 0", "machine.cpus = 0: must be an integer from 1 to 64"),
    ("[machine]\nmax_tasks = 15", "machine.max_tasks = 15: must be an integer from 16 to 200000"),
    ("[machine]\nhz = 200", "machine.hz = 200: must be one of 100, 250, 300, 1000"),
    ("[sysctl]\nmin_free_kbytes = 64", "sysctl.min_free_kbytes = 64: must be 0 (computed by the kernel formula) "
                                       "or an integer from 128 to 65536"),
    ("[sysctl]\nlowmem_reserve_ratio = [256, 0, 32]", "sysctl.lowmem_reserve_ratio[1] = 0: must be an integer >= 1"),
    ("[sysctl]\nlowmem_reserve_ratio = [1, 2]", "sysctl.lowmem_reserve_ratio = [1, 2]: must be a list of 3 integers"
                                                " >= 1 (DMA, DMA32, Normal)"),
    ("[run]\nseconds = 0", "run.seconds = 0: must be a number > 0 and <= 3600"),
    ("[run]\nseconds = 3600.5", "run.seconds = 3600.5: must be a number > 0 and <= 3600"),
    ("[run]\nseconds = nan", "run.seconds = nan: must be a number > 0 and <= 3600"),
    ("[run]\nseed = -1", "run.seed = -1: must be an integer >= 0"),
    ('[[task]]\nuid = 65536\nprogram = [{ op = "wait" }]', "task[0].uid = 65536: must be an integer from 0 to 65535"),
    ('[[task]]\noom_score_adj = -1001\nprogram = [{ op = "wait" }]',
     "task[0].oom_score_adj = -1001: must be an integer from -1000 to 1000"),
    (ONE_OP.format(op='{ op = "kmalloc", pages = 1, order = 11 }'),
     "task[0].program[0].order = 11: must be an integer from 0 to 10"),
    (ONE_OP.format(op='{ op = "sleep", ms = 0 }'),
     "task[0].program[0].ms = 0: must be a number of milliseconds > 0 and <= 3600000"),
    ("[machine]\nnode = []", "machine.node = []: must be an array of 1 to 8 tables ([[machine.node]])"),
    ("[expect]\nkills = { min = 3, max = 1 }", "expect.kills = {min = 3, max = 1}: min must not be larger than max"),
    # bad sizes
    ('[machine]\nswap = "lots"', 'machine.swap = "lots": must be a size: bytes as an integer >= 0, or a string like '
                                 '"64MiB" (units B, K/KiB/KB, M/MiB/MB, G/GiB/GB; 1024-based)'),
    ('[machine]\nswap = "-1G"', 'machine.swap = "-1G": must be a size: bytes as an integer >= 0, or a string like '
                                '"64MiB" (units B, K/KiB/KB, M/MiB/MB, G/GiB/GB; 1024-based)'),
    ('[machine]\nswap = "1000"', 'machine.swap = "1000": must be a multiple of 4KiB'),
    ('[[machine.node]]\nzones = { Normal = "10MiB" }', 'machine.node[0].zones.Normal = "10MiB": must be a multiple of '
                                                        '4MiB'),
    ('[[machine.node]]\nzones = { Normal = "68GiB" }', 'machine.node[0].zones.Normal = "68GiB": must be at most 64GiB'),
    ('[[machine.node]]\nzones = { DMA = "16MiB" }',
     "machine.node[0].zones.Normal = 0: must be larger than 0 on node 0"),
    ('[[machine.node]]\nzones = { Normal = "0" }', 'machine.node[0].zones.Normal = "0": must be larger than 0 on '
                                                   'node 0'),
    (ONE_OP.format(op='{ op = "fault", pages = "6KiB" }'),
     'task[0].program[0].pages = "6KiB": must be a multiple of 4KiB (one page)'),
    (ONE_OP.format(op='{ op = "fault", pages = 0 }'), "task[0].program[0].pages = 0: must be at least 1 page"),
    (ONE_OP.format(op='{ op = "free", pages = "everything" }'),
     'task[0].program[0].pages = "everything": must be a page count (an integer >= 1) or a size string like "64MiB" '
     '(a multiple of 4KiB), or "all"'),
    # bad op, missing required op field, ops' own values
    (ONE_OP.format(op='{ op = "faul", pages = 1 }'),
     'task[0].program[0].op = "faul": unknown op; allowed: fault, read, kmalloc, kfree, free, fork, clone_vm, '
     'thread, lock, unlock, oom_score_adj, sleep, spin, exit, repeat, wait, sysrq, cgroup_move, memcg_limit, mmap, '
     'set_mems, set_mempolicy, kill, sysctl, touch (did you mean "fault"?)'),
    (ONE_OP.format(op='{ pages = 1 }'), 'task[0].program[0].op: missing; must be one of "fault", "read", "kmalloc", '
                                        '"kfree", "free", "fork", "clone_vm", "thread", "lock", "unlock", "oom_score_adj", '
                                        '"sleep", "spin", "exit", "repeat", "wait", "sysrq", "cgroup_move", '
                                        '"memcg_limit", "mmap", "set_mems", "set_mempolicy", "kill", "sysctl", "touch"'),
    (ONE_OP.format(op='{ op = "fault" }'),
     'task[0].program[0].pages: missing; required by op "fault"; must be a page count (an integer >= 1) or a size '
     'string like "64MiB" (a multiple of 4KiB)'),
    (ONE_OP.format(op='{ op = "oom_score_adj" }'),
     'task[0].program[0].value: missing; required by op "oom_score_adj"; must be an integer from -1000 to 1000'),
    (ONE_OP.format(op='{ op = "lock", what = "page_lock" }'),
     'task[0].program[0].what = "page_lock": must be one of "mmap_sem"'),
    (ONE_OP.format(op='{ op = "lock", mode = "Write" }'),
     'task[0].program[0].mode = "Write": must be one of "read", "write" (did you mean "write"?)'),
    (ONE_OP.format(op='{ op = "sysrq", key = "b" }'), 'task[0].program[0].key = "b": must be one of "f"'),
    (ONE_OP.format(op='"sleep"'), 'task[0].program[0] = "sleep": must be a table with an "op" key, e.g. '
                                  '{ op = "sleep", ms = 5 }'),
    ('[[task]]\ncomm = "x"', 'task[0].program: missing; must be a list of 1 or more op tables, e.g. '
                             '[{ op = "sleep", ms = 5 }]'),
    ('[[task]]\nprogram = []', 'task[0].program = []: must be a list of 1 or more op tables, e.g. '
                               '[{ op = "sleep", ms = 5 }]'),
    # the nested program of a fork is validated with its full path
    (ONE_OP.format(op='{ op = "sleep", ms = 1 }, { op = "fork", program = [{ op = "fault", pages = -4 }] }'),
     'task[0].program[1].program[0].pages = -4: must be a page count (an integer >= 1) or a size string like '
     '"64MiB" (a multiple of 4KiB)'),
    (ONE_OP.format(op='{ op = "thread", program = [{ op = "clone_vm", program = [{ op = "wait", x = 1 }] }] }'),
     'task[0].program[0].program[0].program[0].x: unknown key for op "wait"; allowed: op'),
    # CPU indices must exist on the machine
    ('[[task]]\ncpu = 2\nprogram = [{ op = "wait" }]',
     'task[0].cpu = 2: must be "any" or a CPU index from 0 to 1 (machine.cpus = 2)'),
    ('[machine]\ncpus = 4\n[[task]]\ncpu = "Any"\nprogram = [{ op = "wait" }]',
     'task[0].cpu = "Any": must be "any" or a CPU index (an integer from 0 to machine.cpus - 1) (did you mean "any"?)'),
    (ONE_OP.format(op='{ op = "fork", program = [{ op = "thread", cpu = 7, program = [{ op = "wait" }] }] }'),
     'task[0].program[0].program[0].cpu = 7: must be "same", "any" or a CPU index from 0 to 1 (machine.cpus = 2)'),
    # task names, caps, breaks
    ('[[task]]\ncomm = "a_name_longer_than_15"\nprogram = [{ op = "wait" }]',
     'task[0].comm = "a_name_longer_than_15": must be a name of 1 to 15 printable ASCII characters, not all spaces'),
    ('[[task]]\ncomm = "   "\nprogram = [{ op = "wait" }]',
     'task[0].comm = "   ": must be a name of 1 to 15 printable ASCII characters, not all spaces'),
    ('[[task]]\ncaps = ["CAP_KILL"]\nprogram = [{ op = "wait" }]',
     'task[0].caps[0] = "CAP_KILL": must be one of "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"'),
    ('[debug]\nbreak = ["skip_zone_scan"]',
     'debug.break[0] = "skip_zone_scan": unknown break; allowed: skip_zone_scan_lock, skip_clear_zonelist_oom, '
     'double_free_victim, pick_lowest_badness, sigkill_wakes_uninterruptible, ignore_oom_score_adj_min, nonatomic_bitops, '
     'memcg_uncharge_leak (did you mean "skip_zone_scan_lock"?)'),
    ('[expect]\nvictims = "memhog"', 'expect.victims = "memhog": must be a list of task names (comm)'),
    # cross-key checks
    ('[[task]]\nkthread = true\nprogram = [{ op = "sleep", ms = 1 }, { op = "fault", pages = 1 }]',
     'task[0].program[1].op = "fault": a kernel thread (kthread = true) has no mm; allowed: kmalloc, kfree, '
     'thread, oom_score_adj, sleep, spin, exit, repeat, wait, sysrq'),
    ('[[task]]\ncount = 500\nprogram = [{ op = "wait" }]\n[[task]]\ncount = 13\nprogram = [{ op = "wait" }]',
     "task[1].count = 13: the [[task]] groups start 513 tasks, more than machine.max_tasks = 512"),
    # cpusets and mempolicies: nodes must exist (the default machine has one node)
    ('[[task]]\nmems = [0, 1]\nprogram = [{ op = "wait" }]',
     "task[0].mems[1] = 1: names a missing node: the machine has 1 node(s), 0 to 0 ([[machine.node]])"),
    ('[[task]]\nmems = []\nprogram = [{ op = "wait" }]',
     "task[0].mems = []: must be a list of 1 or more NUMA node ids (integers from 0 to machine.node count - 1)"),
    ('[[task]]\nmempolicy = { mode = "bind", nodes = [] }\nprogram = [{ op = "wait" }]',
     'task[0].mempolicy.nodes = []: must name at least one node for mode = "bind"'),
    ('[[task]]\nmempolicy = { mode = "interleave", nodes = [3] }\nprogram = [{ op = "wait" }]',
     "task[0].mempolicy.nodes[0] = 3: names a missing node: the machine has 1 node(s), 0 to 0 ([[machine.node]])"),
    ('[[task]]\nmempolicy = { mode = "local", nodes = [0] }\nprogram = [{ op = "wait" }]',
     'task[0].mempolicy.mode = "local": unknown mempolicy mode; allowed: bind, preferred, interleave'),
    ('[[task]]\nmempolicy = { nodes = [0] }\nprogram = [{ op = "wait" }]',
     'task[0].mempolicy.mode: missing; must be one of "bind", "preferred", "interleave"'),
    ('[[machine.node]]\nzones = { Normal = "16MiB" }\n[[machine.node]]\nzones = { Normal = "16MiB" }\n'
     '[[task]]\nmems = [0]\nmempolicy = { mode = "bind", nodes = [1] }\nprogram = [{ op = "wait" }]',
     "task[0].mempolicy.nodes = [1]: must meet the task's mems [0] (set_mempolicy: EINVAL)"),
    ('[[machine.node]]\nzones = { Normal = "16MiB" }\n[[machine.node]]\nzones = { Normal = "0" }\n'
     '[[task]]\nmems = [1]\nprogram = [{ op = "wait" }]',
     "task[0].mems[0] = 1: names a node without memory (all its zones are 0)"),
    (ONE_OP.format(op='{ op = "set_mems", nodes = [2] }'),
     "task[0].program[0].nodes[0] = 2: names a missing node: the machine has 1 node(s), 0 to 0 ([[machine.node]])"),
    (ONE_OP.format(op='{ op = "set_mempolicy", mode = "bind" }'),
     'task[0].program[0].nodes = []: must name at least one node for mode = "bind"'),
    ('[[task]]\ncpuset = "job"\nprogram = [{ op = "wait" }]',
     'task[0].cpuset = "job": must be a cpuset path such as "/" or "/job" (names of letters, digits, "-", "_", ".")'),
    ('[sysctl]\novercommit_memory = 3', "sysctl.overcommit_memory = 3: must be an integer from 0 to 2"),
    (ONE_OP.format(op='{ op = "mmap", pages = 1, on_enomem = "abort" }'),
     'task[0].program[0].on_enomem = "abort": must be one of "continue", "exit"'),
])
def test_errors_name_the_key_value_and_what_is_allowed(text, message):
    """Each bad scenario fails with exactly this one-line message."""
    assert error_of(text) == message


def test_bad_gfp_name_suggests_the_closest_flag():
    """An unknown gfp flag is named, with the allowed names and a did-you-mean."""
    message = error_of(ONE_OP.format(op='{ op = "kmalloc", pages = 1, gfp = "GFP_KERNEL|__GFP_NOFAL" }'))
    assert message.startswith('task[0].program[0].gfp = "GFP_KERNEL|__GFP_NOFAL": unknown gfp flag "__GFP_NOFAL"; '
                              "allowed: ")
    assert "GFP_KERNEL" in message and message.endswith('(did you mean "__GFP_NOFAIL"?)')
    assert error_of(ONE_OP.format(op='{ op = "fault", pages = 1, gfp = "gfp_kernel" }')).endswith(
        '(did you mean "GFP_KERNEL"?)')
    assert error_of(ONE_OP.format(op='{ op = "fault", pages = 1, gfp = "GFP_KERNEL||" }')) == (
        'task[0].program[0].gfp = "GFP_KERNEL||": must be GFP flag names joined by "|", e.g. '
        '"GFP_KERNEL|__GFP_NOFAIL"')


def test_first_error_in_schema_order_wins():
    """With several mistakes, the error reported is the first in section order (machine before run)."""
    assert error_of("[run]\nseconds = 0\n[machine]\ncpus = 0").startswith("machine.cpus = 0")


def test_unknown_key_is_reported_before_a_missing_one():
    """A misspelt required key reads as the typo, not as a missing key."""
    assert error_of(ONE_OP.format(op='{ op = "fault", page = 1 }')).startswith(
        'task[0].program[0].page: unknown key for op "fault"')


@pytest.mark.parametrize("text", [
    '[[task]]\ncomm = "a\\nb"\nprogram = [{ op = "wait" }]',
    '[[task]]\ncomm = "a\\u2028b"\nprogram = [{ op = "wait" }]',
    '[expect]\nverdict = 1\n',
    "[run]\nseed = [" + ", ".join(["1"] * 200) + "]",
    "x = 1\ny = ",
    "[machine]\n[machine]",
])
def test_errors_are_exactly_one_line(text):
    """No value, however long or odd, makes an error message span lines."""
    message = error_of(text)
    assert len(message.splitlines()) == 1
    assert len(message) < 300


def test_scenario_error_folds_line_breaks():
    """A ScenarioError built from a multi-line message still prints as one line."""
    assert str(ScenarioError("one\ntwo\r\nthree")) == "one two three"


def test_error_carries_path_and_source(tmp_path):
    """The error keeps the key path and the scenario file, for the CLI to print."""
    path = tmp_path / "bad.toml"
    path.write_text("[machine]\ncpus = 99\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.path, info.value.source) == ("machine.cpus", str(path))
    assert info.value.exit_code == 2


def test_toml_syntax_error_names_the_line(tmp_path):
    """A TOML syntax error becomes a ScenarioError with the file and the line."""
    path = tmp_path / "broken.toml"
    path.write_text("[machine]\ncpus = 2\nhz = = 3\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: TOML syntax error: ") and "line 3" in message
    assert len(message.splitlines()) == 1


def test_missing_file(tmp_path):
    """A scenario path that does not exist is a ScenarioError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ScenarioError, match="^scenario file not found: ") as info:
        load_scenario(path)
    assert str(info.value) == f"scenario file not found: {path}"


def test_directory_and_non_utf8_are_scenario_errors(tmp_path):
    """A directory or a binary file is reported as bad input, not a traceback."""
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(binary)


# --- files, defaults, round trips ---------------------------------------------------------------------


def test_file_name_is_the_stem_and_bom_is_accepted(tmp_path):
    """A loaded file is named after its stem; an editor's byte-order mark is harmless."""
    path = tmp_path / "parallel-oom.toml"
    path.write_bytes("\ufeff[machine]\ncpus = 3\n".encode())
    s = load_scenario(str(path))
    assert (s.name, s.source, s.machine.cpus) == ("parallel-oom", str(path), 3)


def test_none_loads_the_builtin_default(tmp_path, monkeypatch):
    """load_scenario(None) reads DEFAULT_SCENARIO_PATH and calls it "default" from "<default>"."""
    fake = tmp_path / "default.toml"
    fake.write_text('[[task]]\ncomm = "memhog"\nprogram = [{ op = "fault", pages = "1MiB" }]\n')
    monkeypatch.setattr(load_module, "DEFAULT_SCENARIO_PATH", fake)
    s = load_scenario(None)
    assert (s.name, s.source, s.tasks[0].comm) == ("default", "<default>", "memhog")


def test_shipped_default_scenario_validates():
    """The packaged default.toml, once it exists, is a valid scenario."""
    if not DEFAULT_SCENARIO_PATH.exists():
        pytest.skip("oomemu/config/default.toml not written yet")
    assert load_scenario(None).source == "<default>"


def test_scenario_to_dict_round_trips_through_json():
    """scenario_to_dict is plain JSON data that validates back to an equal Scenario."""
    s = load(FULL)
    data = json.loads(json.dumps(scenario_to_dict(s)))
    assert data["machine"]["swap"] == 256 * MiB
    assert data["machine"]["node"][1]["zones"] == {"DMA": 0, "DMA32": 0, "Normal": 128 * MiB}
    assert data["task"][0]["program"][0] == {"op": "fault", "pages": 16384, "chunk": 32,
                                             "gfp": "GFP_KERNEL|__GFP_NOFAIL"}
    assert "comm" not in data["task"][0]["program"][5]  # None (inherit) is left out: TOML has no null
    assert scenario_from_dict(data, name=s.name, source=s.source) == s
    empty = load("")
    assert scenario_from_dict(json.loads(json.dumps(scenario_to_dict(empty))), name=empty.name,
                              source=empty.source) == empty


def test_scenario_is_immutable_hashable_and_picklable():
    """A Scenario cannot be changed after loading, hashes, and survives pickling."""
    s = load(FULL)
    with pytest.raises(AttributeError):
        s.machine.cpus = 8
    with pytest.raises(TypeError):
        s.tasks[0].program[0].args["pages"] = 1
    with pytest.raises(TypeError):
        s.machine.nodes[0].zones["Normal"] = 0
    assert hash(s) == hash(load(FULL))
    assert pickle.loads(pickle.dumps(s)) == s


def test_op_reads_its_arguments():
    """An Op answers [], get() and `in` from its arguments."""
    op = Op("sleep", FrozenMap(ms=5.0))
    assert (op["ms"], op.get("ms"), op.get("pages", 0), "ms" in op, "pages" in op) == (5.0, 5.0, 0, True, False)


# --- the package as a whole ---------------------------------------------------------------------------


def test_exception_hierarchy_and_exit_codes():
    """Each exception class maps to its documented exit status."""
    assert issubclass(errors.ScenarioError, errors.OomemuError)
    assert [c.exit_code for c in (errors.ScenarioError, errors.InvariantViolation, errors.EmulatorError,
                                  errors.OomemuError)] == [2, 1, 3, 3]
    for cls in (errors.WorkerDied, errors.LockTimeout, errors.KernelBug):
        assert issubclass(cls, errors.EmulatorError) and cls.exit_code == 3


def test_import_does_not_pull_in_numpy():
    """`import oomemu.config` stays light: no numpy at start-up."""
    code = "import sys, oomemu.config; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
