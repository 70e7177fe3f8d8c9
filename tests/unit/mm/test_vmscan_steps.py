"""balance_pgdat (KERNEL §6.6) and shrink_lruvec's loop (KERNEL §6.8: SWAP_CLUSTER_MAX steps, stop once the
target is reclaimed) step by step: their callees are scripted stand-ins that record their arguments, so a test
pins which zone is shrunk, against which gap and target, at which priority, and when the loop stops.

Unit machine as machine_helpers.BASE, one node: DMA (zone 0, 4,096 managed pages, watermarks min/low/high
64/80/96) and Normal (zone 2, 12,288 pages, 192/240/288); DMA32 and Movable are empty. By hand (§6.6):
balance_gap = min(low, ceil(managed / 100)): DMA min(80, 41) = 41, Normal min(240, 123) = 123; the
kswapd_shrink_zone target max(SWAP_CLUSTER_MAX = 32, high): DMA 96, Normal 288.
"""
import pytest

from machine_helpers import make_machine, mk  # noqa: F401 (mk: the machine fixture)
from oomemu.include.mmzone import WMARK_LOW
from oomemu.machine import LRU_ACTIVE_ANON, Z_MANAGED, Z_WMARK
from oomemu.mm import vmscan
from oomemu.percpu import CpuContext

DMA, NORMAL = 0, 2
GAP = {DMA: 41, NORMAL: 123}
TARGET = {DMA: 96, NORMAL: 288}


@pytest.fixture
def mc():
    m, cpu = make_machine()
    assert [int(m.zone[DMA, Z_WMARK + i]) for i in range(3)] == [64, 80, 96]
    assert [int(m.zone[NORMAL, Z_WMARK + i]) for i in range(3)] == [192, 240, 288]
    assert (int(m.zone[DMA, Z_MANAGED]), int(m.zone[NORMAL, Z_MANAGED])) == (4096, 12288)
    yield m, CpuContext(m, m.nr_cpus, cpu.scenario)    # kswapd's context
    m.close()


class Kswapd:
    """Scripted callees of balance_pgdat. `balanced(z, order, gap, classzone) -> bool` answers zone_balanced;
    `reclaimable[z]` zone_reclaimable; `reclaim(z, priority) -> pages` shrink_lruvec; `pgdat_ok(order,
    classzone) -> bool` pgdat_balanced. `calls` records every call in order."""

    def __init__(self, monkeypatch, cpu, balanced, reclaim=lambda z, p: 0, reclaimable=None,
                 pgdat_ok=lambda o, c: False, waiters=False, watermark_ok=False):
        self.calls = []
        rec = self.calls.append
        unreclaimable = set() if reclaimable is None else {z for z, ok in reclaimable.items() if not ok}

        def zone_balanced(m, z, order, gap, classzone):
            rec(("zone_balanced", z, order, gap, classzone))
            return balanced(z, order, gap, classzone)

        def shrink_lruvec(cpu, z, priority, target, *args, **kw):
            rec(("shrink_lruvec", z, priority, target, args, kw))
            return reclaim(z, priority)

        def pgdat_balanced(m, nid, order, classzone):
            rec(("pgdat_balanced", nid, order, classzone))
            return pgdat_ok(order, classzone)

        def watermark(c, nid):
            rec(("pfmemalloc_watermark_ok", c is cpu, nid))
            return watermark_ok
        monkeypatch.setattr(vmscan, "zone_balanced", zone_balanced)
        monkeypatch.setattr(vmscan, "zone_reclaimable", lambda m, z: z not in unreclaimable)
        monkeypatch.setattr(vmscan, "shrink_lruvec", shrink_lruvec)
        monkeypatch.setattr(vmscan, "age_active_anon", lambda cpu, z, p: rec(("age_active_anon", z, p)))
        monkeypatch.setattr(vmscan, "pgdat_balanced", pgdat_balanced)
        monkeypatch.setattr(vmscan, "pfmemalloc_waiters", lambda m, nid: waiters)
        monkeypatch.setattr(vmscan, "pfmemalloc_watermark_ok", watermark)
        monkeypatch.setattr(vmscan, "wake_up_pfmemalloc", lambda c, nid: rec(("wake_up_pfmemalloc", c is cpu, nid)))

    def of(self, name):
        return [c[1:] for c in self.calls if c[0] == name]


