"""Turn a loaded trace (oomemu/trace/reader.py) into Chrome trace-event JSON and into text lines.

`chrome_trace(trace)` builds the JSON Object Format that Perfetto and chrome://tracing open: process 0
("oomemu machine") holds one thread per trace row (tid = row: cpu0.., then kswapd0.. for rows >= nr_cpus).
Each row gets
  - duration slices ("B"/"E"), well nested per row:
      slowpath              slowpath_enter -> slowpath_exit (same pid, same row)
      direct reclaim        mm_vmscan_direct_reclaim_begin -> _end (same pid, same row)
      OOM critical section  oom_lock_try with acquired == 1 -> oom_lock_release of the same pid
      kswapd balance        mm_vmscan_kswapd_wake -> the row's next kswapd_sleep or next kswapd_wake
      sleep (<wait kind>)   sleep -> the first `wakeup` naming the pid, or the pid's next record (any row)
  - instant events ("i", scope "t") for the OOM-relevant point events (INSTANT_EVENTS).
Args: the record's named arguments (names from the trace header) and its `pid`; a slice adds "ended_by" (the
end record's event, "trace end", ...), the end record's arguments as "<end event>.<arg>", and "ended_by_pid"
when another task's record ended it (a waker).

Several tasks share a CPU row, so their slices can overlap without nesting (a task's sleep covers another
task's slowpath on the same CPU). Such a slice is cut where its enclosing slice ends and continued from
there ("split" / "continued" in its args): the output never has an "E" without its "B", or a crossing pair.
A slice still open when the trace ends is closed at the last timestamp ("ended_by": "trace end").
What could not be matched cleanly is counted in otherData["notes"].

`select`, `match_events` and `Formatter` serve `oomemu trace show`.
"""
import fnmatch
import heapq
import json
import os
import sys
from collections import Counter

import numpy as np

from oomemu.trace.events import WAIT_NAMES

PROCESS_NAME = "oomemu machine"
SLICE_SLOWPATH = "slowpath"
SLICE_RECLAIM = "direct reclaim"
SLICE_OOM = "OOM critical section"
SLICE_KSWAPD = "kswapd balance"
SLICE_SLEEP = "sleep"  # named "sleep (<wait kind>)"

# Outer first when two slices of one row begin and end at the same instant.
_RANK = {SLICE_KSWAPD: 0, SLICE_SLEEP: 1, SLICE_SLOWPATH: 2, SLICE_RECLAIM: 3, SLICE_OOM: 4}

INSTANT_EVENTS = ("oom_kill", "oom_kill_sharer", "mark_victim", "signal_generate", "signal_deliver", "panic",
                  "out_of_memory", "oom_scan_result", "sched_process_exit")

# Argument names whose value is a pid: `trace show --task P` also lists the records that name P this way.
PID_ARGS = frozenset({"pid", "victim_pid", "chosen_pid", "abort_pid", "parent_pid", "child_pid"})
# Shown in hex by `trace show` (as dmesg prints gfp_mask).
HEX_ARGS = frozenset({"gfp_flags"})


def event_args(header):
    """{event id: argument names} from the trace header."""
    return {e["id"]: tuple(e["args"]) for e in header["events"]}


def row_name(row, nr_cpus, names=None):
    """Track name of a trace row: the header's name for it (cpuN, kswapdN, oom_reaper), or cpuN / kswapdN."""
    if names and row < len(names):
        return names[row]
    return f"cpu{row}" if row < nr_cpus else f"kswapd{row - nr_cpus}"


def _us(ts_ns):
    return round(ts_ns / 1000, 3)


class _Slice:
    __slots__ = ("row", "start", "end", "name", "cat", "args", "rank")

    def __init__(self, row, start, end, name, cat, args, rank):
        self.row, self.start, self.end, self.name, self.cat, self.args, self.rank = (
            row, start, end, name, cat, args, rank)


