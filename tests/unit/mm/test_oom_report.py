"""The OOM report's text: dump_header's first lines for each kind of current, the %pGg rendering of a gfp
mask, and the task table's rows (KERNEL §3.4, §3.5, §6.12).

Unit machine: DMA 16 MiB + Normal 48 MiB, one node, no swap; its profile prints "3.14.0-oomemu" as the
kernel version. GFP_KERNEL = 0xd0, __GFP_ZERO = 0x8000, __GFP_NOTRACK = 0x200000 (§6.12).
"""
import os
import re

import pytest

from machine_helpers import add_process, mc
from oomemu.include.gfp import GFP_KERNEL, GFP_TRANSHUGE, GFP_USER, __GFP_NOTRACK, __GFP_ZERO
from oomemu.kernel import fork
from oomemu.mm import oom_kill

_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")
THREAD = fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND


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


def test_show_mem_prints_each_populated_zone_its_buddy_lists_and_the_totals(mc, tmp_path):
    """The Mem-Info block (show_free_areas, 3.14 layout), counters in kB (4 kB pages). Watermarks by hand
    (KERNEL §6.5: min_free_kbytes 1024 = 256 pages, shared 64 : 192): DMA min 64, low 80, high 96; Normal 192,
    240, 288. lowmem_reserve: DMA's against DMA32, Normal and Movable = managed pages above it / 256 = 0, 48,
    48; Normal's are 0. Unpopulated zones (DMA32, Movable) are left out. The DMA buddy lists hold 2 order-0,
    1 order-1 and 1 order-3 blocks: 2 + 2 + 8 = 12 pages = 48 kB. Page cache = all file LRU pages (3 + 4 in
    DMA, 10 + 20 in Normal) = 37."""
    from oomemu.include.mmzone import (MAX_ORDER, NR_ACTIVE_ANON, NR_ACTIVE_FILE, NR_FREE_PAGES,
                                       NR_INACTIVE_ANON, NR_INACTIVE_FILE, NR_ISOLATED_ANON, NR_ISOLATED_FILE)
    from oomemu.machine import Z_NR_FREE, Z_STAT
    m, cpu = mc
    for stat, v in ((NR_FREE_PAGES, 1000), (NR_ACTIVE_ANON, 1), (NR_INACTIVE_ANON, 2), (NR_ACTIVE_FILE, 3),
                    (NR_INACTIVE_FILE, 4), (NR_ISOLATED_ANON, 5), (NR_ISOLATED_FILE, 6)):
        m.zone[0, Z_STAT + stat] = v
    for stat, v in ((NR_FREE_PAGES, 2000), (NR_ACTIVE_ANON, 0), (NR_INACTIVE_ANON, 0), (NR_ACTIVE_FILE, 10),
                    (NR_INACTIVE_FILE, 20), (NR_ISOLATED_ANON, 0), (NR_ISOLATED_FILE, 0)):
        m.zone[2, Z_STAT + stat] = v
    m.zone[0, Z_NR_FREE:Z_NR_FREE + MAX_ORDER] = 0
    m.zone[0, Z_NR_FREE + 0], m.zone[0, Z_NR_FREE + 1], m.zone[0, Z_NR_FREE + 3] = 2, 1, 1
    lines = printed(cpu, tmp_path, oom_kill.show_mem, cpu)
    assert lines[:5] == [
        "Mem-Info:",
        "Node 0 DMA free:4000kB min:256kB low:320kB high:384kB active_anon:4kB inactive_anon:8kB active_file:12kB "
        "inactive_file:16kB isolated(anon):20kB isolated(file):24kB present:16384kB managed:16384kB",
        "lowmem_reserve[]: 0 0 48 48",
        "Node 0 Normal free:8000kB min:768kB low:960kB high:1152kB active_anon:0kB inactive_anon:0kB "
        "active_file:40kB inactive_file:80kB isolated(anon):0kB isolated(file):0kB present:49152kB "
        "managed:49152kB",
        "lowmem_reserve[]: 0 0 0 0"]
    sizes = [4 << o for o in range(MAX_ORDER)]
    counts = [2, 1, 0, 1] + [0] * (MAX_ORDER - 4)
    assert lines[5] == "Node 0 DMA: " + " ".join(f"{c}*{s}kB" for c, s in zip(counts, sizes)) + " = 48kB"
    assert lines[6].startswith("Node 0 Normal: ")
    assert lines[7:] == ["37 total pagecache pages", "16384 pages RAM"]
