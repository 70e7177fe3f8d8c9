"""The slowpath bodies step by step: 3.14's __alloc_pages_slowpath (KERNEL §6.2, with §6.3's flags, §6.9's
retry rule and §6.10's OOM gates), 4.2's OOM step inside it (KERNEL §8) and 4.7's bounded retries (KERNEL §8,
§6.8's last bullet).

Each callee of the body is replaced by a scripted stand-in that records its arguments and returns the next
scripted result (or a failure: no page, no progress), so a test pins the exact sequence of steps, their
arguments and the body's (page, restarts). gfp_to_alloc_flags and should_alloc_retry stay real: their results
are part of what the sequence shows, worked out by hand below. Unit machine as machine_helpers.BASE: zonelist
(Normal 2, DMA 0), HZ 250, so the congestion wait is HZ/50 = 5 jiffies.
"""
import pytest

from machine_helpers import add_process, mk, run_to_completion  # noqa: F401 (mk: the machine fixture)
from oomemu.include.gfp import (GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, __GFP_NOFAIL, __GFP_NORETRY, __GFP_NOWARN,
                                __GFP_NO_KSWAPD, __GFP_REPEAT, __GFP_THISNODE)
from oomemu.include.sched import PF_DUMPCORE, PF_MEMALLOC, TIF_MEMDIE
from oomemu.machine import G_HZ, G_OOM_KILLER_DISABLED
from oomemu.mm import backing_dev, page_alloc

NM = frozenset({0})       # a nodemask, so that a dropped one shows
PREF = 2                  # preferred zone: Normal
MT = 2                    # a migratetype that is neither 0 nor None
HIGH = 2                  # high_zoneidx of GFP_KERNEL: ZONE_NORMAL
PAGE = 4242
# KERNEL §6.3: ALLOC_WMARK_MIN 0 | ALLOC_CPUSET 0x40; ALLOC_NO_WATERMARKS 0x04; ALLOC_HARDER 0x10; ALLOC_HIGH 0x20
KERNEL_FLAGS = 0x40
MEMDIE_FLAGS = 0x44
ATOMIC_FLAGS = 0x30       # GFP_ATOMIC: __GFP_HIGH gives ALLOC_HIGH, atomic adds ALLOC_HARDER and drops CPUSET
BLK_RW_ASYNC = page_alloc.BLK_RW_ASYNC
HZ_50 = 250 // 50


class Steps:
    """Scripted callees of the slowpath body. script[name] is a list of results, used in order; when it runs
    out, the callee fails (no page, no progress). `calls` is [(name, args)] in call order."""
    FAIL = {"prepare_slowpath": None, "get_page_from_freelist": None, "__alloc_pages_high_priority": None,
            "__alloc_pages_direct_compact": (None, False, False), "__alloc_pages_direct_reclaim": (None, 0),
            "__alloc_pages_may_oom": None, "__alloc_pages_may_oom_oom_lock": (None, 0),
            "should_reclaim_retry": False, "wait_iff_congested": 0}
    ASYNC = {"__alloc_pages_high_priority", "__alloc_pages_direct_reclaim", "__alloc_pages_may_oom",
             "__alloc_pages_may_oom_oom_lock", "wait_iff_congested"}

    def __init__(self, monkeypatch, **script):
        self.calls = []
        self.script = {name: list(results) for name, results in script.items()}
        for name in self.FAIL:
            owner = backing_dev if name == "wait_iff_congested" else page_alloc
            monkeypatch.setattr(owner, name, self._stub(name))
        real_retry = page_alloc.should_alloc_retry

        def should_alloc_retry(*args):
            self._record("should_alloc_retry", args)
            return real_retry(*args)
        monkeypatch.setattr(page_alloc, "should_alloc_retry", should_alloc_retry)

    def _record(self, name, args):
        self.calls.append((name, args))
        if len(self.calls) > 200:
            raise AssertionError("the body is looping")

    def _next(self, name):
        queue = self.script.get(name)
        return queue.pop(0) if queue else self.FAIL[name]

    def _stub(self, name):
        if name in self.ASYNC:
            async def stub(*args):
                self._record(name, args)
                return self._next(name)
        else:
            def stub(*args):
                self._record(name, args)
                return self._next(name)
        return stub

    def names(self):
        return [name for name, _ in self.calls]


def body(cpu, gfp, order=0, high=HIGH, nodemask=NM):
    """Run the profile's body (3.14's unless the profile has bounded_reclaim_retries) to completion."""
    fn = page_alloc._slowpath_body_4_7 if cpu.features.bounded_reclaim_retries else page_alloc._slowpath_body
    return run_to_completion(fn(cpu, cpu.m, gfp, order, cpu.m.zonelists[0], high, nodemask, PREF, MT))


def setup(mk, kernel="3.14", flags=0, tif=0):
    m, cpu = mk(kernel)
    assert int(m.glob[G_HZ]) == 250
    cur = add_process(m, cpu, "alloc", rss=10)
    m.task_flags[cur] |= flags
    m.task_tif[cur] |= tif
    cpu.current = cur
    return m, cpu, m.zonelists[0]


# the calls, with the arguments the body must pass (KERNEL §6.2)
def prep(cpu, zl, gfp, order=0, high=HIGH):
    return ("prepare_slowpath", (cpu, gfp, order, zl, high, PREF))


def gpf(cpu, zl, gfp, flags, order=0, high=HIGH, nodemask=NM):
    return ("get_page_from_freelist", (cpu, gfp, nodemask, order, zl, high, flags, PREF, MT))


def highprio(cpu, zl, gfp, order=0):
    return ("__alloc_pages_high_priority", (cpu, gfp, order, zl, HIGH, NM, PREF, MT))


def compact(cpu, zl, gfp, flags, sync_migration, order=0, high=HIGH):
    return ("__alloc_pages_direct_compact", (cpu, gfp, order, zl, high, NM, flags, PREF, MT, sync_migration))


