"""`oomemu bench`: the emulator's speed, scaling, latency and footprint, each figure next to its reference.

Every measurement runs several times in one invocation (rounds interleave a figure with its reference, so a
change in the machine's load hits both alike) and is reported as its median with the spread (min..max) over
the rounds. Each figure states its target and whether the median met it.

Figures (ids are the keys of the JSON document):

- fast path: one CPU process allocates and frees order-0 pages in a tight loop through the emulator's real code
  (`alloc_pages` → `get_page_from_freelist` → per-CPU list, refilled from and spilled to the buddy allocator
  with split and merge, the watermark check, do_anonymous_page's rss accounting under the mm lock, tracing
  into the shared ring), side by side with `ReferenceAllocator`, a single-process pure-Python allocator doing
  the same bookkeeping in plain lists and ints (no shared memory, no locks); and the same loop with tracing
  off, which gives the cost of one trace event;
- scenario throughput and scaling: `oomemu run` scenarios with 1, 2 and 8 CPU processes, each CPU with its own
  task looping `fault` + `free all` with memory to spare; the rate is sampled from the per-CPU `allocs`
  counters while the run is in its steady state;
- OOM kill latency: a 2-CPU scenario whose parents fork hogs again and again; per kill, the time from the
  victim's `signal_generate` (SIGKILL) to its `mmput` record that gave pages back, from trace.msgpack;
- select_bad_process over task tables of 1k, 10k and 100k tasks;
- boot and teardown of `oomemu run` on the default scenario;
- shared memory per emulated GiB (machines of 1, 16 and 64 GiB) and whether a 64 GiB machine boots.

Measurements that build machines run in forked children, so the bench process never holds a large segment and
every worker is gone when a measurement returns.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from oomemu import sync
from oomemu.include.gfp import GFP_HIGHUSER_MOVABLE
from oomemu.include.mmzone import MAX_ORDER, NR_FREE_PAGES, WMARK_LOW
from oomemu.machine import (MM_ANONPAGES, MM_NCOLS, MM_NR_PTES, MM_TOTAL_VM, Z_IDX, Z_LOWMEM_RESERVE, Z_MANAGED, Z_NR_FREE, Z_START_PFN, Z_STAT, Z_WMARK)
from oomemu.mm import memory, page_alloc
from oomemu.supervisor import retain_freed_heap
from oomemu.trace.ring import H_DRAINED, H_LOST, H_WRITTEN

# --- figure catalogue ----------------------------------------------------------------------------------------
# id: (title, unit, comparison, target). comparison None: reported, no target.
FIGURES = {
    "fastpath_allocs_per_s": ("order-0 alloc+free/s, 1 CPU process, full fast path, tracing on", "/s", ">=", 1e6),
    "reference_allocs_per_s": ("same loop, pure-Python reference (no sharing, no locks)", "/s", None, None),
    "fastpath_vs_reference": ("ratio emulator / reference (same run, per round)", "x", ">=", 0.5),
    "fastpath_notrace_allocs_per_s": ("emulator fast path, tracing off", "/s", None, None),
    "trace_cost_us_per_event": ("tracing cost per event (on - off) / events", "us", "<=", 0.5),
    "trace_events_per_alloc": ("trace events per alloc+free", "", None, None),
    "trace_emit_us_per_event": ("  one emitter call alone, tracing on - off (direct loop)", "us", None, None),
    "run_allocs_per_s_1cpu": ("oomemu run, 1 CPU process, fault+free loop, tracing off", "/s", ">=", 1e6),
    "run_allocs_per_s_2cpu": ("oomemu run, 2 CPU processes, aggregate, tracing off", "/s", None, None),
    "run_allocs_per_s_8cpu": ("oomemu run, 8 CPU processes, aggregate, tracing off", "/s", None, None),
    "run_allocs_per_cpu_s_1cpu": ("oomemu run, 1 CPU: allocs per CPU-second of the worker", "/s", None, None),
    "scaling_2_vs_1": ("scaling: 2 CPU processes vs 1 (tracing off)", "x", ">=", 1.7),
    "oversubscription_8_vs_2": ("oversubscription: 8 CPU processes vs 2 on 2 cores (tracing off)", "x", ">=", 0.8),
    "run_allocs_per_s_1cpu_traced": ("oomemu run, 1 CPU process, tracing on", "/s", ">=", 1e6),
    "run_allocs_per_s_2cpu_traced": ("oomemu run, 2 CPU processes, tracing on", "/s", None, None),
    "run_allocs_per_s_8cpu_traced": ("oomemu run, 8 CPU processes, tracing on", "/s", None, None),
    "scaling_2_vs_1_traced": ("scaling: 2 CPU processes vs 1 (tracing on)", "x", ">=", 1.7),
    "oversubscription_8_vs_2_traced": ("oversubscription: 8 vs 2 CPU processes (tracing on)", "x", ">=", 0.8),
    "oom_kill_latency_p50_ms": ("OOM kill latency p50: SIGKILL generated -> pages back in buddy", "ms", "<=", 1.0),
    "oom_kill_latency_p99_ms": ("OOM kill latency p99", "ms", "<=", 10.0),
    "oom_kill_delivery_p50_ms": ("  of which SIGKILL generated -> victim's exit_mm, p50", "ms", None, None),
    "oom_kill_teardown_p50_ms": ("  of which exit_mm -> mmput freed the pages, p50", "ms", None, None),
    "oom_kills_measured": ("OOM kills measured (all rounds)", "", None, None),
    "select_bad_process_ms_1k": ("select_bad_process, 1k tasks, tracing off", "ms", None, None),
    "select_bad_process_ms_10k": ("select_bad_process, 10k tasks, tracing off", "ms", None, None),
    "select_bad_process_ms_100k": ("select_bad_process, 100k tasks, tracing off", "ms", "<=", 10.0),
    "select_bad_process_ms_100k_traced": ("select_bad_process, 100k tasks, tracing on", "ms", "<=", 10.0),
    "boot_to_first_alloc_s": ("boot -> first allocation (report timing, default scenario)", "s", "<=", 0.5),
    "start_to_first_alloc_s": ("`oomemu run` process start -> first allocation", "s", "<=", 0.5),
    "teardown_s": ("teardown (report timing: stop and reap the workers)", "s", "<=", 0.5),
    "run_wall_s": ("`oomemu run` default scenario, wall clock end to end", "s", None, None),
    "shm_mib_per_gib_1": ("shared memory per emulated GiB, 1 GiB machine", "MiB", "<=", 2.0),
    "shm_mib_per_gib_16": ("shared memory per emulated GiB, 16 GiB machine", "MiB", "<=", 2.0),
    "shm_mib_per_gib_64": ("shared memory per emulated GiB, 64 GiB machine", "MiB", "<=", 2.0),
    "boot_s_64gib": ("a 64 GiB machine boots (create_machine), seconds", "s", None, None),
}
FIGURE_IDS = tuple(FIGURES)

GROUPS = ("fastpath", "select", "shm", "boot", "oom", "scaling")   # in the order they run
BUDGET_S = {False: 170.0, True: 27.0}  # wall-clock budget of a whole bench (full, --quick)


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

    def __init__(self, zones, zonelist, *, trace=True, ring_records=1 << 16, pid=1):
        """zones: {z: dict(start, pages, idx, wmark_low, reserve (list by classzone), batch, high)}."""
        self.zonelist = tuple(zonelist)
        self._classzone = {}                # high_zoneidx -> zone_idx of the preferred zone
        self.idx = {z: zones[z]["idx"] for z in zones}
        self.wmark_low = {z: zones[z]["wmark_low"] for z in zones}
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
        return got

    def alloc(self, high_zoneidx=3):
        """One order-0 page for a user fault (low watermark, first zone that passes); the pfn or None."""
        idx = self.idx
        classzone = self._classzone.get(high_zoneidx)
        if classzone is None:
            preferred = next((z for z in self.zonelist if idx[z] <= high_zoneidx), None)
            if preferred is None:
                return None
            classzone = self._classzone[high_zoneidx] = idx[preferred]
        for z in self.zonelist:
            if idx[z] > high_zoneidx:
                continue
            if self.nr_free_pages[z] <= self.wmark_low[z] + self.reserve[z][classzone]:
                continue
            pcp = self.pcp[z]
            if not pcp and not self._refill(z):
                continue
            pfn = pcp.pop()
            if self.trace:
                self._emit(self.EV_ALLOC, pfn, 0, 0x200da, 1, 0x41)
            self.fast_path_allocs += 1
            self.allocs += 1
            self.rss_anon += 1                      # do_anonymous_page's accounting
            self.total_vm += 1
            self.nr_ptes = (self.total_vm + 511) // 512
            return pfn
        return None

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
        """Zone → {nr_free per order, NR_FREE_PAGES, per-CPU count}, plus the mm's rss (as EmulatorLoop.state)."""
        zones = {z: {"nr_free": [len(lst) for lst in self.free_area[z]], "free_pages": self.nr_free_pages[z],
                     "pcp": len(self.pcp[z])} for z in self.free_area}
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
        """Zone → {nr_free per order, NR_FREE_PAGES, this CPU's per-CPU count}, plus the mm's rss."""
        m = self.m
        zones = {}
        for z in range(m.nr_zones):
            if not m.zone[z, Z_MANAGED]:
                continue
            zones[z] = {"nr_free": [int(v) for v in m.zone[z, Z_NR_FREE:Z_NR_FREE + MAX_ORDER]],
                        "free_pages": int(m.zone[z, Z_STAT + NR_FREE_PAGES]),
                        "pcp": int(m.pcp[self.cpu.id, z, 0])}
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


