"""The OOM entry paths: out_of_memory's shortcuts and sysctls, __alloc_pages_may_oom, who may OOM at all
(oom_gfp_allowed, should_alloc_retry, the costly-order and NORETRY exits of the slowpath), and kswapd's
balancing target.

Each expectation is worked out by hand from the KERNEL.md section named in the test's docstring, on the unit
machine (DMA 16 MiB = 4096 pages, Normal 48 MiB = 12288 pages, no swap). Watermarks by hand (§6.5):
lowmem_kbytes = 65536, min_free_kbytes = int_sqrt(65536 * 16) = 1024 kB = 256 pages; Normal's share is
256 * 12288 / 16384 = 192, so min 192, low 192 + 48 = 240, high 192 + 96 = 288; DMA's is 64: min 64, low 80,
high 96. The Normal zone's lowmem_reserve against itself is 0.
"""
import pytest

from machine_helpers import add_process, make_machine
from oomemu.include.gfp import (GFP_ATOMIC, GFP_HIGHUSER_MOVABLE, GFP_KERNEL, GFP_NOFS, GFP_NOIO, GFP_USER,
                                __GFP_NOFAIL, __GFP_NORETRY, __GFP_REPEAT, __GFP_THISNODE)
from oomemu.mm.internal import ALLOC_CPUSET, ALLOC_WMARK_LOW
from oomemu.include.mmzone import NR_FREE_PAGES, WMARK_HIGH, WMARK_LOW, WMARK_MIN, ZONE_OOM_LOCKED
from oomemu.include.sched import (PF_EXITING, SIGKILL, TASK_KILLABLE, TASK_UNINTERRUPTIBLE, TIF_MEMDIE,
                                  TIF_SIGPENDING)
from oomemu.kernel import printk
from oomemu.kernel import sched as ksched
from oomemu.machine import G_NR_KILLS, LRU_FILE, PAGE_FILE, PAGE_KERNEL, Z_FLAGS, Z_STAT, Z_WMARK
from oomemu.mm import oom_kill, page_alloc, vmscan, vmstat
from oomemu.percpu import CpuContext

DMA, NORMAL = 0, 2
FREE = Z_STAT + NR_FREE_PAGES
SIGKILL_BIT = 1 << SIGKILL
LOOPING = object()


def machine(sysctl=""):
    return make_machine(extra=f"[sysctl]\n{sysctl}\n" if sysctl else "")


@pytest.fixture
def mc():
    m, cpu = machine()
    yield m, cpu
    m.close()


def drive(cpu, coro, max_traps=60):
    """Run a kernel coroutine, resuming it at once after each sleep or yield. Returns (value, traps), where
    each trap is (message, current's task state when it trapped); value is LOOPING if it was still going
    after `max_traps` traps."""
    m = cpu.m
    traps = []
    try:
        msg = coro.send(None)
        while True:
            traps.append((msg, int(m.task_state[cpu.current])))
            if len(traps) >= max_traps:
                coro.close()
                return LOOPING, traps
            m.task_state[cpu.current] = 0  # the timer (or the runqueue) woke it
            msg = coro.send(None)
    except StopIteration as stop:
        return stop.value, traps


def sleeps(traps):
    """The traps that were sleeps (not plain yields), as task states."""
    return [state for msg, state in traps if msg[0] == 1 and state]


def take_pages(cpu, z, leave):
    """Allocate zone z's pages to the kernel until only `leave` are free (straight from the buddy lists)."""
    m = cpu.m
    need = int(m.zone[z, FREE]) - leave
    for order in range(10, -1, -1):
        while need >= 1 << order:
            with page_alloc.sync.spinlock(cpu, m.zone_lock(z)):
                pfn = page_alloc.__rmqueue(cpu, z, order, 0)
                if pfn == -1:
                    break
                m.zone[z, FREE] -= 1 << order
                page_alloc._set_kind(m, pfn, order, PAGE_KERNEL, -1)
            need -= 1 << order
    assert int(m.zone[z, FREE]) == leave


