"""The supervisor: boot the machine, fork the CPU and kswapd processes, watch them, and tear everything down.

One exit path. Whatever ends a run (its deadline, every task gone, a panic, a stall, a worker that dies, a
full disk, SIGINT/SIGTERM/SIGHUP at any moment) the supervisor leaves `_watch` with `Outcome.reason` saying
why and runs the same teardown: stop the workers (ask, wait, kill), drain the rings, close the trace with its
end marker, close dmesg, save the machine state. Each teardown step catches its own environment errors, so a
full disk loses the step that failed and nothing after it. Signals never raise inside this part of a run: the
CLI's SignalGuard records them and `_watch` (and the check, and the teardown) polls it. The segment is an
anonymous shared mapping, so it disappears with the last process that maps it.

Workers log into oomemu.log through an O_APPEND descriptor (workers/_common.py): a dead worker's reason is
read from that file the moment its sentinel fires.
"""
import ctypes
import fcntl
import importlib
import logging
import multiprocessing
import os
import shutil
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
from oomemu.errors import RunDirError, describe_os_error
from oomemu.kernel import time as ktime
from oomemu.machine import (C_CURRENT, C_EXIT, C_HEARTBEAT, C_PAUSED, C_PID, G_BOOT_NS, G_GO, G_NR_USER_LIVE,
                            G_PANIC, G_PAUSE, G_STOP)
from oomemu.trace import ring
from oomemu.trace.events import CATALOGUE, WAIT_NAMES

WORKERS = {"cpu": "workers.cpu:main", "kswapd": "workers.kswapd:main", "oom_reaper": "workers.oom_reaper:main"}
POLL_S = 0.02
SNAPSHOT_S = 0.5      # a quiescent page-conservation snapshot this often
SNAPSHOT_PARK_S = 1.0
STOP_GRACE_S = 3.0
TRACE_FORMAT = "oomemu-trace"
TRACE_VERSION = 1
TRACE_DISK_RESERVE = 16 << 20     # the trace stops this far short of filling the run directory's disk
TRACE_MIN_ROOM = 4 << 20          # less room than this for the trace: the run is refused before it starts
LOCK_NAME = ".oomemu.lock"
RUN_FILES = ("scenario.json", "report.json", "trace.msgpack", "machine.npz", "dmesg.log", "oomemu.log")
FLOOR_END = (1 << 63) - 1

log = logging.getLogger("oomemu")


@dataclass
class Outcome:
    """How the run ended, as the supervisor saw it."""

    reason: str = "deadline"   # deadline | all-exited | panic | stall | trace-limit | worker-died | interrupted
    #                            | environment-error | emulator-failure (a controlled run's deadlock,
    #                            divergence, wall limit)
    error: str | None = None
    elapsed: float = 0.0
    worker_pids: dict = field(default_factory=dict)
    worker_cpu_seconds: dict = field(default_factory=dict)
    trace_records: int = 0
    trace_lost: int = 0
    trace_bytes: int = 0
    trace_limit: int = 0
    trace_limit_why: str = ""
    trace_ok: bool = True            # False: the trace file could not be written completely
    boot_to_first_alloc_s: float | None = None
    teardown_s: float = 0.0
    snapshots: list = field(default_factory=list)   # conservation problems found at each quiescent snapshot
    snapshot_skips: list = field(default_factory=list)  # why a snapshot could not be taken
    memcg_snapshots: list = field(default_factory=list)  # memcg-usage problems found at each quiescent snapshot
    schedule: dict | None = None     # controlled modes: the controller's summary and the (row, steps) log
    signal: str | None = None        # the signal that interrupted the run (SIGINT, SIGTERM, SIGHUP)
    during: str | None = None        # what the run was doing when it came: boot, run, teardown, check, report
    stalls: list = field(default_factory=list)      # emulator-stall findings of the watchdog
    hung_tasks: list = field(default_factory=list)  # hung-task reports (also in dmesg)
    env_errors: list = field(default_factory=list)  # environment errors met in the teardown
    warnings: list = field(default_factory=list)
    booted: bool = False


def _resolve(spec):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# --- run directories -----------------------------------------------------------------------------------------