def reclaim(cpu, zl, gfp, flags, order=0, high=HIGH):
    return ("__alloc_pages_direct_reclaim", (cpu, gfp, order, zl, high, NM, flags, PREF, MT))


def may_oom(cpu, zl, gfp, order=0, high=HIGH):
    return ("__alloc_pages_may_oom", (cpu, gfp, order, zl, high, NM, PREF, MT))


def may_oom_lock(cpu, zl, gfp, order=0, high=HIGH):
    return ("__alloc_pages_may_oom_oom_lock", (cpu, gfp, order, zl, high, NM, PREF, MT))


def retry(gfp, order, progress, reclaimed):
    return ("should_alloc_retry", (gfp, order, progress, reclaimed))


def congested(cpu):
    return ("wait_iff_congested", (cpu, PREF, BLK_RW_ASYNC, HZ_50))


def reclaim_retry(cpu, zl, loops, order=0, flags=KERNEL_FLAGS):
    return ("should_reclaim_retry", (cpu, order, zl, HIGH, NM, PREF, flags, loops))


# =============================================================================================================
# 3.14 (KERNEL §6.2)
# =============================================================================================================

def test_3_14_gfp_kernel_runs_min_pass_compaction_reclaim_oom_restart_then_retries_at_rebalance(mk, monkeypatch):
    """§6.2 in order for GFP_KERNEL order 0 (flags ALLOC_WMARK_MIN|ALLOC_CPUSET = 0x40, §6.3):
    restart: wake kswapd (3), min-watermark pass (5), asynchronous compaction (10), reclaim (12) without progress:
    §6.10 allows the OOM killer, __alloc_pages_may_oom gets no page, order 0 and Normal: goto restart (13).
    Second round: kswapd, min pass, now synchronous compaction, reclaim with progress 5: pages_reclaimed 5,
    should_alloc_retry(gfp, 0, 5, 5) is true (§6.9 rule 4), wait_iff_congested(preferred, BLK_RW_ASYNC, HZ/50),
    goto rebalance (14): no kswapd wake-up; min pass fails, reclaim 3 more (pages_reclaimed 8), retry, and the
    min pass of the third rebalance gets the page. One restart."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch, get_page_from_freelist=[None, None, None, PAGE],
                  __alloc_pages_direct_reclaim=[(None, 0), (None, 5), (None, 3)])
    g, f = GFP_KERNEL, KERNEL_FLAGS
    assert body(cpu, g) == (PAGE, 1)
    assert steps.calls == [
        prep(cpu, zl, g), gpf(cpu, zl, g, f), compact(cpu, zl, g, f, False), reclaim(cpu, zl, g, f),
        may_oom(cpu, zl, g),
        prep(cpu, zl, g), gpf(cpu, zl, g, f), compact(cpu, zl, g, f, True), reclaim(cpu, zl, g, f),
        retry(g, 0, 5, 5), congested(cpu),
        gpf(cpu, zl, g, f), compact(cpu, zl, g, f, True), reclaim(cpu, zl, g, f),
        retry(g, 0, 3, 8), congested(cpu),
        gpf(cpu, zl, g, f)]
    timeout = steps.calls[10][1][3]
    assert type(timeout) is int          # jiffies: HZ/50 is C's integer division


@pytest.mark.parametrize("kernel", ["3.14", "4.7"])
def test_sanity_exits_take_no_step(mk, monkeypatch, kernel):
    """§6.2 steps 1-2, kept by 4.7: order >= MAX_ORDER (11) and GFP_THISNODE (all three bits:
    THISNODE|NOWARN|NORETRY, §6.12) return NULL before kswapd is woken, with no restart counted."""
    m, cpu, zl = setup(mk, kernel)
    steps = Steps(monkeypatch)
    assert body(cpu, GFP_KERNEL, order=11) == (None, 0)
    assert body(cpu, GFP_KERNEL | __GFP_THISNODE | __GFP_NOWARN | __GFP_NORETRY) == (None, 0)
    assert steps.calls == []
    # order 10 exists, and THISNODE alone is not GFP_THISNODE: both go on to the first step
    body(cpu, GFP_KERNEL, order=10)
    assert steps.calls[0] == prep(cpu, zl, GFP_KERNEL, order=10)
    steps.calls.clear()
    body(cpu, GFP_KERNEL | __GFP_THISNODE | __GFP_NORETRY)
    assert steps.calls[0] == prep(cpu, zl, GFP_KERNEL | __GFP_THISNODE | __GFP_NORETRY)


def test_3_14_the_min_pass_page_ends_the_body(mk, monkeypatch):
    """§6.2 step 5: the first min-watermark attempt succeeds: got_pg after waking kswapd, nothing else."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch, get_page_from_freelist=[PAGE])
    assert body(cpu, GFP_KERNEL) == (PAGE, 0)
    assert steps.calls == [prep(cpu, zl, GFP_KERNEL), gpf(cpu, zl, GFP_KERNEL, KERNEL_FLAGS)]