def shrunk(z, priority):
    """A kswapd_shrink_zone call as balance_pgdat must make it: the zone's target, as kswapd."""
    return (z, priority, TARGET[z], (), {"kswapd": True})


def test_balance_pgdat_a_balanced_node_returns_at_once(mc, monkeypatch):
    """§6.6: no zone below its high watermark (gap 0, classzone 0) in the first scan: done, nothing aged or
    shrunk; balance_pgdat returns (order, end_zone 0)."""
    m, cpu = mc
    k = Kswapd(monkeypatch, cpu, balanced=lambda z, o, g, c: True)
    assert vmscan.balance_pgdat(cpu, 0, 2, 2) == (2, 0)
    assert k.calls == [("zone_balanced", DMA, 2, 0, 0), ("zone_balanced", NORMAL, 2, 0, 0)]


def test_balance_pgdat_end_zone_gap_target_lowest_first_and_every_priority(mc, monkeypatch):
    """§6.6, order 0, classzone 2, a node that never balances: each pass from priority 12 down to 1 finds
    Normal unbalanced at the high watermark (end_zone 2), ages both zones, then lowest first asks each zone
    zone_balanced(order, its balance_gap, end_zone): DMA is above high + 41 and is skipped, Normal is not and
    is shrunk toward 288 pages as kswapd; pgdat_balanced(0, classzone 2) is asked after each pass."""
    m, cpu = mc
    k = Kswapd(monkeypatch, cpu, balanced=lambda z, o, g, c: z == DMA)
    assert vmscan.balance_pgdat(cpu, 0, 0, 2) == (0, 2)
    per_pass = lambda p: [("zone_balanced", DMA, 0, 0, 0), ("zone_balanced", NORMAL, 0, 0, 0),  # noqa: E731
                          ("age_active_anon", DMA, p), ("age_active_anon", NORMAL, p),
                          ("zone_balanced", DMA, 0, GAP[DMA], 2), ("zone_balanced", NORMAL, 0, GAP[NORMAL], 2),
                          ("shrink_lruvec",) + shrunk(NORMAL, p), ("pgdat_balanced", 0, 0, 2)]
    assert k.calls == [c for p in range(12, 0, -1) for c in per_pass(p)]
    gaps = [c[3] for c in k.calls if c[0] == "zone_balanced" and c[3]]
    assert all(type(g) is int for g in gaps)           # pages: the ceiling is an integer division


def test_balance_pgdat_shrinks_a_zone_below_its_gap_even_when_balanced_at_high(mc, monkeypatch):
    """§6.6: only Normal is unbalanced at the high watermark, but DMA is not above high + gap (41): DMA is
    shrunk first (target 96), then Normal (288); pgdat_balanced then ends the run after the first pass."""
    m, cpu = mc
    k = Kswapd(monkeypatch, cpu, balanced=lambda z, o, g, c: z == DMA and g == 0, pgdat_ok=lambda o, c: True)
    assert vmscan.balance_pgdat(cpu, 0, 0, 2) == (0, 2)
    assert k.of("shrink_lruvec") == [shrunk(DMA, 12), shrunk(NORMAL, 12)]


def test_balance_pgdat_end_zone_is_the_highest_unbalanced_zone(mc, monkeypatch):
    """§6.6: only DMA unbalanced: end_zone 0; Normal (above end_zone) is not looked at for shrinking, and
    DMA's gap check uses classzone end_zone 0; the return carries end_zone 0."""
    m, cpu = mc
    k = Kswapd(monkeypatch, cpu, balanced=lambda z, o, g, c: z == NORMAL, pgdat_ok=lambda o, c: True)
    assert vmscan.balance_pgdat(cpu, 0, 0, 2) == (0, 0)
    assert [c for c in k.calls if c[0] in ("zone_balanced", "shrink_lruvec")] == [
        ("zone_balanced", DMA, 0, 0, 0), ("zone_balanced", NORMAL, 0, 0, 0),
        ("zone_balanced", DMA, 0, GAP[DMA], 0), ("shrink_lruvec",) + shrunk(DMA, 12)]