def make_page_cache(cpu, z, count):
    """Turn `count` of zone z's free pages into unmapped page-cache pages on the file LRU (reclaimable)."""
    m = cpu.m
    pfns = []
    for _ in range(count):
        with page_alloc.sync.spinlock(cpu, m.zone_lock(z)):
            pfn = page_alloc.__rmqueue(cpu, z, 0, 0)
            m.zone[z, FREE] -= 1
            page_alloc._set_kind(m, pfn, 0, PAGE_FILE, -1)
            vmscan.add_page_to_lru_list(m, z, pfn, LRU_FILE)
        pfns.append(pfn)
    return pfns


def exhaust(cpu):
    """Every zone down to its min watermark (so every watermarked attempt fails), nothing reclaimable: direct
    reclaim makes no progress. The reserve below min is left, as ordinary allocations leave it: at or below
    half of it throttle_direct_reclaim would hold the allocator until kswapd restores it (test_throttle.py)."""
    for z in (DMA, NORMAL):
        take_pages(cpu, z, int(cpu.m.zone[z, Z_WMARK + WMARK_MIN]))


def sigkill_pending(m, row):
    return bool(m.task_pending[row] & SIGKILL_BIT)


def oom_invocations(cpu):
    return int(cpu.vm_events[vmstat.NR_OOM_INVOCATIONS])


def run_oom(cpu, current, gfp=GFP_KERNEL, order=0):
    cpu.current = current
    zonelist = page_alloc.node_zonelist(cpu.m, 0)
    return drive(cpu, oom_kill.out_of_memory(cpu, zonelist, gfp, order, None, False))


# =============================================================================================================
# out_of_memory (KERNEL §3.2)
# =============================================================================================================

@pytest.mark.parametrize("dying", ["fatal-signal", "pf-exiting"])
def test_out_of_memory_dying_current_marks_itself_and_kills_nobody(mc, dying):
    """A current with SIGKILL pending (or PF_EXITING) gets TIF_MEMDIE itself; nothing is scanned or killed
    and there is no sleep, although a far bigger task exists (KERNEL §3.2 step 2)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "dying", rss=10)
    if dying == "fatal-signal":
        m.task_pending[cur] |= SIGKILL_BIT
        m.task_tif[cur] |= TIF_SIGPENDING
    else:
        m.task_flags[cur] |= PF_EXITING
    _, traps = run_oom(cpu, cur)
    assert m.task_tif[cur] & TIF_MEMDIE
    assert not m.task_tif[hog] & TIF_MEMDIE and not sigkill_pending(m, hog)
    assert int(m.glob[G_NR_KILLS]) == 0
    assert sleeps(traps) == []


def test_out_of_memory_healthy_current_kills_the_hog_and_sleeps_killably(mc):
    """The control for the test above: a current without a fatal signal is not marked; the scan kills the
    biggest task, which gets TIF_MEMDIE and SIGKILL, and current sleeps one killable jiffy (§3.2 steps 6-8)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    _, traps = run_oom(cpu, cur)
    assert not m.task_tif[cur] & TIF_MEMDIE
    assert m.task_tif[hog] & TIF_MEMDIE and sigkill_pending(m, hog)
    assert sleeps(traps) == [TASK_KILLABLE]


@pytest.mark.parametrize("mode,text", [(1, "system-wide"), (2, "compulsory")])
def test_panic_on_oom_panics_before_any_kill_with_the_modes_text(mode, text):
    """panic_on_oom = 1 panics on a system-wide (CONSTRAINT_NONE) OOM with "system-wide", = 2 with
    "compulsory"; the panic comes before the scan, so nobody is killed (KERNEL §3.3, §3.2 step 4)."""
    m, cpu = machine(f"panic_on_oom = {mode}")
    try:
        hog = add_process(m, cpu, "hog", rss=9000)
        cur = add_process(m, cpu, "alloc", rss=10)
        with pytest.raises(printk.Panic) as panic:
            run_oom(cpu, cur)
        assert str(panic.value) == f"Out of memory: {text} panic_on_oom is enabled\n"
        assert not sigkill_pending(m, hog) and int(m.glob[G_NR_KILLS]) == 0
    finally:
        m.close()


