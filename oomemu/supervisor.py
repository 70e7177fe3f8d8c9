"""The supervisor: boot the machine, fork the CPU and kswapd processes, watch them, and tear everything down.

Every exit path (the run ends, a deadline, a panic, Ctrl-C, a worker that dies) goes through one `finally`
that stops the workers, waits for them, kills stragglers and closes the segment's file descriptors. The
segment is an anonymous shared mapping, so it disappears with the last process that maps it.
"""
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import psutil

from oomemu import sync
from oomemu.boot import create_machine
from oomemu.config.profiles import enabled
from oomemu.config import scenario_to_dict
from oomemu.kernel import time as ktime
from oomemu.machine import C_PAUSED, G_GO, G_NR_USER_LIVE, G_PANIC, G_PAUSE, G_STOP
from oomemu.trace import ring
from oomemu.trace.events import CATALOGUE

WORKERS = {"cpu": "workers.cpu:main", "kswapd": "workers.kswapd:main", "oom_reaper": "workers.oom_reaper:main"}
POLL_S = 0.02
SNAPSHOT_S = 0.5      # a quiescent page-conservation snapshot this often
STOP_GRACE_S = 3.0
TRACE_FORMAT = "oomemu-trace"
TRACE_VERSION = 1

log = logging.getLogger("oomemu")


@dataclass
class Outcome:
    """How the run ended, as the supervisor saw it."""

    reason: str = "deadline"            # deadline | all-exited | panic | stall | worker-died | interrupted
    #                                     | emulator-failure (a controlled run's deadlock, divergence, wall limit)
    error: str | None = None
    elapsed: float = 0.0
    worker_pids: dict = field(default_factory=dict)
    worker_cpu_seconds: dict = field(default_factory=dict)
    trace_records: int = 0
    trace_lost: int = 0
    boot_to_first_alloc_s: float | None = None
    teardown_s: float = 0.0
    snapshots: list = field(default_factory=list)   # conservation problems found at each quiescent snapshot
    schedule: dict | None = None        # controlled modes: the controller's summary and the (row, steps) log


def _resolve(spec):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class _ErrorCollector(logging.Handler):
    """Keeps the workers' error records so the run's failure message can quote them."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage().splitlines()[0])


def make_run_dir(scenario, out=None):
    """runs/<time>-<scenario>/ (or `out`), created empty."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{stamp}-{scenario.name}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = Path(f"{base}-{n}")
    else:
        path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


class TraceFile:
    """trace.msgpack: a header map, then one map per drained batch of one CPU's ring (see README)."""

    def __init__(self, path, m, scenario):
        self.f = open(path, "wb")
        self.packer = msgpack.Packer()
        self.records = 0
        header = {"format": TRACE_FORMAT, "version": TRACE_VERSION, "scenario": scenario.name,
                  "nr_cpus": m.nr_cpus, "nr_nodes": m.nr_nodes, "hz": scenario.machine.hz,
                  "kernel": scenario.machine.kernel, "features": enabled(scenario.features),
                  "rows": [m.row_name(row) for row in range(m.nr_rows_cpu)],
                  "fields": list(ring.FIELDS),
                  "events": [{"id": i, "name": n, "system": s, "args": list(a)}
                             for i, (n, s, a) in enumerate(CATALOGUE)]}
        self.f.write(self.packer.pack(header))

    def drain(self, m):
        for row in range(m.nr_rows_cpu):
            recs = ring.drain_ring(m, row)
            if len(recs):
                self.f.write(ring.pack_batch(row, recs))
                self.records += len(recs)

    def close(self, m):
        lost = int(m.ring_head[:, ring.H_LOST].sum())
        self.f.write(self.packer.pack({"end": True, "records": self.records, "lost": lost}))
        self.f.close()
        return lost


