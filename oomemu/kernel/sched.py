"""The per-CPU scheduler: a runqueue of simulated tasks whose kernel code is coroutines.

Follows kernel/sched/core.c of Linux 3.14 in spirit: schedule(), schedule_timeout*(), set_current_state(),
cond_resched(). A task's execution context (its "stack") is a coroutine that lives only in the process of the
CPU it runs on; its state (TASK_RUNNING, TASK_UNINTERRUPTIBLE, ...) lives in the shared task table, so any CPU
can wake it. This module holds the only `yield` that returns control to the CPU loop (the traps below).

Differs: no preemption inside kernel code and no load balancing; tasks stay on the CPU they were created on,
and a task gives up the CPU at the end of every user step (a timer tick) or when it sleeps.
"""
import heapq
import time
from collections import deque

from oomemu.include.sched import (SIGKILL, TASK_INTERRUPTIBLE, TASK_NEW, TASK_NORMAL, TASK_RUNNING,
                                  TASK_WAKEKILL, TIF_SIGPENDING)
from oomemu.kernel import printk
from oomemu.kernel import time as ktime
from oomemu.machine import C_CURRENT, C_DRAIN, C_EXIT, C_HEARTBEAT, C_PID, G_GO, G_NR_TASK_ROWS, G_STOP
from oomemu import sync
from oomemu.trace import events as tp

_SLEEP = 1
_PREEMPT = 2
MAX_SCHEDULE_TIMEOUT = -1
_IDLE_POLL_MS = 20


class _Trap:
    """The bottom of every sleep: hands a request to the CPU loop and resumes when the task runs again."""

    __slots__ = ("msg",)

    def __init__(self, msg):
        self.msg = msg

    def __await__(self):
        return (yield self.msg)


_PREEMPT_TRAP = _Trap((_PREEMPT, 0))
_SLEEP_TRAP = _Trap((_SLEEP, 0))


def set_current_state(cpu, state):
    """Set current's state before it tests its wait condition. Follows: set_current_state()."""
    sync.set_task_state(cpu, cpu.current, state)


def __set_current_state(cpu, state):
    """Set current's state without the runqueue lock (back to TASK_RUNNING only). Follows: __set_current_state()."""
    cpu.m.v_task_state[cpu.current] = state


async def schedule(cpu):
    """Give up the CPU; if current's state is not TASK_RUNNING it sleeps until woken. Follows: schedule()."""
    await _SLEEP_TRAP


async def schedule_timeout(cpu, timeout):
    """Sleep in the state already set for at most `timeout` jiffies; return the jiffies left.

    Follows: kernel/timer.c schedule_timeout(), 3.14.
    """
    if timeout == MAX_SCHEDULE_TIMEOUT:
        await _SLEEP_TRAP
        return MAX_SCHEDULE_TIMEOUT
    m = cpu.m
    cur = cpu.current
    state = m.v_task_state[cur]
    tp.trace_sleep(cpu, state, tp.WAIT_TIMER, timeout)
    start = ktime.jiffies(m)
    deadline = ktime.timer_deadline_ns(m, timeout)
    await _Trap((_SLEEP, deadline))
    left = max(0, timeout - (ktime.jiffies(m) - start))
    tp.trace_wakeup(cpu, m.v_task_pid[cur], state, tp.WAKE_EARLY if left else tp.WAKE_TIMER)
    return left


async def schedule_timeout_uninterruptible(cpu, timeout):
    """Sleep `timeout` jiffies; signals do not end it. Follows: schedule_timeout_uninterruptible()."""
    set_current_state(cpu, 2)  # TASK_UNINTERRUPTIBLE
    return await schedule_timeout(cpu, timeout)


async def schedule_timeout_killable(cpu, timeout):
    """Sleep `timeout` jiffies, ended at once by a fatal signal. Follows: schedule_timeout_killable()."""
    set_current_state(cpu, TASK_WAKEKILL | 2)
    return await schedule_timeout(cpu, timeout)


async def cond_resched(cpu):
    """Let the other runnable tasks of this CPU run. Follows: cond_resched(). Differs: always yields."""
    await _PREEMPT_TRAP


def signal_pending_state(m, state, task):
    """True if a sleep in `state` must not begin because of a pending signal. Follows: signal_pending_state()."""
    if not state & (TASK_INTERRUPTIBLE | TASK_WAKEKILL):
        return False
    if not m.v_task_tif[task] & TIF_SIGPENDING:
        return False
    return bool(state & TASK_INTERRUPTIBLE) or bool(m.v_task_pending[task] & (1 << SIGKILL))