def test_panic_on_oom_does_not_panic_a_dying_current():
    """The "current is dying" shortcut (step 2) comes before check_panic_on_oom (step 4): a current with
    SIGKILL pending marks itself and the machine does not panic even with panic_on_oom = 2 (KERNEL §3.2)."""
    m, cpu = machine("panic_on_oom = 2")
    try:
        cur = add_process(m, cpu, "dying", rss=10)
        m.task_pending[cur] |= SIGKILL_BIT
        m.task_tif[cur] |= TIF_SIGPENDING
        run_oom(cpu, cur)
        assert m.task_tif[cur] & TIF_MEMDIE
    finally:
        m.close()


def test_oom_kill_allocating_task_kills_current_without_sleeping():
    """oom_kill_allocating_task = 1: current (not the bigger hog) gets SIGKILL and TIF_MEMDIE, and
    out_of_memory returns without its one-jiffy sleep (KERNEL §3.2 step 5, §9 R9)."""
    m, cpu = machine("oom_kill_allocating_task = 1")
    try:
        hog = add_process(m, cpu, "hog", rss=9000)
        cur = add_process(m, cpu, "alloc", rss=10)
        _, traps = run_oom(cpu, cur)
        assert sigkill_pending(m, cur) and m.task_tif[cur] & TIF_MEMDIE
        assert not sigkill_pending(m, hog)
        assert sleeps(traps) == []
    finally:
        m.close()


def test_oom_kill_allocating_task_spares_an_adj_min_current():
    """oom_kill_allocating_task = 1 does not apply to a current at oom_score_adj -1000: the normal scan runs
    and kills the biggest task instead, then sleeps its killable jiffy (KERNEL §3.2 steps 5-8)."""
    m, cpu = machine("oom_kill_allocating_task = 1")
    try:
        hog = add_process(m, cpu, "hog", rss=9000)
        cur = add_process(m, cpu, "alloc", rss=10, adj=-1000)
        _, traps = run_oom(cpu, cur)
        assert not sigkill_pending(m, cur) and not m.task_tif[cur] & TIF_MEMDIE
        assert sigkill_pending(m, hog) and m.task_tif[hog] & TIF_MEMDIE
        assert sleeps(traps) == [TASK_KILLABLE]
    finally:
        m.close()


# =============================================================================================================
# who may OOM (KERNEL §6.9, §6.10)
# =============================================================================================================

@pytest.mark.parametrize("gfp,allowed", [
    (GFP_KERNEL, True), (GFP_USER, True), (GFP_HIGHUSER_MOVABLE, True),
    (GFP_NOFS, False), (GFP_NOIO, False), (GFP_ATOMIC, False), (GFP_KERNEL | __GFP_NORETRY, False),
])
def test_oom_gfp_allowed(gfp, allowed):
    """oom_gfp_allowed = __GFP_FS and not __GFP_NORETRY (KERNEL §6.10)."""
    assert page_alloc.oom_gfp_allowed(gfp) is allowed


# (gfp, order, did_some_progress, pages_reclaimed, retry): KERNEL §6.9's rules in order
RETRY_TABLE = [
    (GFP_KERNEL, 0, 1, 1, True),                                  # rule 4: order <= 3
    (GFP_KERNEL, 3, 0, 0, True),                                  # rule 4, even without progress
    (GFP_KERNEL, 4, 1, 100, False),                               # rule 6: costly, no REPEAT
    (GFP_KERNEL, 4, 1, 1, False),                                 # rule 6 even below 1 << order reclaimed
    (GFP_KERNEL | __GFP_NORETRY, 0, 1, 1, False),                 # rule 1 before rule 4
    (GFP_KERNEL | __GFP_NORETRY | __GFP_NOFAIL, 0, 1, 1, False),  # rule 1 before rule 2
    (GFP_KERNEL | __GFP_NOFAIL, 9, 0, 0, True),                   # rule 2
    (GFP_KERNEL | __GFP_REPEAT, 4, 1, 15, True),                  # rule 5: 15 < 1 << 4
    (GFP_KERNEL | __GFP_REPEAT, 4, 1, 16, False),                 # rule 5 fails at 16
    (GFP_KERNEL | __GFP_REPEAT, 10, 1, 1023, True),
]