def test_3_14_an_atomic_request_fails_after_its_min_pass(mk, monkeypatch):
    """GFP_ATOMIC (0x20): flags ALLOC_HIGH|ALLOC_HARDER = 0x30 without ALLOC_CPUSET (§6.3 rules 2-3); after
    the failed min pass, !__GFP_WAIT goes to nopage (§6.2 step 7): no compaction, no reclaim."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch)
    assert body(cpu, GFP_ATOMIC) == (None, 0)
    assert steps.calls == [prep(cpu, zl, GFP_ATOMIC), gpf(cpu, zl, GFP_ATOMIC, ATOMIC_FLAGS)]


@pytest.mark.parametrize("flags,tif", [(PF_MEMALLOC, 0), (0, TIF_MEMDIE)])
def test_3_14_pf_memalloc_and_tif_memdie_use_the_reserve_then_stop(mk, monkeypatch, flags, tif):
    """§6.3 rule 5: PF_MEMALLOC or TIF_MEMDIE add ALLOC_NO_WATERMARKS (0x44); step 5's attempt masks it out
    (0x40), step 6 calls __alloc_pages_high_priority; it fails, and step 8 (PF_MEMALLOC: already in reclaim) or
    step 9 (TIF_MEMDIE without NOFAIL) goes to nopage. When the reserve has a page, that is got_pg."""
    m, cpu, zl = setup(mk, flags=flags, tif=tif)
    steps = Steps(monkeypatch)
    g = GFP_KERNEL
    assert body(cpu, g) == (None, 0)
    assert steps.calls == [prep(cpu, zl, g), gpf(cpu, zl, g, KERNEL_FLAGS), highprio(cpu, zl, g)]
    steps.calls.clear()
    steps.script["__alloc_pages_high_priority"] = [PAGE]
    assert body(cpu, g) == (PAGE, 0)
    assert steps.names() == ["prepare_slowpath", "get_page_from_freelist", "__alloc_pages_high_priority"]


def test_3_14_a_nofail_tif_memdie_task_goes_on_to_compaction_and_reclaim(mk, monkeypatch):
    """§6.2 step 9 stops a TIF_MEMDIE task only without __GFP_NOFAIL: with it the body compacts and reclaims.
    Order 4 (costly), progress 1: should_alloc_retry(NOFAIL, 4, 1, 1) is true (§6.9 rule 2): it waits and
    goes to rebalance, whose min pass gets the page."""
    m, cpu, zl = setup(mk, tif=TIF_MEMDIE)
    g = GFP_KERNEL | __GFP_NOFAIL
    steps = Steps(monkeypatch, get_page_from_freelist=[None, PAGE], __alloc_pages_direct_reclaim=[(None, 1)])
    assert body(cpu, g, order=4) == (PAGE, 0)
    assert steps.calls == [
        prep(cpu, zl, g, 4), gpf(cpu, zl, g, KERNEL_FLAGS, 4), highprio(cpu, zl, g, 4),
        compact(cpu, zl, g, MEMDIE_FLAGS, False, 4), reclaim(cpu, zl, g, MEMDIE_FLAGS, 4),
        retry(g, 4, 1, 1), congested(cpu), gpf(cpu, zl, g, KERNEL_FLAGS, 4)]


def test_3_14_compaction_page_and_the_thp_exit(mk, monkeypatch):
    """§6.2 step 10: a page from compaction is got_pg. Step 11: compaction deferred or contended with
    __GFP_NO_KSWAPD (THP) goes to nopage before reclaim; either alone goes on to reclaim."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch, __alloc_pages_direct_compact=[(PAGE, False, False)])
    assert body(cpu, GFP_KERNEL) == (PAGE, 0)
    assert steps.names() == ["prepare_slowpath", "get_page_from_freelist", "__alloc_pages_direct_compact"]
    thp = GFP_KERNEL | __GFP_NO_KSWAPD | __GFP_NORETRY
    for result in ((None, True, False), (None, False, True)):
        steps.calls.clear()
        steps.script["__alloc_pages_direct_compact"] = [result]
        assert body(cpu, thp, order=9) == (None, 0)
        assert steps.names() == ["prepare_slowpath", "get_page_from_freelist", "__alloc_pages_direct_compact"]
    for gfp, result in ((GFP_KERNEL | __GFP_NORETRY, (None, True, False)), (thp, (None, False, False))):
        steps.calls.clear()
        steps.script["__alloc_pages_direct_compact"] = [result]
        assert body(cpu, gfp, order=9) == (None, 0)
        # reclaim without progress; NORETRY: no OOM (§6.10), no retry (§6.9 rule 1): the last compaction
        assert steps.names() == ["prepare_slowpath", "get_page_from_freelist", "__alloc_pages_direct_compact",
                                 "__alloc_pages_direct_reclaim", "should_alloc_retry",
                                 "__alloc_pages_direct_compact"]


def test_3_14_reclaim_page_ends_the_body(mk, monkeypatch):
    """§6.2 step 12: the page that direct reclaim's own attempt got is got_pg."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch, __alloc_pages_direct_reclaim=[(PAGE, 7)])
    assert body(cpu, GFP_KERNEL) == (PAGE, 0)
    assert steps.names()[-1] == "__alloc_pages_direct_reclaim"


def test_3_14_a_costly_request_without_retry_ends_in_the_last_synchronous_compaction(mk, monkeypatch):
    """§6.2 step 14: GFP_KERNEL order 4 with progress 2: should_alloc_retry(gfp, 4, 2, 2) is false (§6.9: not
    NOFAIL, 4 > 3, no REPEAT), so one last synchronous compaction runs and its result is the body's."""
    m, cpu, zl = setup(mk)
    g, f = GFP_KERNEL, KERNEL_FLAGS
    steps = Steps(monkeypatch, __alloc_pages_direct_reclaim=[(None, 2)])
    assert body(cpu, g, order=4) == (None, 0)
    assert steps.calls == [prep(cpu, zl, g, 4), gpf(cpu, zl, g, f, 4), compact(cpu, zl, g, f, False, 4),
                           reclaim(cpu, zl, g, f, 4), retry(g, 4, 2, 2), compact(cpu, zl, g, f, True, 4)]
    steps.calls.clear()
    steps.script = {"__alloc_pages_direct_reclaim": [(None, 2)],
                    "__alloc_pages_direct_compact": [(None, False, False), (PAGE, False, False)]}
    assert body(cpu, g, order=4) == (PAGE, 0)


def test_3_14_repeat_retries_until_it_has_reclaimed_the_order(mk, monkeypatch):
    """§6.9 rule 5 in the body: GFP_KERNEL|__GFP_REPEAT order 4 (16 pages) retries while pages_reclaimed,
    summed over the rounds, is below 16: 6 (retry), 6 + 6 = 12 (retry), 12 + 6 = 18 (no): then the last
    compaction."""
    m, cpu, zl = setup(mk)
    g = GFP_KERNEL | __GFP_REPEAT
    steps = Steps(monkeypatch, __alloc_pages_direct_reclaim=[(None, 6)] * 3)
    assert body(cpu, g, order=4) == (None, 0)
    assert [args for name, args in steps.calls if name == "should_alloc_retry"] == [
        (g, 4, 6, 6), (g, 4, 6, 12), (g, 4, 6, 18)]
    assert steps.names().count("wait_iff_congested") == 2
    assert steps.names()[-1] == "__alloc_pages_direct_compact"


