"""The schedule controller of the controlled modes (DESIGN §8): one seed, one exact interleaving.

In free mode the CPU and kswapd processes race as the host schedules them. In the controlled modes
(`random`, `pct`, `replay`) the very same processes run over the same segment with the same real locks, but
exactly one of them holds the *token* at a time. Every primitive of `oomemu/sync.py` (and the explicit
`sync.sched_point` calls in kernel code) is a *scheduling point*: the holder counts a step, advances the
virtual clock by a fixed cost, asks the strategy which row runs next and, if that is another row, writes the
other row's token eventfd and blocks on its own. The controller's state lives in the segment (`m.ctl`), so
whichever process holds the token makes the next choice with the same data:

    header words (CT_*)       mode, holder, step, virtual clock, seed, strategy state, park/end requests,
                              the run-length encoded schedule log's cursor and the replay cursor
    one block per row (R_*)   status (runnable / blocked on a lock / waiting / parked / dead), PCT
                              priority, timer deadline, the lock it is blocked on, its last point

Shadow locking: a controlled `spin_lock` first tries the real lock; when it is held, the caller marks itself
blocked on it and passes the token; `spin_unlock` makes that lock's waiters runnable again. A row with
nothing to do (an idle CPU, a sleeping kswapd) waits with a virtual deadline; when no row is runnable the
clock jumps to the earliest deadline. Quiescent snapshots and the end of a run are *parks*: requested at a
deterministic step, every row parks at its next pause point (where it holds no lock), and only then does
the supervisor look (snapshot) or the run stop (end), so the final state is as consistent as in free mode.

Every choice comes from the seed and the step number (a stateless mix function), never from host timing,
pids, or dict/set order.
"""
import os
import random
import zlib

from oomemu.config.schema import PCT_MAX_DEPTH
from oomemu.machine import G_NR_USER_LIVE, G_PANIC, G_STOP

MODE_FREE, MODE_RANDOM, MODE_PCT, MODE_REPLAY = 0, 1, 2, 3
MODES = {"free": MODE_FREE, "random": MODE_RANDOM, "pct": MODE_PCT, "replay": MODE_REPLAY}

# --- header words ---------------------------------------------------------------------------------------------
CT_MODE = 0
CT_HOLDER = 1         # row holding the token
CT_STEP = 2           # scheduling points passed so far
CT_VNOW = 3           # virtual nanoseconds since boot
CT_SEED = 4
CT_COST = 5           # virtual ns per step
CT_DEADLINE = 6       # virtual ns at which the run ends
CT_GEN = 7            # bumped on every status or priority change (invalidates cached runnable sets)
CT_NEXT_EVENT = 8     # virtual ns of the next timer, snapshot or deadline
CT_CHECK_AT = 9       # step of the next end-condition check or PCT change point
CT_PARK = 10          # 0, PARK_SNAPSHOT or PARK_END: every row parks at its next pause point
CT_PARK_READY = 11    # 1: all parked for a snapshot; the supervisor may look, then hands the token back
CT_END = 12           # why the controller ended the run (END_*), 0 while it runs
CT_END_STEP = 13      # step at which the end (or a divergence) was decided
CT_SNAP_NEXT = 14     # virtual ns of the next quiescent snapshot
CT_SNAP_EVERY = 15
CT_LOG_LEN = 16       # (row, run) pairs flushed to the log
CT_LOG_ROW = 17       # the row of the current run
CT_LOG_RUN = 18       # the current run's length in steps
CT_LOG_LOST = 19      # pairs that did not fit the log
CT_HASH = 20          # running hash of the flushed pairs
CT_LOWPRIO = 21       # PCT: the next demotion priority (counts down from depth - 1)
CT_NCHANGE = 22       # PCT: change points left
CT_CHANGE_IDX = 23    # PCT: index of the next change point
CT_REPLAY_POS = 24    # replay: next pair to read
CT_REPLAY_LEN = 25
CT_REPLAY_ROW = 26
CT_REPLAY_LEFT = 27
CT_SWITCHES = 28      # token hand-overs
CT_STALL_LIMIT = 29   # jiffies without progress that end the run (0: off)
CT_STALL_NEXT = 30    # virtual ns of the next stall test
CT_STALL_MARK = 31    # 4 words: marker hash, since (jiffies), looping count at the marker, armed
CT_HZ = 35
CT_DIVERGED = 36      # replay: step of the first choice that could not be followed (0: none)
CT_CHOICES = 37       # points at which two or more rows were runnable (PCT counts its change points in these)
CT_CHANGE = 40        # PCT change points (MAX_CHANGES words)
MAX_CHANGES = PCT_MAX_DEPTH - 1
CT_ROWS = CT_CHANGE + MAX_CHANGES