@pytest.mark.parametrize("gfp,order,progress,reclaimed,retry", RETRY_TABLE)
def test_should_alloc_retry(gfp, order, progress, reclaimed, retry):
    """should_alloc_retry's five rules in their order (KERNEL §6.9)."""
    assert page_alloc.should_alloc_retry(gfp, order, progress, reclaimed) is retry


def slowpath(cpu, current, gfp, order, max_traps=60):
    cpu.current = current
    return drive(cpu, page_alloc.alloc_pages(cpu, gfp, order), max_traps)


def test_gfp_nofs_loops_without_ever_invoking_the_oom_killer(mc):
    """An order-0 GFP_NOFS allocation on an exhausted machine never calls out_of_memory (oom_gfp_allowed is
    false) and never fails (should_alloc_retry rule 4): it is still looping after 60 trips, nobody killed
    (KERNEL §6.10, §6.9, §9 R2)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "fs-writer", rss=10)
    exhaust(cpu)
    value, _ = slowpath(cpu, cur, GFP_NOFS, 0)
    assert value is LOOPING
    assert oom_invocations(cpu) == 0 and not sigkill_pending(m, hog)


def test_gfp_kernel_on_the_same_machine_invokes_the_oom_killer(mc):
    """The control: GFP_KERNEL on the same exhausted machine reaches out_of_memory and kills the hog
    (KERNEL §6.2 step 13)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    slowpath(cpu, cur, GFP_KERNEL, 0, max_traps=8)
    assert oom_invocations(cpu) >= 1 and sigkill_pending(m, hog)


def test_gfp_noretry_fails_at_once_without_oom(mc):
    """GFP_KERNEL|__GFP_NORETRY, order 0, exhausted machine: no OOM (oom_gfp_allowed) and no retry (rule 1),
    so the allocation fails after one reclaim attempt (KERNEL §6.9, §6.10)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    value, _ = slowpath(cpu, cur, GFP_KERNEL | __GFP_NORETRY, 0)
    assert value is None
    assert oom_invocations(cpu) == 0 and not sigkill_pending(m, hog)


@pytest.mark.parametrize("order", [4, 5])
def test_costly_order_fails_without_oom_kill(mc, order):
    """An order > 3 GFP_KERNEL allocation on an exhausted machine takes the OOM lock, fails its last-second
    attempt, does not call out_of_memory (order > PAGE_ALLOC_COSTLY_ORDER) and fails; the lock is cleared
    (KERNEL §1.4 steps 3 and 5, §1.5)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    value, _ = slowpath(cpu, cur, GFP_KERNEL, order)
    assert value is None
    assert oom_invocations(cpu) == 0 and not sigkill_pending(m, hog)
    assert not any(int(m.zone[z, Z_FLAGS]) & ZONE_OOM_LOCKED for z in (DMA, NORMAL))


def test_order3_is_not_costly_and_does_oom(mc):
    """The boundary: order 3 is PAGE_ALLOC_COSTLY_ORDER itself, so it does invoke the OOM killer (§1.4)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    slowpath(cpu, cur, GFP_KERNEL, 3, max_traps=8)
    assert oom_invocations(cpu) >= 1 and sigkill_pending(m, hog)


# =============================================================================================================
# __alloc_pages_may_oom (KERNEL §1.4)
# =============================================================================================================

def may_oom(cpu, current, gfp=GFP_KERNEL, order=0):
    m = cpu.m
    cpu.current = current
    zonelist = page_alloc.node_zonelist(m, 0)
    return drive(cpu, page_alloc.__alloc_pages_may_oom(cpu, gfp, order, zonelist, 2, None, NORMAL, 0))


def test_may_oom_last_chance_succeeds_above_the_high_watermark(mc):
    """With the lock taken and Normal holding high + 10 = 298 free pages, the last-second attempt at
    ALLOC_WMARK_HIGH succeeds: a page comes back and out_of_memory is not called (KERNEL §1.4 step 2)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    take_pages(cpu, DMA, 0)
    assert int(m.zone[NORMAL, Z_WMARK + WMARK_HIGH]) == 288
    take_pages(cpu, NORMAL, 298)
    page, _ = may_oom(cpu, cur)
    assert page is not None and int(m.page_zone[page]) == NORMAL
    assert oom_invocations(cpu) == 0 and not sigkill_pending(m, hog)
    assert not int(m.zone[NORMAL, Z_FLAGS]) & ZONE_OOM_LOCKED


