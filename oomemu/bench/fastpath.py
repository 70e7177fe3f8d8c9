"""Fast path: the emulator's order-0 alloc+free loop on one CPU process next to a pure-Python reference
allocator doing the same bookkeeping (no sharing, no locks), tracing on and off, and one trace emitter call alone."""
import statistics
import time

from oomemu import sync
from oomemu.bench.core import figure, in_child
from oomemu.include.gfp import GFP_HIGHUSER_MOVABLE
from oomemu.include.mmzone import MAX_ORDER, NR_ALLOC_BATCH, NR_FREE_PAGES, WMARK_HIGH, WMARK_LOW, WMARK_MIN
from oomemu.machine import (MM_ANONPAGES, MM_NCOLS, MM_NR_PTES, MM_TOTAL_VM, Z_IDX, Z_LOWMEM_RESERVE, Z_MANAGED, Z_NR_FREE, Z_START_PFN, Z_STAT, Z_WMARK)
from oomemu.mm import memory, page_alloc
from oomemu.trace.events import EVENT_ID
from oomemu.trace.ring import H_DRAINED, H_LOST, H_WRITTEN

GROUP = "fastpath"
FIGURES = {
    "fastpath_allocs_per_s": ("order-0 alloc+free/s, 1 CPU process, full fast path, tracing on", "/s", ">=", 1e6),
    "reference_allocs_per_s": ("same loop, pure-Python reference (no sharing, no locks)", "/s", None, None),
    "fastpath_vs_reference": ("ratio emulator / reference (same run, per round)", "x", ">=", 0.5),
    "fastpath_notrace_allocs_per_s": ("emulator fast path, tracing off", "/s", None, None),
    "trace_cost_us_per_event": ("tracing cost per event (on - off) / events", "us", "<=", 0.5),
    "trace_events_per_alloc": ("trace events per alloc+free", "", None, None),
    "trace_emit_us_per_event": ("  one emitter call alone, tracing on - off (direct loop)", "us", None, None),
}


# --- the pure-Python reference allocator ------------------------------------------------------------------------