# --- scenario runs ---------------------------------------------------------------------------------------------

def throughput_scenario(nr_cpus, trace, seconds, pages=2048, chunk=256):
    """One task per CPU looping fault(pages) + free all on a 256 MiB machine (memory to spare)."""
    return f"""
[machine]
cpus = {nr_cpus}
[[machine.node]]
zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "240MiB" }}
[[task]]
comm = "alloc"
count = {nr_cpus}
cpu = "any"
program = [
  {{ op = "fault", pages = {pages}, chunk = {chunk} }},
  {{ op = "free", pages = "all" }},
  {{ op = "repeat" }},
]
[run]
seconds = {seconds}
trace = {str(bool(trace)).lower()}
"""


OOM_SCENARIO = """
[machine]
cpus = 2
max_tasks = 8192
[[machine.node]]
zones = {{ DMA = "0", DMA32 = "0", Normal = "8MiB" }}
[sysctl]
oom_dump_tasks = 0
[[task]]
comm = "spawner"
count = 2
cpu = "any"
program = [
  {{ op = "fork", comm = "hog", program = [
      {{ op = "fault", pages = "{hog}", chunk = 16 }},
      {{ op = "sleep", ms = 20 }},
  ] }},
  {{ op = "wait" }},
  {{ op = "repeat" }},
]
[run]
seconds = {seconds}
trace = true
"""