def test_3_14_nofs_without_progress_retries_at_rebalance_without_the_oom_killer(mk, monkeypatch):
    """§6.10: GFP_NOFS lacks __GFP_FS, so no progress does not reach the OOM killer; §6.9 rule 4 (order 0)
    retries: should_alloc_retry(gfp, 0, 0, 0), the congestion wait, and rebalance (no kswapd wake-up)."""
    m, cpu, zl = setup(mk)
    g, f = GFP_NOFS, KERNEL_FLAGS
    steps = Steps(monkeypatch, get_page_from_freelist=[None, PAGE])
    assert body(cpu, g) == (PAGE, 0)
    assert steps.calls == [prep(cpu, zl, g), gpf(cpu, zl, g, f), compact(cpu, zl, g, f, False),
                           reclaim(cpu, zl, g, f), retry(g, 0, 0, 0), congested(cpu), gpf(cpu, zl, g, f)]


def test_3_14_the_gates_before_may_oom(mk, monkeypatch):
    """§6.2 step 13: oom_killer_disabled, and PF_DUMPCORE without NOFAIL, go to nopage before
    __alloc_pages_may_oom; PF_DUMPCORE with NOFAIL calls it."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch)
    m.glob[G_OOM_KILLER_DISABLED] = 1
    assert body(cpu, GFP_KERNEL) == (None, 0)
    assert steps.names()[-1] == "__alloc_pages_direct_reclaim"
    m.glob[G_OOM_KILLER_DISABLED] = 0
    m.task_flags[cpu.current] |= PF_DUMPCORE
    steps.calls.clear()
    assert body(cpu, GFP_KERNEL) == (None, 0)
    assert steps.names()[-1] == "__alloc_pages_direct_reclaim"
    steps.calls.clear()
    steps.script["__alloc_pages_may_oom"] = [PAGE]
    assert body(cpu, GFP_KERNEL | __GFP_NOFAIL) == (PAGE, 0)
    assert steps.calls[-1] == may_oom(cpu, zl, GFP_KERNEL | __GFP_NOFAIL)


@pytest.mark.parametrize("order,high,restarts", [
    (3, HIGH, True),          # order 3 is not costly
    (4, HIGH, False),         # order > PAGE_ALLOC_COSTLY_ORDER: nopage
    (0, 1, False),            # high_zoneidx DMA32 < ZONE_NORMAL: nopage
])
def test_3_14_after_may_oom_costly_and_lowmem_requests_fail_the_rest_restart(mk, monkeypatch, order, high,
                                                                            restarts):
    """§6.2 step 13: after __alloc_pages_may_oom without a page, order > 3 or high_zoneidx < ZONE_NORMAL is
    nopage; otherwise goto restart (kswapd woken again). Restarted, the next min pass gets the page."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch, get_page_from_freelist=[None, PAGE])
    got = body(cpu, GFP_KERNEL, order=order, high=high)
    if restarts:
        assert got == (PAGE, 1)
        assert steps.calls[4:] == [may_oom(cpu, zl, GFP_KERNEL, order, high), prep(cpu, zl, GFP_KERNEL, order, high),
                                   gpf(cpu, zl, GFP_KERNEL, KERNEL_FLAGS, order, high)]
    else:
        assert got == (None, 0)
        assert steps.calls[-1] == may_oom(cpu, zl, GFP_KERNEL, order, high)


def test_3_14_nofail_restarts_whatever_the_order_and_counts_each_restart(mk, monkeypatch):
    """§6.2 step 13: with __GFP_NOFAIL neither exit applies: an order-4 request restarts after each
    __alloc_pages_may_oom; two restarts, then the page."""
    m, cpu, zl = setup(mk)
    g = GFP_KERNEL | __GFP_NOFAIL
    steps = Steps(monkeypatch, get_page_from_freelist=[None, None, PAGE])
    assert body(cpu, g, order=4) == (PAGE, 2)
    assert steps.names() == ["prepare_slowpath", "get_page_from_freelist", "__alloc_pages_direct_compact",
                             "__alloc_pages_direct_reclaim", "__alloc_pages_may_oom"] * 2 + [
                             "prepare_slowpath", "get_page_from_freelist"]
    assert [a[-1] for n, a in steps.calls if n == "__alloc_pages_direct_compact"] == [False, True]


