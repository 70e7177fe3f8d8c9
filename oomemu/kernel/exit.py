"""Task exit: PF_EXITING, exit_mm (which may block on mmap_sem), mmput, zombies and reaping.

Follows kernel/exit.c of Linux 3.14 (KERNEL §5.2 step 4): do_group_exit → do_exit → exit_signals,
exit_mm, exit_notify; wait4's reaping (release_task). TIF_MEMDIE is never cleared, as in 3.14 (profiles with
`unmark_oom_victim`, 3.18+, clear it in exit_mm).
"""
import numpy as np

from oomemu import sync
from oomemu.include.sched import (EXIT_DEAD, EXIT_ZOMBIE, PF_EXITING, PF_KTHREAD, SIGKILL, SIGNAL_GROUP_EXIT,
                                  TASK_DEAD, TASK_INTERRUPTIBLE, TASK_RUNNING, TIF_MEMDIE,
                                  TIF_SIGPENDING)
from oomemu.kernel import fork, rwsem
from oomemu.kernel import sched as ksched
from oomemu.machine import G_NR_TASK_ROWS, G_NR_USER_LIVE, G_TASKLIST_RW, L_TASKLIST
from oomemu.mm import vmstat
from oomemu.trace import events as tp
from oomemu.trace.events import WAIT_CHILD

INIT_ROW = 0  # boot creates init (pid 1) first


class TaskExited(BaseException):
    """Unwinds a task's execution context after do_exit(): do_exit never returns to its caller."""


async def do_group_exit(cpu, exit_code):
    """Take the whole thread group down; this thread exits now. Follows: kernel/exit.c do_group_exit(), 3.14."""
    m = cpu.m
    cur = cpu.current
    leader = m.v_task_leader[cur]
    if m.v_sig_flags[leader] & SIGNAL_GROUP_EXIT:
        exit_code = m.v_sig_group_exit_code[leader]   # the group is already going: its code, not ours
    else:
        from oomemu.kernel import signal as ksignal
        with sync.spinlock(cpu, m.task_lock_index(leader)):
            ksignal.complete_signal(cpu, SIGKILL, cur, True)
            m.v_sig_group_exit_code[leader] = exit_code
    await do_exit(cpu, exit_code)


async def do_exit(cpu, code):
    """Exit current: PF_EXITING, exit_mm, exit_notify, TASK_DEAD. Never returns to the caller's program.

    Follows: kernel/exit.c do_exit(), 3.14.
    """
    m = cpu.m
    cur = cpu.current
    m.v_task_flags[cur] |= PF_EXITING  # exit_signals()
    m.v_task_exit_code[cur] = code
    tp.trace_sched_process_exit(cpu, m.v_task_pid[cur])
    await exit_mm(cpu, cur)
    exit_notify(cpu, cur)
    vmstat.count_vm_event(cpu, vmstat.NR_TASK_EXITS)
    sync.set_task_state(cpu, cur, TASK_DEAD)
    raise TaskExited()


async def exit_mm(cpu, tsk):
    """Detach tsk from its mm under mmap_sem (read; may sleep uninterruptibly behind a writer), then mmput.

    Follows: kernel/exit.c exit_mm(), 3.14. No core dumps are modelled. With `unmark_oom_victim` the task's
    TIF_MEMDIE is cleared at the end (clear_thread_flag in 3.18.30 and 3.19.0, unmark_oom_victim in 4.0,
    exit_oom_victim in 4.2; KERNEL §5.2 step 6 dates it 4.0, the trees show it already in 3.18).
    """
    m = cpu.m
    mm = m.v_task_mm[tsk]
    if mm == -1:
        return
    await rwsem.down_read(cpu, mm)
    with sync.spinlock(cpu, m.task_lock_index(tsk)):
        m.v_task_mm[tsk] = -1
    rwsem.up_read(cpu, mm)
    tp.trace_exit_mm(cpu, mm)
    fork.mmput(cpu, mm)
    if cpu.features.unmark_oom_victim and m.v_task_tif[tsk] & TIF_MEMDIE:
        from oomemu.mm import oom_kill
        oom_kill.exit_oom_victim(cpu, tsk)   # after mmput (seen in 3.18.30, 3.19.0 and 4.2.8)


def _group(m, tsk):
    """Rows of tsk's thread group in creation order (leader first). Follows: while_each_thread()."""
    n = int(m.glob[G_NR_TASK_ROWS])
    return (m.task_leader[:n] == m.v_task_leader[tsk]).nonzero()[0].tolist()


def find_new_reaper(m, father):
    """Who adopts father's children: a live thread of its own group that is not exiting, else init.

    Follows: kernel/exit.c find_new_reaper(), 3.14. Differs: no pid namespaces and no child subreapers.
    """
    for t in _group(m, father):
        if t != father and not m.v_task_flags[t] & PF_EXITING and not m.v_task_exit_state[t]:
            return t
    return INIT_ROW


def forget_original_parent(cpu, father):
    """Give father's children to find_new_reaper()'s choice; returns (reaper, whether a zombie moved to a
    reaper outside father's group, which must then be told). tasklist_lock held for write.

    Follows: kernel/exit.c forget_original_parent() / reparent_leader(), 3.14.
    """
    m = cpu.m
    n = int(m.glob[G_NR_TASK_ROWS])
    kids = (m.task_parent[:n] == father).nonzero()[0]
    if not len(kids):
        return -1, False
    reaper = find_new_reaper(m, father)
    m.task_parent[kids] = reaper
    foreign = m.v_task_leader[reaper] != m.v_task_leader[father]
    return reaper, bool(foreign and (m.task_exit_state[kids] == EXIT_ZOMBIE).any())


