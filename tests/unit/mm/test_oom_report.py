"""The OOM report's text: dump_header's first lines for each kind of current, the %pGg rendering of a gfp
mask, and the task table's rows (KERNEL §3.4, §3.5, §6.12).

Unit machine: DMA 16 MiB + Normal 48 MiB, one node, no swap; its profile prints "3.14.0-oomemu" as the
kernel version. GFP_KERNEL = 0xd0, __GFP_ZERO = 0x8000, __GFP_NOTRACK = 0x200000 (§6.12).
"""
import os
import re

import pytest

from machine_helpers import add_process, make_machine
from oomemu.include.gfp import GFP_KERNEL, GFP_TRANSHUGE, GFP_USER, __GFP_NOTRACK, __GFP_ZERO
from oomemu.kernel import fork
from oomemu.mm import oom_kill

_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")
THREAD = fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND


@pytest.fixture
def mc():
    m, cpu = make_machine()
    yield m, cpu
    m.close()


def printed(cpu, tmp_path, fn, *args):
    path = tmp_path / "dmesg"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    cpu.printk_fd = fd
    try:
        fn(*args)
    finally:
        cpu.printk_fd = -1
        os.close(fd)
    return [_PREFIX.sub("", line) for line in path.read_text().splitlines()]


def test_the_header_names_init_as_current_by_its_pid_and_adj(mc, tmp_path):
    """Current may be init (row 0, pid 1): the first line carries its oom_score_adj, the CPU line its pid."""
    m, cpu = mc
    cpu.current = 0
    m.sig_oom_score_adj[0] = 7
    comm = m.task_comm[0].decode()
    lines = printed(cpu, tmp_path, oom_kill.dump_header, cpu, -1, GFP_KERNEL, 0, None, None)
    assert lines[0] == f"{comm} invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=7"
    assert f"CPU: 0 PID: 1 Comm: {comm} Not tainted 3.14.0-oomemu #1" in lines


def test_the_header_of_a_kworker_oom_has_no_current(mc, tmp_path):
    """With no task current (the SysRq work item), the report names "swapper", adj 0 and pid 0."""
    m, cpu = mc
    cpu.current = -1
    lines = printed(cpu, tmp_path, oom_kill.dump_header, cpu, -1, GFP_KERNEL, 0, None, None)
    assert lines[0] == "swapper invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0"
    assert "CPU: 0 PID: 0 Comm: swapper Not tainted 3.14.0-oomemu #1" in lines


def test_the_task_table_lists_every_process_with_an_mm_once(mc, tmp_path):
    """§3.5: one row per process (not per thread) whose threads hold an mm, skipping init and kernel threads;
    a process with no mm left is skipped and the processes after it are still listed."""
    m, cpu = mc
    a = add_process(m, cpu, "a", rss=10)
    add_process(m, cpu, "a", parent=a, clone_flags=THREAD)
    gone = add_process(m, cpu, "gone", rss=10)
    m.task_mm[gone] = -1
    b = add_process(m, cpu, "b", rss=20, ptes=3)
    lines = printed(cpu, tmp_path, oom_kill.dump_tasks, cpu, None, None)
    assert lines[0] == "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"
    assert lines[1:] == [
        f"[{int(m.task_pid[a]):5d}]  1000 {int(m.task_tgid[a]):5d}       10       10       1        0             0 a",
        f"[{int(m.task_pid[b]):5d}]  1000 {int(m.task_tgid[b]):5d}       20       20       3        0             0 b"]


@pytest.mark.parametrize("mask,text", [
    (0, ""),
    (GFP_KERNEL, "GFP_KERNEL"),
    (GFP_USER, "GFP_USER"),
    (GFP_KERNEL | __GFP_ZERO | __GFP_NOTRACK | 1 << 25, "GFP_KERNEL|__GFP_ZERO|__GFP_NOTRACK|0x2000000"),
    (GFP_TRANSHUGE | __GFP_ZERO, "GFP_TRANSHUGE|__GFP_ZERO"),
])
def test_gfp_names_renders_composites_then_single_bits_by_value_then_the_rest(mask, text):
    """The emulator's %pGg (4.6+ headers): the widest composite name that fits, then each remaining __GFP_ bit
    in increasing value, then whatever is left in hex, joined by "|"."""
    assert oom_kill.gfp_names(mask) == text