def test_balance_pgdat_an_unreclaimable_zone_counts_only_in_the_first_pass(mc, monkeypatch):
    """§6.6: zones that are !zone_reclaimable are skipped after the first priority pass: an unreclaimable,
    unbalanced Normal is end_zone and shrunk at priority 12; from 11 on only DMA (unbalanced, reclaimable)
    counts, end_zone 0, and Normal is neither checked nor shrunk."""
    m, cpu = mc
    k = Kswapd(monkeypatch, cpu, balanced=lambda z, o, g, c: False, reclaimable={NORMAL: False},
               pgdat_ok=lambda o, c: False)
    assert vmscan.balance_pgdat(cpu, 0, 0, 2) == (0, 0)
    assert k.of("shrink_lruvec")[:3] == [shrunk(DMA, 12), shrunk(NORMAL, 12), shrunk(DMA, 11)]
    assert [s[0] for s in k.of("shrink_lruvec")] == [DMA, NORMAL] + [DMA] * 11
    assert [c for c in k.of("zone_balanced") if c[2]] == [(DMA, 0, 41, 2), (NORMAL, 0, 123, 2)] + [
        (DMA, 0, 41, 0)] * 11


@pytest.mark.parametrize("first,second,falls_back", [(2, 2, True), (2, 1, False), (4, 0, True)])
def test_balance_pgdat_falls_back_to_order_0_at_twice_the_order(mc, monkeypatch, first, second, falls_back):
    """§6.6: an order-1 wake-up falls back to order 0 once 2 << 1 = 4 pages are reclaimed, counting every
    zone of the pass (DMA's and Normal's together): 2 + 2 and 4 + 0 do, 2 + 1 does not. From then on
    pgdat_balanced and the next pass's checks use order 0, and so does the result."""
    m, cpu = mc
    pages = {DMA: first, NORMAL: second}
    k = Kswapd(monkeypatch, cpu, balanced=lambda z, o, g, c: False, reclaim=lambda z, p: pages.pop(z, 0),
               pgdat_ok=lambda o, c: len(k.of("pgdat_balanced")) == 2)
    order = 0 if falls_back else 1
    assert vmscan.balance_pgdat(cpu, 0, 1, 2) == (order, 2)
    assert k.of("pgdat_balanced") == [(0, order, 2), (0, order, 2)]
    assert k.of("zone_balanced")[4] == (DMA, order, 0, 0)


def test_balance_pgdat_wakes_throttled_reclaimers_once_the_reserve_is_back(mc, monkeypatch):
    """§6.6 throttling: after a pass, tasks waiting on pfmemalloc_wait are woken if the node's
    pfmemalloc watermark is met; with no waiters the watermark is not even asked."""
    m, cpu = mc
    for waiters, ok, woken in ((True, True, [(True, 0)]), (True, False, []), (False, True, [])):
        k = Kswapd(monkeypatch, cpu, balanced=lambda z, o, g, c: z == DMA, pgdat_ok=lambda o, c: True,
                   waiters=waiters, watermark_ok=ok)
        vmscan.balance_pgdat(cpu, 0, 0, 2)
        assert k.of("wake_up_pfmemalloc") == woken
        assert k.of("pfmemalloc_watermark_ok") == ([(True, 0)] if waiters else [])


def test_balance_pgdat_the_gap_is_the_low_watermark_when_that_is_smaller(mc, monkeypatch):
    """§6.6: balance_gap = min(low, ceil(managed / 100)): with the low watermarks lowered to 30 (DMA) and 100
    (Normal), below 41 and 123, the gaps are 30 and 100."""
    m, cpu = mc
    m.zone[DMA, Z_WMARK + WMARK_LOW] = 30
    m.zone[NORMAL, Z_WMARK + WMARK_LOW] = 100
    k = Kswapd(monkeypatch, cpu, balanced=lambda z, o, g, c: False, pgdat_ok=lambda o, c: True)
    vmscan.balance_pgdat(cpu, 0, 0, 2)
    assert [c for c in k.of("zone_balanced") if c[2]] == [(DMA, 0, 30, 2), (NORMAL, 0, 100, 2)]


