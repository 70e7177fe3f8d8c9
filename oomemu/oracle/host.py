"""The host kernel as a live oracle: rebuild a task table as real processes in a fresh child memory cgroup,
let one of them allocate until the host kernel OOM-kills, and compare the kernel's victim with the emulator's.

The child cgroup is made under this process's own memory cgroup (v1 memory controller, or a v2 hierarchy with
the memory controller enabled for children), with the table's limit (at most 256 MiB). Each table process
joins the cgroup before it starts, sets its oom_score_adj (while still root, so negative values work), drops
to its uid, faults its pages and reports ready; then the allocator touches memory until it or another is
killed. The kernel's own report is read back from /dev/kmsg and parsed like any other (report.py), and the
emulator's select_bad_process() runs over the kernel's own task dump (explain.py) under the profile that
matches the host. Everything made here is removed on every path: processes (SIGKILL, then reaped) and the
cgroup (rmdir), including after Ctrl-C.
"""
from __future__ import annotations

import errno
import fcntl
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

MiB = 1 << 20
MAX_LIMIT = 256 * MiB
PAGE = 4096
KILL_TIMEOUT_S = 60.0
# oom_kill_process() prints its report under a kernel-wide rate limit (DEFAULT_RATELIMIT_INTERVAL 5 s, burst 10):
# past it, a victim is killed with no report to compare. Such a table is built again after the interval.
RATELIMIT_INTERVAL_S = 5.0
SUPPRESSED_RETRIES = 4
LOCK_PATH = "/run/lock/oomemu-host-oracle.lock"

# A table process: set oom_score_adj (before joining: some hosts refuse a lowered value inside a limited memcg),
# join the cgroup, drop to the uid, fault `pages` anonymous pages, report
# ready on stdout, then wait to be killed. The allocator (pages = -1) faults 1 MiB at a time until killed.
# Both die with their parent (PR_SET_PDEATHSIG).
CHILD = r"""
import ctypes, mmap, os, sys, time
ctypes.CDLL(None).prctl(1, 9)
procs, adj, uid, pages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
try:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(adj))
except PermissionError:
    sys.stdout.write("adj-denied\n"); sys.stdout.flush(); sys.exit(1)
with open(procs, "w") as f:
    f.write(str(os.getpid()))
if uid:
    os.setgid(uid); os.setuid(uid)
if pages >= 0:
    if pages:
        m = mmap.mmap(-1, pages * 4096)
        for off in range(0, pages * 4096, 4096):
            m[off] = 1
    sys.stdout.write("ready\n"); sys.stdout.flush()
    while True:
        time.sleep(3600)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
chunks = []
limit = int(sys.argv[5])
while sum(len(c) for c in chunks) < limit:
    m = mmap.mmap(-1, 1 << 20)
    for off in range(0, 1 << 20, 4096):
        m[off] = 1
    chunks.append(m)
sys.stdout.write("not killed\n"); sys.stdout.flush()
while True:
    time.sleep(3600)
"""


class HostUnavailable(RuntimeError):
    """The host oracle cannot run here; str() is the exact reason."""


@dataclass
class HostTask:
    comm: str
    pages: int              # anonymous pages to fault (the table's rss)
    oom_score_adj: int
    uid: int = 65534


@dataclass
class Table:
    tasks: list
    limit: int              # the cgroup's memory limit in bytes
    allocator_adj: int = 0
    name: str = "table"


@dataclass
class Outcome:
    table: Table
    report: object = None       # the parsed kernel report (oracle.report.Report)
    kernel_pid: int | None = None
    kernel_comm: str | None = None
    emulator_pid: int | None = None
    emulator_comm: str | None = None
    profile: str = ""
    agrees: bool | None = None
    notes: list = field(default_factory=list)
    kmsg: list = field(default_factory=list)


# --- where it can run ----------------------------------------------------------------------------------------

