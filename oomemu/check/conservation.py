"""Page conservation over the final (quiescent) machine.

Every managed page is in exactly one place: on a buddy free list, on one CPU's per-CPU list, or owned (an
mm's anon page, a page-cache page, a kernel page); an owned reclaimable page is on one LRU list, on a
reclaimer's isolated list, or on a CPU's lru_add pagevec. The counters the allocator keeps must agree with the page
frame table, and walking the lists must meet every free page exactly once.
"""
import numpy as np

from oomemu.include.mmzone import (MAX_ORDER, NR_FREE_PAGES, NR_ISOLATED_ANON, NR_ISOLATED_FILE,
                                   NR_LRU_BASE)
from oomemu.machine import (G_TOTAL_SWAP, LRU_ACTIVE, LRU_FILE, MM_ANONPAGES, MM_FILEPAGES, NR_LRU_LISTS,
                            PAGE_ANON, PAGE_BUDDY, PAGE_FILE, PAGE_KERNEL, PAGE_PCP, PG_active, PG_buddy,
                            PG_isolated, PG_lru, PG_pvec, Z_FREE_HEAD, Z_LRU_HEAD, Z_MANAGED, Z_NR_FREE,
                            Z_START_PFN, Z_STAT)


def _walk(m, head, limit):
    """PFNs of a list linked through page_next, stopping (and reporting) a cycle."""
    nxt = memoryview(np.ascontiguousarray(m.page_next))   # Python ints, fast to index one by one
    out, seen, cur = [], set(), int(head)
    while cur != -1:
        if cur in seen or len(out) > limit:
            return out, True
        seen.add(cur)
        out.append(cur)
        cur = nxt[cur]
    return out, False


def check_page_conservation(m):
    """Return a list of violations (empty when conservation holds), one sentence each."""
    problems = []
    for z in range(m.nr_zones):
        managed = int(m.zone[z, Z_MANAGED])
        if not managed:
            continue
        start = int(m.zone[z, Z_START_PFN])
        kinds = m.page_kind[start:start + managed]
        counts = np.bincount(kinds, minlength=8)
        buddy, pcp = int(counts[PAGE_BUDDY]), int(counts[PAGE_PCP])
        owned = int(counts[PAGE_ANON] + counts[PAGE_FILE] + counts[PAGE_KERNEL])
        nr_free = int(m.zone[z, Z_STAT + NR_FREE_PAGES])
        pcp_count = int(m.pcp[:, z, 0].sum())
        name = f"zone {z}"
        if nr_free + pcp_count + owned != managed:
            problems.append(f"{name}: free {nr_free} + per-cpu {pcp_count} + owned {owned} != managed {managed}")
        if buddy != nr_free:
            problems.append(f"{name}: {buddy} pages marked free in the frame table, NR_FREE_PAGES says {nr_free}")
        if pcp != pcp_count:
            problems.append(f"{name}: {pcp} pages marked per-cpu, the per-cpu lists count {pcp_count}")
        problems += _check_free_lists(m, z, nr_free)
        problems += _check_pcp_lists(m, z)
        problems += _check_lru(m, z, start, managed)
    problems += _check_mm_counters(m)
    return problems


def _check_free_lists(m, z, nr_free):
    """Walk the zone's free lists; every listed block must be a free block of its order, and together they
    must cover each free page exactly once (checked with one count per page of the zone)."""
    problems = []
    start, managed = int(m.zone[z, Z_START_PFN]), int(m.zone[z, Z_MANAGED])
    covered = np.zeros(managed, dtype=np.int32)
    for order in range(MAX_ORDER):
        listed, cyclic = _walk(m, m.zone[z, Z_FREE_HEAD + order], m.nr_pages)
        if cyclic:
            problems.append(f"zone {z}: free_area[{order}] list is cyclic (a block freed twice?)")
        if len(listed) != int(m.zone[z, Z_NR_FREE + order]):
            problems.append(f"zone {z}: free_area[{order}] holds {len(listed)} blocks, nr_free says "
                            f"{int(m.zone[z, Z_NR_FREE + order])}")
        heads = np.array(listed, dtype=np.int64)
        bad = ((m.page_flags[heads] & PG_buddy) == 0) | (m.page_order[heads] != order) | (m.page_zone[heads] != z)
        bad |= (heads < start) | (heads + (1 << order) > start + managed)
        if bad.any():
            pfn = int(heads[bad.argmax()])
            problems.append(f"zone {z}: pfn {pfn} on free_area[{order}] is not a free block of that order")
            heads = heads[~bad]
        pages = (heads[:, None] + np.arange(1 << order)).ravel() - start
        covered += np.bincount(pages, minlength=managed)
    twice = (covered > 1).nonzero()[0]
    if len(twice):
        problems.append(f"zone {z}: pfn {start + int(twice[0])} is on the free lists twice")
    owned = ((covered > 0) & (m.page_kind[start:start + managed] != PAGE_BUDDY)).nonzero()[0]
    if len(owned):
        problems.append(f"zone {z}: free block holding pfn {start + int(owned[0])} contains pages the frame "
                        f"table says are owned")
    listed_pages = int(covered.sum())
    if listed_pages != nr_free:
        problems.append(f"zone {z}: free lists hold {listed_pages} pages, NR_FREE_PAGES says {nr_free}")
    return problems