# =============================================================================================================
# shrink_lruvec's loop
# =============================================================================================================

class Lruvec:
    """Scripted callees of shrink_lruvec: get_scan_count returns `nr`; shrink_list returns the next of
    `reclaimed` (0 when they run out); inactive_anon_is_low answers `low`."""

    def __init__(self, monkeypatch, cpu, nr, reclaimed=(), low=False):
        self.calls, self.cpu = [], cpu
        rec = self.calls.append
        reclaimed = list(reclaimed)

        def get_scan_count(cpu, z, priority, kswapd):
            rec(("get_scan_count", z, priority, kswapd))
            return list(nr)

        def shrink_list(cpu, z, lru, nr_to_scan, priority, kswapd):
            rec(("shrink_list", z, lru, nr_to_scan, priority, kswapd))
            return reclaimed.pop(0) if reclaimed else 0

        def inactive_anon_is_low(m, z):
            rec(("inactive_anon_is_low", z))
            return low

        def shrink_active_list(cpu, z, nr_to_scan, lru, priority, *rest):
            rec(("shrink_active_list", cpu is self.cpu, z, nr_to_scan, lru, priority) + rest)
        monkeypatch.setattr(vmscan, "get_scan_count", get_scan_count)
        monkeypatch.setattr(vmscan, "shrink_list", shrink_list)
        monkeypatch.setattr(vmscan, "inactive_anon_is_low", inactive_anon_is_low)
        monkeypatch.setattr(vmscan, "shrink_active_list", shrink_active_list)

    def scans(self):
        return [(c[2], c[3]) for c in self.calls if c[0] == "shrink_list"]


# lists: 0 inactive anon, 1 active anon, 2 inactive file, 3 active file
def test_shrink_lruvec_scans_in_cluster_steps_and_stops_once_the_target_is_reclaimed(mc, monkeypatch):
    """Direct reclaim below DEF_PRIORITY (11), targets [70, 10, 40, 5] and nr_to_reclaim 32: one round scans
    each list min(its rest, SWAP_CLUSTER_MAX = 32): 32, 10, 32, 5; 20 + 0 + 12 + 0 = 32 reclaimed is not below
    32, so the loop stops (§6.8: stop early once the target is reclaimed); the inactive anon list is low, so
    32 active anon pages are aged; the result is 32."""
    m, cpu = mc
    v = Lruvec(monkeypatch, cpu, [70, 10, 40, 5], reclaimed=[20, 0, 12, 0], low=True)
    assert vmscan.shrink_lruvec(cpu, NORMAL, 11, 32) == 32
    assert v.calls == [("get_scan_count", NORMAL, 11, False)] + [
        ("shrink_list", NORMAL, lru, n, 11, False) for lru, n in ((0, 32), (1, 10), (2, 32), (3, 5))] + [
        ("inactive_anon_is_low", NORMAL), ("shrink_active_list", True, NORMAL, 32, LRU_ACTIVE_ANON, 11)]


def test_shrink_lruvec_one_page_short_goes_round_again(mc, monkeypatch):
    """The same with 31 reclaimed in the first round: below 32, a second round scans the rests (38 -> 32 of
    inactive anon, 8 of inactive file) and the loop stops at 31 + 5 = 36; the inactive anon list is not low:
    no aging."""
    m, cpu = mc
    v = Lruvec(monkeypatch, cpu, [70, 10, 40, 5], reclaimed=[20, 0, 11, 0, 5, 0])
    assert vmscan.shrink_lruvec(cpu, NORMAL, 11, 32) == 36
    assert v.scans() == [(0, 32), (1, 10), (2, 32), (3, 5), (0, 32), (2, 8)]
    assert v.calls[-1] == ("inactive_anon_is_low", NORMAL)


