"""__alloc_pages_may_oom: 3.14's (KERNEL §1.4) arguments to out_of_memory, and 4.2's form on the global
oom_lock (KERNEL §8: 3.19 moved the !__GFP_FS check inside it and made a busy lock or a kill "progress", 4.2
replaced the zonelist lock by the oom_lock mutex; the 5.9 state: a !__GFP_FS request reports progress without
killing). Unit machine and watermarks as in test_oom_paths.py (Normal high 288).
"""
import os
import re

import pytest

from machine_helpers import add_process, mk  # noqa: F401 (mk: the machine fixture)
from oomemu.include.gfp import GFP_KERNEL, GFP_NOFS, __GFP_NOFAIL, __GFP_THISNODE
from oomemu.include.sched import TASK_UNINTERRUPTIBLE, TIF_MEMDIE
from oomemu.kernel import sched as ksched
from oomemu.machine import G_OOM_LOCK
from oomemu.mm import page_alloc
from test_oom_paths import drive, exhaust, oom_invocations, sigkill_pending, sleeps, take_pages

DMA, NORMAL = 0, 2
_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")


def with_dmesg(cpu, tmp_path, fn):
    path = tmp_path / "dmesg"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    cpu.printk_fd = fd
    try:
        out = fn()
    finally:
        cpu.printk_fd = -1
        os.close(fd)
    return out, [_PREFIX.sub("", line) for line in path.read_text().splitlines()]


def may_oom_314(cpu, cur, gfp=GFP_KERNEL, order=0):
    cpu.current = cur
    zl = page_alloc.node_zonelist(cpu.m, 0)
    return drive(cpu, page_alloc.__alloc_pages_may_oom(cpu, gfp, order, zl, 2, None, NORMAL, 0))


def may_oom_42(cpu, cur, gfp=GFP_KERNEL, order=0, high_zoneidx=2):
    cpu.current = cur
    zl = page_alloc.node_zonelist(cpu.m, 0)
    (page, progress), traps = drive(cpu, page_alloc.__alloc_pages_may_oom_oom_lock(
        cpu, gfp, order, zl, high_zoneidx, None, NORMAL, 0))
    return page, progress, traps


def test_3_14_may_oom_passes_the_requests_order_to_out_of_memory(mk, tmp_path):
    """§1.4 step 4: out_of_memory(zonelist, gfp_mask, order, nodemask, false): the header names order 2."""
    m, cpu = mk("3.14")
    add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    _, lines = with_dmesg(cpu, tmp_path, lambda: may_oom_314(cpu, cur, order=2))
    assert lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0, order=2, oom_score_adj=0"


# --- 4.2 ---------------------------------------------------------------------------------------------------------

def test_4_2_a_busy_oom_lock_is_progress_after_one_uninterruptible_jiffy(mk, monkeypatch):
    """mutex_trylock fails: schedule_timeout_uninterruptible(1), NULL, progress 1, no OOM (KERNEL §8, 4.2)."""
    m, cpu = mk("4.2")
    timeouts = []
    real = ksched.schedule_timeout_uninterruptible

    async def recording(c, t):
        timeouts.append(t)
        return await real(c, t)
    monkeypatch.setattr(ksched, "schedule_timeout_uninterruptible", recording)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    m.glob[G_OOM_LOCK] = 99                      # held by someone else
    page, progress, traps = may_oom_42(cpu, cur)
    assert (page, progress, timeouts) == (None, 1, [1])
    assert sleeps(traps) == [TASK_UNINTERRUPTIBLE] and oom_invocations(cpu) == 0


def test_4_2_the_last_chance_page_is_no_progress_and_frees_the_lock(mk):
    """Above the high watermark (298 > 288) the last-chance attempt gets a page: (page, 0), no OOM, unlocked."""
    m, cpu = mk("4.2")
    cur = add_process(m, cpu, "alloc", rss=10)
    take_pages(cpu, DMA, 0)
    take_pages(cpu, NORMAL, 298)
    page, progress, _ = may_oom_42(cpu, cur)
    assert page is not None and progress == 0
    assert oom_invocations(cpu) == 0 and int(m.glob[G_OOM_LOCK]) == 0


@pytest.mark.parametrize("gfp,order,high,progress,ooms", [
    (GFP_KERNEL, 4, 2, 0, 0),                    # costly order: no OOM, no progress
    (GFP_KERNEL, 3, 2, 1, 1),                    # order 3 is not costly: OOM kill, progress
    (GFP_KERNEL, 0, 0, 0, 0),                    # a DMA-only request never OOMs
    (GFP_NOFS, 0, 2, 1, 0),                      # !__GFP_FS: progress without killing
    (GFP_KERNEL | __GFP_THISNODE, 0, 2, 0, 0),   # __GFP_THISNODE: no OOM
    (GFP_KERNEL | __GFP_NOFAIL, 4, 2, 1, 1),     # __GFP_NOFAIL skips every exit
])
def test_4_2_the_exits_before_the_kill(mk, gfp, order, high, progress, ooms):
    m, cpu = mk("4.2")
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    page, got, _ = may_oom_42(cpu, cur, gfp, order, high)
    assert page is None and (got, oom_invocations(cpu)) == (progress, ooms)
    assert sigkill_pending(m, hog) == bool(ooms)
    assert int(m.glob[G_OOM_LOCK]) == 0


