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


def test_3_14_sanity_exits_take_no_step(mk, monkeypatch):
    """§6.2 steps 1-2: order >= MAX_ORDER (11) and GFP_THISNODE (all three bits: THISNODE|NOWARN|NORETRY,
    §6.12) return NULL before kswapd is woken, with no restart counted."""
    m, cpu, zl = setup(mk)
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
    """4.7 keeps 3.14's first steps (§6.2 steps 1-9): MAX_ORDER and GFP_THISNODE exits, atomic nopage after
    the min pass (flags 0x30), the reserve for TIF_MEMDIE (0x44 masked to 0x40 for the min pass), whose
    failure is nopage without NOFAIL and goes on to reclaim with it; a reserve page is got_pg."""
    m, cpu, zl = setup(mk, "4.7")
    steps = Steps(monkeypatch)
    assert body(cpu, GFP_KERNEL, order=11) == (None, 0)
    assert body(cpu, GFP_KERNEL | __GFP_THISNODE | __GFP_NOWARN | __GFP_NORETRY) == (None, 0)
    assert steps.calls == []
    body(cpu, GFP_KERNEL, order=10)
    assert steps.calls[0] == prep(cpu, zl, GFP_KERNEL, order=10)
    steps.calls.clear()
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