@pytest.mark.parametrize("kernel,full", [("3.14", False), ("3.16", True)])
def test_shrink_lruvec_direct_reclaim_at_def_priority_scans_its_whole_target_from_3_16(mk, monkeypatch, kernel,
                                                                                       full):
    """At DEF_PRIORITY (12) 3.14.1's direct reclaim stops at nr_to_reclaim as at any priority (40 reclaimed in
    the first round); from 3.16 (full_scan_at_def_priority, 1a501907bbea) it scans every target to the end
    (70 = 32 + 32 + 6, 40 = 32 + 8); below DEF_PRIORITY (11) 3.16 stops too."""
    m, cpu = mk(kernel)
    v = Lruvec(monkeypatch, cpu, [70, 10, 40, 5], reclaimed=[40])
    assert vmscan.shrink_lruvec(cpu, NORMAL, 12, 32) == 40
    first = [(0, 32), (1, 10), (2, 32), (3, 5)]
    assert v.scans() == first + ([(0, 32), (2, 8), (0, 6)] if full else [])
    v = Lruvec(monkeypatch, cpu, [70, 10, 40, 5], reclaimed=[40])
    assert vmscan.shrink_lruvec(cpu, NORMAL, 11, 32) == 40
    assert v.scans() == first


def test_shrink_lruvec_kswapd_stops_at_its_target_even_at_def_priority(mk, monkeypatch):
    """kswapd's shrink (kswapd=True) stops at its target at DEF_PRIORITY, with 3.16's full scan too:
    get_scan_count and shrink_list are asked as kswapd; 40 reclaimed of a target of 32 ends the loop after one
    round."""
    m, cpu = mk("3.16")
    v = Lruvec(monkeypatch, cpu, [70, 10, 40, 5], reclaimed=[40])
    assert vmscan.shrink_lruvec(cpu, NORMAL, 12, 32, kswapd=True) == 40
    assert v.calls[0] == ("get_scan_count", NORMAL, 12, True)
    assert [c[5] for c in v.calls if c[0] == "shrink_list"] == [True] * 4
    assert v.scans() == [(0, 32), (1, 10), (2, 32), (3, 5)]


def test_shrink_lruvec_runs_while_any_list_but_active_anon_has_a_target(mc, monkeypatch):
    """The loop runs while inactive anon, inactive file or active file has pages left to scan (active anon
    alone does not keep it going): [0, 0, 0, 40] scans 32 then 8 active file pages, reclaiming nothing;
    [0, 50, 0, 0] scans nothing."""
    m, cpu = mc
    v = Lruvec(monkeypatch, cpu, [0, 0, 0, 40])
    assert vmscan.shrink_lruvec(cpu, NORMAL, 11, 32) == 0
    assert v.scans() == [(3, 32), (3, 8)]
    v = Lruvec(monkeypatch, cpu, [0, 50, 0, 0])
    assert vmscan.shrink_lruvec(cpu, NORMAL, 11, 32) == 0
    assert v.scans() == []


# =============================================================================================================
# shrink_zones and do_try_to_free_pages around it
# =============================================================================================================

def test_shrink_zones_skips_an_unreclaimable_zone_below_def_priority_and_goes_on(mc, monkeypatch):
    """§6.8's zone walk: at DEF_PRIORITY every usable zone is shrunk; below it an unreclaimable zone (Normal,
    first in the zonelist) is skipped and the zones after it (DMA) are still shrunk. Only which zones are
    shrunk is pinned here, not the target each is asked for."""
    m, cpu = mc
    shrunk_zones = []
    monkeypatch.setattr(vmscan, "zone_reclaimable", lambda m_, z: z != NORMAL)
    monkeypatch.setattr(vmscan, "shrink_lruvec", lambda c, z, p, n, *a, **k: shrunk_zones.append((z, p)) or 1)
    assert vmscan.shrink_zones(cpu, m.zonelists[0], 2, 12, 32) == 2
    assert vmscan.shrink_zones(cpu, m.zonelists[0], 2, 11, 32) == 1
    assert shrunk_zones == [(NORMAL, 12), (DMA, 12), (DMA, 11)]


