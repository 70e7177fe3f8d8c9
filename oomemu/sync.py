"""The cross-CPU primitives: the only place one CPU process touches another's state (DESIGN §2).

Spinlocks are inherited process-shared semaphores whose owner (cpu, OS pid, task row) is recorded in the
segment; they never sleep, so the CPU process genuinely spins (blocks) while another CPU holds them. Every
blocking acquire gives up after `LOCK_TIMEOUT` seconds with a LockTimeout that names the lock and its holder,
and notices a stopped run, so a dead holder is reported rather than hanging the machine. Doorbells are
eventfds made before fork: ringing one is the emulated IPI. Wait queues are FIFO lists of task rows.

These calls are the scheduling points the controlled modes gate (DESIGN §8): in free mode `cpu.ctl` is None
and each costs one attribute test; in a controlled mode they pass through `oomemu/control.py`.
"""
import os
import select
import time

from oomemu import control
from oomemu.errors import EmulatorError, LockTimeout
from oomemu.machine import C_HEARTBEAT, C_PAUSED, G_BOOT_NS, G_PAUSE, G_STOP

LOCK_TIMEOUT = 10.0
_SPIN_SLICE = 0.05


def sched_point(cpu, name, obj=-1):
    """An explicit scheduling point: a place where the kernel could be interrupted or calls cond_resched().

    `name` is stable (it appears in the schedule log and the trace); `obj` optionally names what the point is
    about (a lock, a zone, a task row). Free mode: nothing happens. Emulator-only.
    """
    ctl = cpu.ctl
    if ctl is not None:
        ctl.point(cpu, name, obj)


def cpu_relax(cpu, name):
    """One turn of a busy-wait loop on another CPU's progress (a flag, a counter): call it in every iteration.

    Follows: cpu_relax() in such loops. In a controlled mode the waiting row gives the token away, so the CPU it
    waits for can run. Free mode: nothing happens.
    """
    ctl = cpu.ctl
    if ctl is not None:
        ctl.relax(cpu, name)


class RunStopped(EmulatorError):
    """The supervisor stopped the run while this CPU was waiting for a lock (not a failure)."""


def spin_lock(cpu, index):
    """Take spinlock `index` for CPU context `cpu`, spinning (blocking the CPU) until it is free.

    Follows: include/linux/spinlock.h spin_lock(). Differs: gives up after LOCK_TIMEOUT with LockTimeout.
    In a controlled mode a held lock blocks the caller on it (shadow locking) and passes the token.
    """
    m = cpu.m
    lock = m.locks[index]
    ctl = cpu.ctl
    if ctl is not None:
        ctl.point(cpu, "spin_lock", index)
        while not lock.acquire(False):
            ctl.block_on_lock(cpu, index)
    elif not lock.acquire(False):
        _spin_lock_slow(cpu, m, lock, index)
    owner = m.v_lock_owner
    base = index * 3
    owner[base] = cpu.id
    owner[base + 1] = cpu.os_pid
    owner[base + 2] = cpu.current


def _spin_lock_slow(cpu, m, lock, index):
    deadline = time.monotonic() + LOCK_TIMEOUT
    while not lock.acquire(True, _SPIN_SLICE):
        if m.v_glob[G_STOP]:
            raise RunStopped(f"run stopped while cpu {cpu.id} waited for {m.lock_name(index)}")
        if time.monotonic() > deadline:
            holder = m.lock_owner[index]
            raise LockTimeout(f"cpu {cpu.id} waited {LOCK_TIMEOUT:.0f}s for {m.lock_name(index)}, "
                              f"held by cpu {holder[0]} (pid {holder[1]}, task row {holder[2]})")


def spin_unlock(cpu, index):
    """Release spinlock `index`. Follows: include/linux/spinlock.h spin_unlock()."""
    m = cpu.m
    owner = m.v_lock_owner
    base = index * 3
    owner[base] = -1
    owner[base + 1] = -1
    owner[base + 2] = -1
    m.locks[index].release()
    ctl = cpu.ctl
    if ctl is not None:
        ctl.unlocked(index)
        ctl.point(cpu, "spin_unlock", index)


def spin_trylock(cpu, index):
    """Take spinlock `index` if it is free; True on success. Follows: spin_trylock()."""
    m = cpu.m
    ctl = cpu.ctl
    if ctl is not None:
        ctl.point(cpu, "spin_trylock", index)
    if not m.locks[index].acquire(False):
        return False
    base = index * 3
    m.v_lock_owner[base] = cpu.id
    m.v_lock_owner[base + 1] = cpu.os_pid
    m.v_lock_owner[base + 2] = cpu.current
    return True