class _Builder:
    """Matches begin/end records into slices; counts what could not be matched cleanly in `notes`."""

    def __init__(self, trace):
        self.trace = trace
        rec = trace.records
        self.ts = rec["ts"].tolist()
        self.ev = rec["event"].tolist()
        self.pid = rec["pid"].tolist()
        self.row = rec["cpu"].tolist()
        self.a = rec["a"]
        self.names = trace.event_name
        self.args = event_args(trace.header)
        self.end_ts = int(rec["ts"].max()) if len(rec) else 0
        self.slices = []
        self.notes = Counter()

    def named(self, i):
        """The named arguments of record i."""
        names = self.args.get(self.ev[i], ())
        return dict(zip(names, self.a[i, :len(names)].tolist()))

    def add(self, i, end_i, name, cat, ended_by, kind=None):
        """A slice from record i to record end_i (None: the end of the trace)."""
        args = {"pid": self.pid[i], **self.named(i)}
        if end_i is None:
            end = self.end_ts
            args["ended_by"] = ended_by or "trace end"
        else:
            end = self.ts[end_i]
            end_name = self.names.get(self.ev[end_i], f"event#{self.ev[end_i]}")
            args["ended_by"] = ended_by or end_name
            if self.pid[end_i] != self.pid[i]:
                args["ended_by_pid"] = self.pid[end_i]
            for k, v in self.named(end_i).items():
                args[f"{end_name}.{k}"] = v
        self.slices.append(_Slice(self.row[i], self.ts[i], end, name, cat, args, _RANK[kind or name]))

    def build(self):
        ids = self.trace.event_id
        want = [ids[n] for n in ("slowpath_enter", "slowpath_exit", "mm_vmscan_direct_reclaim_begin",
                                 "mm_vmscan_direct_reclaim_end", "oom_lock_try", "oom_lock_release",
                                 "mm_vmscan_kswapd_wake", "mm_vmscan_kswapd_sleep") if n in ids]
        idx = np.flatnonzero(np.isin(self.trace.records["event"], want)).tolist()
        pairs = {  # begin event -> (end event, slice name, category)
            "slowpath_enter": ("slowpath_exit", SLICE_SLOWPATH, "page_alloc"),
            "mm_vmscan_direct_reclaim_begin": ("mm_vmscan_direct_reclaim_end", SLICE_RECLAIM, "vmscan"),
        }
        ends = {end: begin for begin, (end, _, _) in pairs.items()}
        open_pair = {}   # (begin name, row, pid) -> stack of record indices
        open_oom = {}    # pid -> record index of its acquiring oom_lock_try
        open_kswapd = {}  # row -> record index of its kswapd_wake
        for i in idx:
            name = self.names[self.ev[i]]
            row, pid = self.row[i], self.pid[i]
            if name in pairs:
                open_pair.setdefault((name, row, pid), []).append(i)
            elif name in ends:
                stack = open_pair.get((ends[name], row, pid))
                if stack:
                    begin = stack.pop()
                    _, sname, cat = pairs[ends[name]]
                    self.add(begin, i, sname, cat, None)
                else:
                    self.notes[f"{name} without {ends[name]}"] += 1
            elif name == "oom_lock_try":
                if self.a[i, 0] != 1:
                    continue
                if pid in open_oom:
                    self.notes["oom_lock_try acquired while the same pid held the lock"] += 1
                    self.add(open_oom.pop(pid), i, SLICE_OOM, "oom", "re-acquired")
                open_oom[pid] = i
            elif name == "oom_lock_release":
                if pid in open_oom:
                    self.add(open_oom.pop(pid), i, SLICE_OOM, "oom", None)
                else:
                    self.notes["oom_lock_release without an acquiring oom_lock_try of that pid"] += 1
            elif name == "mm_vmscan_kswapd_wake":
                if row in open_kswapd:
                    self.notes["kswapd balance ended by the next kswapd_wake (no kswapd_sleep)"] += 1
                    self.add(open_kswapd.pop(row), i, SLICE_KSWAPD, "vmscan", "next mm_vmscan_kswapd_wake")
                open_kswapd[row] = i
            elif name == "mm_vmscan_kswapd_sleep":
                if row in open_kswapd:
                    self.add(open_kswapd.pop(row), i, SLICE_KSWAPD, "vmscan", None)
                else:
                    self.notes["mm_vmscan_kswapd_sleep without kswapd_wake"] += 1
        for (begin, _, _), stack in open_pair.items():
            _, sname, cat = pairs[begin]
            for i in stack:
                self.notes[f"{sname} still open at trace end"] += 1
                self.add(i, None, sname, cat, None)
        for i in open_oom.values():
            self.notes[f"{SLICE_OOM} still open at trace end"] += 1
            self.add(i, None, SLICE_OOM, "oom", None)
        for i in open_kswapd.values():
            self.notes[f"{SLICE_KSWAPD} still open at trace end"] += 1
            self.add(i, None, SLICE_KSWAPD, "vmscan", None)
        self.build_sleeps()
        return self.slices

    def build_sleeps(self):
        """sleep -> the first wakeup naming the pid, else the pid's next record on any row, else trace end."""
        ids = self.trace.event_id
        if "sleep" not in ids:
            return
        rec = self.trace.records
        pids = rec["pid"]
        sleeps = np.flatnonzero(rec["event"] == ids["sleep"]).tolist()
        if "wakeup" in ids:
            wk = np.flatnonzero(rec["event"] == ids["wakeup"])
            wk_target = rec["a"][wk, 0]
        else:
            wk, wk_target = np.empty(0, np.int64), np.empty(0, np.int64)
        own, woken = {}, {}
        for i in sleeps:
            p = self.pid[i]
            if p not in own:
                own[p] = np.flatnonzero(pids == p)
                woken[p] = wk[wk_target == p]
            nxt = own[p][np.searchsorted(own[p], i, side="right"):][:1]
            wak = woken[p][np.searchsorted(woken[p], i, side="right"):][:1]
            kind = self.named(i).get("wait_kind", 0)
            wait = WAIT_NAMES[kind] if 0 <= kind < len(WAIT_NAMES) else f"wait kind {kind}"
            name = f"{SLICE_SLEEP} ({wait})"
            if len(wak) and (not len(nxt) or wak[0] <= nxt[0]):
                self.add(i, int(wak[0]), name, "sched", "wakeup", kind=SLICE_SLEEP)
            elif len(nxt):
                j = int(nxt[0])
                end_name = self.names.get(self.ev[j], f"event#{self.ev[j]}")
                self.notes[f"sleep ({wait}) with no wakeup record: ended at the pid's next record"] += 1
                self.add(i, j, name, "sched", f"next record of the pid ({end_name})", kind=SLICE_SLEEP)
            else:
                self.notes[f"sleep ({wait}) with no wakeup record: still open at trace end"] += 1
                self.add(i, None, name, "sched", None, kind=SLICE_SLEEP)