def test_may_oom_last_chance_uses_high_not_min(mc):
    """Normal at 250 free pages is above min (192) and low (240) but not above high (288): the last-second
    attempt fails and the hog is killed (KERNEL §1.4 step 2, §9 R3 step 5)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    take_pages(cpu, DMA, 0)
    assert (int(m.zone[NORMAL, Z_WMARK + WMARK_MIN]), int(m.zone[NORMAL, Z_WMARK + WMARK_LOW])) == (192, 240)
    take_pages(cpu, NORMAL, 250)
    page, traps = may_oom(cpu, cur)
    assert page is None
    assert oom_invocations(cpu) == 1 and sigkill_pending(m, hog)
    assert sleeps(traps) == [TASK_KILLABLE]
    assert not int(m.zone[NORMAL, Z_FLAGS]) & ZONE_OOM_LOCKED


def test_may_oom_busy_lock_sleeps_one_uninterruptible_jiffy(mc, monkeypatch):
    """Another CPU holds the OOM lock: one schedule_timeout_uninterruptible(1), no allocation attempt, no
    OOM call, NULL back, and the holder's lock bits untouched (KERNEL §1.4 step 1)."""
    m, cpu = mc
    cur = add_process(m, cpu, "alloc", rss=10)
    timeouts = []
    real = ksched.schedule_timeout_uninterruptible

    async def recording(c, timeout):
        timeouts.append(timeout)
        return await real(c, timeout)

    monkeypatch.setattr(ksched, "schedule_timeout_uninterruptible", recording)
    for z in (DMA, NORMAL):
        m.zone[z, Z_FLAGS] |= ZONE_OOM_LOCKED
    page, traps = may_oom(cpu, cur)
    assert page is None and timeouts == [1]
    assert sleeps(traps) == [TASK_UNINTERRUPTIBLE]
    assert oom_invocations(cpu) == 0
    assert all(int(m.zone[z, Z_FLAGS]) & ZONE_OOM_LOCKED for z in (DMA, NORMAL))


# =============================================================================================================
# kswapd's target (KERNEL §6.6)
# =============================================================================================================

def test_kswapd_balances_to_the_high_watermark(mc):
    """Normal one page under low (239 free, low 240, high 288) with 2000 reclaimable page-cache pages:
    balance_pgdat reclaims until the zone is above high (288), not merely low; kswapd scans `inactive >>
    priority` pages (15 at priority 7, 31 at 6, 61 at 5), so stopping at low would leave 239 + 15 = 254
    (KERNEL §6.6)."""
    m, cpu = mc
    kswapd = CpuContext(m, m.nr_cpus, cpu.scenario)
    take_pages(cpu, DMA, 0)
    take_pages(cpu, NORMAL, 239 + 2000)
    make_page_cache(cpu, NORMAL, 2000)
    assert int(m.zone[NORMAL, FREE]) == 239
    vmscan.balance_pgdat(kswapd, 0, 0, 2)
    assert int(m.zone[NORMAL, FREE]) > 288
    assert int(m.zone[NORMAL, FREE]) <= 288 + 2000


# =============================================================================================================
# ratelimits (KERNEL §3.6)
# =============================================================================================================