class spinlock:
    """`with spinlock(cpu, index):` for acquire and release in one function (P4)."""

    __slots__ = ("cpu", "index")

    def __init__(self, cpu, index):
        self.cpu = cpu
        self.index = index

    def __enter__(self):
        spin_lock(self.cpu, self.index)

    def __exit__(self, *exc):
        spin_unlock(self.cpu, self.index)


def locks_held_by(m, os_pid):
    """Names of the locks whose recorded owner is OS process `os_pid` (for a dead worker's report)."""
    return [m.lock_name(i) for i in range(m.nr_locks) if m.lock_owner[i, 1] == os_pid]


def pause_point(cpu):
    """Park here while the supervisor takes a quiescent snapshot (no lock is held at a pause point).

    In a controlled mode the controller decides when (a snapshot or the end of the run, at a chosen step).
    """
    ctl = cpu.ctl
    if ctl is not None:
        ctl.pause(cpu)
        return
    m = cpu.m
    # The worker's heartbeat (supervisor.Watchdog, supervisor.row_trace_floor): a pause point is quiescent, so
    # every record this row wrote is published and every later one is stamped after this.
    m.v_cpu[cpu.id * m.cpu.shape[1] + C_HEARTBEAT] = time.monotonic_ns()
    if not m.v_glob[G_PAUSE]:
        return
    i = cpu.id * m.cpu.shape[1] + C_PAUSED
    m.v_cpu[i] = 1
    while m.v_glob[G_PAUSE] and not m.v_glob[G_STOP]:
        time.sleep(0.0005)
    m.v_cpu[i] = 0


# --- doorbells (the emulated IPI) ---------------------------------------------------------------------------

def ring_doorbell(m, row):
    """Kick CPU (or kswapd) `row`: it re-examines its runqueue at once. Like smp_send_reschedule().

    In a controlled mode a waiting `row` becomes runnable; the ring itself is not a scheduling point (the
    lock or wake-up around it is), since the supervisor rings doorbells too.
    """
    try:
        os.eventfd_write(m.doorbells[row], 1)
    except BlockingIOError:
        pass  # the counter is saturated: the target is certainly going to look
    if m.controlled:
        control.kick(m, row)