def test_3_14_a_page_from_may_oom_ends_the_body(mk, monkeypatch):
    """§6.2 step 13: __alloc_pages_may_oom's last-chance page is got_pg, no restart."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch, __alloc_pages_may_oom=[PAGE])
    assert body(cpu, GFP_KERNEL) == (PAGE, 0)
    assert steps.calls[-1] == may_oom(cpu, zl, GFP_KERNEL)


# --- 4.2's OOM step in the same body (KERNEL §8: oom_lock, did_some_progress from __alloc_pages_may_oom) ---

def test_4_2_no_progress_takes_the_oom_lock_step_and_its_progress_restarts(mk, monkeypatch):
    """4.2: reclaim without progress calls __alloc_pages_may_oom (oom_lock form); its progress (a kill or a
    busy lock) restarts the body, counted; no progress is the last synchronous compaction and nopage."""
    m, cpu, zl = setup(mk, "4.2")
    g, f = GFP_KERNEL, KERNEL_FLAGS
    steps = Steps(monkeypatch, get_page_from_freelist=[None, None], __alloc_pages_may_oom_oom_lock=[(None, 1)])
    assert body(cpu, g) == (None, 1)
    assert steps.calls == [
        prep(cpu, zl, g), gpf(cpu, zl, g, f), compact(cpu, zl, g, f, False), reclaim(cpu, zl, g, f),
        may_oom_lock(cpu, zl, g),
        prep(cpu, zl, g), gpf(cpu, zl, g, f), compact(cpu, zl, g, f, True), reclaim(cpu, zl, g, f),
        may_oom_lock(cpu, zl, g), compact(cpu, zl, g, f, True)]
    steps.script = {"__alloc_pages_may_oom_oom_lock": [(None, 1), (None, 1)]}
    assert body(cpu, g) == (None, 2)                  # each restart counts
    steps.calls.clear()
    steps.script = {"__alloc_pages_may_oom_oom_lock": [(PAGE, 0)]}
    assert body(cpu, g) == (PAGE, 0)
    steps.script = {"__alloc_pages_direct_compact": [(None, False, False), (PAGE, False, False)]}
    assert body(cpu, g) == (PAGE, 0)


@pytest.mark.parametrize("gfp,disabled", [(GFP_KERNEL | __GFP_NORETRY, 0), (GFP_KERNEL, 1)])
def test_4_2_noretry_and_a_disabled_oom_killer_stop_before_the_oom_step(mk, monkeypatch, gfp, disabled):
    """4.2: __GFP_NORETRY, or oom_killer_disabled, is nopage right after reclaim without progress."""
    m, cpu, zl = setup(mk, "4.2")
    m.glob[G_OOM_KILLER_DISABLED] = disabled
    steps = Steps(monkeypatch)
    assert body(cpu, gfp) == (None, 0)
    assert steps.names()[-1] == "__alloc_pages_direct_reclaim"


def test_4_2_progress_still_retries_at_rebalance(mk, monkeypatch):
    """4.2 with progress: no OOM step; order 0 retries (§6.9 rule 4) after the congestion wait."""
    m, cpu, zl = setup(mk, "4.2")
    g, f = GFP_KERNEL, KERNEL_FLAGS
    steps = Steps(monkeypatch, get_page_from_freelist=[None, PAGE], __alloc_pages_direct_reclaim=[(None, 4)])
    assert body(cpu, g) == (PAGE, 0)
    assert steps.calls[3:] == [reclaim(cpu, zl, g, f), retry(g, 0, 4, 4), congested(cpu), gpf(cpu, zl, g, f)]


# =============================================================================================================
# 4.7 (KERNEL §8: 0a0337e0d1d1, MAX_RECLAIM_RETRIES = 16; §6.8: progress no longer includes "reclaimable")
# =============================================================================================================

def test_4_7_each_round_wakes_kswapd_reclaims_and_asks_should_reclaim_retry(mk, monkeypatch):
    """4.7 order 0: every retry goes back to the top (kswapd, min pass); reclaim with progress sets
    no_progress_loops to 0, without progress adds one: progress 3, then none twice: should_reclaim_retry sees
    0, 1, 2; the fourth min pass gets the page. No OOM step while it says retry."""
    m, cpu, zl = setup(mk, "4.7")
    g, f = GFP_KERNEL, KERNEL_FLAGS
    steps = Steps(monkeypatch, get_page_from_freelist=[None, None, None, PAGE],
                  __alloc_pages_direct_reclaim=[(None, 3), (None, 0), (None, 0)],
                  should_reclaim_retry=[True, True, True])
    assert body(cpu, g) == (PAGE, 0)
    round_ = [prep(cpu, zl, g), gpf(cpu, zl, g, f), reclaim(cpu, zl, g, f)]
    assert steps.calls == (round_ + [reclaim_retry(cpu, zl, 0)] + round_ + [reclaim_retry(cpu, zl, 1)]
                           + round_ + [reclaim_retry(cpu, zl, 2)] + round_[:2])


def test_4_7_a_no_retry_answer_runs_the_oom_step_and_its_progress_resets_the_count(mk, monkeypatch):
    """4.7: should_reclaim_retry false: __alloc_pages_may_oom (oom_lock form); its progress counts a restart
    and sets no_progress_loops back to 0, so the next round without progress asks with 1; no OOM progress is
    nopage."""
    m, cpu, zl = setup(mk, "4.7")
    g, f = GFP_KERNEL, KERNEL_FLAGS
    steps = Steps(monkeypatch, __alloc_pages_may_oom_oom_lock=[(None, 1), (None, 1)])
    assert body(cpu, g) == (None, 2)
    round_ = [prep(cpu, zl, g), gpf(cpu, zl, g, f), reclaim(cpu, zl, g, f)]
    assert steps.calls == (round_ + [reclaim_retry(cpu, zl, 1), may_oom_lock(cpu, zl, g)]) * 3
    steps.calls.clear()
    steps.script = {"__alloc_pages_may_oom_oom_lock": [(PAGE, 0)]}
    assert body(cpu, g) == (PAGE, 0)
    m.glob[G_OOM_KILLER_DISABLED] = 1
    steps.calls.clear()
    assert body(cpu, g) == (None, 0)
    assert steps.names()[-1] == "should_reclaim_retry"


def test_4_7_a_costly_order_counts_a_round_even_with_progress(mk, monkeypatch):
    """4.7: for order > 3 (only with __GFP_REPEAT, else it is nopage after reclaim) progress does not reset
    the count: order 4 with progress 5 twice asks with 1, then 2; order 3 with progress asks with 0."""
    m, cpu, zl = setup(mk, "4.7")
    g = GFP_KERNEL | __GFP_REPEAT
    steps = Steps(monkeypatch, __alloc_pages_direct_reclaim=[(None, 5), (None, 5)], should_reclaim_retry=[True])
    assert body(cpu, g, order=4) == (None, 0)
    assert [a[-1] for n, a in steps.calls if n == "should_reclaim_retry"] == [1, 2]
    steps.calls.clear()
    steps.script = {"__alloc_pages_direct_reclaim": [(None, 5)]}
    body(cpu, GFP_KERNEL, order=3)
    assert [a for n, a in steps.calls if n == "should_reclaim_retry"] == [(cpu, 3, zl, HIGH, NM, PREF,
                                                                            KERNEL_FLAGS, 0)]
    steps.calls.clear()
    steps.script = {}
    assert body(cpu, GFP_KERNEL, order=4) == (None, 0)
    assert steps.names()[-1] == "__alloc_pages_direct_reclaim"     # costly without REPEAT: nopage
    steps.calls.clear()
    assert body(cpu, GFP_KERNEL | __GFP_NORETRY) == (None, 0)
    assert steps.names()[-1] == "__alloc_pages_direct_reclaim"     # NORETRY: nopage


def test_4_7_the_first_steps_as_3_14(mk, monkeypatch):
    """4.7 keeps 3.14's first steps (§6.2 steps 3-9; the sanity exits above): atomic nopage after the min pass
    (flags 0x30), the reserve for TIF_MEMDIE (0x44 masked to 0x40 for the min pass), whose failure is nopage
    without NOFAIL and goes on to reclaim with it; a reserve page is got_pg."""
    m, cpu, zl = setup(mk, "4.7")
    steps = Steps(monkeypatch)
    assert body(cpu, GFP_ATOMIC) == (None, 0)
    assert steps.calls == [prep(cpu, zl, GFP_ATOMIC), gpf(cpu, zl, GFP_ATOMIC, ATOMIC_FLAGS)]
    m.task_tif[cpu.current] |= TIF_MEMDIE
    steps.calls.clear()
    assert body(cpu, GFP_KERNEL) == (None, 0)
    assert steps.calls == [prep(cpu, zl, GFP_KERNEL), gpf(cpu, zl, GFP_KERNEL, KERNEL_FLAGS),
                           highprio(cpu, zl, GFP_KERNEL)]
    steps.calls.clear()
    steps.script = {"__alloc_pages_direct_reclaim": [(PAGE, 1)]}
    g = GFP_KERNEL | __GFP_NOFAIL
    assert body(cpu, g) == (PAGE, 0)
    assert steps.calls == [prep(cpu, zl, g), gpf(cpu, zl, g, KERNEL_FLAGS), highprio(cpu, zl, g),
                           reclaim(cpu, zl, g, MEMDIE_FLAGS)]
    steps.script = {"__alloc_pages_high_priority": [PAGE]}
    assert body(cpu, GFP_KERNEL) == (PAGE, 0)
    m.task_tif[cpu.current] &= ~TIF_MEMDIE
    m.task_flags[cpu.current] |= PF_MEMALLOC
    steps.calls.clear()
    assert body(cpu, GFP_KERNEL) == (None, 0)
    assert steps.names() == ["prepare_slowpath", "get_page_from_freelist", "__alloc_pages_high_priority"]
    steps.script = {"get_page_from_freelist": [PAGE]}
    assert body(cpu, GFP_KERNEL) == (PAGE, 0)


# =============================================================================================================
# The pieces around the body
# =============================================================================================================

def traced(m, cpu):
    """Give cpu a trace ring; returns a function that drains it into (event name, args) pairs."""
    from oomemu.trace.events import CATALOGUE
    from oomemu.trace.ring import RingWriter, drain_ring
    cpu.trace = RingWriter(m, cpu.id)
    names = [c[0] for c in CATALOGUE]
    return lambda: [(names[int(r["event"])], [int(x) for x in r["a"]]) for r in drain_ring(m, cpu.id)]


@pytest.mark.parametrize("kernel,which", [("3.14", "_slowpath_body"), ("4.2", "_slowpath_body"),
                                          ("4.7", "_slowpath_body_4_7"), ("6.1", "_slowpath_body_4_7")])
def test_the_slowpath_runs_its_profiles_body_traces_entry_and_exit_and_warns_on_nopage(mk, monkeypatch, kernel,
                                                                                      which):
    """__alloc_pages_slowpath: the profile's body (4.7's from bounded_reclaim_retries on) gets every argument;
    slowpath_enter(gfp, order) and slowpath_exit(pfn or -1, order, restarts) frame it; only a failure
    (nopage, KERNEL §6.2 step 15) calls warn_alloc_failed(gfp, order)."""
    m, cpu, zl = setup(mk, kernel)
    calls, warned = [], []

    async def fake(*args):
        calls.append(args)
        return results.pop(0)
    for name in ("_slowpath_body", "_slowpath_body_4_7"):
        monkeypatch.setattr(page_alloc, name, fake if name == which else None)
    monkeypatch.setattr(page_alloc, "warn_alloc_failed", lambda *a: warned.append(a))
    records = traced(m, cpu)
    results = [(None, 3), (PAGE, 2)]
    g = GFP_KERNEL | __GFP_NOFAIL
    slow = page_alloc.__alloc_pages_slowpath
    assert run_to_completion(slow(cpu, g, 1, zl, HIGH, NM, PREF, MT)) is None
    assert run_to_completion(slow(cpu, g, 2, zl, HIGH, NM, PREF, MT)) == PAGE
    assert calls == [(cpu, m, g, 1, zl, HIGH, NM, PREF, MT), (cpu, m, g, 2, zl, HIGH, NM, PREF, MT)]
    assert warned == [(cpu, g, 1)]
    assert [(n, a[:2] if n == "slowpath_enter" else a[:3]) for n, a in records() if n.startswith("slowpath")] == [
        ("slowpath_enter", [g, 1]), ("slowpath_exit", [-1, 1, 3]),
        ("slowpath_enter", [g, 2]), ("slowpath_exit", [PAGE, 2, 2])]


@pytest.mark.parametrize("gfp,row,flags,tif,expected", [
    (GFP_KERNEL, "cur", 0, 0, 0x40),                              # rule 1: WMARK_MIN | CPUSET
    (GFP_ATOMIC, "cur", 0, 0, 0x30),                              # HIGH, HARDER, no CPUSET
    (0, "cur", 0, 0, 0x10),                                       # GFP_NOWAIT: HARDER only
    (GFP_ATOMIC | 0x10000, "cur", 0, 0, 0x20),                    # __GFP_NOMEMALLOC: no HARDER
    (GFP_KERNEL | 0x2000, "cur", 0, 0, 0x44),                     # __GFP_MEMALLOC: NO_WATERMARKS
    (GFP_KERNEL | 0x2000 | 0x10000, "cur", 0, 0, 0x40),           # ... unless NOMEMALLOC
    (GFP_KERNEL, "cur", PF_MEMALLOC, 0, 0x44),
    (GFP_KERNEL, "cur", 0, TIF_MEMDIE, 0x44),
    (GFP_ATOMIC, "cur", 0, TIF_MEMDIE, 0x34),
    (GFP_KERNEL | 0x10000, "cur", 0, TIF_MEMDIE, 0x40),
    (GFP_KERNEL, 0, PF_MEMALLOC, 0, 0x44),                        # row 0 is a task like any other
    (GFP_KERNEL, -1, 0, 0, 0x40),                                 # no current task
])
def test_gfp_to_alloc_flags_by_hand(mk, gfp, row, flags, tif, expected):
    """KERNEL §6.3 rules 1-5 with §6.12's bits (__GFP_MEMALLOC 0x2000, __GFP_NOMEMALLOC 0x10000)."""
    m, cpu, _ = setup(mk)
    cur = cpu.current if row == "cur" else row
    if cur >= 0:
        m.task_flags[cur] |= flags
        m.task_tif[cur] |= tif
    cpu.current = cur
    assert page_alloc.gfp_to_alloc_flags(cpu, gfp) == expected