def _run_scenario_sampled(text, name, out_dir, warmup):
    """Child body: run a scenario (api.run) while sampling the CPUs' allocs counters every supervisor poll."""
    from oomemu.api import run
    from oomemu.config import load_scenario_text
    from oomemu.mm import vmstat
    sc = load_scenario_text(text, name=name)
    samples = []

    def progress(m, outcome):
        samples.append((time.monotonic(), int(m.cpu[:m.nr_cpus, vmstat.NR_ALLOCS].sum())))

    report = run(sc, out=out_dir, progress=progress)
    live = [s for s in samples if s[1] > 0]
    rate = None
    if len(live) >= 2:
        t_start = live[0][0] + warmup
        window = [s for s in live if s[0] >= t_start] or live
        if len(window) < 2:
            window = live
        (t0, a0), (t1, a1) = window[0], window[-1]
        rate = (a1 - a0) / (t1 - t0) if t1 > t0 else None
    allocs = sum(v["allocs"] for k, v in report["per_cpu"].items() if k.startswith("cpu"))
    cpu_s = sum(v for k, v in report["workers"]["cpu_seconds"].items() if k.startswith("cpu"))
    if rate is None and report["elapsed_s"]:
        rate = allocs / report["elapsed_s"]   # too few samples (a slow trace drain): the whole run's average
    return {"rate": rate, "allocs": allocs, "elapsed_s": report["elapsed_s"], "cpu_s": cpu_s,
            "trace": report["trace"], "ended_by": report["ended_by"], "error": report["error"],
            "window_s": (window[-1][0] - window[0][0]) if len(live) >= 2 else 0.0}


def _oom_latencies(out_dir):
    """Per kill in a finished run: (generate→mmput, generate→exit_mm, exit_mm→mmput) in ms, and unmatched kills."""
    from oomemu.trace.reader import load_trace
    tr = load_trace(out_dir)
    gen, mmput, exit_mm = tr.of("signal_generate"), tr.of("mmput"), tr.of("exit_mm")
    total, delivery, teardown, unmatched = [], [], [], 0
    for s in gen[gen["a"][:, 0] == 9]:
        victim = s["a"][1]
        put = mmput[(mmput["pid"] == victim) & (mmput["a"][:, 2] > 0) & (mmput["ts"] >= s["ts"])]
        if not len(put):
            unmatched += 1
            continue
        t_put = int(put[0]["ts"])
        total.append((t_put - int(s["ts"])) / 1e6)
        ex = exit_mm[(exit_mm["pid"] == victim) & (exit_mm["ts"] >= s["ts"]) & (exit_mm["ts"] <= t_put)]
        if len(ex):
            delivery.append((int(ex[0]["ts"]) - int(s["ts"])) / 1e6)
            teardown.append((t_put - int(ex[0]["ts"])) / 1e6)
    return {"total": total, "delivery": delivery, "teardown": teardown, "unmatched": unmatched,
            "lost": int(tr.lost)}


def _oom_round(out_dir, seconds, hog):
    res = _run_scenario_sampled(OOM_SCENARIO.format(seconds=seconds, hog=hog), "bench-oom", out_dir, 0.0)
    lat = _oom_latencies(out_dir)
    lat["run"] = res
    return lat


# --- select_bad_process -------------------------------------------------------------------------------------------