@pytest.mark.parametrize("disabled,progress", [(0, 1), (1, 0)])
def test_do_try_to_free_pages_without_reclaim_is_0_while_the_oom_killer_is_disabled(mc, monkeypatch, disabled,
                                                                                    progress):
    """§6.8's return value when nothing was reclaimed: 0 if oom_killer_disabled, else 1 while a usable zone is
    still zone_reclaimable (3.14)."""
    from oomemu.include.gfp import GFP_KERNEL
    from oomemu.machine import G_OOM_KILLER_DISABLED
    m, cpu = mc
    monkeypatch.setattr(vmscan, "shrink_zones", lambda *a: 0)
    monkeypatch.setattr(vmscan, "zone_reclaimable", lambda m_, z: True)
    m.glob[G_OOM_KILLER_DISABLED] = disabled
    assert vmscan.do_try_to_free_pages(cpu, m.zonelists[0], GFP_KERNEL, 32) == progress


# =============================================================================================================
# kswapd wake-ups, the pfmemalloc reserve and direct reclaim's events, on two nodes
# =============================================================================================================

NODE1 = """
[[machine.node]]
zones = { Normal = "32MiB" }
"""


def traced(m, cpu):
    from oomemu.trace.events import CATALOGUE
    from oomemu.trace.ring import RingWriter, drain_ring
    cpu.trace = RingWriter(m, cpu.id)
    names = [c[0] for c in CATALOGUE]
    return lambda: [(names[int(r["event"])], [int(x) for x in r["a"]]) for r in drain_ring(m, cpu.id)]


def test_wakeup_kswapd_wakes_its_zones_node_and_traces_it(monkeypatch):
    """§6.6 wakeup_kswapd on node 1's Normal (zone 6, emptied): node 1's kswapd (row nr_cpus + 1) records the
    order and is woken after zone_balanced(zone, order, gap 0, classzone 0) fails; node 0's is untouched;
    mm_vmscan_wakeup_kswapd(nid 1, zone index 2, order 3)."""
    from oomemu.include.mmzone import NR_FREE_PAGES
    from oomemu.machine import C_KSWAPD_MAX_ORDER, C_KSWAPD_SLEEPING, Z_STAT
    m, cpu = make_machine(NODE1)
    try:
        k0, k1 = m.nr_cpus, m.nr_cpus + 1
        m.cpu[[k0, k1], C_KSWAPD_SLEEPING] = 1
        m.cpu[[k0, k1], C_KSWAPD_MAX_ORDER] = 0
        m.zone[6, Z_STAT + NR_FREE_PAGES] = 0
        real, asked = vmscan.zone_balanced, []
        monkeypatch.setattr(vmscan, "zone_balanced", lambda *a: asked.append(a[1:]) or real(*a))
        records = traced(m, cpu)
        vmscan.wakeup_kswapd(cpu, 6, 3, 2)
        assert asked == [(6, 3, 0, 0)]
        assert [int(m.cpu[k, C_KSWAPD_SLEEPING]) for k in (k0, k1)] == [1, 0]
        assert [int(m.cpu[k, C_KSWAPD_MAX_ORDER]) for k in (k0, k1)] == [0, 3]
        assert [a[:3] for n, a in records() if n == "mm_vmscan_wakeup_kswapd"] == [[1, 2, 3]]
    finally:
        m.close()


def test_wakeup_kswapd_skips_a_zone_outside_the_tasks_cpuset():
    """§6.6 step 1: a zone that cpuset_zone_allowed_hardwall refuses (node 1, for a task whose cpuset is node
    0) wakes nobody; node 0's Normal, below its high watermark, wakes node 0's kswapd."""
    from machine_helpers import add_process
    from oomemu.include.mmzone import NR_FREE_PAGES
    from oomemu.kernel import cpuset
    from oomemu.machine import C_KSWAPD_SLEEPING, Z_STAT
    m, cpu = make_machine(NODE1, """
[[task]]
comm = "idle"
mems = [0]
program = [{ op = "sleep", ms = 1 }]
""")
    try:
        assert m.numa_constraints
        cur = add_process(m, cpu, "caged")
        m.task_mems[cur] = cpuset.node_mask_of([0])
        cpu.current = cur
        k0, k1 = m.nr_cpus, m.nr_cpus + 1
        m.cpu[[k0, k1], C_KSWAPD_SLEEPING] = 1
        m.zone[[2, 6], Z_STAT + NR_FREE_PAGES] = 0
        vmscan.wakeup_kswapd(cpu, 6, 0, 2)
        assert [int(m.cpu[k, C_KSWAPD_SLEEPING]) for k in (k0, k1)] == [1, 1]
        vmscan.wakeup_kswapd(cpu, 2, 0, 2)
        assert [int(m.cpu[k, C_KSWAPD_SLEEPING]) for k in (k0, k1)] == [0, 1]
    finally:
        m.close()