def test_high_priority_ignores_watermarks_and_loops_only_for_nofail(mk, monkeypatch):
    """§6.2 step 6: __alloc_pages_high_priority tries get_page_from_freelist with ALLOC_NO_WATERMARKS (0x04)
    alone; without __GFP_NOFAIL one failure returns NULL; with it, each failure waits
    wait_iff_congested(preferred, BLK_RW_ASYNC, HZ/50) and tries again."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch)
    monkeypatch.setattr(page_alloc, "__alloc_pages_high_priority", HIGH_PRIORITY)
    hp = page_alloc.__alloc_pages_high_priority
    assert run_to_completion(hp(cpu, GFP_KERNEL, 1, zl, HIGH, NM, PREF, MT)) is None
    assert steps.calls == [gpf(cpu, zl, GFP_KERNEL, 0x04, 1)]
    steps.calls.clear()
    steps.script = {"get_page_from_freelist": [None, None, PAGE]}
    g = GFP_KERNEL | __GFP_NOFAIL
    assert run_to_completion(hp(cpu, g, 1, zl, HIGH, NM, PREF, MT)) == PAGE
    assert steps.calls == [gpf(cpu, zl, g, 0x04, 1), congested(cpu)] * 2 + [gpf(cpu, zl, g, 0x04, 1)]
    assert all(type(a[3]) is int for n, a in steps.calls if n == "wait_iff_congested")


HIGH_PRIORITY = page_alloc.__alloc_pages_high_priority
DIRECT_RECLAIM = page_alloc.__alloc_pages_direct_reclaim
MAY_OOM = page_alloc.__alloc_pages_may_oom


def test_direct_reclaim_tries_at_the_slowpath_watermark_and_drains_once(mk, monkeypatch):
    """§6.2 step 12: no progress returns (NULL, 0) without an attempt; with progress 3 it tries with
    alloc_flags without ALLOC_NO_WATERMARKS (0x44 -> 0x40); failing, drain_all_pages, one more try, then
    (NULL, 3); a page on the first try needs no drain."""
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch)
    progress, drains, reclaims = [0, 3, 3], [], []

    async def perform(*args):
        reclaims.append(args)
        return progress.pop(0)
    monkeypatch.setattr(page_alloc, "__perform_reclaim", perform)
    monkeypatch.setattr(page_alloc, "drain_all_pages", lambda c: drains.append(c))
    dr = lambda: run_to_completion(DIRECT_RECLAIM(cpu, GFP_KERNEL, 1, zl, HIGH, NM, 0x44, PREF, MT))  # noqa: E731
    assert dr() == (None, 0) and steps.calls == [] and drains == []
    assert reclaims == [(cpu, GFP_KERNEL, 1, zl, NM)]
    assert dr() == (None, 3)
    assert steps.calls == [gpf(cpu, zl, GFP_KERNEL, 0x40, 1)] * 2 and drains == [cpu]
    steps.calls.clear()
    steps.script = {"get_page_from_freelist": [PAGE]}
    assert dr() == (PAGE, 3) and len(steps.calls) == 1 and drains == [cpu]


def test_perform_reclaim_sets_pf_memalloc_only_around_try_to_free_pages(mk, monkeypatch):
    """§6.2 step 12: __perform_reclaim sets PF_MEMALLOC for try_to_free_pages(zonelist, order, gfp, nodemask)
    and clears it after, leaving the task's other flags; the result is the progress."""
    from oomemu.mm import vmscan
    m, cpu, zl = setup(mk, flags=PF_DUMPCORE)
    cur = cpu.current
    seen = []

    async def ttfp(*args):
        seen.append((args, int(m.task_flags[cur])))
        return 6
    monkeypatch.setattr(vmscan, "try_to_free_pages", ttfp)
    before = int(m.task_flags[cur])
    assert run_to_completion_yielding(page_alloc.__perform_reclaim(cpu, GFP_KERNEL, 2, zl, NM)) == 6
    assert seen == [((cpu, zl, 2, GFP_KERNEL, NM), before | PF_MEMALLOC)]
    assert int(m.task_flags[cur]) == before and before & PF_DUMPCORE