def test_ratelimit_states_are_independent(mc):
    """Each ratelimit_state has its own lock and counters: while nopage_rs's lock is held (another CPU is
    inside warn_alloc_failed's __ratelimit) oom_rs still lets an OOM dump through, and using up nopage_rs's
    burst of 10 leaves oom_rs's whole burst (KERNEL §3.6, DEFAULT_RATELIMIT_BURST = 10)."""
    from oomemu.lib import ratelimit
    from oomemu.machine import G_NOPAGE_RS, G_OOM_RS, L_RATELIMIT_NOPAGE
    m, cpu = mc
    other = CpuContext(m, 1, cpu.scenario)
    page_alloc.sync.spin_lock(other, L_RATELIMIT_NOPAGE)
    try:
        assert not ratelimit.__ratelimit(cpu, G_NOPAGE_RS, "warn_alloc_failed")
        assert ratelimit.__ratelimit(cpu, G_OOM_RS, "oom_kill_process")
    finally:
        page_alloc.sync.spin_unlock(other, L_RATELIMIT_NOPAGE)
    assert [ratelimit.__ratelimit(cpu, G_NOPAGE_RS, "w") for _ in range(11)] == [True] * 10 + [False]
    assert [ratelimit.__ratelimit(cpu, G_OOM_RS, "o") for _ in range(10)] == [True] * 9 + [False]


def test_kswapd_end_zone_skips_an_unreclaimable_zone_after_the_first_pass(mc):
    """DMA one page under high (95 free, high 96) with 500 unreferenced page-cache pages; Normal empty with
    nothing to reclaim. kswapd scans `inactive >> priority` pages (get_scan_count(); no forced minimum on a
    reclaimable zone): nothing at priorities 12-9, 1 page at 8 (500 >> 8), 3 at 7 (499 >> 7). Pass 1 counts
    Normal; from pass 2 on Normal is unreclaimable (0 pages scanned is not < 6 × 0), so end_zone = DMA and DMA
    is balanced for classzone DMA as soon as free > high: 95 + 1 = 96 is not (free must exceed the mark),
    95 + 4 = 99 is, and kswapd stops at 99. Counting Normal again would have kept DMA shrinking against
    high + gap + lowmem_reserve[Normal] = 96 + min(80, 41) + 48 = 185: 7 (priority 6), 15, 29, 55 more pages, to
    205 (KERNEL §6.6; mm/vmscan.c get_scan_count(), 3.14)."""
    m, cpu = mc
    kswapd = CpuContext(m, m.nr_cpus, cpu.scenario)
    take_pages(cpu, NORMAL, 0)
    take_pages(cpu, DMA, 95 + 500)
    make_page_cache(cpu, DMA, 500)
    assert int(m.zone[DMA, FREE]) == 95 and int(m.zone[DMA, Z_WMARK + WMARK_HIGH]) == 96
    vmscan.balance_pgdat(kswapd, 0, 0, 2)
    assert int(m.zone[DMA, FREE]) == 99


def test_kswapd_falls_back_to_order_0_after_reclaiming_twice_the_request(mc):
    """An order-3 wake-up on a DMA zone that cannot form an order-3 block (every even page is a kernel page),
    400 unreferenced page-cache pages: kswapd scans `inactive >> priority` pages, so it reclaims nothing at
    priorities 12-9, then 1 (400 >> 8), 3 (399 >> 7), 6 (396 >> 6) and 12 (390 >> 5): 22 >= 2 << 3 = 16 after
    priority 5, so it rechecks at order 0, where 90 + 22 = 112 free pages are above high (96), and stops there
    instead of reclaiming on (to 352 free at priority 1) for an order-3 block that can never form (KERNEL §6.6;
    get_scan_count(), 3.14)."""
    m, cpu = mc
    kswapd = CpuContext(m, m.nr_cpus, cpu.scenario)
    take_pages(cpu, NORMAL, 0)
    take_pages(cpu, DMA, 0)
    start = int(m.zone[DMA, page_alloc.Z_START_PFN])
    odd = [start + 2 * i + 1 for i in range(490)]
    for pfn in odd[:90]:
        page_alloc.free_one_page(cpu, DMA, pfn, 0)
    for pfn in odd[90:]:
        with page_alloc.sync.spinlock(cpu, m.zone_lock(DMA)):
            page_alloc._set_kind(m, pfn, 0, PAGE_FILE, -1)
            vmscan.add_page_to_lru_list(m, DMA, pfn, LRU_FILE)
    assert int(m.zone[DMA, FREE]) == 90
    vmscan.balance_pgdat(kswapd, 0, 3, 0)
    assert int(m.zone[DMA, FREE]) == 112