def _nest(slices, notes):
    """B/E events for one row's slices, well nested: a slice crossing its enclosing slice's end is cut there
    and continued after it."""
    heap = [(s.start, -s.end, s.rank, n, s) for n, s in enumerate(slices)]
    heapq.heapify(heap)
    counter = len(heap)
    stack, out = [], []

    def close(s):
        out.append({"name": s.name, "cat": s.cat, "ph": "E", "ts": _us(s.end), "pid": 0, "tid": s.row})

    while heap:
        start, _, _, _, s = heapq.heappop(heap)
        while stack and stack[-1].end <= start:
            close(stack.pop())
        if stack and s.end > stack[-1].end:
            parent = stack[-1]
            cut = parent.end
            rest = _Slice(s.row, cut, s.end, s.name, s.cat, {**s.args, "continued": True}, s.rank)
            heapq.heappush(heap, (rest.start, -rest.end, rest.rank, counter, rest))
            counter += 1
            s = _Slice(s.row, s.start, cut, s.name, s.cat,
                       {**s.args, "split": f"cut at the end of {parent.name} (pid {parent.args['pid']})"}, s.rank)
            notes[f"{s.name.split(' (')[0]} split: crossed the end of an enclosing "
                  f"{parent.name.split(' (')[0]} of another pid on the same row"] += 1
        stack.append(s)
        out.append({"name": s.name, "cat": s.cat, "ph": "B", "ts": _us(s.start), "pid": 0, "tid": s.row,
                    "args": s.args})
    while stack:
        close(stack.pop())
    return out