def _check_pcp_lists(m, z):
    problems = []
    for c in range(m.nr_cpus):
        pfns, cyclic = _walk(m, m.pcp[c, z, 3], m.nr_pages)
        if cyclic or len(pfns) != int(m.pcp[c, z, 0]):
            problems.append(f"zone {z}: cpu {c}'s per-cpu list holds {len(pfns)} pages, count says "
                            f"{int(m.pcp[c, z, 0])}")
        elif pfns and ((m.page_kind[pfns] != PAGE_PCP).any() or (m.page_owner[pfns] != c).any()):
            problems.append(f"zone {z}: cpu {c}'s per-cpu list holds a page not marked as its own")
    return problems


def _check_lru(m, z, start, managed):
    """Every page of the zone's four LRU lists is linked once and of its list's kind and activity, the counters
    agree with the lists, and every page-cache page (and every anonymous page when the machine has swap) is
    somewhere reclaim can find it: on an LRU list, isolated by a reclaimer, or on a CPU's pagevec."""
    problems = []
    flags = m.page_flags[start:start + managed]
    kinds = m.page_kind[start:start + managed]
    for lru in range(NR_LRU_LISTS):
        pfns, cyclic = _walk(m, m.zone[z, Z_LRU_HEAD + lru], m.nr_pages)
        count = int(m.zone[z, Z_STAT + NR_LRU_BASE + lru])
        kind = PAGE_FILE if lru & LRU_FILE else PAGE_ANON
        if cyclic or len(pfns) != count:
            problems.append(f"zone {z}: LRU {lru} holds {len(pfns)} pages, its counter says {count}")
        elif pfns and (m.page_kind[pfns] != kind).any():
            problems.append(f"zone {z}: LRU {lru} holds a page of the wrong kind")
        elif pfns and (((m.page_flags[pfns] & PG_active) != 0) != bool(lru & LRU_ACTIVE)).any():
            problems.append(f"zone {z}: LRU {lru} holds a page whose PG_active says otherwise")
        elif pfns and (m.page_zone[pfns] != z).any():
            problems.append(f"zone {z}: LRU {lru} holds a page of another zone")
    flagged = int((flags & PG_lru != 0).sum())
    total = sum(int(m.zone[z, Z_STAT + NR_LRU_BASE + lru]) for lru in range(NR_LRU_LISTS))
    if flagged != total:
        problems.append(f"zone {z}: {flagged} pages flagged PG_lru, LRU counters say {total}")
    isolated = int((flags & PG_isolated != 0).sum())
    counted = int(m.zone[z, Z_STAT + NR_ISOLATED_ANON] + m.zone[z, Z_STAT + NR_ISOLATED_FILE])
    if isolated != counted:
        problems.append(f"zone {z}: {isolated} pages flagged isolated, NR_ISOLATED says {counted}")
    both = int(((flags & PG_lru != 0) & (flags & (PG_isolated | PG_pvec) != 0)).sum())
    if both:
        problems.append(f"zone {z}: {both} pages both on an LRU list and isolated or on a pagevec")
    pvec = getattr(m, "pvec", None)
    in_pvecs = [] if pvec is None else [int(p) for c in range(m.nr_cpus) for p in pvec[c, 1:1 + int(pvec[c, 0])]]
    mine = [p for p in in_pvecs if m.page_zone[p] == z]
    if int((flags & PG_pvec != 0).sum()) != len(mine) or len(set(mine)) != len(mine):
        problems.append(f"zone {z}: {int((flags & PG_pvec != 0).sum())} pages flagged as on a pagevec, the "
                        f"pagevecs hold {len(mine)}")
    elif mine and (m.page_flags[mine] & PG_pvec == 0).any():
        problems.append(f"zone {z}: a pagevec holds a page not flagged as on one")
    findable = flags & (PG_lru | PG_isolated | PG_pvec) != 0
    lost_file = int(((kinds == PAGE_FILE) & ~findable).sum())
    if lost_file:
        problems.append(f"zone {z}: {lost_file} page-cache pages on no LRU list, pagevec or isolated list")
    if m.glob[G_TOTAL_SWAP]:
        lost_anon = int(((kinds == PAGE_ANON) & ~findable).sum())
        if lost_anon:
            problems.append(f"zone {z}: {lost_anon} anonymous pages on no LRU list, pagevec or isolated list")
    stray = int(((kinds != PAGE_ANON) & (kinds != PAGE_FILE) & (flags & (PG_lru | PG_isolated) != 0)).sum())
    if stray:
        problems.append(f"zone {z}: {stray} pages that are not anonymous or page cache carry LRU flags")
    return problems