# --- 4.7: bounded reclaim retries (KERNEL §6.8, 0a0337e0d1d1) -----------------------------------------------

def _reclaimable(monkeypatch, pages_by_zone):
    monkeypatch.setattr(vmscan, "zone_reclaimable_pages", lambda m, z: pages_by_zone.get(z, 0))


@pytest.mark.parametrize("loops,retry", [(0, True), (11, True), (12, False), (16, False)])
def test_should_reclaim_retry_shrinks_the_reclaimable_part_by_a_sixteenth_a_round(mc, monkeypatch, loops, retry):
    """Normal: 100 free, 320 reclaimable; DMA: empty. available = 320 - ceil(loops * 320 / 16) + 100 must stay
    above Normal's min of 192: 11 rounds give 320 - 220 + 100 = 200 (retry), 12 give 180 (OOM). DMA (free 0)
    never passes its min of 64 (KERNEL §6.8; the module docstring's watermarks)."""
    m, cpu = mc
    take_pages(cpu, DMA, 0)
    take_pages(cpu, NORMAL, 100)
    _reclaimable(monkeypatch, {NORMAL: 320})
    zl = page_alloc.node_zonelist(m, 0, GFP_KERNEL)
    got = page_alloc.should_reclaim_retry(cpu, 0, zl, NORMAL, None, NORMAL, 0, loops)
    assert got is retry


@pytest.mark.parametrize("loops,retry", [(16, True), (17, False)])
def test_should_reclaim_retry_stops_after_sixteen_rounds_without_progress(mc, monkeypatch, loops, retry):
    """300 free pages alone keep Normal above min (192), so only MAX_RECLAIM_RETRIES = 16 ends the retries:
    the 17th round without progress goes to the OOM killer."""
    m, cpu = mc
    take_pages(cpu, DMA, 0)
    take_pages(cpu, NORMAL, 300)
    _reclaimable(monkeypatch, {})
    zl = page_alloc.node_zonelist(m, 0, GFP_KERNEL)
    assert page_alloc.should_reclaim_retry(cpu, 0, zl, NORMAL, None, NORMAL, 0, loops) is retry


def test_a_reclaimable_zone_is_not_progress_from_4_7(monkeypatch):
    """3.14's do_try_to_free_pages returns 1 for a zone still zone_reclaimable() though nothing was freed;
    4.7 returns 0 and leaves the decision to should_reclaim_retry (KERNEL §6.8)."""
    from test_profiles import machine as profile_machine
    for kernel, expected in (("3.14", 1), ("4.7", 0)):
        m, cpu = profile_machine(kernel)
        try:
            exhaust(cpu)
            monkeypatch.setattr(vmscan, "zone_reclaimable", lambda m, z: True)
            monkeypatch.setattr(vmscan, "shrink_zones", lambda *a, **k: 0)
            zl = page_alloc.node_zonelist(m, 0, GFP_KERNEL)
            assert vmscan.do_try_to_free_pages(cpu, zl, GFP_KERNEL, 32) == expected, kernel
        finally:
            m.close()


def test_should_reclaim_retry_rounds_the_shrink_up(mc, monkeypatch):
    """The sixteenth is DIV_ROUND_UP: 330 reclaimable after 12 rounds loses ceil(3960 / 16) = 248, leaving
    330 - 248 + 110 free = 192, not above min 192 (rounding down would leave 193 and retry)."""
    m, cpu = mc
    take_pages(cpu, DMA, 0)
    take_pages(cpu, NORMAL, 110)
    _reclaimable(monkeypatch, {NORMAL: 330})
    zl = page_alloc.node_zonelist(m, 0, GFP_KERNEL)
    assert page_alloc.should_reclaim_retry(cpu, 0, zl, NORMAL, None, NORMAL, 0, 12) is False
    assert page_alloc.should_reclaim_retry(cpu, 0, zl, NORMAL, None, NORMAL, 0, 11) is True