def chrome_trace(trace, source=None):
    """The Chrome trace-event JSON object (a dict) for a loaded Trace."""
    header = trace.header
    nr_cpus = int(header.get("nr_cpus", 0))
    nr_nodes = int(header.get("nr_nodes", 0))
    rec = trace.records
    rows = set(range(nr_cpus + nr_nodes)) | set(np.unique(rec["cpu"]).tolist())

    events = [{"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": PROCESS_NAME}}]
    for row in sorted(rows):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": row,
                       "args": {"name": row_name(row, nr_cpus, header.get("rows"))}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": row, "args": {"sort_index": row}})

    builder = _Builder(trace)
    slices = builder.build()
    notes = builder.notes
    by_row = {}
    for s in slices:
        by_row.setdefault(s.row, []).append(s)
    timed = []
    for row in sorted(by_row):
        timed.extend(_nest(by_row[row], notes))

    ids = trace.event_id
    systems = {e["id"]: e.get("system", "") for e in header["events"]}
    want = [ids[n] for n in INSTANT_EVENTS if n in ids]
    for i in np.flatnonzero(np.isin(rec["event"], want)).tolist():
        ev = int(rec["event"][i])
        timed.append({"name": trace.event_name[ev], "cat": systems.get(ev, ""), "ph": "i", "s": "t",
                      "ts": _us(int(rec["ts"][i])), "pid": 0, "tid": int(rec["cpu"][i]),
                      "args": {"pid": int(rec["pid"][i]), **builder.named(i)}})
    timed.sort(key=lambda e: e["ts"])  # stable: a row's B/E order at equal timestamps is kept
    events.extend(timed)

    counts = Counter(s.name for s in slices)
    other = {
        "generator": "oomemu trace export",
        "scenario": header.get("scenario", ""),
        "nr_cpus": nr_cpus,
        "nr_nodes": nr_nodes,
        "hz": header.get("hz", 0),
        "records": int(len(rec)),
        "lost": int(trace.lost),
        "complete": bool(trace.complete),
        "slices": dict(sorted(counts.items())),
        "notes": dict(sorted(notes.items())),
    }
    if source is not None:
        other["run_dir"] = str(source)
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def write_chrome_trace(trace, out, source=None):
    """Write the Chrome JSON to path `out` (atomically) or, for "-", to stdout. Returns the dict written."""
    doc = chrome_trace(trace, source)
    if str(out) == "-":
        json.dump(doc, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
        sys.stdout.flush()
        return doc
    tmp = f"{out}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return doc


# --- trace show --------------------------------------------------------------------------------------------

def match_events(trace, patterns):
    """Event ids matching names or glob patterns; raises KeyError(pattern) for one that matches nothing."""
    names = list(trace.event_id)
    out = set()
    for pat in patterns:
        hits = fnmatch.filter(names, pat)
        if not hits:
            raise KeyError(pat)
        out.update(trace.event_id[h] for h in hits)
    return out


def select(trace, pid=None, event_ids=None):
    """Indices of the records to show: of task `pid` (its own records and those naming it in a pid argument),
    restricted to `event_ids` if given."""
    rec = trace.records
    mask = np.ones(len(rec), dtype=bool)
    if event_ids is not None:
        mask &= np.isin(rec["event"], list(event_ids))
    if pid is not None:
        about = rec["pid"] == pid
        for e in trace.header["events"]:
            for k, name in enumerate(e["args"]):
                if name in PID_ARGS:
                    about |= (rec["event"] == e["id"]) & (rec["a"][:, k] == pid)
        mask &= about
    return np.flatnonzero(mask)


class Formatter:
    """Formats records as `[   1.234567] cpu1 pid 42 oom_kill victim_pid=5 points=573 ...`."""

    def __init__(self, trace):
        self.trace = trace
        self.args = event_args(trace.header)
        self.nr_cpus = int(trace.header.get("nr_cpus", 0))

    def lines(self, idx):
        """The text lines of the records at indices `idx` (in that order)."""
        rec = self.trace.records[idx]
        names, args, nr_cpus = self.trace.event_name, self.args, self.nr_cpus
        rows = {}
        for ts, seq, ev, pid, row, a in zip(rec["ts"].tolist(), rec["seq"].tolist(), rec["event"].tolist(),
                                            rec["pid"].tolist(), rec["cpu"].tolist(), rec["a"].tolist()):
            if row not in rows:
                rows[row] = row_name(row, nr_cpus, self.trace.header.get("rows"))
            parts = [f"[{ts / 1e9:12.6f}] {rows[row]} pid {pid} {names.get(ev, f'event#{ev}')}"]
            for k, arg in enumerate(args.get(ev, ())):
                parts.append(f"{arg}={a[k]:#x}" if arg in HEX_ARGS else f"{arg}={a[k]}")
            if seq:
                parts.append(f"seq={seq}")
            yield " ".join(parts)

    def __call__(self, i):
        return next(self.lines([i]))