class Scheduler:
    """One CPU's runqueue and its loop. `spawn(cpu, row)` builds the coroutine of a newly assigned task."""

    def __init__(self, cpu, spawn):
        self.cpu = cpu
        self.m = cpu.m
        self.spawn = spawn
        self.runq = deque()
        self.coros = {}
        self.sleeping = {}        # row -> deadline ns (0: no timer)
        self.timers = []          # heap of (deadline ns, seq, row); seq breaks ties deterministically
        self._timer_seq = 0
        self._doorbell = sync.DoorbellWaiter(self.m, cpu.id)
        self._ncols = self.m.cpu.shape[1]

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self):
        """Run until the supervisor stops the machine."""
        m, cpu = self.m, self.cpu
        g = m.v_glob
        vcpu = m.v_cpu
        base = cpu.id * self._ncols
        vcpu[base + C_PID] = cpu.os_pid
        while not g[G_GO] and not g[G_STOP]:
            self._doorbell.wait(5)
        if cpu.ctl is not None:
            cpu.ctl.enter()
        self.adopt_new_tasks()
        while not g[G_STOP]:
            vcpu[base + C_HEARTBEAT] = time.monotonic_ns()
            sync.pause_point(cpu)
            if sync.drain_doorbell(m, cpu.id):
                self.on_doorbell()
            if self.timers and self.timers[0][0] <= ktime.now_ns(m):
                self.run_timers()
            if self.runq:
                self.run_task(self.runq.popleft())
            else:
                self.idle()
        vcpu[base + C_EXIT] = 1

    def on_doorbell(self):
        """Someone kicked this CPU: pick up woken sleepers, new tasks and drain requests."""
        m = self.m
        state = m.v_task_state
        for row in [r for r in self.sleeping if state[r] == TASK_RUNNING]:
            del self.sleeping[row]
            self.runq.append(row)
        self.adopt_new_tasks()
        base = self.cpu.id * self._ncols
        if m.v_cpu[base + C_DRAIN]:
            from oomemu.mm import page_alloc
            page_alloc.drain_local_pages(self.cpu)
            m.v_cpu[base + C_DRAIN] = 0   # after the drain: drain_all_pages() waits for this

    def adopt_new_tasks(self):
        """Build execution contexts for rows fork (or boot) assigned to this CPU."""
        m = self.m
        n = int(m.glob[G_NR_TASK_ROWS])
        rows = ((m.task_cpu[:n] == self.cpu.id) & (m.task_state[:n] == TASK_NEW)).nonzero()[0]
        for row in rows.tolist():
            m.v_task_state[row] = TASK_RUNNING
            self.coros[row] = self.spawn(self.cpu, row)
            self.runq.append(row)

    def run_task(self, row):
        """Resume `row`'s coroutine until it sleeps, yields or ends."""
        cpu, m = self.cpu, self.m
        sync.sched_point(cpu, "schedule", row)
        cpu.current = row
        vcpu_i = cpu.id * self._ncols + C_CURRENT
        m.v_cpu[vcpu_i] = row
        try:
            kind, deadline = self.coros[row].send(None)
        except StopIteration:
            del self.coros[row]
            return
        except printk.Panic:
            self.coros.clear()
            self.runq.clear()
            return
        finally:
            cpu.current = -1
            m.v_cpu[vcpu_i] = -1
        if kind == _PREEMPT:
            self.runq.append(row)
            return
        state = m.v_task_state[row]
        if state == TASK_RUNNING:
            self.runq.append(row)
        elif signal_pending_state(m, state, row):
            sync.set_task_state(cpu, row, TASK_RUNNING)
            self.runq.append(row)
        else:
            self.sleeping[row] = deadline
            if deadline:
                self._timer_seq += 1
                heapq.heappush(self.timers, (deadline, self._timer_seq, row))

    def run_timers(self):
        """Wake the sleepers whose schedule_timeout expired. Follows: process_timeout()."""
        now = ktime.now_ns(self.m)
        while self.timers and self.timers[0][0] <= now:
            deadline, _, row = heapq.heappop(self.timers)
            if self.sleeping.get(row) != deadline:
                continue  # woken earlier; this timer belongs to a finished sleep
            sync.sched_point(self.cpu, "process_timeout", row)
            sync.try_to_wake_up(self.cpu, row, TASK_NORMAL | TASK_WAKEKILL)
            if self.m.v_task_state[row] == TASK_RUNNING:
                del self.sleeping[row]
                self.runq.append(row)

    def idle(self):
        """Nothing runnable: wait for the doorbell or the next timer."""
        deadline = ktime.now_ns(self.m) + _IDLE_POLL_MS * 1_000_000
        if self.timers:
            deadline = min(deadline, self.timers[0][0])
        self._doorbell.wait_until(self.cpu, deadline)


def __wake_up_common(cpu, wq):
    """Wake every task on wait queue `wq` that sleeps in a TASK_NORMAL state (the caller holds the queue's
    lock). Follows: kernel/sched/wait.c __wake_up_common() for wake_up_all(), 3.14."""
    m = cpu.m
    while True:
        t = sync.wq_pop_head(cpu, wq)
        if t == -1:
            return
        old_state = sync.try_to_wake_up(cpu, t, TASK_NORMAL)
        if old_state:
            tp.trace_wakeup(cpu, m.v_task_pid[t], old_state, tp.WAKE_LOCK)