def thread_group_empty(m, leader):
    """True once every thread of leader's group has exited. Follows: thread_group_empty() (here: the group's
    live count; non-leader threads reap themselves at exit)."""
    return m.v_sig_nr_live[leader] == 0


def delay_group_leader(m, p):
    """A zombie leader is not reaped (nor reported to its parent) while other threads of its group live.

    Follows: include/linux/sched.h delay_group_leader(), 3.14.
    """
    return m.v_task_leader[p] == p and not thread_group_empty(m, p)


def exit_notify(cpu, tsk):
    """Hand the children on, become a zombie for the parent to reap (or, as a non-leader thread, reap itself),
    and tell the parent once the whole group is gone.

    Follows: kernel/exit.c exit_notify() and release_task()'s zombie-leader notification, 3.14: the leader's
    parent hears of it only when the group is empty (delay_group_leader), so the last thread to exit tells it.
    """
    m = cpu.m
    notify = -1
    with sync.write_locked(cpu, L_TASKLIST, G_TASKLIST_RW):
        reaper, tell_reaper = forget_original_parent(cpu, tsk)
        leader = m.v_task_leader[tsk]
        m.v_sig_nr_live[leader] -= 1
        if not m.v_task_flags[tsk] & PF_KTHREAD:
            m.v_glob[G_NR_USER_LIVE] -= 1
        if leader != tsk:
            m.v_task_exit_state[tsk] = EXIT_DEAD  # threads are reaped by themselves
            tp.trace_sched_process_free(cpu, m.v_task_pid[tsk], pid=m.v_task_pid[tsk])
            if m.v_task_exit_state[leader] == EXIT_ZOMBIE and thread_group_empty(m, leader):
                notify = m.v_task_parent[leader]   # the last thread out reports the zombie leader
        else:
            m.v_task_exit_state[tsk] = EXIT_ZOMBIE
            if thread_group_empty(m, tsk):
                notify = m.v_task_parent[tsk]
    if tell_reaper:
        __wake_up_parent(cpu, reaper)
    if notify >= 0:
        __wake_up_parent(cpu, notify)


def __wake_up_parent(cpu, parent):
    """Wake whoever sleeps in wait4 on the wait_chldexit of parent's signal_struct (any thread of its group may
    be waiting). Follows: __wake_up_parent(), 3.14."""
    m = cpu.m
    leader = m.v_task_leader[parent]
    wq = m.wq_chldexit(leader)
    with sync.spinlock(cpu, m.task_lock_index(leader)):
        ksched.__wake_up_common(cpu, wq)


def release_task(cpu, p):
    """Reap zombie p: it disappears from the task list. Follows: kernel/exit.c release_task(), 3.14."""
    m = cpu.m
    m.v_task_exit_state[p] = EXIT_DEAD
    tp.trace_sched_process_free(cpu, m.v_task_pid[p])


def _reap_zombies(cpu, parent):
    """Reap every zombie child of any thread of `parent`'s group, except leaders whose other threads still
    run (delay_group_leader); return (reaped, children left, delayed zombies counted as left).

    Follows: kernel/exit.c do_wait_thread() over while_each_thread(), wait_consider_task(), 3.14.
    """
    m = cpu.m
    n = int(m.glob[G_NR_TASK_ROWS])
    with sync.write_locked(cpu, L_TASKLIST, G_TASKLIST_RW):
        mine = np.isin(m.task_parent[:n], _group(m, parent))
        leaders = (m.task_leader[:n] == np.arange(n)) & mine
        zombie = leaders & (m.task_exit_state[:n] == EXIT_ZOMBIE)
        delayed = zombie & (m.sig_nr_live[:n] > 0)
        zombies = (zombie & ~delayed).nonzero()[0].tolist()
        for p in zombies:
            release_task(cpu, p)
        left = int((leaders & (m.task_exit_state[:n] == 0)).sum() + delayed.sum())
    return len(zombies), left


async def do_wait(cpu):
    """Reap exited children, sleeping interruptibly until one exits; returns how many were reaped.

    Follows: kernel/exit.c do_wait(), 3.14, for wait4(-1, ...) without WNOHANG. Returns 0 with no children
    or when a signal interrupts the wait.
    """
    m = cpu.m
    cur = cpu.current
    leader = m.v_task_leader[cur]
    wq = m.wq_chldexit(leader)      # signal->wait_chldexit: one queue per thread group
    while True:
        lk = m.task_lock_index(leader)
        sync.spin_lock(cpu, lk)
        sync.wq_add_tail(cpu, wq, cur)
        ksched.set_current_state(cpu, TASK_INTERRUPTIBLE)
        sync.spin_unlock(cpu, lk)
        reaped, left = _reap_zombies(cpu, cur)
        if reaped or not left or m.v_task_tif[cur] & TIF_SIGPENDING:
            with sync.spinlock(cpu, lk):
                sync.wq_remove(cpu, wq, cur)
            ksched.__set_current_state(cpu, TASK_RUNNING)
            return reaped
        m.v_task_wait_kind[cur] = WAIT_CHILD
        tp.trace_sleep(cpu, TASK_INTERRUPTIBLE, WAIT_CHILD, cur)
        await ksched.schedule(cpu)
        m.v_task_wait_kind[cur] = 0
        with sync.spinlock(cpu, lk):
            sync.wq_remove(cpu, wq, cur)