@pytest.mark.parametrize("kernel", ["3.14", "4.7"])
def test_reclaim_that_never_frees_loops_on_3_14_and_ooms_on_4_7(monkeypatch, kernel):
    """Every zone empty; Normal has 320 pages on its LRU that reclaim scans but never frees (all referenced),
    so zone_reclaimable() stays true. 3.14: direct reclaim reports progress 1 for ever and should_alloc_retry
    retries an order-0 request, so no OOM in 60 trips (KERNEL §6.8, §6.9, §9 R8). 4.7: progress 0, and
    should_reclaim_retry gives up once 320 - 20 * loops <= 192, at the 7th round: the hog is killed."""
    from test_profiles import machine as profile_machine
    m, cpu = profile_machine(kernel)
    try:
        hog = add_process(m, cpu, "hog", rss=9000)
        cur = add_process(m, cpu, "alloc", rss=10)
        exhaust(cpu)
        _reclaimable(monkeypatch, {NORMAL: 320})
        monkeypatch.setattr(vmscan, "zone_reclaimable", lambda m, z: True)
        monkeypatch.setattr(vmscan, "shrink_zones", lambda *a, **k: 0)
        monkeypatch.setattr(page_alloc, "drain_all_pages", lambda cpu: None)   # no other CPU runs here
        value, _ = slowpath(cpu, cur, GFP_KERNEL, 0)
        if kernel == "3.14":
            assert value is LOOPING and oom_invocations(cpu) == 0 and not sigkill_pending(m, hog)
        else:
            assert oom_invocations(cpu) >= 1 and sigkill_pending(m, hog)
    finally:
        m.close()


def test_may_oom_does_not_force_kill_past_a_tif_memdie_victim(mc):
    """__alloc_pages_may_oom calls out_of_memory without force_kill (KERNEL §1.4 step 3): a TIF_MEMDIE victim
    still on its way out makes the scan ABORT (§2.2), so the hog is not killed while the victim is pending."""
    m, cpu = mc
    victim = add_process(m, cpu, "victim", rss=9000)
    hog = add_process(m, cpu, "hog", rss=5000)
    cur = add_process(m, cpu, "alloc", rss=10)
    m.task_tif[victim] |= TIF_MEMDIE
    exhaust(cpu)
    page, _ = may_oom(cpu, cur)
    assert page is None
    assert oom_invocations(cpu) == 1
    assert not sigkill_pending(m, hog) and not sigkill_pending(m, victim)


def test_may_oom_gfp_thisnode_does_not_oom(mc):
    """A __GFP_THISNODE request (order 0, Normal) is exempt from the OOM killer in __alloc_pages_may_oom
    (KERNEL §1.4: __GFP_THISNODE is one of the exits before the kill): no out_of_memory, nobody killed."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    exhaust(cpu)
    page, _ = may_oom(cpu, cur, gfp=GFP_KERNEL | __GFP_THISNODE)
    assert page is None
    assert oom_invocations(cpu) == 0 and not sigkill_pending(m, hog)


def test_free_pages_of_an_order_1_block_goes_back_whole(mc):
    """__free_pages(order 1) returns both pages to the buddy lists (free_one_page), not one to a per-CPU list:
    the zone's free count and its order-10 blocks come back exactly."""
    m, cpu = mc
    before = int(m.zone[NORMAL, FREE])
    pfn = page_alloc.get_page_from_freelist(cpu, GFP_KERNEL, None, 1, m.zonelists[0], NORMAL,
                                            ALLOC_WMARK_LOW | ALLOC_CPUSET, NORMAL, 0)
    assert int(m.zone[NORMAL, FREE]) == before - 2
    page_alloc.__free_pages(cpu, pfn, 1)
    assert int(m.zone[NORMAL, FREE]) == before
    assert int(m.pcp[0, NORMAL, 0]) == 0