def _check_mm_counters(m):
    problems = []
    owners = m.page_owner
    for kind, col, label in ((PAGE_ANON, MM_ANONPAGES, "MM_ANONPAGES"), (PAGE_FILE, MM_FILEPAGES, "MM_FILEPAGES")):
        mask = (m.page_kind == kind) & (owners >= 0)
        counted = np.bincount(owners[mask], minlength=m.max_tasks)[:m.max_tasks]
        bad = (counted != m.mm[:, col]).nonzero()[0]
        for mm in bad[:3].tolist():
            problems.append(f"mm {mm}: {label} = {int(m.mm[mm, col])} but the frame table gives it {int(counted[mm])}")
    return problems


class NoDoubleFree:
    """no-double-free over a stream of time-ordered chunks: one owned/free byte per page frame (memory bounded by
    the machine, not the run). A chunk is checked with numpy (per page, the running ownership must stay 0 or 1);
    a chunk where it does not is replayed record by record to word each violation."""

    LIMIT = 50

    def __init__(self, nr_pages, alloc_id, free_id):
        self.owned = np.zeros(nr_pages, dtype=np.int8)
        self.alloc_id, self.free_id = alloc_id, free_id
        self.problems = []

    def feed(self, recs):
        ev = recs["event"]
        recs = recs[(ev == self.alloc_id) | (ev == self.free_id)]
        if not len(recs) or len(self.problems) > self.LIMIT:
            return
        pfn = recs["a"][:, 0]
        order = recs["a"][:, 1]
        alloc = recs["event"] == self.alloc_id
        if (order == 0).all():
            pages, rec_of = pfn, None
        else:
            if (order < 0).any() or (order > 20).any():
                return self._replay(recs)
            n = np.left_shift(1, order)
            rec_of = np.repeat(np.arange(len(recs)), n)
            first = np.cumsum(n) - n
            pages = pfn[rec_of] + (np.arange(int(n.sum())) - first[rec_of])
        if len(pages) and (pages.min() < 0 or pages.max() >= len(self.owned)):
            return self._replay(recs)
        delta = np.where(alloc if rec_of is None else alloc[rec_of], 1, -1).astype(np.int64)
        o = np.argsort(pages, kind="stable")
        sp, sd = pages[o], delta[o]
        start = np.empty(len(sp), dtype=bool)
        start[0] = True
        np.not_equal(sp[1:], sp[:-1], out=start[1:])
        cs = np.cumsum(sd)
        heads = np.flatnonzero(start)
        gid = np.cumsum(start) - 1
        state = self.owned[sp].astype(np.int64) + cs - (cs - sd)[heads][gid]
        if ((state < 0) | (state > 1)).any():
            return self._replay(recs)
        ends = np.empty(len(heads), dtype=np.int64)
        ends[:-1] = heads[1:] - 1
        ends[-1] = len(sp) - 1
        self.owned[sp[ends]] = state[ends]

    def _replay(self, recs):
        """Record by record, wording each violation (a page freed while free, or allocated while owned)."""
        owned, problems = self.owned, self.problems
        for ev, pfn, order, ts, cpu in zip(recs["event"].tolist(), recs["a"][:, 0].tolist(),
                                           recs["a"][:, 1].tolist(), recs["ts"].tolist(), recs["cpu"].tolist()):
            lo, hi = pfn, pfn + (1 << max(0, min(order, 20)))
            if lo < 0 or hi > len(owned):
                problems.append(f"{ts / 1e9:.6f}s cpu {cpu}: pfn {pfn} (order {order}) is outside the machine")
            elif ev == self.alloc_id:
                if owned[lo:hi].any():
                    problems.append(f"{ts / 1e9:.6f}s cpu {cpu}: pfn {pfn} (order {order}) allocated while owned")
                owned[lo:hi] = 1
            else:
                if not owned[lo:hi].all():
                    problems.append(f"{ts / 1e9:.6f}s cpu {cpu}: pfn {pfn} (order {order}) freed while free")
                owned[lo:hi] = 0
            if len(problems) > self.LIMIT:
                break

    def finish(self):
        return self.problems


def check_no_double_free(trace, nr_pages=None):
    """From the trace: no page is freed while free, and none is allocated while allocated (owned twice)."""
    alloc_id, free_id = trace.event_id["mm_page_alloc"], trace.event_id["mm_page_free"]
    recs = trace.records[(trace.records["event"] == alloc_id) | (trace.records["event"] == free_id)]
    if nr_pages is None:
        top = recs["a"][:, 0] + np.left_shift(1, np.clip(recs["a"][:, 1], 0, 20)) if len(recs) else np.zeros(1)
        nr_pages = int(top.max()) + 1
    check = NoDoubleFree(nr_pages, alloc_id, free_id)
    check.feed(recs)
    return check.finish()