class RunDir:
    """A run directory owned by this process: created (or emptied with `force`), and locked with flock() on
    LOCK_NAME for as long as the run lasts, so a second run into the same directory is refused at once.
    The lock dies with the process however it ends; the (empty) lock file stays."""

    def __init__(self, path, fd):
        self.path = path
        self._fd = fd

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def default_run_dir(scenario):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{scenario.name}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def claim_run_dir(path, force=False):
    """Create `path` (or reuse it if empty, or empty it with `force`) and lock it; a RunDirError (exit 2) names
    what is wrong with it otherwise."""
    path = Path(path)
    if not str(path):
        raise RunDirError("--out is empty: name a directory")
    try:
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out {path}: exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except RunDirError:
        raise
    except OSError as exc:
        raise RunDirError(f"--out {path}: cannot use it as a run directory: "
                          f"{describe_os_error(exc, exc.filename2 or exc.filename or str(path))}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise RunDirError(f"--out {path}: another oomemu run{holder} is using this directory") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _empty_run_dir(path, force)
    except RunDirError:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise RunDirError(f"--out {path}: cannot use it as a run directory: {describe_os_error(exc)}") from None
    return RunDir(path, fd)


def _lock_holder(fd):
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip() or 0)
        return f" (pid {pid})" if pid else ""
    except (OSError, ValueError):
        return ""


def _empty_run_dir(path, force):
    entries = sorted(e for e in os.listdir(path) if e != LOCK_NAME)
    if not entries:
        return
    if not force:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise RunDirError(f"--out {path}: not empty (holds {shown}); use --force to replace it")
    if not looks_like_run_dir(path):
        raise RunDirError(f"--out {path}: --force only replaces an oomemu run directory, and this one holds "
                          f"none of {', '.join(RUN_FILES[:3])}")
    for name in entries:
        p = path / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def looks_like_run_dir(path):
    """A run directory, or a --repeat batch directory of them."""
    path = Path(path)
    if any((path / name).exists() for name in RUN_FILES):
        return True
    return any((path / "run000" / name).exists() for name in RUN_FILES)


def make_run_dir(scenario, out=None, force=False):
    """runs/<time>-<scenario>/ (or `out`), created empty and locked; returns the RunDir."""
    return claim_run_dir(default_run_dir(scenario) if out is None else out, force=force)


def trace_limit_for(run_dir, scenario):
    """The most bytes trace.msgpack may take, decided before the run: run.trace_limit, or less if the run
    directory's file system has less room (minus a reserve). Returns (bytes, why)."""
    cap = getattr(scenario.run, "trace_limit", 4 << 30)
    why = f"run.trace_limit = {cap >> 20} MiB"
    try:
        room = shutil.disk_usage(run_dir).free - TRACE_DISK_RESERVE
    except OSError:
        room = cap
    if room < cap:
        cap, why = max(0, room), f"the free space on {run_dir}'s file system ({max(0, room) >> 20} MiB after a " \
                                  f"{TRACE_DISK_RESERVE >> 20} MiB reserve)"
    return cap, why