# --- per-row words ---------------------------------------------------------------------------------------------
R_STATUS = 0
R_PRIO = 1
R_DEADLINE = 2        # virtual ns a waiting row wakes at (-1: none)
R_LOCK = 3            # the lock a blocked row waits for
R_POINT = 4           # index (POINTS) of the row's last scheduling point
R_OBJ = 5
R_NCOLS = 8

RUNNABLE, BLOCKED, WAITING, PARKED, DEAD = 0, 1, 2, 3, 4
STATUS_NAMES = ("runnable", "blocked", "waiting", "parked", "dead")
PARK_SNAPSHOT, PARK_END = 1, 2
END_DEADLINE, END_ALL_EXITED, END_PANIC, END_STALL, END_DEADLOCK, END_DIVERGED = 1, 2, 3, 4, 5, 6
END_REASONS = {END_DEADLINE: "deadline", END_ALL_EXITED: "all-exited", END_PANIC: "panic", END_STALL: "stall",
               END_DEADLOCK: "deadlock", END_DIVERGED: "diverged"}

LOG_PAIRS = 1 << 20   # room for this many (row, run) pairs in the segment
CHECK_EVERY = 64      # steps between end-condition checks
PCT_SLICE = 4096      # PCT: consecutive steps after which a runner that others wait behind is demoted
DEFAULT_PCT_STEPS = 20000
SNAPSHOT_NS = 100_000_000   # a quiescent snapshot every 0.1 s of virtual time (controlled runs are short)
_MASK = (1 << 64) - 1

# Every scheduling point has a stable name; its index is what the log, the trace and the rows record.
POINTS = (
    "spin_lock", "spin_unlock", "spin_trylock", "spin_blocked", "rwlock.read", "rwlock.write",
    "try_to_wake_up", "set_task_state", "ring_doorbell",
    "wq_add", "wq_del",
    "down", "up",
    "schedule", "process_timeout", "idle", "pause", "cpu_relax",
    "kswapd_wait", "kswapd_wake", "drain_all_pages.wait",
    "atomic_bitop", "bitop_window", "zone_set_flag", "zone_clear_flag",
    "handle_mm_fault", "shrink_lruvec", "exit_mmap",
    "may_oom.trylock", "may_oom.last_chance", "may_oom.out_of_memory", "may_oom.clear",
    "oom.select", "oom.kill", "oom.sleep",
    "memcg.charge_reclaim", "memcg.oom_trylock", "memcg.oom_wait", "memcg.oom_select", "memcg.oom_kill",
    "should_reclaim_retry",
    "throttle_direct_reclaim.wait",
    "shrink_inactive_list", "shrink_active_list", "shrink_page_list", "lru_add_drain", "exit_mmap.range",
    "touch", "balance_pgdat",
)
POINT_INDEX = {name: i for i, name in enumerate(POINTS)}


def point_index(name):
    """The index of point `name`; a name missing from POINTS gets a stable id from its CRC (shown as point#N)."""
    i = POINT_INDEX.get(name)
    if i is None:
        i = POINT_INDEX[name] = 1000 + zlib.crc32(name.encode()) % 1_000_000
    return i


def point_name(i):
    return POINTS[i] if 0 <= i < len(POINTS) else f"point#{i}"


def mix64(seed, step):
    """A stateless 64-bit mix of (seed, step) (splitmix64's finaliser): the strategies' only randomness."""
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def ctl_words(nr_rows):
    return CT_ROWS + nr_rows * R_NCOLS


# --- set-up (supervisor, before fork) -----------------------------------------------------------------------