def run_scenario(scenario, run_dir, progress=None, replay=None):
    """Run `scenario` once in `run_dir`; returns (machine, Outcome). The machine is quiescent afterwards.

    `replay`: the (row, steps) schedule a `replay` run follows (controlled modes, oomemu/control.py)."""
    (run_dir / "scenario.json").write_text(_json(scenario_to_dict(scenario)))
    t_boot = time.monotonic()
    m = create_machine(scenario, replay=replay)
    dmesg_fd = os.open(run_dir / "dmesg.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    trace = TraceFile(run_dir / "trace.msgpack", m, scenario) if scenario.run.trace else None
    errors = _ErrorCollector()
    outcome = Outcome()
    procs = []
    restore = _install_logging(run_dir, errors)
    try:
        procs = _start_workers(m, scenario, dmesg_fd)
        outcome.worker_pids = {p.name: p.pid for p in procs}
        m.glob[G_GO] = 1
        if m.controlled:
            from oomemu import control
            control.start(m)
        watch = _watch_controlled if m.controlled else _watch
        watch(m, scenario, procs, trace, outcome, errors, progress, t_boot)
    except KeyboardInterrupt:
        outcome.reason = "interrupted"
    finally:
        t_stop = time.monotonic()
        outcome.worker_cpu_seconds = _cpu_seconds(procs)
        _stop_workers(m, procs)
        outcome.teardown_s = time.monotonic() - t_stop
        if trace is not None:
            trace.drain(m)
            outcome.trace_records = trace.records
            outcome.trace_lost = trace.close(m)
        os.close(dmesg_fd)
        restore()
        if m.controlled:
            outcome.schedule = _schedule_of(m)
        from oomemu.check.state import save_state
        save_state(m, run_dir / "machine.npz")
        m.close()
    if errors.messages and outcome.reason != "worker-died":
        outcome.reason, outcome.error = "worker-died", errors.messages[0]
    return m, outcome


def _json(doc):
    import json
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def _install_logging(run_dir, errors):
    """Workers' log records reach the supervisor (multiprocessing-logging) and land in oomemu.log."""
    import multiprocessing_logging
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    file_handler = logging.FileHandler(run_dir / "oomemu.log", mode="w")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(levelname)s %(message)s"))
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(file_handler)
    root.addHandler(errors)
    root.setLevel(logging.INFO)
    multiprocessing_logging.install_mp_handler(root)

    def restore():
        for h in list(root.handlers):
            root.removeHandler(h)
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing a log handler must not mask the run's result
                pass
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    return restore


# glibc mallopt() parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def retain_freed_heap():
    """Make this process keep the memory numpy's temporaries free, instead of handing it back to the OS.

    A vectorised scan over 100k tasks makes a dozen 800 KB temporaries; with glibc's defaults each is a fresh
    mmap (or trimmed heap) and page-faults in again on every scan, which costs more than the arithmetic. Called
    by every worker and benchmark child at start; does nothing where malloc is not glibc's.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)    # glibc's largest: blocks up to 32 MiB come from the heap
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)   # and freed heap stays mapped up to 256 MiB
    except (OSError, AttributeError):
        pass


def _start_workers(m, scenario, dmesg_fd):
    ctx = multiprocessing.get_context("fork")
    sys.stdout.flush()
    sys.stderr.flush()
    procs = []
    for row in range(m.nr_rows_cpu):
        name = m.row_name(row)
        kind = "cpu" if row < m.nr_cpus else "oom_reaper" if row == m.oom_reaper_row else "kswapd"
        p = ctx.Process(target=_resolve(WORKERS[kind]), args=(m, scenario, row, dmesg_fd), name=name, daemon=True)
        p.start()
        procs.append(p)
    return procs


def _watch(m, scenario, procs, trace, outcome, errors, progress, t_boot):
    """Poll until the run ends; fill `outcome`."""
    start = time.monotonic()
    deadline = start + scenario.run.seconds
    next_snapshot = start + SNAPSHOT_S
    stall = _StallWatch(m, scenario.run.stall_jiffies)
    sentinels = {p.sentinel: p for p in procs}
    from multiprocessing.connection import wait
    while True:
        ready = wait(list(sentinels), timeout=POLL_S)
        now = time.monotonic()
        outcome.elapsed = now - start
        if outcome.boot_to_first_alloc_s is None and _allocs(m) > 0:
            outcome.boot_to_first_alloc_s = now - t_boot
        if trace is not None:
            trace.drain(m)
        if ready and not m.glob[G_STOP]:
            dead = sentinels[ready[0]]
            dead.join(0.1)
            outcome.reason = "worker-died"
            outcome.error = describe_dead_worker(m, dead, errors)
            return
        if m.glob[G_PANIC]:
            outcome.reason = "panic"
            return
        if m.glob[G_NR_USER_LIVE] <= 1:
            outcome.reason = "all-exited"
            return
        if now >= deadline:
            outcome.reason = "deadline"
            return
        if stall.stalled():
            outcome.reason = "stall"
            return
        if now >= next_snapshot:
            take_snapshot(m, procs, outcome)
            next_snapshot = time.monotonic() + SNAPSHOT_S
        if progress is not None:
            progress(m, outcome)


def _watch_controlled(m, scenario, procs, trace, outcome, errors, progress, t_boot):
    """The supervisor's part in a controlled mode: the controller decides everything at scheduling points;
    the supervisor only drains rings, takes the snapshots the controller parks the machine for, and guards the
    wall clock (DESIGN §8)."""
    from multiprocessing.connection import wait

    from oomemu import control
    c = m.v_ctl
    start = time.monotonic()
    wall_limit = start + scenario.run.wall_seconds
    sentinels = {p.sentinel: p for p in procs}
    while True:
        ready = wait(list(sentinels), timeout=POLL_S)
        outcome.elapsed = c[control.CT_VNOW] / 1e9
        if outcome.boot_to_first_alloc_s is None and _allocs(m) > 0:
            outcome.boot_to_first_alloc_s = time.monotonic() - t_boot
        if trace is not None:
            trace.drain(m)
        if c[control.CT_PARK_READY] == 1:
            from oomemu.check.conservation import check_page_conservation
            outcome.snapshots.append(check_page_conservation(m))
            c[control.CT_PARK_READY] = 2
            os.eventfd_write(m.tokens[c[control.CT_HOLDER]], 1)
        if m.glob[G_STOP]:
            end = control.END_REASONS.get(c[control.CT_END], "deadline")
            if end in ("deadlock", "diverged"):
                outcome.reason = "emulator-failure"
                outcome.error = f"controlled run: {control.read_note(m)}"
            else:
                outcome.reason = end
            return
        if ready:
            dead = sentinels[ready[0]]
            dead.join(0.1)
            outcome.reason = "worker-died"
            outcome.error = describe_dead_worker(m, dead, errors)
            return
        if time.monotonic() > wall_limit:
            outcome.reason = "emulator-failure"
            outcome.error = (f"controlled run passed its wall-clock safety limit of {scenario.run.wall_seconds:g}s "
                             f"at step {c[control.CT_STEP]} ({c[control.CT_VNOW] / 1e9:.3f}s virtual); rows: "
                             + ", ".join(f"{r['row']} {r['status']} at {r['point']}" for r in control.row_states(m)))
            return
        if progress is not None:
            progress(m, outcome)


def _schedule_of(m):
    from oomemu import control
    return {**control.summary(m), "log": control.schedule_log(m)}


class _StallWatch:
    """No page freed, no kill and no allocation for `limit` jiffies while allocators keep looping (slowpath
    entries, direct reclaims or OOM-lock back-offs still counting up)."""

    def __init__(self, m, limit):
        self.m, self.limit = m, limit
        self.marker = None
        self.since = 0
        self.looping_at_marker = 0

    def stalled(self):
        if not self.limit:
            return False
        from oomemu.machine import G_LAST_FREE_JIFFY, G_LAST_KILL_JIFFY
        from oomemu.mm import vmstat
        m = self.m
        marker = (int(m.glob[G_LAST_FREE_JIFFY]), int(m.glob[G_LAST_KILL_JIFFY]), int(m.cpu[:, vmstat.NR_ALLOCS].sum()))
        looping = int(m.cpu[:, [vmstat.NR_SLOWPATH_ENTRIES, vmstat.NR_DIRECT_RECLAIMS, vmstat.NR_OOM_LOCK_BUSY]].sum())
        now = ktime.jiffies(m)
        if marker != self.marker:
            self.marker, self.since, self.looping_at_marker = marker, now, looping
            return False
        return now - self.since >= self.limit and looping > self.looping_at_marker


def take_snapshot(m, procs, outcome, timeout=1.0):
    """Park every worker at a quiescent point, check page conservation, release them. Skipped (not failed)
    if a worker does not park in time."""
    from oomemu.check.conservation import check_page_conservation
    m.glob[G_PAUSE] = 1
    try:
        for row in range(m.nr_cpus):
            sync.ring_doorbell(m, row)
        deadline = time.monotonic() + timeout
        live = [row for row, p in enumerate(procs) if p.is_alive()]
        while not all(m.cpu[row, C_PAUSED] for row in live):
            if time.monotonic() > deadline or m.glob[G_STOP]:
                return
            time.sleep(0.0005)
        outcome.snapshots.append(check_page_conservation(m))
    finally:
        m.glob[G_PAUSE] = 0


def _allocs(m):
    from oomemu.mm import vmstat
    return int(m.cpu[:, vmstat.NR_ALLOCS].sum())


def describe_dead_worker(m, proc, errors):
    """One line: which worker died, how, and which locks it held."""
    code = proc.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with {code}"
    held = sync.locks_held_by(m, proc.pid)
    line = f"{proc.name} (pid {proc.pid}) {how}"
    if held:
        line += "; it held " + ", ".join(held)
    if errors.messages:
        line += f": {errors.messages[0]}"
    return line


def _cpu_seconds(procs):
    out = {}
    for p in procs:
        try:
            t = psutil.Process(p.pid).cpu_times()
            out[p.name] = round(t.user + t.system, 3)
        except (psutil.Error, ValueError, TypeError):
            pass  # already gone
    return out


def _stop_workers(m, procs):
    """Stop every worker: ask (G_STOP + doorbells), wait, then kill what is left."""
    m.glob[G_STOP] = 1
    for row in range(m.nr_rows_cpu):
        sync.ring_doorbell(m, row)
    if m.controlled:
        from oomemu import control
        control.release_all(m)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(1.0)