class TraceFile:
    """trace.msgpack: a header map, then one map per drained batch of one CPU's ring, `{"floor": NS}` maps, and
    the end marker (see README). A floor says every record with ts_ns < NS is already in the file: it lets a
    reader merge the rows into time order in a bounded window (oomemu/trace/reader.py)."""

    def __init__(self, path, m, scenario, limit=None):
        self.path = path
        self.f = open(path, "wb", buffering=1 << 20)
        self.packer = msgpack.Packer()
        self.records = 0
        self.bytes = 0
        self.limit = limit
        self.floor = -1
        self.broken = None          # an OSError's one-line description once writing failed
        self.boot = int(m.glob[G_BOOT_NS])
        self.last_ts = [0] * m.nr_rows_cpu
        self.last_batches = []
        header = {"format": TRACE_FORMAT, "version": TRACE_VERSION, "scenario": scenario.name,
                  "nr_cpus": m.nr_cpus, "nr_nodes": m.nr_nodes, "hz": scenario.machine.hz,
                  "kernel": scenario.machine.kernel, "features": enabled(scenario.features),
                  "rows": [m.row_name(row) for row in range(m.nr_rows_cpu)],
                  "fields": list(ring.FIELDS),
                  "events": [{"id": i, "name": n, "system": s, "args": list(a)}
                             for i, (n, s, a) in enumerate(CATALOGUE)]}
        self._write(self.packer.pack(header))

    def _write(self, data):
        self.f.write(data)
        self.bytes += len(data)

    def full(self):
        return self.limit is not None and self.bytes >= self.limit

    def drain(self, m):
        """Copy every ring's new records into the file, then a floor. Raises OSError (the file is then broken)."""
        if self.broken:
            for row in range(m.nr_rows_cpu):
                ring.drain_ring(m, row)
            return
        self.last_batches = []
        try:
            floor = FLOOR_END
            for row in range(m.nr_rows_cpu):
                beat = int(m.cpu[row, C_HEARTBEAT])       # read before the ring: see row_trace_floor
                recs = ring.drain_ring(m, row)
                if len(recs):
                    self.last_batches.append(recs)
                    self._write(ring.pack_batch(row, recs))
                    self.records += len(recs)
                    self.last_ts[row] = int(recs["ts"][-1])
                floor = min(floor, row_trace_floor(m, row, beat, self.boot, self.last_ts[row]))
            if floor > self.floor and floor != FLOOR_END:
                self._write(self.packer.pack({"floor": floor}))
                self.floor = floor
        except OSError as exc:
            self.broken = describe_os_error(exc, str(self.path))
            raise

    def close(self, m):
        lost = int(m.ring_head[:, ring.H_LOST].sum())
        if self.broken:
            try:
                self.f.close()
            except OSError:
                pass
            return lost
        try:
            self._write(self.packer.pack({"end": True, "records": self.records, "lost": lost}))
            self.f.close()
        except OSError as exc:
            self.broken = describe_os_error(exc, str(self.path))
            try:
                self.f.close()
            except OSError:
                pass
            raise
        return lost


def row_trace_floor(m, row, beat, boot, last_ts):
    """A lower bound on the ts_ns of any record row `row` has yet to write, given `beat`, its heartbeat read
    just before its ring was drained.

    A worker writes its heartbeat (CLOCK_MONOTONIC) at the top of its loop, where none of its records is half
    written, and every record it writes later is stamped after that; so once the ring is drained after
    reading the heartbeat, every record of the row stamped before it is in the file. A row that left its
    loop writes nothing more. Free mode only: a schedule whose clock is not CLOCK_MONOTONIC must return its
    own bound here (or 0, which keeps the reader's merge exact at the cost of its bounded window).
    """
    if m.cpu[row, C_EXIT]:
        return FLOOR_END
    bound = beat - boot if beat > boot else 0
    return max(bound, last_ts)


def run_scenario(scenario, run_dir, progress=None, guard=None, replay=None):
    """Run `scenario` once in `run_dir`; returns (machine or None, Outcome). The machine is quiescent
    afterwards. `guard` (cli/signals.py) says whether a terminating signal arrived; it is polled throughout.
    `replay`: the (row, steps) schedule a `replay` run follows (controlled modes, oomemu/control.py)."""
    from oomemu.cli.signals import NoGuard
    guard = guard or NoGuard()
    outcome = Outcome()
    with guard.holding():
        return _run_scenario(scenario, run_dir, progress, guard, outcome, replay)


def _interrupted(guard, outcome, during):
    if guard.signum is None:
        return False
    if outcome.signal is None:
        outcome.signal, outcome.during = guard.name, during
    outcome.reason = "interrupted"
    return True