def setup(m, run, hz, replay_pairs=None):
    """Initialise the controller block for `run` ([run] of the scenario) before the workers are forked.

    PCT (Burckhardt et al., ASPLOS 2010): n distinct random priorities d..d+n-1, and d - 1 change points
    drawn uniformly over the expected step count k; at the i-th change point the running row's priority drops
    to d - 1 - i. The run always goes to the highest-priority runnable row. Steps are counted only where the
    strategy has a choice (two or more rows runnable): a change point anywhere else could change nothing.
    """
    c = m.v_ctl
    n = m.nr_rows_cpu
    mode = MODES[run.schedule]
    c[CT_MODE] = mode
    c[CT_SEED] = run.seed
    c[CT_COST] = run.step_ns
    c[CT_HZ] = hz
    c[CT_DEADLINE] = int(run.seconds * 1_000_000_000)
    c[CT_SNAP_EVERY] = SNAPSHOT_NS
    c[CT_SNAP_NEXT] = SNAPSHOT_NS
    c[CT_NEXT_EVENT] = min(c[CT_SNAP_NEXT], c[CT_DEADLINE])
    c[CT_CHECK_AT] = CHECK_EVERY
    c[CT_HASH] = 0
    c[CT_STALL_LIMIT] = run.stall_jiffies
    rng = random.Random(run.seed)
    depth = run.pct_depth
    prios = list(range(depth, depth + n))
    rng.shuffle(prios)
    k = run.pct_steps or DEFAULT_PCT_STEPS
    changes = sorted(rng.randint(1, k) for _ in range(min(depth - 1, MAX_CHANGES)))
    for i, step in enumerate(changes):
        c[CT_CHANGE + i] = step
    c[CT_NCHANGE] = len(changes) if mode == MODE_PCT else 0
    c[CT_CHANGE_IDX] = 0
    c[CT_LOWPRIO] = depth - 1
    for row in range(n):
        b = CT_ROWS + row * R_NCOLS
        c[b + R_STATUS] = RUNNABLE
        c[b + R_PRIO] = prios[row]
        c[b + R_DEADLINE] = -1
        c[b + R_LOCK] = -1
    if mode == MODE_REPLAY:
        pairs = replay_pairs or [(0, 1)]
        m.ctl_replay[:len(pairs) * 2] = [v for pair in pairs for v in pair]
        c[CT_REPLAY_LEN] = len(pairs)
        c[CT_REPLAY_POS] = 1
        c[CT_REPLAY_ROW] = pairs[0][0]
        c[CT_REPLAY_LEFT] = pairs[0][1] - 1      # the first grant of the token is the log's step 0
    first = _first_runner(m, mode)
    c[CT_HOLDER] = first
    c[CT_LOG_ROW] = first
    c[CT_LOG_RUN] = 1


def _first_runner(m, mode):
    c = m.v_ctl
    n = m.nr_rows_cpu
    if mode == MODE_PCT:
        return max(range(n), key=lambda r: c[CT_ROWS + r * R_NCOLS + R_PRIO])
    if mode == MODE_REPLAY:
        return int(m.ctl_replay[0]) if c[CT_REPLAY_LEN] else 0
    return mix64(c[CT_SEED], 0) % n


def start(m):
    """Hand the token to the first runner (the supervisor, once the workers are released)."""
    os.eventfd_write(m.tokens[m.v_ctl[CT_HOLDER]], 1)


def kick(m, row):
    """A doorbell rang for `row`: a waiting row becomes runnable (the emulated IPI in a controlled mode)."""
    c = m.v_ctl
    b = CT_ROWS + row * R_NCOLS
    if c[b + R_STATUS] == WAITING:
        c[b + R_STATUS] = RUNNABLE
        c[b + R_DEADLINE] = -1
        c[CT_GEN] += 1


def release_all(m):
    """Wake every row's token wait (the supervisor's stop, or the end of the run): each sees G_STOP and leaves."""
    for fd in m.tokens:
        try:
            os.eventfd_write(fd, 1)
        except OSError:
            pass  # closed during teardown


def now_ns(m):
    """Virtual nanoseconds since boot."""
    return m.v_ctl[CT_VNOW]


# --- the controller of one process -------------------------------------------------------------------------