def memory_cgroup_parent():
    """(version, directory) of this process's memory cgroup, where a child may be made; raises HostUnavailable."""
    if sys.platform != "linux":
        raise HostUnavailable(f"needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise HostUnavailable(f"needs root to create a memory cgroup and read /dev/kmsg (euid {os.geteuid()})")
    try:
        with open("/proc/self/cgroup") as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError as exc:
        raise HostUnavailable(f"cannot read /proc/self/cgroup: {exc.strerror}") from exc
    for _, controllers, path in entries:
        if "memory" in controllers.split(","):
            for root in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory,cpuset"):
                d = root + path
                if os.path.isfile(os.path.join(d, "memory.limit_in_bytes")):
                    return 1, d
    for _, controllers, path in entries:
        if controllers == "":
            for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                d = root + path
                try:
                    with open(os.path.join(d, "cgroup.subtree_control")) as f:
                        if "memory" in f.read().split():
                            return 2, d
                except OSError:
                    continue
    raise HostUnavailable("no memory cgroup controller to make a child in (neither a v1 memory hierarchy nor a v2 "
                          "cgroup with memory in cgroup.subtree_control)")


def check_host():
    """(version, parent directory) if the oracle can run here; raises HostUnavailable with the reason."""
    version, parent = memory_cgroup_parent()
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError as exc:
        raise HostUnavailable(f"cannot read /dev/kmsg: {exc.strerror}") from exc
    if not os.access(parent, os.W_OK):
        raise HostUnavailable(f"cannot create a child cgroup in {parent}: not writable")
    return version, parent


def host_profile():
    """The emulator profile matching the host kernel (`uname -r`): the newest not newer than it, and a note when
    the exact one does not exist."""
    from oomemu.oracle.scenario import kernel_profiles
    release = platform.release()
    parts = release.split(".")
    version = (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0))

    def key(p):
        return tuple(int(x) for x in p.split(".")[:2])
    profiles = kernel_profiles()
    older = [p for p in profiles if key(p) <= version]
    best = max(older, key=key) if older else min(profiles, key=key)
    note = None
    if "6.1" not in profiles and version >= (6, 1):
        note = f"host kernel {release}: no 6.1 profile exists yet, compared with {best}"
    return best, note


# --- the cgroup ----------------------------------------------------------------------------------------------

class ChildCgroup:
    """A fresh child memory cgroup with a limit; `close()` kills whatever is in it and removes it."""

    def __init__(self, version, parent, limit):
        if not 0 < limit <= MAX_LIMIT:
            raise ValueError(f"limit {limit} bytes: must be 1..{MAX_LIMIT}")
        self.version = version
        self.path = os.path.join(parent, f"oomemu-oracle-{os.getpid()}-{time.monotonic_ns() % 10**9}")
        os.mkdir(self.path)
        try:
            if version == 1:
                self._write("memory.limit_in_bytes", limit)
                if os.path.exists(os.path.join(self.path, "memory.memsw.limit_in_bytes")):
                    self._write("memory.memsw.limit_in_bytes", limit)  # no swapping out of the cgroup
            else:
                self._write("memory.max", limit)
                if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                    self._write("memory.swap.max", 0)
        except BaseException:
            self.close()
            raise

    @property
    def procs(self):
        return os.path.join(self.path, "cgroup.procs")

    def _write(self, name, value):
        with open(os.path.join(self.path, name), "w") as f:
            f.write(str(value))

    def pids(self):
        try:
            with open(self.procs) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def close(self):
        """SIGKILL every process left in the cgroup, then remove it (retrying while the kernel lets go)."""
        deadline = time.monotonic() + 10
        while True:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- /dev/kmsg -----------------------------------------------------------------------------------------------

class Kmsg:
    """/dev/kmsg from its current end: the messages printed from now on."""

    def __init__(self):
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def read_new(self):
        lines = []
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                return lines
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten records: go on from the next one
                    continue
                raise
            text = rec.decode("utf-8", "replace")
            head, _, body = text.partition(";")
            lines.append(body.split("\n", 1)[0])

    def close(self):
        os.close(self.fd)


# --- one table -----------------------------------------------------------------------------------------------