class DoorbellWaiter:
    """Blocks the calling process on its own doorbell (an idle CPU, a sleeping kswapd)."""

    def __init__(self, m, row):
        self._poll = select.poll()
        self._poll.register(m.doorbells[row], select.POLLIN)

    def wait(self, timeout_ms):
        """Return True if the doorbell rang within timeout_ms (it is not consumed: see drain_doorbell)."""
        return bool(self._poll.poll(timeout_ms))

    def wait_until(self, cpu, deadline_ns, name="idle"):
        """Wait for the doorbell until the clock (kernel/time.now_ns) reaches `deadline_ns` (None: no limit);
        True if it rang. In a controlled mode the row waits for the token instead, with a virtual deadline."""
        ctl = cpu.ctl
        if ctl is not None:
            if self._poll.poll(0):
                return True
            ctl.wait(cpu, -1 if deadline_ns is None else deadline_ns - cpu.m.v_glob[G_BOOT_NS], name)
            return bool(self._poll.poll(0))
        if deadline_ns is None:
            timeout_ms = -1
        else:
            timeout_ms = max(0, (deadline_ns - time.monotonic_ns()) // 1_000_000 + 1)
        return bool(self._poll.poll(timeout_ms))


def drain_doorbell(m, row):
    """Consume pending rings of `row`'s doorbell; True if any."""
    try:
        os.eventfd_read(m.doorbells[row])
        return True
    except BlockingIOError:
        return False


# --- wake-ups ---------------------------------------------------------------------------------------------

def try_to_wake_up(cpu, task, state_mask):
    """Make `task` runnable if it sleeps in a state within `state_mask`; ring its CPU. Returns the state it
    slept in if woken, else 0.

    Follows: kernel/sched/core.c try_to_wake_up(), 3.14, with the task's runqueue lock standing in for
    p->pi_lock so a wake-up cannot land on a later, different sleep of the same task.
    """
    m = cpu.m
    sched_point(cpu, "try_to_wake_up", task)
    target = m.v_task_cpu[task]
    lk = m.rq_lock(target)
    spin_lock(cpu, lk)
    state = m.v_task_state[task]
    woken = state if state & state_mask else 0
    if woken:
        m.v_task_state[task] = 0  # TASK_RUNNING
    spin_unlock(cpu, lk)
    if woken:
        ring_doorbell(m, target)
    return woken


def set_task_state(cpu, task, state):
    """Store `task`'s state under its runqueue lock (pairs with try_to_wake_up)."""
    m = cpu.m
    sched_point(cpu, "set_task_state", task)
    lk = m.rq_lock(m.v_task_cpu[task])
    spin_lock(cpu, lk)
    m.v_task_state[task] = state
    spin_unlock(cpu, lk)


# --- wait queues (FIFO of task rows; caller holds the queue's lock) ----------------------------------------

def wq_add_tail(cpu, wq, task):
    """Append `task` to wait queue `wq`. Caller holds the lock guarding wq."""
    sched_point(cpu, "wq_add", wq)
    m = cpu.m
    v, nxt = m.v_wq, m.v_task_wq_next
    nxt[task] = -1
    tail = v[wq * 2 + 1]
    if tail == -1:
        v[wq * 2] = task
    else:
        nxt[tail] = task
    v[wq * 2 + 1] = task


def wq_pop_head(cpu, wq):
    """Remove and return the first waiter of `wq`, or -1. Caller holds the lock guarding wq."""
    sched_point(cpu, "wq_del", wq)
    m = cpu.m
    v, nxt = m.v_wq, m.v_task_wq_next
    head = v[wq * 2]
    if head != -1:
        v[wq * 2] = nxt[head]
        if v[wq * 2] == -1:
            v[wq * 2 + 1] = -1
        nxt[head] = -1
    return head


def wq_peek(m, wq):
    """The first waiter of `wq` without removing it, or -1."""
    return m.v_wq[wq * 2]


def wq_remove(cpu, wq, task):
    """Unlink `task` from `wq` if it is queued there. Caller holds the lock guarding wq."""
    sched_point(cpu, "wq_del", wq)
    m = cpu.m
    v, nxt = m.v_wq, m.v_task_wq_next
    prev, cur = -1, v[wq * 2]
    while cur != -1:
        if cur == task:
            following = nxt[cur]
            if prev == -1:
                v[wq * 2] = following
            else:
                nxt[prev] = following
            if v[wq * 2 + 1] == cur:
                v[wq * 2 + 1] = prev
            nxt[cur] = -1
            return True
        prev, cur = cur, nxt[cur]
    return False



# --- atomic bit operations on shared int64 words --------------------------------------------------------------
# Flag words that several CPU processes update (a task's thread-info flags: TIF_MEMDIE set by the OOM killer,
# TIF_SIGPENDING set by a signal sender and cleared by the task itself) must never lose an update, as the
# kernel's set_bit()/clear_bit() never do. `words` is a writable int64 buffer (a v_* view of a segment column).
# The compiled trace extension does each update as one locked instruction; without it, every update of every
# such word takes one spinlock (L_BITOPS), so the Python fallback is atomic too, only slower. Plain reads of a
# word stay plain loads, as test_bit() is.

from oomemu.machine import L_BITOPS  # noqa: E402  (this section's own import)

try:
    from oomemu.trace._ring import atomic_fetch_and as _fetch_and, atomic_fetch_or as _fetch_or
except ImportError:          # no compiler at install time
    _fetch_and = _fetch_or = None
try:
    from oomemu.trace._ring import atomic_fetch_add as _fetch_add
except ImportError:          # no compiler, or an extension built before the add existed
    _fetch_add = None


def _nonatomic_update(cpu, words, index, mask, set_bits):
    """Debug break `nonatomic_bitops` only: a plain read-modify-write with a window between the read and the
    write, so a concurrent update of the same word can be lost."""
    old = words[index]
    if cpu.ctl is not None:
        sched_point(cpu, "bitop_window", index)   # the window, as a scheduling point
    else:
        time.sleep(0.0005)
    words[index] = (old | mask) if set_bits else (old & ~mask)
    return old


def _locked_update(cpu, words, index, mask, set_bits):
    spin_lock(cpu, L_BITOPS)
    try:
        old = words[index]
        words[index] = (old | mask) if set_bits else (old & ~mask)
    finally:
        spin_unlock(cpu, L_BITOPS)
    return old


def atomic_fetch_or(cpu, words, index, mask):
    """words[index] |= mask atomically; returns the old word. Follows: atomic64_fetch_or() semantics."""
    sched_point(cpu, "atomic_bitop", index)
    if cpu.debug_break and "nonatomic_bitops" in cpu.debug_break:
        return _nonatomic_update(cpu, words, index, mask, True)
    if _fetch_or is not None:
        return _fetch_or(words, index, mask)
    return _locked_update(cpu, words, index, mask, True)


def atomic_fetch_andnot(cpu, words, index, mask):
    """words[index] &= ~mask atomically; returns the old word. Follows: atomic64_fetch_andnot() semantics."""
    sched_point(cpu, "atomic_bitop", index)
    if cpu.debug_break and "nonatomic_bitops" in cpu.debug_break:
        return _nonatomic_update(cpu, words, index, mask, False)
    if _fetch_and is not None:
        return _fetch_and(words, index, ~mask)
    return _locked_update(cpu, words, index, mask, False)


def atomic_long_add(cpu, words, index, delta):
    """words[index] += delta atomically (a zone counter several CPUs update without a lock).

    Follows: atomic_long_add() semantics, as mod_zone_page_state() folds into zone->vm_stat.
    """
    if _fetch_add is not None:
        _fetch_add(words, index, delta)
        return
    spin_lock(cpu, L_BITOPS)
    try:
        words[index] += delta
    finally:
        spin_unlock(cpu, L_BITOPS)


def set_bit(cpu, words, index, mask):
    """Set the bits of `mask` in words[index]. Follows: include/asm-generic/bitops set_bit() (atomic), as
    set_tsk_thread_flag() uses it."""
    atomic_fetch_or(cpu, words, index, mask)


def clear_bit(cpu, words, index, mask):
    """Clear the bits of `mask` in words[index]. Follows: clear_bit() (atomic), as clear_tsk_thread_flag()."""
    atomic_fetch_andnot(cpu, words, index, mask)


def test_and_set_bit(cpu, words, index, mask):
    """Set `mask` in words[index]; True if any of its bits was already set. Follows: test_and_set_bit()."""
    return bool(atomic_fetch_or(cpu, words, index, mask) & mask)


def test_and_clear_bit(cpu, words, index, mask):
    """Clear `mask` in words[index]; True if any of its bits was set. Follows: test_and_clear_bit()."""
    return bool(atomic_fetch_andnot(cpu, words, index, mask) & mask)


# --- reader-writer spinlocks (rwlock_t) -------------------------------------------------------------------------
# An rwlock's state is one int64 slot of the glob table: the number of readers inside, or -1 while a writer
# holds it. The slot is read and changed only under the spinlock `index` (held for a few instructions), so
# readers run in parallel and a writer excludes everyone. Like 3.14's x86 rwlock_t (before the queued rwlock
# of 3.16) it is not fair: a stream of readers can keep a writer waiting.

def _rw_acquire(cpu, index, slot, write):
    m = cpu.m
    g = m.v_glob
    name = "rwlock.write" if write else "rwlock.read"
    deadline = None
    while True:
        spin_lock(cpu, index)
        state = g[slot]
        if (state == 0) if write else (state >= 0):
            g[slot] = -1 if write else state + 1
            spin_unlock(cpu, index)
            return
        spin_unlock(cpu, index)
        cpu_relax(cpu, name)
        if deadline is None:
            deadline = time.monotonic() + LOCK_TIMEOUT
        if m.v_glob[G_STOP]:
            raise RunStopped(f"run stopped while cpu {cpu.id} waited for {m.lock_name(index)} ({name})")
        if time.monotonic() > deadline:
            held = "held for write" if state < 0 else f"held by {state} reader(s)"
            raise LockTimeout(f"cpu {cpu.id} waited {LOCK_TIMEOUT:.0f}s for {m.lock_name(index)} "
                              f"({name}); it is {held}")


def read_lock(cpu, index, slot):
    """Enter rwlock `slot` (guarded by spinlock `index`) as a reader; other readers may be inside.

    Follows: include/linux/rwlock.h read_lock(), 3.14. Differs: gives up after LOCK_TIMEOUT.
    """
    _rw_acquire(cpu, index, slot, False)


def read_unlock(cpu, index, slot):
    """Leave as a reader. Follows: read_unlock()."""
    spin_lock(cpu, index)
    cpu.m.v_glob[slot] -= 1
    spin_unlock(cpu, index)


def write_lock(cpu, index, slot):
    """Take rwlock `slot` exclusively, waiting for every reader to leave. Follows: write_lock(), 3.14."""
    _rw_acquire(cpu, index, slot, True)


def write_unlock(cpu, index, slot):
    """Release the write hold. Follows: write_unlock()."""
    spin_lock(cpu, index)
    cpu.m.v_glob[slot] = 0
    spin_unlock(cpu, index)


class read_locked:
    """`with read_locked(cpu, index, slot):` for read_lock/read_unlock in one function."""

    __slots__ = ("cpu", "index", "slot")

    def __init__(self, cpu, index, slot):
        self.cpu, self.index, self.slot = cpu, index, slot

    def __enter__(self):
        read_lock(self.cpu, self.index, self.slot)

    def __exit__(self, *exc):
        read_unlock(self.cpu, self.index, self.slot)


class write_locked:
    """`with write_locked(cpu, index, slot):` for write_lock/write_unlock in one function."""

    __slots__ = ("cpu", "index", "slot")

    def __init__(self, cpu, index, slot):
        self.cpu, self.index, self.slot = cpu, index, slot

    def __enter__(self):
        write_lock(self.cpu, self.index, self.slot)

    def __exit__(self, *exc):
        write_unlock(self.cpu, self.index, self.slot)