def run_to_completion_yielding(coro):
    """Drive a coroutine through its yields (cond_resched); returns its value."""
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


def test_3_14_may_oom_last_chance_and_out_of_memory_arguments(mk, monkeypatch):
    """§1.4: under the zonelist lock, the last chance is get_page_from_freelist(gfp|__GFP_HARDWALL (0x20000),
    nodemask, order, ..., ALLOC_WMARK_HIGH|ALLOC_CPUSET = 0x42); failing, out_of_memory(zonelist, gfp, order,
    nodemask, false); the lock is released either way."""
    from oomemu.mm import oom_kill
    m, cpu, zl = setup(mk)
    steps = Steps(monkeypatch)
    ooms, unlocks = [], []
    monkeypatch.setattr(oom_kill, "try_set_zonelist_oom", lambda *a: True)
    monkeypatch.setattr(oom_kill, "clear_zonelist_oom", lambda *a: unlocks.append(a))

    async def oom(*args):
        ooms.append(args)
        return True
    monkeypatch.setattr(oom_kill, "out_of_memory", oom)
    assert run_to_completion(MAY_OOM(cpu, GFP_KERNEL, 1, zl, HIGH, NM, PREF, MT)) is None
    assert steps.calls == [("get_page_from_freelist", (cpu, GFP_KERNEL | 0x20000, NM, 1, zl, HIGH, 0x42, PREF, MT))]
    assert ooms == [(cpu, zl, GFP_KERNEL, 1, NM, False)] and unlocks == [(cpu, zl, GFP_KERNEL)]