def _spawn(cg, pages, adj, uid, limit=0):
    return subprocess.Popen([sys.executable, "-S", "-c", CHILD, cg.procs, str(adj), str(uid), str(pages), str(limit)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            close_fds=True, start_new_session=True)


def _ready(proc, deadline):
    """Wait for a child's "ready" line; False if it died first (e.g. killed while faulting)."""
    import select
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            line = proc.stdout.readline().strip()
            if line == b"adj-denied":
                raise HostUnavailable("setting a negative oom_score_adj needs CAP_SYS_RESOURCE, which this process "
                                      "does not have")
            return line == b"ready"
        if proc.poll() is not None:
            return False
    return False


def run_table(table, version, parent, profile=None):
    """Build `table` in a fresh cgroup, let the allocator allocate until the host kernel kills, and compare.

    One table at a time on the host (a lock shared by every oracle process), and a table whose kill the kernel's
    report rate limit left without a report is built again after the limit's interval."""
    out = Outcome(table=table)
    out.profile, note = (profile, None) if profile else host_profile()
    if note:
        out.notes.append(note)
    for attempt in range(SUPPRESSED_RETRIES + 1):
        with _host_lock():
            lines, path, suppressed = _build_and_wait(table, version, parent, out.notes)
        if not suppressed:
            break
        if attempt < SUPPRESSED_RETRIES:
            time.sleep(RATELIMIT_INTERVAL_S + 0.5)
    out.kmsg = lines
    if suppressed:
        out.notes.append(f"the host kernel's OOM report rate limit suppressed the report {SUPPRESSED_RETRIES + 1} "
                         "times")
    return _compare(out, path)


class _host_lock:
    """An exclusive lock on the host's OOM killer for this process (flock on LOCK_PATH, or the temp dir's)."""

    def __enter__(self):
        path = LOCK_PATH if os.path.isdir(os.path.dirname(LOCK_PATH)) else os.path.join(
            tempfile.gettempdir(), os.path.basename(LOCK_PATH))
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing the last descriptor releases the flock


def _build_and_wait(table, version, parent, notes):
    """One try: (kernel messages, the cgroup's path, whether our kill came without its report)."""
    procs = []
    kmsg = Kmsg()
    with _signals_deferred():       # a Ctrl-C between mkdir and the try below would leave the cgroup behind
        cg = ChildCgroup(version, parent, table.limit)
    try:
        deadline = time.monotonic() + KILL_TIMEOUT_S
        for t in table.tasks:
            p = _spawn(cg, t.pages, t.oom_score_adj, t.uid)
            procs.append(p)
            if not _ready(p, deadline):
                notes.append(f"{t.comm} died while faulting its {t.pages} pages (killed by an earlier OOM?)")
                break
        else:
            alloc = _spawn(cg, -1, table.allocator_adj, 65534, table.limit * 2)
            procs.append(alloc)
            if _ready(alloc, deadline):
                alloc.stdin.write(b"go\n")
                alloc.stdin.flush()
        lines, suppressed = _wait_for_kill(kmsg, cg, deadline, {p.pid for p in procs})
    finally:
        with _signals_deferred():   # the clean-up runs to its end; a Ctrl-C meanwhile is raised after it
            for p in procs:
                if p.poll() is None:
                    try:
                        p.kill()
                    except ProcessLookupError:
                        pass
            cg.close()
            for p in procs:
                p.wait()
                for stream in (p.stdin, p.stdout):
                    if stream:
                        stream.close()
            kmsg.close()
    return lines, cg.path, suppressed


class _signals_deferred:
    """Hold SIGINT and SIGTERM back for the body (main thread): one that arrives meanwhile is noted and raised
    again, to its own handler, on exit."""

    DEFERRED = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.caught, self.old = [], {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.DEFERRED:
                self.old[sig] = signal.signal(sig, lambda signum, frame: self.caught.append(signum))
        return self

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        if self.caught:
            signal.raise_signal(self.caught[0])


def _compare(out, path):
    """Parse our cgroup's report out of the kernel messages and run the emulator's choice over its task dump."""
    from oomemu.oracle.explain import kernel_victim_row, select_on_table
    from oomemu.oracle.report import NoReport, oom_totalpages, parse_reports
    try:
        reports = [r for r in parse_reports("\n".join(out.kmsg)) if _ours(r, path)]
    except NoReport:
        reports = []
    if not reports:
        out.notes.append("the host kernel printed no OOM report for the cgroup within "
                         f"{KILL_TIMEOUT_S:.0f} s")
        return out
    report = reports[0]
    if report.swap_total_kb is None:
        report.swap_total_kb = _host_swap_kb()
    out.report = report
    victim = report.victim
    if victim:
        out.kernel_pid, out.kernel_comm = victim.pid, victim.comm
    totalpages, _ = oom_totalpages(report)
    row, points, score, _ = select_on_table(report, out.profile, totalpages or 1)
    vrow, vnote = kernel_victim_row(report)
    if vnote:
        out.notes.append(vnote)
    if row is not None:
        out.emulator_pid, out.emulator_comm = report.tasks[row].pid, report.tasks[row].comm
    out.agrees = None if vrow is None else row == vrow
    return out


def _ours(report, path):
    name = os.path.basename(path)
    memcg = report.summary.get("oom_memcg") or report.memcg.get("oom_memcg") or ""
    return name in memcg or name in (report.summary.get("task_memcg") or "")


def _wait_for_kill(kmsg, cg, deadline, pids):
    """Kernel messages until our cgroup's kill has been printed (or the deadline), and whether it was suppressed:
    one of `pids` killed with no summary line for our cgroup before it (the report was rate-limited)."""
    lines = []
    name = os.path.basename(cg.path)
    seen_ours = False
    while time.monotonic() < deadline:
        new = kmsg.read_new()
        lines += new
        for line in new:
            if "oom-kill:" in line and name in line:
                seen_ours = True
            killed = _killed_pid(line)
            if seen_ours and killed is not None:
                time.sleep(0.05)
                return lines + kmsg.read_new(), False
            if killed in pids:
                return lines, True
        time.sleep(0.02)
    return lines, False


def _killed_pid(line):
    """The pid of a "...: Killed process PID (comm) ..." line, else None."""
    head, sep, rest = line.partition("Killed process ")
    if not sep:
        return None
    word = rest.split(" ", 1)[0]
    return int(word) if word.isdigit() else None


def _host_swap_kb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- tables --------------------------------------------------------------------------------------------------

def generate_table(rng, name="table"):
    """A random table as the acceptance asks: 2–12 tasks of 1–64 MiB with oom_score_adj 0..1000, under a memcg
    limit of 32–256 MiB. Sizes are drawn so that the tasks fit below the limit with room for each process's own
    interpreter pages (~8 MiB), and the allocator pushes the cgroup over it."""
    while True:
        limit = rng.randint(32, 256) * MiB
        n = rng.randint(2, 12)
        overhead = (n + 1) * 8 * MiB
        room = limit - overhead - 4 * MiB
        if room < n * MiB:
            continue
        sizes = [rng.randint(1, 64) * MiB for _ in range(n)]
        while sum(sizes) > room:
            k = rng.randrange(n)
            sizes[k] = max(MiB, sizes[k] // 2)
            if all(s == MiB for s in sizes):
                break
        if sum(sizes) > room:
            continue
        tasks = [HostTask(f"t{k}", s // PAGE, rng.randint(0, 1000)) for k, s in enumerate(sizes)]
        return Table(tasks=tasks, limit=limit, allocator_adj=rng.randint(0, 1000), name=name)


def table_from_scenario(scenario, limit=None):
    """The host table of a scenario: one process per task (group × count) holding its preset anon + file pages
    plus the pages its top-level fault and read ops touch, with its oom_score_adj and uid; limit: the given one,
    else the machine's RAM, at most 256 MiB. A task whose pages would not fit under the limit is the scenario's
    allocator: the oracle's own allocator takes its place (and its oom_score_adj)."""
    ram = sum(sum(node.zones.values()) for node in scenario.machine.nodes)
    limit = min(MAX_LIMIT, limit or ram)
    tasks, allocator_adj = [], 0
    for group in scenario.tasks:
        if group.kthread:
            continue
        pages = (group.mm["anon"] + group.mm["file"]) if group.mm else 0
        pages += sum(op["pages"] for op in group.program if op.op in ("fault", "read"))
        if pages * PAGE >= limit:
            allocator_adj = group.oom_score_adj
            continue
        for _ in range(group.count):
            tasks.append(HostTask(group.comm, pages, group.oom_score_adj, group.uid or 0))
    return Table(tasks=tasks, limit=limit, allocator_adj=allocator_adj, name=scenario.name)


def seeded(seed):
    return random.Random(seed)