class ReferenceAllocator:
    """A single-process, pure-Python order-0 allocator with the emulator's bookkeeping and none of its sharing.

    Per zone: a buddy allocator whose free_area[order] lists are dicts (insertion order = list order, so
    `popitem()` takes the head and a re-added block goes to the head, exactly as the emulator's linked lists),
    split by `expand` and merged by buddy PFN on free; one per-CPU list (a Python list, LIFO) refilled by
    `batch` from the buddy allocator when empty and spilled by `batch` when it reaches `high`; NR_FREE_PAGES;
    the low-watermark check with lowmem reserves; the mm's rss counters (anon, total_vm, nr_ptes); the vm event
    counters; and one trace record per event (a tuple into a preallocated ring list). Built from a booted
    machine's *parameters* (zone sizes, watermarks, reserves, pcp batch/high), never from its state.
    """

    EV_ALLOC = 0            # oomemu.trace.events ids: mm_page_alloc, mm_page_free, mm_page_alloc_zone_locked
    EV_FREE = 1
    EV_ZONE_LOCKED = 2
    EV_ZONE_FREE = EVENT_ID["zone_free_pages"]   # NR_FREE_PAGES after each change
    EV_SLOWPATH_ENTER = EVENT_ID["slowpath_enter"]
    EV_SLOWPATH_EXIT = EVENT_ID["slowpath_exit"]

    def __init__(self, zones, zonelist, *, trace=True, ring_records=1 << 16, pid=1):
        """zones: {z: dict(start, pages, idx, wmark_min, wmark_low, alloc_batch (high - low), reserve (list by
        classzone), batch, high)}. One node: every zone is local."""
        self.zonelist = tuple(zonelist)
        self._classzone = {}                # high_zoneidx -> zone_idx of the preferred zone
        self.idx = {z: zones[z]["idx"] for z in zones}
        self.wmark_low = {z: zones[z]["wmark_low"] for z in zones}
        self.wmark_min = {z: zones[z]["wmark_min"] for z in zones}
        self.alloc_batch_size = {z: zones[z]["alloc_batch"] for z in zones}    # high - low: one fair round
        self.alloc_batch = dict(self.alloc_batch_size)                          # NR_ALLOC_BATCH
        self.reserve = {z: list(zones[z]["reserve"]) for z in zones}
        self.batch = {z: zones[z]["batch"] for z in zones}
        self.high = {z: zones[z]["high"] for z in zones}
        self.free_area = {z: [{} for _ in range(MAX_ORDER)] for z in zones}
        self.nr_free_pages = {z: 0 for z in zones}
        self.pcp = {z: [] for z in zones}
        nr_pages = max(zones[z]["start"] + zones[z]["pages"] for z in zones) if zones else 0
        self.page_zone = [-1] * nr_pages
        top = MAX_ORDER - 1
        for z, zd in zones.items():
            start, pages = zd["start"], zd["pages"]
            for pfn in range(start, start + pages):
                self.page_zone[pfn] = z
            # boot leaves the lowest block at the head of the list: insert highest first
            lst = self.free_area[z][top]
            for pfn in range(start + pages - (1 << top), start - 1, -(1 << top)):
                lst[pfn] = None
            self.nr_free_pages[z] = pages
        self.rss_anon = 0
        self.total_vm = 0
        self.nr_ptes = 0
        self.allocs = 0
        self.fast_path_allocs = 0
        self.slowpath_entries = 0
        self.pages_freed = 0
        self.trace = trace
        self.ring = [None] * ring_records
        self.ring_mask = ring_records - 1
        self.written = 0
        self.pid = pid
        self.clock = time.monotonic_ns
        self.boot = time.monotonic_ns()

    @classmethod
    def from_machine(cls, m, cpu_id=0, **kw):
        """The reference with the zone parameters (not the state) of booted machine `m`, for CPU `cpu_id`."""
        zones = {}
        for z in range(m.nr_zones):
            managed = int(m.zone[z, Z_MANAGED])
            if not managed:
                continue
            zones[z] = {"start": int(m.zone[z, Z_START_PFN]), "pages": managed, "idx": int(m.zone[z, Z_IDX]),
                        "wmark_low": int(m.zone[z, Z_WMARK + WMARK_LOW]),
                        "wmark_min": int(m.zone[z, Z_WMARK + WMARK_MIN]),
                        "alloc_batch": int(m.zone[z, Z_WMARK + WMARK_HIGH] - m.zone[z, Z_WMARK + WMARK_LOW]),
                        "reserve": [int(v) for v in m.zone[z, Z_LOWMEM_RESERVE:Z_LOWMEM_RESERVE + 4]],
                        "batch": int(m.pcp[cpu_id, z, 2]), "high": int(m.pcp[cpu_id, z, 1])}
        return cls(zones, m.zonelists[0], **kw)

    def _emit(self, event, a0=0, a1=0, a2=0, a3=0, a4=0):
        w = self.written
        self.ring[w & self.ring_mask] = (self.clock() - self.boot, 0, event, self.pid, a0, a1, a2, a3, a4)
        self.written = w + 1

    # buddy side
    def _rmqueue(self, z, order):
        area = self.free_area[z]
        for current in range(order, MAX_ORDER):
            lst = area[current]
            if not lst:
                continue
            pfn = lst.popitem()[0]
            size = 1 << current
            while current > order:           # expand(): the upper halves go back to the lists
                current -= 1
                size >>= 1
                area[current][pfn + size] = None
            return pfn
        return -1

    def _free_one(self, z, pfn, order):
        area = self.free_area[z]
        while order < MAX_ORDER - 1:
            buddy = pfn ^ (1 << order)
            lst = area[order]
            if buddy not in lst:
                break
            del lst[buddy]
            pfn &= buddy
            order += 1
        area[order][pfn] = None

    # per-CPU side
    def _refill(self, z):
        pcp = self.pcp[z]
        got = 0
        for _ in range(self.batch[z]):
            pfn = self._rmqueue(z, 0)
            if pfn == -1:
                break
            if self.trace:
                self._emit(self.EV_ZONE_LOCKED, pfn, 0, 1, z)
            pcp.append(pfn)
            got += 1
        self.nr_free_pages[z] -= got
        if self.trace:
            self._emit(self.EV_ZONE_FREE, z, self.nr_free_pages[z])
        return got

    def _get_page(self, high_zoneidx, classzone, wmark, fair):
        """The first zone that passes `wmark` (and, in the fair pass, still has batch left) gives a page."""
        idx = self.idx
        for z in self.zonelist:
            if idx[z] > high_zoneidx:
                continue
            if fair and self.alloc_batch[z] <= 0:
                continue
            if self.nr_free_pages[z] <= wmark[z] + self.reserve[z][classzone]:
                continue
            pcp = self.pcp[z]
            if not pcp and not self._refill(z):
                continue
            pfn = pcp.pop()
            self.alloc_batch[z] -= 1
            if self.trace:
                self._emit(self.EV_ALLOC, pfn, 0, 0x200da, 1, 0x41)
            return pfn
        return None

    def alloc(self, high_zoneidx=3):
        """One order-0 page for a user fault: the fair low-watermark pass, else the slowpath's first steps (a new
        fair round, then the min-watermark pass); the pfn or None (where the emulator would go on to reclaim)."""
        idx = self.idx
        classzone = self._classzone.get(high_zoneidx)
        if classzone is None:
            preferred = next((z for z in self.zonelist if idx[z] <= high_zoneidx), None)
            if preferred is None:
                return None
            classzone = self._classzone[high_zoneidx] = idx[preferred]
        pfn = self._get_page(high_zoneidx, classzone, self.wmark_low, True)
        if pfn is not None:
            self.fast_path_allocs += 1
        else:
            self.slowpath_entries += 1
            if self.trace:
                self._emit(self.EV_SLOWPATH_ENTER, 0x200da, 0)
            for z in self.zonelist:
                if idx[z] <= high_zoneidx:
                    self.alloc_batch[z] = self.alloc_batch_size[z]
            pfn = self._get_page(high_zoneidx, classzone, self.wmark_min, False)
            if self.trace:
                self._emit(self.EV_SLOWPATH_EXIT, -1 if pfn is None else pfn, 0, 0)
            if pfn is None:
                return None
        self.allocs += 1
        self.rss_anon += 1                      # do_anonymous_page's accounting
        self.total_vm += 1
        self.nr_ptes = (self.total_vm + 511) // 512
        return pfn

    def free(self, pfn):
        """Free one order-0 page onto the per-CPU list; spill a batch to the buddy allocator when it is full."""
        z = self.page_zone[pfn]
        if self.trace:
            self._emit(self.EV_FREE, pfn, 0)
        pcp = self.pcp[z]
        pcp.append(pfn)
        if len(pcp) >= self.high[z]:
            done = 0
            for _ in range(self.batch[z]):
                if not pcp:
                    break
                self._free_one(z, pcp.pop(), 0)
                done += 1
            self.nr_free_pages[z] += done
            if self.trace:
                self._emit(self.EV_ZONE_FREE, z, self.nr_free_pages[z])
            self.pages_freed += done

    def unmap(self, nr):
        """The mm gives back `nr` pages' worth of rss (zap's accounting; the pages are freed one by one)."""
        self.rss_anon -= nr
        self.total_vm -= nr
        self.nr_ptes = (self.total_vm + 511) // 512

    def cycle(self, batch, high_zoneidx=3):
        """Allocate `batch` pages, then unmap and free them all (in allocation order). Returns the pfns."""
        alloc, free = self.alloc, self.free
        pfns = [alloc(high_zoneidx) for _ in range(batch)]
        self.unmap(batch)
        for pfn in pfns:
            free(pfn)
        return pfns

    def state(self):
        """Zone → {nr_free per order, NR_FREE_PAGES, per-CPU count, NR_ALLOC_BATCH}, plus the mm's rss (as
        EmulatorLoop.state)."""
        zones = {z: {"nr_free": [len(lst) for lst in self.free_area[z]], "free_pages": self.nr_free_pages[z],
                     "pcp": len(self.pcp[z]), "alloc_batch": self.alloc_batch[z]} for z in self.free_area}
        return {"zones": zones, "rss_anon": self.rss_anon, "total_vm": self.total_vm, "nr_ptes": self.nr_ptes}