def test_pfmemalloc_watermark_ok_of_node_1_counts_node_1s_zones():
    """§6.6 throttling on node 1: its only zone up to Normal is zone 6, min 104, half 52: 52 free pages are not
    enough (node 0's plenty do not count), 53 are. Not enough wakes node 1's sleeping kswapd (its doorbell
    rung), not CPU 1."""
    import os
    from oomemu.include.mmzone import NR_FREE_PAGES, WMARK_MIN
    from oomemu.machine import C_KSWAPD_SLEEPING, Z_STAT
    m, cpu = make_machine(NODE1)
    try:
        assert int(m.zone[6, Z_WMARK + WMARK_MIN]) == 104
        k1 = m.nr_cpus + 1
        m.cpu[k1, C_KSWAPD_SLEEPING] = 1
        cpu1_row = m.cpu[1].copy()
        for row in (1, k1):                       # no doorbell pending before
            try:
                os.eventfd_read(m.doorbells[row])
            except BlockingIOError:
                pass
        m.zone[6, Z_STAT + NR_FREE_PAGES] = 52
        assert not vmscan.pfmemalloc_watermark_ok(cpu, 1)
        assert int(m.cpu[k1, C_KSWAPD_SLEEPING]) == 0 and (m.cpu[1] == cpu1_row).all()
        assert os.eventfd_read(m.doorbells[k1]) == 1
        with pytest.raises(BlockingIOError):
            os.eventfd_read(m.doorbells[1])
        m.zone[6, Z_STAT + NR_FREE_PAGES] = 53
        assert vmscan.pfmemalloc_watermark_ok(cpu, 1)
    finally:
        m.close()


def test_try_to_free_pages_throttles_then_traces_begin_and_end(mc, monkeypatch):
    """try_to_free_pages (§6.6, §6.8): throttle_direct_reclaim(gfp, zonelist, nodemask) first; then
    mm_vmscan_direct_reclaim_begin(order, may_writepage 1, gfp) and mm_vmscan_direct_reclaim_end(pages
    reclaimed, progress): 2 pages reclaimed are (2, 2), nothing is (0, 0)."""
    from oomemu.include.gfp import GFP_KERNEL
    m, cpu = mc
    cpu.current = -1
    throttled, results = [], [2, 0]

    async def throttle(*args):
        throttled.append(args[1:])
        return False
    monkeypatch.setattr(vmscan, "throttle_direct_reclaim", throttle)
    monkeypatch.setattr(vmscan, "do_try_to_free_pages", lambda *a: results.pop(0))
    records = traced(m, cpu)
    nm = frozenset({0})
    for _ in range(2):
        coro = vmscan.try_to_free_pages(cpu, m.zonelists[0], 3, GFP_KERNEL, nm)
        try:
            coro.send(None)
        except StopIteration:
            pass
    assert throttled == [(GFP_KERNEL, m.zonelists[0], nm)] * 2
    got = [(n, a[:3] if n.endswith("begin") else a[:2]) for n, a in records() if n.startswith("mm_vmscan_direct")]
    assert got == [("mm_vmscan_direct_reclaim_begin", [3, 1, GFP_KERNEL]), ("mm_vmscan_direct_reclaim_end", [2, 2]),
                   ("mm_vmscan_direct_reclaim_begin", [3, 1, GFP_KERNEL]), ("mm_vmscan_direct_reclaim_end", [0, 0])]