def test_4_2_may_oom_last_chance_and_out_of_memory_arguments(mk, monkeypatch):
    """4.2 (KERNEL §8): the same last chance (gfp|0x20000, ALLOC_WMARK_HIGH|ALLOC_CPUSET = 0x42) under
    oom_lock; out_of_memory(zonelist, gfp, order, nodemask, false) true is progress 1, false is 0 unless
    __GFP_NOFAIL."""
    from oomemu.mm import oom_kill
    m, cpu, zl = setup(mk, "4.2")
    steps = Steps.__new__(Steps)    # only get_page_from_freelist scripted: the real step under test
    steps.calls, steps.script = [], {}
    monkeypatch.setattr(page_alloc, "get_page_from_freelist", steps._stub("get_page_from_freelist"))
    ooms, answers = [], [True, False, False]

    async def oom(*args):
        ooms.append(args)
        return answers.pop(0)
    monkeypatch.setattr(oom_kill, "out_of_memory", oom)
    step = lambda g: run_to_completion(page_alloc.__alloc_pages_may_oom_oom_lock(  # noqa: E731
        cpu, g, 1, zl, HIGH, NM, PREF, MT))
    assert step(GFP_KERNEL) == (None, 1)
    assert step(GFP_KERNEL) == (None, 0)
    assert step(GFP_KERNEL | __GFP_NOFAIL) == (None, 1)
    assert steps.calls[0] == ("get_page_from_freelist", (cpu, GFP_KERNEL | 0x20000, NM, 1, zl, HIGH, 0x42, PREF, MT))
    assert ooms[:2] == [(cpu, zl, GFP_KERNEL, 1, NM, False)] * 2
    m.task_flags[cpu.current] |= PF_DUMPCORE          # KERNEL §6.10's PF_DUMPCORE block: no kill, no progress
    assert step(GFP_KERNEL) == (None, 0) and len(ooms) == 3


TWO_NODES = """
[[machine.node]]
zones = { DMA = "0", DMA32 = "0", Normal = "32MiB" }
"""


def test_prepare_slowpath_wakes_each_usable_zones_kswapd_and_resets_local_batches(monkeypatch):
    """§6.2 step 3 (3.14's prepare_slowpath): wakeup_kswapd(zone, order, zone_idx(preferred)) for every zone
    of the zonelist up to high_zoneidx unless __GFP_NO_KSWAPD, and NR_ALLOC_BATCH = high - low watermark for
    the zones on the preferred zone's node only. Node 1's zonelist is (its Normal 6, node 0's Normal 2, node
    0's DMA 0); a DMA request (high_zoneidx 0) wakes only zone 0."""
    from machine_helpers import make_machine
    from oomemu.include.mmzone import NR_ALLOC_BATCH, WMARK_HIGH, WMARK_LOW
    from oomemu.machine import Z_STAT, Z_WMARK
    from oomemu.mm import vmscan
    m, cpu = make_machine(extra=TWO_NODES)
    try:
        assert m.zonelists[1] == (6, 2, 0)
        woken = []
        monkeypatch.setattr(vmscan, "wakeup_kswapd", lambda c, z, o, cz: woken.append((c, z, o, cz)))
        batch = lambda z: int(m.zone[z, Z_STAT + NR_ALLOC_BATCH])                                   # noqa: E731
        target = lambda z: int(m.zone[z, Z_WMARK + WMARK_HIGH] - m.zone[z, Z_WMARK + WMARK_LOW])   # noqa: E731
        for z in (0, 2, 6):
            m.zone[z, Z_STAT + NR_ALLOC_BATCH] = 1
        page_alloc.prepare_slowpath(cpu, GFP_KERNEL, 3, m.zonelists[1], HIGH, 6)
        assert woken == [(cpu, 6, 3, 2), (cpu, 2, 3, 2), (cpu, 0, 3, 2)]
        assert (batch(6), batch(2), batch(0)) == (target(6), 1, 1) and target(6) > 1
        woken.clear()
        page_alloc.prepare_slowpath(cpu, GFP_KERNEL | __GFP_NO_KSWAPD, 3, m.zonelists[1], HIGH, 6)
        assert woken == []
        page_alloc.prepare_slowpath(cpu, GFP_KERNEL, 1, m.zonelists[0], 0, 0)
        assert woken == [(cpu, 0, 1, 0)] and batch(0) == target(0)
    finally:
        m.close()


def test_direct_compaction_of_an_order_0_request_returns_at_once(mk):
    """§6.2 step 10: compaction returns at once for order 0: no page, neither deferred nor contended (so the
    THP exit of step 11 cannot follow it)."""
    m, cpu, zl = setup(mk)
    for sync_migration in (False, True):
        assert page_alloc.__alloc_pages_direct_compact(cpu, GFP_KERNEL, 0, zl, HIGH, None, KERNEL_FLAGS, PREF, 0,
                                                       sync_migration) == (None, False, False)