class Controller:
    """The token-passing side of one CPU or kswapd process (built after fork; `row` is its machine row)."""

    def __init__(self, cpu):
        m = cpu.m
        row = cpu.id
        self.cpu = cpu
        self.m = m
        self.row = row
        self.c = m.v_ctl
        self.g = m.v_glob
        self.n = m.nr_rows_cpu
        self.tokens = m.tokens
        self.mode = self.c[CT_MODE]
        self.cost = self.c[CT_COST]
        self.seed = self.c[CT_SEED]
        self.base = CT_ROWS + row * R_NCOLS
        self._gen = -1
        self._runnable = ()
        self._best = -1

    # -- entering and leaving ---------------------------------------------------------------------------
    def enter(self):
        """Wait for the token the first time. Every row waits, the first runner too: the supervisor wrote its
        token once (`start`), and a row chosen before it got here finds its token already written."""
        self._wait_token()

    def _wait_token(self):
        from oomemu.sync import RunStopped
        os.eventfd_read(self.tokens[self.row])
        if self.g[G_STOP]:
            raise RunStopped(f"run stopped while row {self.row} waited for the token")

    # -- the scheduling point ---------------------------------------------------------------------------
    def point(self, cpu, name, obj=-1):
        """A scheduling point of the running row (it stays runnable)."""
        self._reschedule(point_index(name), obj)

    def relax(self, cpu, name):
        """A busy-wait turn: PCT demotes the spinner below every row so the one it waits for can run."""
        if self.mode == MODE_PCT:
            self._demote(self.row)
        self.point(cpu, name)

    def block_on_lock(self, cpu, index):
        """The real lock `index` is held by a row that does not run: wait until its unlock, then retry."""
        c = self.c
        c[self.base + R_LOCK] = index
        self._set_status(self.row, BLOCKED)
        self._reschedule(POINT_INDEX["spin_blocked"], index)

    def unlocked(self, index):
        """Lock `index` was released: the rows blocked on it become runnable (they retry the real lock)."""
        c = self.c
        for row in range(self.n):
            b = CT_ROWS + row * R_NCOLS
            if c[b + R_STATUS] == BLOCKED and c[b + R_LOCK] == index:
                c[b + R_LOCK] = -1
                c[b + R_STATUS] = RUNNABLE
                c[CT_GEN] += 1

    def wait(self, cpu, deadline_ns, name="idle"):
        """Nothing to do until a doorbell rings or virtual time reaches `deadline_ns` (since boot; -1: none)."""
        c = self.c
        c[self.base + R_DEADLINE] = deadline_ns
        if 0 <= deadline_ns < c[CT_NEXT_EVENT]:
            c[CT_NEXT_EVENT] = deadline_ns
        self._set_status(self.row, WAITING)
        self._reschedule(point_index(name), -1)

    def pause(self, cpu):
        """A pause point (the row holds no lock): park here while a snapshot or the end is pending."""
        c = self.c
        if not c[CT_PARK]:
            return
        self._set_status(self.row, PARKED)
        self._reschedule(POINT_INDEX["pause"], -1)

    # -- internals ------------------------------------------------------------------------------------------
    def _set_status(self, row, status):
        c = self.c
        c[CT_ROWS + row * R_NCOLS + R_STATUS] = status
        c[CT_GEN] += 1

    def _reschedule(self, point, obj):
        """Count a step and give the token to the strategy's choice (this row, if it is runnable and chosen)."""
        c = self.c
        step = c[CT_STEP] + 1
        c[CT_STEP] = step
        vnow = c[CT_VNOW] + self.cost
        c[CT_VNOW] = vnow
        if vnow >= c[CT_NEXT_EVENT] or step >= c[CT_CHECK_AT]:
            self._events(step, vnow)
        self._choose_and_go(step, point, obj)

    def _choose_and_go(self, step, point, obj):
        c = self.c
        while True:
            nxt = self._choose(step)
            if nxt >= 0:
                break
            self._nothing_runnable(step)
            step = c[CT_STEP]
        if nxt == c[CT_LOG_ROW]:
            c[CT_LOG_RUN] += 1
        else:
            self._log_switch(nxt)
        if nxt != self.row:
            c[self.base + R_POINT] = point
            c[self.base + R_OBJ] = obj
            c[CT_SWITCHES] += 1
            if self.cpu.trace is not None:
                from oomemu.trace import events as tp
                tp.trace_sched_token(self.cpu, step, point, obj, nxt, self.cpu.os_pid)
            c[CT_HOLDER] = nxt
            os.eventfd_write(self.tokens[nxt], 1)
            self._wait_token()
        # The row holds the token again; if it is not runnable (it waits, or parked) someone woke it for a
        # reason the caller re-examines.
        b = self.base
        st = c[b + R_STATUS]
        if st != RUNNABLE:
            c[b + R_STATUS] = RUNNABLE
            c[b + R_DEADLINE] = -1
            c[CT_GEN] += 1

    def _refresh(self):
        c = self.c
        gen = c[CT_GEN]
        runnable = tuple(r for r in range(self.n) if c[CT_ROWS + r * R_NCOLS + R_STATUS] == RUNNABLE)
        self._runnable = runnable
        best, best_prio = -1, None
        for r in runnable:
            prio = c[CT_ROWS + r * R_NCOLS + R_PRIO]
            if best_prio is None or prio > best_prio:
                best, best_prio = r, prio
        self._best = best
        self._gen = gen

    def _choose(self, step):
        c = self.c
        if c[CT_GEN] != self._gen:
            self._refresh()
        mode = self.mode
        if mode == MODE_PCT:
            if len(self._runnable) > 1:
                n = c[CT_CHOICES] + 1
                c[CT_CHOICES] = n
                if c[CT_NCHANGE] and n >= c[CT_CHANGE + c[CT_CHANGE_IDX]]:
                    c[CT_CHANGE_IDX] += 1        # a change point: the row that ran this step drops below all
                    c[CT_NCHANGE] -= 1
                    self._demote(self.row)
                    self._refresh()
            if c[CT_LOG_RUN] >= PCT_SLICE and len(self._runnable) > 1 and c[CT_LOG_ROW] == self._best:
                # A row that kept the token this long while others could run is demoted: CPUs run in
                # parallel, so no CPU's retry loop may starve the one it waits for (a fair PCT).
                self._demote(self._best)
                self._refresh()
            return self._best
        if mode == MODE_RANDOM:
            runnable = self._runnable
            if len(runnable) <= 1:
                return runnable[0] if runnable else -1
            return runnable[mix64(self.seed, step) % len(runnable)]
        return self._replay_choice(step)

    def _replay_choice(self, step):
        c = self.c
        if not self._runnable:
            return -1
        if c[CT_DIVERGED]:
            return self._best     # the run is being ended; any runnable row will do
        left = c[CT_REPLAY_LEFT]
        while left == 0:
            pos = c[CT_REPLAY_POS]
            if pos >= c[CT_REPLAY_LEN]:
                self._diverged(step, "the recorded schedule ended before the run did")
                return self._best
            c[CT_REPLAY_ROW] = self.m.ctl_replay[2 * pos]
            left = self.m.ctl_replay[2 * pos + 1]
            c[CT_REPLAY_POS] = pos + 1
        c[CT_REPLAY_LEFT] = left - 1
        row = c[CT_REPLAY_ROW]
        if row not in self._runnable:
            self._diverged(step, f"the schedule runs row {row}, which is {self.status_name(row)} here")
            return self._best
        return row

    def _diverged(self, step, why):
        c = self.c
        if not c[CT_DIVERGED]:
            c[CT_DIVERGED] = step
            write_note(self.m, f"step {step}: {why}")
            self._request_end(END_DIVERGED, step)

    def status_name(self, row):
        return STATUS_NAMES[self.c[CT_ROWS + row * R_NCOLS + R_STATUS]]

    def _log_switch(self, nxt):
        c = self.c
        prev, run = c[CT_LOG_ROW], c[CT_LOG_RUN]
        if prev >= 0:
            n = c[CT_LOG_LEN]
            if n < LOG_PAIRS:
                self.m.v_ctl_log[2 * n] = prev
                self.m.v_ctl_log[2 * n + 1] = run
                c[CT_LOG_LEN] = n + 1
            else:
                c[CT_LOG_LOST] += 1
            c[CT_HASH] = (c[CT_HASH] * 1000003 ^ (prev << 40 | run)) & 0x7FFFFFFFFFFFFFFF
        c[CT_LOG_ROW] = nxt
        c[CT_LOG_RUN] = 1

    def _demote(self, row):
        c = self.c
        c[CT_ROWS + row * R_NCOLS + R_PRIO] = c[CT_LOWPRIO]
        c[CT_LOWPRIO] -= 1
        c[CT_GEN] += 1

    def _events(self, step, vnow):
        """Timers, snapshots, the deadline, PCT change points and the end conditions (deterministic steps)."""
        c = self.c
        if step >= c[CT_CHECK_AT]:
            # the end conditions are tested every CHECK_EVERY steps whatever the strategy, so a replay ends at
            # the very step its recording did
            if step % CHECK_EVERY == 0 and not c[CT_END]:
                g = self.g
                if g[G_PANIC]:
                    self._request_end(END_PANIC, step)
                elif g[G_NR_USER_LIVE] <= 1:
                    self._request_end(END_ALL_EXITED, step)
            c[CT_CHECK_AT] = (step // CHECK_EVERY + 1) * CHECK_EVERY
        if vnow >= c[CT_NEXT_EVENT]:
            self._time_events(step, vnow)

    def _time_events(self, step, vnow):
        c = self.c
        nxt = c[CT_DEADLINE]
        for row in range(self.n):
            b = CT_ROWS + row * R_NCOLS
            if c[b + R_STATUS] == WAITING:
                dl = c[b + R_DEADLINE]
                if 0 <= dl <= vnow:
                    c[b + R_STATUS] = RUNNABLE
                    c[b + R_DEADLINE] = -1
                    c[CT_GEN] += 1
                elif dl >= 0:
                    nxt = min(nxt, dl)
        if vnow >= c[CT_DEADLINE] and not c[CT_END]:
            self._request_end(END_DEADLINE, step)
        if vnow >= c[CT_SNAP_NEXT]:
            c[CT_SNAP_NEXT] += c[CT_SNAP_EVERY] * max(1, (vnow - c[CT_SNAP_NEXT]) // c[CT_SNAP_EVERY] + 1)
            if not c[CT_PARK]:
                c[CT_PARK] = PARK_SNAPSHOT
        if c[CT_STALL_LIMIT] and vnow >= c[CT_STALL_NEXT]:
            c[CT_STALL_NEXT] = vnow + 1_000_000_000 // c[CT_HZ]
            if stalled(self.m) and not c[CT_END]:
                self._request_end(END_STALL, step)
        c[CT_NEXT_EVENT] = min(nxt, c[CT_SNAP_NEXT], c[CT_DEADLINE])

    def _request_end(self, reason, step):
        c = self.c
        c[CT_END] = reason
        c[CT_END_STEP] = step
        c[CT_PARK] = PARK_END

    def _nothing_runnable(self, step):
        """No row can run: finish a park, or let virtual time jump to the earliest timer."""
        c = self.c
        blocked = [r for r in range(self.n) if c[CT_ROWS + r * R_NCOLS + R_STATUS] == BLOCKED]
        if blocked:
            write_note(self.m, "deadlock: " + ", ".join(
                f"row {r} waits for {self.m.lock_name(c[CT_ROWS + r * R_NCOLS + R_LOCK])}" for r in blocked))
            c[CT_END] = END_DEADLOCK
            c[CT_END_STEP] = step
            self._finish()
        if c[CT_PARK] == PARK_END:
            self._finish()
        if c[CT_PARK] == PARK_SNAPSHOT:
            c[CT_PARK_READY] = 1
            self._wait_token()           # the supervisor looks, then hands the token back
            c[CT_PARK] = 0
            c[CT_PARK_READY] = 0
            for row in range(self.n):
                b = CT_ROWS + row * R_NCOLS
                if c[b + R_STATUS] == PARKED:
                    c[b + R_STATUS] = RUNNABLE
            c[CT_GEN] += 1
            return
        # every row waits: jump to the earliest deadline (a discrete-event step)
        dls = [c[CT_ROWS + r * R_NCOLS + R_DEADLINE] for r in range(self.n)
               if c[CT_ROWS + r * R_NCOLS + R_STATUS] == WAITING and c[CT_ROWS + r * R_NCOLS + R_DEADLINE] >= 0]
        target = min(dls + [c[CT_DEADLINE], c[CT_SNAP_NEXT]])
        if target > c[CT_VNOW]:
            c[CT_VNOW] = target
        self._time_events(step, c[CT_VNOW])
        if not c[CT_END] and not any(c[CT_ROWS + r * R_NCOLS + R_STATUS] == RUNNABLE for r in range(self.n)) \
                and not c[CT_PARK]:
            self._request_end(END_DEADLINE, step)

    def _finish(self):
        """Every row is parked (or waits): stop the run here and release the others."""
        from oomemu.sync import RunStopped
        c = self.c
        self.g[G_STOP] = 1
        c[CT_PARK] = 0
        for row in range(self.n):
            if row != self.row:
                os.eventfd_write(self.tokens[row], 1)
        raise RunStopped(f"the controller ended the run at step {c[CT_STEP]}")


# --- stall test shared with free mode's supervisor ------------------------------------------------------------

def stalled(m):
    """The controlled-mode twin of the supervisor's stall watch: no page freed, no kill and no allocation for
    `stall_jiffies` while allocators keep looping. Its state lives in the controller block."""
    from oomemu.machine import G_LAST_FREE_JIFFY, G_LAST_KILL_JIFFY
    from oomemu.mm import vmstat
    c = m.v_ctl
    cpu = m.cpu
    marker = zlib.crc32(repr((int(m.glob[G_LAST_FREE_JIFFY]), int(m.glob[G_LAST_KILL_JIFFY]),
                              int(cpu[:, vmstat.NR_ALLOCS].sum()))).encode())
    looping = int(cpu[:, [vmstat.NR_SLOWPATH_ENTRIES, vmstat.NR_DIRECT_RECLAIMS, vmstat.NR_OOM_LOCK_BUSY]].sum())
    now = c[CT_VNOW] * c[CT_HZ] // 1_000_000_000
    if not c[CT_STALL_MARK + 3] or marker != c[CT_STALL_MARK]:
        c[CT_STALL_MARK] = marker
        c[CT_STALL_MARK + 1] = now
        c[CT_STALL_MARK + 2] = looping
        c[CT_STALL_MARK + 3] = 1
        return False
    return now - c[CT_STALL_MARK + 1] >= c[CT_STALL_LIMIT] and looping > c[CT_STALL_MARK + 2]


def write_note(m, text):
    """Leave a one-line diagnostic for the supervisor (a divergence, a deadlock)."""
    data = text.encode()[:len(m.ctl_note) - 1]
    m.ctl_note[:] = 0
    m.ctl_note[:len(data)] = list(data)


def read_note(m):
    return bytes(m.ctl_note).split(b"\0", 1)[0].decode(errors="replace")


# --- what the supervisor reads afterwards ---------------------------------------------------------------------

def schedule_log(m):
    """The run's schedule: a list of (row, steps) pairs, the current run included."""
    c = m.v_ctl
    n = c[CT_LOG_LEN]
    flat = m.ctl_log[:2 * n].tolist()
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    if c[CT_LOG_ROW] >= 0 and c[CT_LOG_RUN]:
        pairs.append((int(c[CT_LOG_ROW]), int(c[CT_LOG_RUN])))
    return pairs


def summary(m):
    """Counters of the controller for report.json."""
    c = m.v_ctl
    return {"steps": int(c[CT_STEP]), "choice_points": int(c[CT_CHOICES]), "switches": int(c[CT_SWITCHES]), "virtual_ns": int(c[CT_VNOW]),
            "end": END_REASONS.get(int(c[CT_END])), "end_step": int(c[CT_END_STEP]),
            "log_lost": int(c[CT_LOG_LOST]), "diverged_step": int(c[CT_DIVERGED])}


def row_states(m):
    """Each row's status and last point, for a diagnostic."""
    c = m.v_ctl
    out = []
    for r in range(m.nr_rows_cpu):
        b = CT_ROWS + r * R_NCOLS
        out.append({"row": r, "status": STATUS_NAMES[c[b + R_STATUS]], "point": point_name(c[b + R_POINT]),
                    "holder": bool(c[CT_HOLDER] == r)})
    return out