def test_4_2_may_oom_passes_order_and_no_force_kill(mk, tmp_path):
    """out_of_memory gets the request's order (the header says order=2) and force_kill false: an earlier
    TIF_MEMDIE victim makes the scan abort, so the hog survives (§2.2 step 3); out_of_memory still returns true,
    so progress is 1."""
    m, cpu = mk("4.2")
    victim = add_process(m, cpu, "victim", rss=100)
    m.task_tif[victim] |= TIF_MEMDIE
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    (page, progress, _), lines = with_dmesg(cpu, tmp_path, lambda: may_oom_42(cpu, cur, order=2))
    assert (page, progress) == (None, 1)
    assert not sigkill_pending(m, hog)
    m.task_tif[victim] &= ~TIF_MEMDIE
    (page, progress, _), lines = with_dmesg(cpu, tmp_path, lambda: may_oom_42(cpu, cur, order=2))
    assert lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0, order=2, oom_score_adj=0"   # %pGg from 4.6
    assert sigkill_pending(m, hog) and progress == 1


# --- freeing and the failure warning -------------------------------------------------------------------------------

def test_an_order_0_free_goes_to_this_cpus_list_and_leaves_pages_scanned(mk):
    """__free_pages(order 0) is free_hot_cold_page: the page joins this CPU's per-CPU list (count + 1), not the
    buddy lists (NR_FREE_PAGES unchanged), so pages_scanned is not reset (KERNEL §6.8: only frees to the buddy
    allocator reset it)."""
    from oomemu.include.mmzone import NR_FREE_PAGES, NR_PAGES_SCANNED
    from oomemu.machine import Z_STAT
    from oomemu.mm.internal import ALLOC_CPUSET, ALLOC_WMARK_LOW
    m, cpu = mk("3.14")
    pfn = page_alloc.get_page_from_freelist(cpu, GFP_KERNEL, None, 0, m.zonelists[0], NORMAL,
                                            ALLOC_WMARK_LOW | ALLOC_CPUSET, NORMAL, 0)
    zone = int(m.page_zone[pfn])
    free, pcp = int(m.zone[zone, Z_STAT + NR_FREE_PAGES]), int(m.pcp[0, zone, 0])
    m.zone[zone, Z_STAT + NR_PAGES_SCANNED] = 7
    page_alloc.__free_pages(cpu, pfn, 0)
    assert int(m.pcp[0, zone, 0]) == pcp + 1
    assert int(m.zone[zone, Z_STAT + NR_FREE_PAGES]) == free
    assert int(m.zone[zone, Z_STAT + NR_PAGES_SCANNED]) == 7


def test_warn_alloc_failed_line_nowarn_and_its_burst_of_ten(mk, tmp_path):
    """KERNEL §3.6: "%s: page allocation failure: order:%d, mode:0x%x" with current's comm, silenced by
    __GFP_NOWARN (0x200), under its own ratelimit state (burst 10 per 5 s): 12 failures print 10 lines."""
    from oomemu.include.gfp import __GFP_NOWARN
    m, cpu = mk("3.14")
    cpu.current = add_process(m, cpu, "alloc", rss=10)

    def fail_12():
        page_alloc.warn_alloc_failed(cpu, GFP_KERNEL | __GFP_NOWARN, 0)
        for _ in range(12):
            page_alloc.warn_alloc_failed(cpu, GFP_KERNEL, 3)
    _, lines = with_dmesg(cpu, tmp_path, fail_12)
    assert lines == ["alloc: page allocation failure: order:3, mode:0xd0"] * 10


# --- TIF_MEMDIE in the slowpath (KERNEL §5.3) ----------------------------------------------------------------------

def test_a_tif_memdie_task_allocates_below_the_min_watermark_without_an_oom(mk):
    """§5.3: TIF_MEMDIE gives ALLOC_NO_WATERMARKS: with every zone down to its min watermark (no watermarked
    attempt can succeed), the victim still gets a page, from the reserve, and no OOM is invoked."""
    from test_oom_paths import slowpath
    m, cpu = mk("3.14")
    cur = add_process(m, cpu, "victim", rss=10)
    m.task_tif[cur] |= TIF_MEMDIE
    exhaust(cpu)
    page, _ = slowpath(cpu, cur, GFP_KERNEL, 0, max_traps=8)
    assert page is not None and oom_invocations(cpu) == 0


def test_a_tif_memdie_task_fails_when_even_the_reserve_is_empty(mk):
    """§5.3 "no looping": with no free page at all the no-watermark attempt fails too, and a TIF_MEMDIE request
    without __GFP_NOFAIL fails (NULL) at once: no reclaim loop, no OOM."""
    from test_oom_paths import slowpath
    m, cpu = mk("3.14")
    cur = add_process(m, cpu, "victim", rss=10)
    m.task_tif[cur] |= TIF_MEMDIE
    take_pages(cpu, DMA, 0)
    take_pages(cpu, NORMAL, 0)
    page, traps = slowpath(cpu, cur, GFP_KERNEL, 0, max_traps=8)
    assert page is None and oom_invocations(cpu) == 0 and len(traps) < 8


def test_an_order_above_the_buddy_allocator_fails_at_once(mk):
    """An order of MAX_ORDER (11) or more cannot exist: the slowpath returns NULL before any attempt, no OOM."""
    from test_oom_paths import slowpath
    from oomemu.include.mmzone import MAX_ORDER
    m, cpu = mk("3.14")
    cur = add_process(m, cpu, "alloc", rss=10)
    page, traps = slowpath(cpu, cur, GFP_KERNEL, MAX_ORDER, max_traps=8)
    assert page is None and traps == [] and oom_invocations(cpu) == 0