def _run_scenario(scenario, run_dir, progress, guard, outcome, replay):
    try:
        (run_dir / "scenario.json").write_text(_json(scenario_to_dict(scenario)))
        log_fd = os.open(run_dir / "oomemu.log", os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    except OSError as exc:
        outcome.reason, outcome.error = "environment-error", describe_os_error(exc)
        return None, outcome
    restore = _install_logging(log_fd)
    if _interrupted(guard, outcome, "boot"):
        restore()
        os.close(log_fd)
        return None, outcome
    t_boot = time.monotonic()
    try:
        m = create_machine(scenario, replay=replay)
    except BaseException as exc:      # an OSError is the host's; a ScenarioError found at boot is exit 2
        restore()
        os.close(log_fd)
        if not isinstance(exc, OSError):
            raise
        outcome.reason, outcome.error = "environment-error", f"cannot create the machine: {describe_os_error(exc)}"
        return None, outcome
    outcome.booted = True
    procs, trace, dmesg_fd = [], None, -1
    try:
        dmesg_fd = os.open(run_dir / "dmesg.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        if scenario.run.trace:
            outcome.trace_limit, outcome.trace_limit_why = trace_limit_for(run_dir, scenario)
            if outcome.trace_limit < TRACE_MIN_ROOM:
                raise OSError(28, f"no room for the trace ({outcome.trace_limit_why}; it needs at least "
                                  f"{TRACE_MIN_ROOM >> 20} MiB, or run.trace = false)", str(run_dir))
            trace = TraceFile(run_dir / "trace.msgpack", m, scenario, outcome.trace_limit)
        if not _interrupted(guard, outcome, "boot"):
            from workers._common import set_log_fd
            set_log_fd(log_fd)
            procs = _start_workers(m, scenario, dmesg_fd)
            outcome.worker_pids = {p.name: p.pid for p in procs}
            m.glob[G_GO] = 1
            if m.controlled:
                from oomemu import control
                control.start(m)
            watch = _watch_controlled if m.controlled else _watch
            watch(m, scenario, procs, trace, outcome, log_fd, progress, t_boot, guard, dmesg_fd)
    except OSError as exc:
        outcome.reason, outcome.error = "environment-error", describe_os_error(exc)
    finally:
        _teardown(m, procs, trace, outcome, guard, run_dir, dmesg_fd)
        restore()
        os.close(log_fd)
    return m, outcome


def _teardown(m, procs, trace, outcome, guard, run_dir, dmesg_fd):
    """Stop the workers, close the trace and dmesg, save the state: every step runs whatever failed before."""
    t_stop = time.monotonic()
    outcome.worker_cpu_seconds = _cpu_seconds(procs)
    _stop_workers(m, procs)
    outcome.teardown_s = time.monotonic() - t_stop
    if trace is not None:
        for step in (trace.drain, trace.close):
            try:
                lost = step(m)
            except OSError:
                lost = None
            if step == trace.close and lost is not None:
                outcome.trace_lost = lost
        outcome.trace_lost = int(m.ring_head[:, ring.H_LOST].sum())
        outcome.trace_records, outcome.trace_bytes = trace.records, trace.bytes
        if trace.broken:
            outcome.trace_ok = False
            outcome.env_errors.append(trace.broken)
    if dmesg_fd >= 0:
        os.close(dmesg_fd)
    if m.controlled:
        outcome.schedule = _schedule_of(m)
    try:
        from oomemu.check.state import save_state
        save_state(m, run_dir / "machine.npz")
    except OSError as exc:
        outcome.env_errors.append(describe_os_error(exc, str(run_dir / "machine.npz")))
    m.close()
    if outcome.env_errors and outcome.reason not in ("interrupted", "worker-died", "environment-error"):
        outcome.reason, outcome.error = "environment-error", outcome.env_errors[0]
    # A signal from here on is seen by the check (or by build_report, for a run without a trace).


def _json(doc):
    import json
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def _install_logging(log_fd):
    """The supervisor's own records go to oomemu.log too (the workers write there directly)."""
    from workers._common import FdLogHandler
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(FdLogHandler(log_fd))
    root.setLevel(logging.INFO)

    def restore():
        for h in list(root.handlers):
            root.removeHandler(h)
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


def _watch(m, scenario, procs, trace, outcome, log_fd, progress, t_boot, guard, dmesg_fd):
    """Poll until the run ends; fill `outcome`. A run that ends normally before its first quiescent snapshot
    gets one now, so page-conservation-snapshots is checked on every run that can be."""
    watchdog = _watch_loop(m, scenario, procs, trace, outcome, log_fd, progress, t_boot, guard, dmesg_fd)
    if not outcome.snapshots and outcome.reason in ("deadline", "all-exited", "stall", "trace-limit"):
        take_snapshot(m, procs, outcome, watchdog)


def _watch_loop(m, scenario, procs, trace, outcome, log_fd, progress, t_boot, guard, dmesg_fd):
    """The polling loop: every end condition is one `return` (of the watchdog) with `outcome.reason`."""
    start = time.monotonic()
    deadline = start + scenario.run.seconds
    next_snapshot = start + SNAPSHOT_S
    stall = _StallWatch(m, scenario.run.stall_jiffies)
    watchdog = Watchdog(m, procs, getattr(scenario.run, "watchdog_ms", 5000))
    hung = _hung_task_detector(m, scenario, dmesg_fd)
    sentinels = {p.sentinel: p for p in procs}
    from multiprocessing.connection import wait
    while True:
        ready = wait(list(sentinels), timeout=POLL_S)
        now = time.monotonic()
        outcome.elapsed = now - start
        if _interrupted(guard, outcome, "run"):
            return watchdog
        if outcome.boot_to_first_alloc_s is None and _allocs(m) > 0:
            outcome.boot_to_first_alloc_s = now - t_boot
        if trace is not None:
            records_before = trace.records
            trace.drain(m)            # an OSError (a full disk) ends the run as an environment error
            if trace.full():
                outcome.reason = "trace-limit"
                outcome.warnings.append(f"trace.msgpack reached its limit of {trace.limit >> 20} MiB "
                                        f"({outcome.trace_limit_why}); the run was ended there, after "
                                        f"{outcome.elapsed:.1f} of {scenario.run.seconds:g} s")
                return watchdog
            if hung is not None:
                hung.saw_records(trace, records_before)
        if ready and not m.glob[G_STOP]:
            dead = sentinels[ready[0]]
            dead.join(0.1)
            outcome.reason = "worker-died"
            outcome.error = describe_dead_worker(m, dead, log_fd)
            return watchdog
        if m.glob[G_PANIC]:
            outcome.reason = "panic"
            return watchdog
        if m.glob[G_NR_USER_LIVE] <= 1:
            outcome.reason = "all-exited"
            return watchdog
        if now >= deadline:
            outcome.reason = "deadline"
            return watchdog
        if stall.stalled():
            outcome.reason = "stall"
            return watchdog
        watchdog.poll(now, outcome)
        if hung is not None:
            hung.poll(now, outcome)
        if now >= next_snapshot:
            take_snapshot(m, procs, outcome, watchdog)
            next_snapshot = time.monotonic() + SNAPSHOT_S
        if progress is not None:
            progress(m, outcome)


def _watch_controlled(m, scenario, procs, trace, outcome, log_fd, progress, t_boot, guard, dmesg_fd):
    """The supervisor's part in a controlled mode: the controller decides everything at scheduling points;
    the supervisor only drains rings, takes the snapshots the controller parks the machine for, watches the
    token holder (ControlledWatchdog) and guards the wall clock (DESIGN §8)."""
    from multiprocessing.connection import wait

    from oomemu import control
    c = m.v_ctl
    start = time.monotonic()
    wall_limit = start + scenario.run.wall_seconds
    watchdog = ControlledWatchdog(m, procs, getattr(scenario.run, "watchdog_ms", 5000))
    sentinels = {p.sentinel: p for p in procs}
    while True:
        ready = wait(list(sentinels), timeout=POLL_S)
        outcome.elapsed = c[control.CT_VNOW] / 1e9
        if _interrupted(guard, outcome, "run"):
            return
        if outcome.boot_to_first_alloc_s is None and _allocs(m) > 0:
            outcome.boot_to_first_alloc_s = time.monotonic() - t_boot
        if trace is not None:
            trace.drain(m)
        if c[control.CT_PARK_READY] == 1:
            from oomemu.check.conservation import check_page_conservation
            outcome.snapshots.append(check_page_conservation(m))
            _memcg_snapshot(m, outcome)
            c[control.CT_PARK_READY] = 2
            os.eventfd_write(m.tokens[c[control.CT_HOLDER]], 1)
            watchdog.beat.clear()       # the check's own time is not the holder's
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
            outcome.error = describe_dead_worker(m, dead, log_fd)
            return
        watchdog.poll(time.monotonic(), outcome)
        if watchdog.open:
            # Nothing else can move while the token holder is stalled: the run ends with the finding.
            outcome.reason = "emulator-failure"
            outcome.error = f"controlled run: {next(iter(watchdog.open.values()))['summary']}"
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


def row_name(m, row):
    return m.row_name(row)


class Watchdog:
    """The emulator's soft-lockup detector: a CPU or kswapd process whose heartbeat (C_HEARTBEAT, written at the
    top of its loop) has not moved for `limit_ms` of host time is stalled. It is reported once, by name, with
    what the segment says it was doing (current task, the wait that task is in, the locks its process holds)
    and what the host says of its process (running, sleeping, stopped); if it moves again the finding is
    marked recovered. Differs: the kernel's detector runs on the stalled CPU's own timer; this one watches
    from outside, as only the supervisor can see a process the host stopped."""

    def __init__(self, m, procs, limit_ms):
        self.m, self.procs = m, procs
        self.limit = limit_ms / 1000 if limit_ms else None
        self.beat = {}
        self.since = {}
        self.open = {}        # row -> its finding, while stalled

    def rows_expected_to_run(self):
        """Rows whose heartbeat must keep moving: in free mode every row whose process is alive and has not
        left its loop. (A controlled schedule runs only the token holder: it narrows this set.)"""
        return [row for row, p in enumerate(self.procs)
                if p.is_alive() and not self.m.cpu[row, C_EXIT] and not self.m.glob[G_STOP]]

    def heartbeat(self, row):
        return int(self.m.cpu[row, C_HEARTBEAT])

    def poll(self, now, outcome):
        if self.limit is None:
            return
        m = self.m
        for row in self.rows_expected_to_run():
            beat = self.heartbeat(row)
            if m.cpu[row, C_PAUSED]:
                self.since[row] = now      # parked for a snapshot: waiting on the supervisor, not stalled
                self.beat[row] = beat
                continue
            if self.beat.get(row) != beat:
                self.beat[row], self.since[row] = beat, now
                finding = self.open.pop(row, None)
                if finding is not None:
                    finding["recovered_after_s"] = round(now - finding["_t0"], 3)
                    log.warning("%s moves again after %.1f s", finding["row"], now - finding["_t0"])
                continue
            if row not in self.open and now - self.since[row] >= self.limit:
                finding = self.describe(row, now - self.since[row])
                finding["_t0"] = self.since[row]
                self.open[row] = finding
                outcome.stalls.append(finding)
                log.warning("emulator-stall: %s", finding["summary"])

    def describe(self, row, for_s):
        """What a stalled row was doing, from the segment and the host."""
        m, proc = self.m, self.procs[row]
        name = row_name(m, row)
        try:
            status = psutil.Process(proc.pid).status()
        except psutil.Error:
            status = "gone"
        cur = int(m.cpu[row, C_CURRENT])
        doing = "idle (no current task)"
        task = None
        if cur >= 0:
            from oomemu.kernel.printk import task_comm
            pid = int(m.task_pid[cur])
            kind, obj = int(m.task_wait_kind[cur]), int(m.task_wait_obj[cur])
            task = {"pid": pid, "comm": task_comm(m, cur), "state": int(m.task_state[cur]),
                    "wait": WAIT_NAMES[kind] if 0 <= kind < len(WAIT_NAMES) else str(kind), "wait_obj": obj}
            doing = f"running pid {pid} ({task['comm']}), state {task['state']}"
            if kind:
                doing += f", waiting on {task['wait']} {obj}"
        held = sync.locks_held_by(m, int(m.cpu[row, C_PID]) or proc.pid)
        summary = f"{name} (pid {proc.pid}) made no progress for {for_s:.1f} s: {doing}"
        if held:
            summary += "; it holds " + ", ".join(held)
        summary += f"; its process is {status}"
        return {"kind": "emulator-stall", "row": name, "pid": proc.pid, "stalled_for_s": round(for_s, 3),
                "process_status": status, "current": task, "locks_held": held, "summary": summary}

    def unresolved(self):
        return list(self.open.values())


class ControlledWatchdog(Watchdog):
    """The watchdog of a controlled mode: only the token holder runs, so it alone must move, and its heartbeat
    is the schedule's step count (every scheduling point takes a step). The other rows wait on the token by
    design and are never reported."""

    def rows_expected_to_run(self):
        from oomemu import control
        m = self.m
        holder = int(m.v_ctl[control.CT_HOLDER])
        if m.glob[G_STOP] or not 0 <= holder < len(self.procs) or not self.procs[holder].is_alive():
            return []
        return [] if m.cpu[holder, C_EXIT] else [holder]

    def heartbeat(self, row):
        from oomemu import control
        return int(self.m.v_ctl[control.CT_STEP])


def _hung_task_detector(m, scenario, dmesg_fd):
    timeout = getattr(scenario.sysctl, "hung_task_timeout_secs", 0)
    if not timeout:
        return None
    from oomemu.kernel.hung_task import HungTaskDetector
    return HungTaskDetector(m, timeout, dmesg_fd, getattr(scenario.sysctl, "hung_task_warnings", 10))


def take_snapshot(m, procs, outcome, watchdog=None, timeout=SNAPSHOT_PARK_S):
    """Park every worker at a quiescent point, check page conservation, release them. Skipped (not failed)
    if a worker does not park in time; the reason is kept for the report."""
    from oomemu.check.conservation import check_page_conservation
    live = [row for row, p in enumerate(procs) if p.is_alive()]
    stalled = [row_name(m, r) for r in (watchdog.open if watchdog is not None else ()) if r in live]
    if stalled:
        outcome.snapshot_skips.append(f"{', '.join(stalled)} stalled (see the watchdog's finding)")
        return
    m.glob[G_PAUSE] = 1
    try:
        for row in range(m.nr_rows_cpu):
            sync.ring_doorbell(m, row)
        deadline = time.monotonic() + timeout
        while not all(m.cpu[row, C_PAUSED] for row in live):
            if m.glob[G_STOP]:
                return
            if watchdog is not None:
                watchdog.poll(time.monotonic(), outcome)
                stalled = [row_name(m, r) for r in watchdog.open if r in live]
                if stalled:
                    outcome.snapshot_skips.append(f"{', '.join(stalled)} stalled (see the watchdog's finding)")
                    return
            if time.monotonic() > deadline:
                late = [row_name(m, r) for r in live if not m.cpu[r, C_PAUSED]]
                outcome.snapshot_skips.append(f"{', '.join(late)} did not park within {timeout:g} s")
                return
            time.sleep(0.0005)
        outcome.snapshots.append(check_page_conservation(m))
        _memcg_snapshot(m, outcome)
    finally:
        m.glob[G_PAUSE] = 0


def _memcg_snapshot(m, outcome):
    """The memcg-usage invariant at a quiescent snapshot (only when the run has memory cgroups)."""
    if m.memcg_enabled:
        from oomemu.check.memcg import check_memcg_usage
        outcome.memcg_snapshots.append(check_memcg_usage(m))


def _allocs(m):
    from oomemu.mm import vmstat
    return int(m.cpu[:, vmstat.NR_ALLOCS].sum())


def worker_reason(log_path_or_fd, name):
    """The first error a worker logged about itself (`NAME: reason`), from oomemu.log, or None."""
    try:
        if isinstance(log_path_or_fd, int):
            size = os.fstat(log_path_or_fd).st_size
            data = os.pread(log_path_or_fd, min(size, 4 << 20), max(0, size - (4 << 20)))
        else:
            data = Path(log_path_or_fd).read_bytes()[-(4 << 20):]
    except OSError:
        return None
    marker = f" {name} ERROR {name}: "
    for line in data.decode("utf-8", "replace").splitlines():
        at = line.find(marker)
        if at >= 0:
            return line[at + len(marker) - len(name) - 2:]
    return None


def describe_dead_worker(m, proc, log_fd):
    """One line: which worker died, how, which locks it held, and the reason it logged before it left."""
    code = proc.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with {code}"
    held = sync.locks_held_by(m, proc.pid)
    line = f"{proc.name} (pid {proc.pid}) {how}"
    if held:
        line += "; it held " + ", ".join(held)
    reason = worker_reason(log_fd, proc.name)
    if reason:
        line += f": {reason.split(': ', 1)[1] if ': ' in reason else reason}"
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