# --- the emulator's fast path, driven in-process ----------------------------------------------------------------

FASTPATH_SCENARIO = """
[machine]
cpus = 1
[[machine.node]]
zones = { DMA = "16MiB", DMA32 = "0", Normal = "112MiB" }
"""


class EmulatorLoop:
    """The emulator's order-0 fault path on CPU 0 of a booted machine, driven without a scheduler.

    `alloc()` is do_anonymous_page() with the page in hand: `alloc_pages` (the whole fast path: zonelist walk,
    low watermark, per-CPU list, rmqueue_bulk refill under zone->lock, tracepoints, vm events), then the mapping
    and rss accounting under the mm's page_table_lock; `free(pfn)` is `free_hot_cold_page` (spilling a batch
    under zone->lock when the list is full). The trace ring is drained (its consumer pointer advanced) after
    every cycle, as the supervisor would, so records are written and never dropped.
    """

    def __init__(self, m, cpu, mm):
        self.m, self.cpu, self.mm = m, cpu, mm
        self.gfp = GFP_HIGHUSER_MOVABLE
        self.tracer = cpu.trace

    @classmethod
    def boot(cls, scenario_text=FASTPATH_SCENARIO, trace=True):
        """A fresh machine, CPU 0 with a ring tracer and one user task (with its mm) as current."""
        from oomemu.boot import create_machine
        from oomemu.config import load_scenario_text
        from oomemu.kernel import fork
        from oomemu.percpu import CpuContext
        from oomemu.trace.ring import RingWriter
        sc = load_scenario_text(scenario_text, name="bench-fastpath")
        m = create_machine(sc)
        tracer = RingWriter(m, 0) if trace else None
        cpu = CpuContext(m, 0, sc, tracer=tracer)
        row = fork.copy_process(cpu, 0, 0, 0, "bench", 0)
        cpu.current = row
        m.task_state[row] = 0
        return cls(m, cpu, int(m.task_mm[row]))

    def set_tracing(self, on):
        self.cpu.trace = self.tracer if on else None

    def alloc(self):
        cpu, mm = self.cpu, self.mm
        coro = page_alloc.alloc_pages(cpu, self.gfp, 0)
        try:
            coro.send(None)
        except StopIteration as stop:
            pfn = stop.value
        else:
            coro.close()
            raise RuntimeError("the fast path tried to sleep: not enough memory to spare")
        if pfn is None:
            return None
        memory.map_anon_page(cpu, mm, pfn)
        return pfn

    def unmap(self, nr):
        cpu, m, mm = self.cpu, self.m, self.mm
        lk = m.mm_lock_index(mm)
        v, base = m.v_mm, mm * MM_NCOLS
        sync.spin_lock(cpu, lk)
        v[base + MM_ANONPAGES] -= nr
        vm = v[base + MM_TOTAL_VM] - nr
        v[base + MM_TOTAL_VM] = vm
        v[base + MM_NR_PTES] = (vm + 511) // 512
        sync.spin_unlock(cpu, lk)

    def free(self, pfn):
        page_alloc.free_hot_cold_page(self.cpu, pfn)

    def cycle(self, batch):
        """Allocate `batch` pages, then unmap and free them all (in allocation order). Returns the pfns."""
        alloc, free = self.alloc, self.free
        pfns = [alloc() for _ in range(batch)]
        self.unmap(batch)
        for pfn in pfns:
            free(pfn)
        self.drain_trace()
        return pfns

    def drain_trace(self):
        t = self.tracer
        if t is not None:
            t.head[t.hw + H_DRAINED] = t.head[t.hw + H_WRITTEN]

    def trace_written(self):
        t = self.tracer
        return int(t.head[t.hw + H_WRITTEN]) if t is not None else 0

    def trace_lost(self):
        t = self.tracer
        return int(t.head[t.hw + H_LOST]) if t is not None else 0

    def state(self):
        """Zone → {nr_free per order, NR_FREE_PAGES, this CPU's per-CPU count, NR_ALLOC_BATCH}, plus the mm's rss."""
        m = self.m
        zones = {}
        for z in range(m.nr_zones):
            if not m.zone[z, Z_MANAGED]:
                continue
            zones[z] = {"nr_free": [int(v) for v in m.zone[z, Z_NR_FREE:Z_NR_FREE + MAX_ORDER]],
                        "free_pages": int(m.zone[z, Z_STAT + NR_FREE_PAGES]),
                        "pcp": int(m.pcp[self.cpu.id, z, 0]),
                        "alloc_batch": int(m.zone[z, Z_STAT + NR_ALLOC_BATCH])}
        mm = m.mm[self.mm]
        return {"zones": zones, "rss_anon": int(mm[MM_ANONPAGES]), "total_vm": int(mm[MM_TOTAL_VM]),
                "nr_ptes": int(mm[MM_NR_PTES])}