def _select_bad_process(sizes, repeats, traced_size):
    """Child body: fill a big task table with numpy and time the vectorised scan at each size."""
    import numpy as np

    from oomemu.boot import create_machine
    from oomemu.config import load_scenario_text
    from oomemu.include.sched import TASK_INTERRUPTIBLE
    from oomemu.machine import (G_NR_MM_ROWS, G_NR_TASK_ROWS, G_TOTAL_SWAP, G_TOTALRAM, MM_ANONPAGES,
                                MM_FILEPAGES, MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM, MM_USERS)
    from oomemu.mm import oom_kill
    from oomemu.percpu import CpuContext
    from oomemu.trace.ring import RingWriter
    biggest = max(sizes)
    sc = load_scenario_text(f"[machine]\ncpus = 2\nmax_tasks = {min(200000, biggest + 16)}\n", name="bench-select")
    m = create_machine(sc)
    cpu = CpuContext(m, 0, sc)
    first = int(m.glob[G_NR_TASK_ROWS])            # init, kthreadd, kswapd0 come from boot
    rows = np.arange(first, biggest)
    rng = np.random.default_rng(1)
    # one process in eight has a second thread (the row after its leader), sharing its mm
    thread = (rows % 8 == 1) & (rows > first)
    leader = np.where(thread, rows - 1, rows)
    m.task_pid[rows] = rows + 1
    m.task_leader[rows] = leader
    m.task_tgid[rows] = leader + 1
    m.task_parent[rows] = 0
    m.task_mm[rows] = leader
    m.task_cpu[rows] = rows % 2
    m.task_seq[rows] = rows
    m.task_uid[rows] = np.where(rows % 50 == 0, 0, 1000)
    m.task_caps[rows] = 0
    m.task_flags[rows] = 0
    m.task_tif[rows] = 0
    m.task_exit_state[rows] = 0
    m.task_state[rows] = TASK_INTERRUPTIBLE
    m.task_comm[rows] = b"task"
    m.sig_oom_score_adj[rows] = np.where(rows % 97 == 0, -1000, rng.integers(-200, 200, len(rows)))
    m.sig_oom_flags[rows] = 0
    mm_rows = rows[~thread]
    m.mm[mm_rows, MM_ANONPAGES] = rng.integers(0, 5000, len(mm_rows))
    m.mm[mm_rows, MM_FILEPAGES] = rng.integers(0, 500, len(mm_rows))
    m.mm[mm_rows, MM_SWAPENTS] = 0
    m.mm[mm_rows, MM_NR_PTES] = (m.mm[mm_rows, MM_ANONPAGES] + m.mm[mm_rows, MM_FILEPAGES] + 511) // 512
    m.mm[mm_rows, MM_TOTAL_VM] = m.mm[mm_rows, MM_ANONPAGES] + m.mm[mm_rows, MM_FILEPAGES]
    m.mm[mm_rows, MM_USERS] = 1
    m.mm[rows[thread] - 1, MM_USERS] = 2
    m.glob[G_NR_MM_ROWS] = biggest
    totalpages = int(m.glob[G_TOTALRAM] + m.glob[G_TOTAL_SWAP])
    out = {}
    tracer = RingWriter(m, 0)
    for n, traced in [(n, False) for n in sizes] + [(traced_size, True)]:
        m.glob[G_NR_TASK_ROWS] = n
        cpu.trace = tracer if traced else None
        times = []
        chosen = None
        for _ in range(repeats):
            tracer.head[tracer.hw + H_DRAINED] = tracer.head[tracer.hw + H_WRITTEN]
            t0 = time.perf_counter()
            chosen = oom_kill.select_bad_process(cpu, totalpages, None, False)
            times.append((time.perf_counter() - t0) * 1e3)
        out[f"{n}{'_traced' if traced else ''}"] = {"ms": times, "chosen": [int(chosen[0]), int(chosen[1])]}
    out["trace_lost"] = int(tracer.head[tracer.hw + H_LOST])
    return out


# --- boot, teardown, footprint --------------------------------------------------------------------------------------

def _boot_round(out_dir, seconds):
    """`python -m oomemu run --quiet` on the default scenario in a subprocess; timings from its report."""
    cmd = [sys.executable, "-m", "oomemu", "run", "--quiet", "--out", str(out_dir)]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t_wall0 = time.time()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=str(out_dir.parent))
    wall = time.monotonic() - t0
    report_path = out_dir / "report.json"
    if not report_path.exists():
        raise RuntimeError(f"oomemu run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    report = json.loads(report_path.read_text())
    timing = report["timing"]
    # scenario.json is written first thing in run_scenario, just before the boot clock starts
    started = (out_dir / "scenario.json").stat().st_mtime - t_wall0
    first = timing["boot_to_first_alloc_s"]
    return {"wall_s": wall, "boot_to_first_alloc_s": first, "teardown_s": timing["teardown_s"],
            "start_to_first_alloc_s": None if first is None else started + first, "exit_code": proc.returncode,
            "verdict": report["verdict"]}


def _shm_footprint(gib, boot):
    """Child body: Machine size for a 1-node machine of `gib` GiB (16 MiB DMA + the rest Normal); boot time."""
    from oomemu.boot import create_machine
    from oomemu.config import load_scenario_text
    sc = load_scenario_text(f"""
[machine]
cpus = 2
[[machine.node]]
zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "{gib * 1024 - 16}MiB" }}
""", name=f"bench-{gib}gib")
    t0 = time.perf_counter()
    m = create_machine(sc)
    boot_s = time.perf_counter() - t0
    ring = m.nr_rows_cpu * m.ring_records * 64
    return {"size": m.size, "ring": ring, "nr_pages": m.nr_pages, "boot_s": boot_s if boot else None}


# --- running things in children ---------------------------------------------------------------------------------

class ChildFailed(RuntimeError):
    """A measurement's child process raised or died."""


def in_child(fn, *args, timeout=300):
    """Run fn(*args) in a forked child; return its (JSON-able) result. The child's workers end with it."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            retain_freed_heap()             # as every worker does
            try:
                data = json.dumps({"ok": fn(*args)})
            except BaseException:  # noqa: BLE001 - report anything to the parent
                data = json.dumps({"error": traceback.format_exc()})
            view = memoryview(data.encode())
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        import select
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildFailed(f"{fn.__name__} did not finish in {timeout}s")
            ready, _, _ = select.select([r], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        os.close(r)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
    if not chunks:
        raise ChildFailed(f"{fn.__name__}: the child died (status {status})")
    doc = json.loads(b"".join(chunks))
    if "error" in doc:
        raise ChildFailed(f"{fn.__name__} failed:\n{doc['error']}")
    return doc["ok"]


# --- statistics and the document -------------------------------------------------------------------------------

def _pct(values, q):
    """Percentile q (0..100) by linear interpolation."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def figure(fid, samples, value=None, note=None):
    """One figure's entry: median (or an explicit headline `value`), spread, target and whether it is met."""
    title, unit, op, target = FIGURES[fid]
    samples = [float(s) for s in samples if s is not None]
    entry = {"title": title, "unit": unit, "n": len(samples), "samples": [round(s, 6) for s in samples]}
    if samples:
        med = statistics.median(samples)
        entry.update(median=med, min=min(samples), max=max(samples),
                     spread_pct=(max(samples) - min(samples)) / med * 100 if med else 0.0)
    else:
        entry.update(median=None, min=None, max=None, spread_pct=None)
    entry["value"] = float(value) if value is not None else entry["median"]
    entry["target"] = None if op is None else {"op": op, "value": target}
    entry["met"] = None
    entry["miss"] = None
    v = entry["value"]
    if op is not None and v is not None:
        met = v >= target if op == ">=" else v <= target
        entry["met"] = bool(met)
        if not met:
            if op == ">=":
                entry["miss"] = f"{target / v:.1f}x below target" if v > 0 else "no progress"
            else:
                entry["miss"] = f"{v / target:.1f}x over target"
    if note:
        entry["note"] = note
    return entry


def _missing(fid, why):
    entry = figure(fid, [])
    entry["error"] = why
    return entry


class Bench:
    """One `oomemu bench` invocation: its settings, its figures and the errors of measurements that failed."""

    def __init__(self, quick=False, repeats=None, only=None, keep=None, log=None):
        self.quick = quick
        self.repeats = repeats or (3 if quick else 5)
        self.only = set(only) if only else set(GROUPS)
        self.keep = keep
        self.log = log or (lambda msg: None)
        self.figures = {}
        self.details = {}
        self.errors = {}

    def time_left(self):
        return BUDGET_S[self.quick] - (time.monotonic() - self.t0)

    def run(self):
        t0 = self.t0 = time.monotonic()
        load0 = os.getloadavg()
        work = Path(self.keep) if self.keep else Path(tempfile.mkdtemp(prefix="oomemu-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        try:
            for group in GROUPS:
                if group not in self.only:
                    continue
                self.log(f"bench: {group} ...")
                tg = time.monotonic()
                try:
                    getattr(self, "bench_" + group)()
                except ChildFailed as exc:
                    self.errors[group] = str(exc)
                except Exception:  # noqa: BLE001 - one failed measurement must not lose the others
                    self.errors[group] = traceback.format_exc()
                self.details.setdefault("group_seconds", {})[group] = round(time.monotonic() - tg, 2)
        finally:
            if not self.keep:
                shutil.rmtree(work, ignore_errors=True)
        for fid in FIGURE_IDS:
            if fid not in self.figures and self._group_of(fid) in self.only:
                self.figures[fid] = _missing(fid, self.errors.get(self._group_of(fid), "not measured"))
        return {
            "format": "oomemu-bench", "version": 1,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform,
                     "loadavg_before": [round(x, 2) for x in load0],
                     "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "quick": self.quick, "repeats": self.repeats, "duration_s": round(time.monotonic() - t0, 2),
            "figures": {fid: self.figures[fid] for fid in FIGURE_IDS if fid in self.figures},
            "details": self.details, "errors": self.errors,
        }

    @staticmethod
    def _group_of(fid):
        if fid.startswith(("fastpath", "reference", "trace_")):
            return "fastpath"
        if fid.startswith(("run_allocs", "scaling", "oversub")):
            return "scaling"
        if fid.startswith("oom_"):
            return "oom"
        if fid.startswith("select_"):
            return "select"
        if fid.startswith("shm_") or fid == "boot_s_64gib":
            return "shm"
        return "boot"

    def _dir(self, name):
        d = self.work / name
        if d.exists():
            shutil.rmtree(d)
        return d

    def _done(self, d):
        """A measurement's run directory is removed at once unless --keep asked for it."""
        if not self.keep:
            shutil.rmtree(d, ignore_errors=True)

    # -- fast path ---------------------------------------------------------------------------------------------
    def bench_fastpath(self):
        n_allocs = 4096 if self.quick else 16384
        res = in_child(_fastpath_rounds, self.repeats, n_allocs)
        n = res["allocs_per_sample"]
        on = [n / t for t in res["on"]]
        off = [n / t for t in res["off"]]
        ref = [n / t for t in res["ref"]]
        ratio = [t_ref / t_on for t_on, t_ref in zip(res["on"], res["ref"])]   # emulator rate / reference rate
        cost = [(t_on - t_off) / ev * 1e6 for t_on, t_off, ev in zip(res["on"], res["off"], res["events"]) if ev]
        f = self.figures
        f["fastpath_allocs_per_s"] = figure("fastpath_allocs_per_s", on,
                                            note="one alloc = do_anonymous_page's page + its later free; "
                                                 "per CPU-second of the process")
        f["reference_allocs_per_s"] = figure("reference_allocs_per_s", ref)
        f["fastpath_vs_reference"] = figure("fastpath_vs_reference", ratio)
        f["fastpath_notrace_allocs_per_s"] = figure("fastpath_notrace_allocs_per_s", off)
        f["trace_cost_us_per_event"] = figure("trace_cost_us_per_event", cost, note=f"{res['writer']} writer")
        f["trace_events_per_alloc"] = figure("trace_events_per_alloc", [ev / n for ev in res["events"]])
        f["trace_emit_us_per_event"] = figure("trace_emit_us_per_event", res["emit"])
        self.details["fastpath"] = {"allocs_per_sample": n, "trace_lost": res["lost"], "clock": "process CPU time",
                                    "trace_writer": res["writer"],
                                    "wall_allocs_per_s": {k: round(statistics.median([n / t for t in res["wall_" + k]]))
                                                          for k in ("on", "off", "ref")},
                                    "us_per_alloc_traced": round(1e6 / statistics.median(on), 3),
                                    "us_per_alloc_untraced": round(1e6 / statistics.median(off), 3),
                                    "us_per_alloc_reference": round(1e6 / statistics.median(ref), 3)}

    # -- scenario throughput, scaling, oversubscription --------------------------------------------------------
    def bench_scaling(self):
        """1, 2 and 8 CPU processes, interleaved by round; tracing off, then (not with --quick) tracing on.

        With tracing on, the supervisor's drain (about 0.25 µs a record) shares the two cores with the CPU
        processes, so traced scaling stays below untraced; lost records, if any, are in the details. Traced
        runs are fewer, to keep the whole benchmark short.
        """
        plans = [(False, 2 if self.quick else max(2, self.repeats - 2), 0.5 if self.quick else 1.2)]
        if not self.quick:
            plans.append((True, 2, 0.7))
        warmup = 0.1 if self.quick else 0.2
        runs = {}
        skipped = []
        for trace, rounds, seconds in plans:
            for r in range(rounds):
                if trace and self.time_left() < (45 if r else 35):
                    skipped.append(f"tracing-on round {r + 1}: out of time")
                    continue
                for ncpu in ((1, 2, 8) if r % 2 == 0 else (8, 2, 1)):
                    d = self._dir(f"scal-{ncpu}-{int(trace)}-{r}")
                    res = in_child(_run_scenario_sampled, throughput_scenario(ncpu, trace, seconds),
                                   f"bench-{ncpu}cpu", str(d), warmup)
                    runs.setdefault((trace, ncpu), []).append(res)
                    self._done(d)
        f = self.figures
        for trace in (False, True):
            sfx = "_traced" if trace else ""
            if (trace, 1) not in runs:
                for fid in FIGURE_IDS:
                    if fid.endswith("_traced") and self._group_of(fid) == "scaling":
                        f[fid] = figure(fid, [], note="not measured: --quick, or out of time (see details)")
                continue
            rate = {n: [x["rate"] for x in runs[(trace, n)]] for n in (1, 2, 8)}
            f["run_allocs_per_s_1cpu" + sfx] = figure("run_allocs_per_s_1cpu" + sfx, rate[1])
            f["run_allocs_per_s_2cpu" + sfx] = figure("run_allocs_per_s_2cpu" + sfx, rate[2])
            f["run_allocs_per_s_8cpu" + sfx] = figure("run_allocs_per_s_8cpu" + sfx, rate[8])
            f["scaling_2_vs_1" + sfx] = figure("scaling_2_vs_1" + sfx,
                                               [b / a for a, b in zip(rate[1], rate[2]) if a and b],
                                               note="per round: aggregate rate of 2 CPUs / rate of 1")
            f["oversubscription_8_vs_2" + sfx] = figure("oversubscription_8_vs_2" + sfx,
                                                        [c / b for b, c in zip(rate[2], rate[8]) if b and c],
                                                        note="per round: aggregate rate of 8 CPUs / rate of 2")
            if not trace:
                f["run_allocs_per_cpu_s_1cpu"] = figure(
                    "run_allocs_per_cpu_s_1cpu", [x["allocs"] / x["cpu_s"] for x in runs[(False, 1)] if x["cpu_s"]],
                    note="whole run: allocations / CPU seconds of the CPU worker")
        self.details["scaling"] = {
            f"{'traced' if t else 'untraced'}_{n}cpu": [
                {"rate": None if x["rate"] is None else round(x["rate"]), "elapsed_s": x["elapsed_s"],
                 "window_s": round(x["window_s"], 3), "cpu_s": round(x["cpu_s"], 2),
                 "allocs_per_cpu_s": round(x["allocs"] / x["cpu_s"]) if x["cpu_s"] else None,
                 "trace_records": x["trace"]["records"], "trace_lost": x["trace"]["lost"], "ended_by": x["ended_by"]}
                for x in v]
            for (t, n), v in sorted(runs.items())}
        if skipped:
            self.details["scaling"]["skipped"] = skipped

    # -- OOM kill latency ----------------------------------------------------------------------------------------
    def bench_oom(self):
        rounds = min(self.repeats, 2 if self.quick else 3)
        seconds = 0.5 if self.quick else 1.0
        per_round = []
        total, delivery, teardown = [], [], []
        unmatched = lost = 0
        for r in range(rounds):
            d = self._dir(f"oom-{r}")
            res = in_child(_oom_round, str(d), seconds, "5MiB")
            self._done(d)
            per_round.append(res)
            total += res["total"]
            delivery += res["delivery"]
            teardown += res["teardown"]
            unmatched += res["unmatched"]
            lost += res["lost"]
        f = self.figures
        f["oom_kill_latency_p50_ms"] = figure("oom_kill_latency_p50_ms", [_pct(x["total"], 50) for x in per_round],
                                              value=_pct(total, 50), note="value: p50 over all kills of all rounds")
        f["oom_kill_latency_p99_ms"] = figure("oom_kill_latency_p99_ms", [_pct(x["total"], 99) for x in per_round],
                                              value=_pct(total, 99), note="value: p99 over all kills of all rounds")
        f["oom_kill_delivery_p50_ms"] = figure("oom_kill_delivery_p50_ms",
                                               [_pct(x["delivery"], 50) for x in per_round], value=_pct(delivery, 50))
        f["oom_kill_teardown_p50_ms"] = figure("oom_kill_teardown_p50_ms",
                                               [_pct(x["teardown"], 50) for x in per_round], value=_pct(teardown, 50))
        f["oom_kills_measured"] = figure("oom_kills_measured", [len(x["total"]) for x in per_round],
                                         value=len(total))
        self.details["oom"] = {"kills_unmatched": unmatched, "trace_lost": lost,
                               "max_ms": max(total) if total else None,
                               "rounds": [{"kills": len(x["total"]), "verdict_ended_by": x["run"]["ended_by"],
                                           "elapsed_s": x["run"]["elapsed_s"]} for x in per_round]}

    # -- select_bad_process ---------------------------------------------------------------------------------------
    def bench_select(self):
        sizes = (1000, 10000, 100000)
        res = in_child(_select_bad_process, sizes, self.repeats, 100000)
        f = self.figures
        f["select_bad_process_ms_1k"] = figure("select_bad_process_ms_1k", res["1000"]["ms"])
        f["select_bad_process_ms_10k"] = figure("select_bad_process_ms_10k", res["10000"]["ms"])
        f["select_bad_process_ms_100k"] = figure("select_bad_process_ms_100k", res["100000"]["ms"])
        f["select_bad_process_ms_100k_traced"] = figure("select_bad_process_ms_100k_traced",
                                                        res["100000_traced"]["ms"])
        lost = res.pop("trace_lost")
        self.details["select"] = {k: v["chosen"] for k, v in res.items()}
        self.details["select"]["trace_lost"] = lost

    # -- boot and teardown -----------------------------------------------------------------------------------------
    def bench_boot(self):
        rounds = min(self.repeats, 2 if self.quick else 3)
        seconds = 0.3 if self.quick else None
        runs = []
        for r in range(rounds):
            d = self._dir(f"boot-{r}")
            runs.append(_boot_round(d, seconds))
            self._done(d)
        f = self.figures
        f["boot_to_first_alloc_s"] = figure("boot_to_first_alloc_s", [x["boot_to_first_alloc_s"] for x in runs],
                                            note="the supervisor polls every 20 ms")
        f["start_to_first_alloc_s"] = figure("start_to_first_alloc_s", [x["start_to_first_alloc_s"] for x in runs],
                                             note="from Popen to scenario.json's mtime, plus boot_to_first_alloc")
        f["teardown_s"] = figure("teardown_s", [x["teardown_s"] for x in runs])
        f["run_wall_s"] = figure("run_wall_s", [x["wall_s"] for x in runs],
                                 note=f"--seconds {seconds}" if seconds else "the whole default scenario")
        self.details["boot"] = [{"exit_code": x["exit_code"], "verdict": x["verdict"]} for x in runs]

    # -- shared memory -------------------------------------------------------------------------------------------
    def bench_shm(self):
        rounds = min(self.repeats, 2 if self.quick else 3)
        sizes = {}
        for _ in range(rounds):
            for gib in (1, 16, 64):
                sizes.setdefault(gib, []).append(in_child(_shm_footprint, gib, gib == 64))
        f = self.figures
        for gib, res in sizes.items():
            f[f"shm_mib_per_gib_{gib}"] = figure(f"shm_mib_per_gib_{gib}", [x["size"] / 2**20 / gib for x in res])
        f["boot_s_64gib"] = figure("boot_s_64gib", [x["boot_s"] for x in sizes[64]])
        one, big = sizes[1][0], sizes[64][0]
        self.details["shm"] = {
            "bytes": {str(g): s[0]["size"] for g, s in sizes.items()},
            "trace_ring_bytes": one["ring"],
            "marginal_mib_per_gib": round((big["size"] - one["size"]) / 2**20 / 63, 3),
            "bytes_per_page": round((big["size"] - one["size"]) / (big["nr_pages"] - one["nr_pages"]), 3)}


def run_bench(quick=False, repeats=None, only=None, keep=None, log=None):
    """Measure everything; returns the JSON-able document."""
    return Bench(quick=quick, repeats=repeats, only=only, keep=keep, log=log).run()


# --- presentation ------------------------------------------------------------------------------------------------

def _fmt(v, unit):
    if v is None:
        return "-"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "x":
        return f"{v:.2f}x"
    if not unit and float(v).is_integer():
        return f"{v:.0f}"
    a = abs(v)
    s = f"{v:.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"
    return f"{s} {unit}".strip()


def table_lines(doc):
    """The readable table: figure, value (median), spread, target, met."""
    rows = [("figure", "value", "spread (min..max)", "n", "target", "met")]
    for fid, e in doc["figures"].items():
        unit = e["unit"]
        spread = "-" if e["min"] is None or e["n"] < 2 else (
            f"{_fmt(e['min'], unit)}..{_fmt(e['max'], unit)} ({e['spread_pct']:.0f}%)")
        tgt = "-" if e["target"] is None else f"{e['target']['op']} {_fmt(e['target']['value'], unit)}"
        met = "-" if e["met"] is None else ("yes" if e["met"] else f"NO: {e['miss']}")
        if e.get("error"):
            met = "NOT MEASURED"
        rows.append((e["title"], _fmt(e["value"], unit), spread, str(e["n"]), tgt, met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(widths[j]) if j in (0, 2, 4, 5) else c.rjust(widths[j])
                             for j, c in enumerate(r)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    h = doc["host"]
    out.append("")
    out.append(f"{doc['date']}; {h['cpus']} cores; Python {h['python']}; repeats {doc['repeats']}"
               f"{' (quick)' if doc['quick'] else ''}; {doc['duration_s']:.1f}s; "
               f"load average {h['loadavg_before'][0]} before, {h['loadavg_after'][0]} after")
    missed = [e for e in doc["figures"].values() if e["met"] is False]
    met = [e for e in doc["figures"].values() if e["met"] is True]
    out.append(f"targets met: {len(met)}, missed: {len(missed)}")
    for group, err in doc["errors"].items():
        out.append(f"error in {group}: {err.strip().splitlines()[-1]}")
    return out