def _fastpath_rounds(rounds, n_allocs, batch=256):
    """Child body: rounds of the emulator (tracing on), the emulator (tracing off) and the reference.

    Within a round the three alternate cycle by cycle (a cycle is `batch` allocations, a few milliseconds), in a
    rotating order, so load from other processes falls on all three alike. Each kind's time is the CPU time of
    this process (rates are per CPU-second, as the figure asks); the wall-clock time is kept alongside.
    """
    loop = EmulatorLoop.boot()
    ref = ReferenceAllocator.from_machine(loop.m, pid=int(loop.m.task_pid[loop.cpu.current]))
    cycles = max(1, n_allocs // batch)
    cpu_clock, wall_clock = time.process_time, time.perf_counter
    for _ in range(2):                       # warm up: lists populated, code paths hot
        loop.cycle(batch)
        ref.cycle(batch)
    kinds = ("on", "off", "ref")
    out = {k: [] for k in kinds}
    out.update({"wall_" + k: [] for k in kinds})
    out.update(events=[], lost=0, allocs_per_sample=cycles * batch)
    for _ in range(rounds):
        cpu_t = dict.fromkeys(kinds, 0.0)
        wall_t = dict.fromkeys(kinds, 0.0)
        events = 0
        for c in range(cycles):
            for i in range(3):
                kind = kinds[(c + i) % 3]
                if kind != "ref":
                    loop.set_tracing(kind == "on")
                w0 = loop.trace_written()
                t0, c0 = wall_clock(), cpu_clock()
                if kind == "ref":
                    ref.cycle(batch)
                else:
                    loop.cycle(batch)
                cpu_t[kind] += cpu_clock() - c0
                wall_t[kind] += wall_clock() - t0
                if kind == "on":
                    events += loop.trace_written() - w0
        for k in kinds:
            out[k].append(cpu_t[k])
            out["wall_" + k].append(wall_t[k])
        out["events"].append(events)
    out["emit"] = _emit_rounds(loop, rounds)
    out["lost"] = loop.trace_lost()
    out["writer"] = "compiled" if loop.tracer.compiled else "python"
    return out


def _emit_rounds(loop, rounds, calls=32768):
    """The recording cost isolated: per round, `calls` emitter calls with tracing on minus the same with tracing
    off, per call (µs), draining the ring between chunks as the supervisor would."""
    from oomemu.trace.events import trace_mm_page_free as emit
    cpu, clock = loop.cpu, time.process_time
    chunks = range(calls // 1024)
    out = []
    for _ in range(rounds):
        t = {}
        for on in (True, False):
            loop.set_tracing(on)
            t0 = clock()
            for _ in chunks:
                for pfn in range(1024):
                    emit(cpu, pfn, 0)
                loop.drain_trace()
            t[on] = clock() - t0
        out.append((t[True] - t[False]) / calls * 1e6)
    return out


# -- fast path ---------------------------------------------------------------------------------------------
def measure(bench):
    n_allocs = 4096 if bench.quick else 16384
    res = in_child(_fastpath_rounds, bench.repeats, n_allocs)
    n = res["allocs_per_sample"]
    on = [n / t for t in res["on"]]
    off = [n / t for t in res["off"]]
    ref = [n / t for t in res["ref"]]
    ratio = [t_ref / t_on for t_on, t_ref in zip(res["on"], res["ref"])]   # emulator rate / reference rate
    cost = [(t_on - t_off) / ev * 1e6 for t_on, t_off, ev in zip(res["on"], res["off"], res["events"]) if ev]
    f = bench.figures
    f["fastpath_allocs_per_s"] = figure("fastpath_allocs_per_s", on,
                                        note="one alloc = do_anonymous_page's page + its later free; "
                                             "per CPU-second of the process")
    f["reference_allocs_per_s"] = figure("reference_allocs_per_s", ref)
    f["fastpath_vs_reference"] = figure("fastpath_vs_reference", ratio)
    f["fastpath_notrace_allocs_per_s"] = figure("fastpath_notrace_allocs_per_s", off)
    f["trace_cost_us_per_event"] = figure("trace_cost_us_per_event", cost, note=f"{res['writer']} writer")
    f["trace_events_per_alloc"] = figure("trace_events_per_alloc", [ev / n for ev in res["events"]])
    f["trace_emit_us_per_event"] = figure("trace_emit_us_per_event", res["emit"])
    bench.details["fastpath"] = {"allocs_per_sample": n, "trace_lost": res["lost"], "clock": "process CPU time",
                                "trace_writer": res["writer"],
                                "wall_allocs_per_s": {k: round(statistics.median([n / t for t in res["wall_" + k]]))
                                                      for k in ("on", "off", "ref")},
                                "us_per_alloc_traced": round(1e6 / statistics.median(on), 3),
                                "us_per_alloc_untraced": round(1e6 / statistics.median(off), 3),
                                "us_per_alloc_reference": round(1e6 / statistics.median(ref), 3)}
