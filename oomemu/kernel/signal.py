"""Sending SIGKILL and acting on it on the way back to user space.

Follows kernel/signal.c of Linux 3.14 (KERNEL §5.2): do_send_sig_info → complete_signal (group exit: SIGKILL
pending on every thread, each woken with signal_wake_up) and get_signal_to_deliver → do_group_exit. Only
SIGKILL (and SIGCHLD's wake-up of a waiting parent) is modelled.
"""
from oomemu import sync
from oomemu.include.sched import (SIGKILL, SIGNAL_GROUP_EXIT, SIGNAL_UNKILLABLE, TASK_INTERRUPTIBLE,
                                  TASK_UNINTERRUPTIBLE, TASK_WAKEKILL, TIF_SIGPENDING)
from oomemu.machine import G_NR_TASK_ROWS
from oomemu.mm import vmstat
from oomemu.trace import events as tp

_SIGKILL_BIT = 1 << SIGKILL


def fatal_signal_pending(m, t):
    """True once SIGKILL is pending for t. Follows: fatal_signal_pending()."""
    return bool(m.v_task_tif[t] & TIF_SIGPENDING) and bool(m.v_task_pending[t] & _SIGKILL_BIT)


def signal_wake_up(cpu, t, resume):
    """Flag a pending signal on t and wake it from interruptible (and, with resume, killable) sleep.

    Follows: include/linux/sched.h signal_wake_up() / kernel/signal.c signal_wake_up_state(), 3.14. A plain
    TASK_UNINTERRUPTIBLE sleeper is not woken: it sleeps on until its wait ends. If t is running on its CPU,
    that CPU is kicked instead (kick_process), as an IPI would.
    """
    m = cpu.m
    sync.set_bit(cpu, m.v_task_tif, t, TIF_SIGPENDING)  # set_tsk_thread_flag(): atomic
    mask = TASK_INTERRUPTIBLE | (TASK_WAKEKILL if resume else 0)
    if "sigkill_wakes_uninterruptible" in cpu.debug_break:
        mask |= TASK_UNINTERRUPTIBLE
    old_state = sync.try_to_wake_up(cpu, t, mask)
    if old_state:
        tp.trace_wakeup(cpu, m.v_task_pid[t], old_state, tp.WAKE_SIGNAL)
    else:
        sync.ring_doorbell(m, m.v_task_cpu[t])


def _threads(m, leader):
    n = int(m.glob[G_NR_TASK_ROWS])
    return (m.task_leader[:n] == leader).nonzero()[0].tolist()


def complete_signal(cpu, sig, p, group):
    """Deliver a fatal group signal to every thread at once. Follows: kernel/signal.c complete_signal(), 3.14."""
    m = cpu.m
    leader = m.v_task_leader[p]
    if sig == SIGKILL and group:
        if m.v_sig_flags[leader] & (SIGNAL_GROUP_EXIT | SIGNAL_UNKILLABLE):
            targets = [p]
        else:
            m.v_sig_flags[leader] = SIGNAL_GROUP_EXIT
            m.v_sig_group_exit_code[leader] = sig
            targets = _threads(m, leader)
    else:
        targets = [p]
    for t in targets:
        m.v_task_pending[t] |= 1 << sig
        signal_wake_up(cpu, t, sig == SIGKILL)


def do_send_sig_info(cpu, sig, p, group):
    """Send `sig` to p (its whole thread group if `group`) under the group's siglock; forced, as the OOM
    killer's SEND_SIG_FORCED. Follows: kernel/signal.c do_send_sig_info(), 3.14.
    """
    m = cpu.m
    leader = m.v_task_leader[p]
    with sync.spinlock(cpu, m.task_lock_index(leader)):
        tp.trace_signal_generate(cpu, sig, m.v_task_pid[p], int(group), 0)
        complete_signal(cpu, sig, p, group)


async def get_signal_to_deliver(cpu):
    """On return to user space: act on a pending SIGKILL by exiting the whole group. Never returns then.

    Follows: kernel/signal.c get_signal_to_deliver() → do_group_exit(), 3.14 (KERNEL §5.2 step 3), with
    recalc_sigpending() under the siglock.
    """
    m = cpu.m
    cur = cpu.current
    with sync.spinlock(cpu, m.task_lock_index(m.v_task_leader[cur])):  # the group's siglock
        if not m.v_task_pending[cur] & _SIGKILL_BIT:
            # recalc_sigpending(): nothing left to deliver. Under siglock, so a SIGKILL being queued now
            # (do_send_sig_info holds the same lock) cannot lose its TIF_SIGPENDING to this clear.
            sync.clear_bit(cpu, m.v_task_tif, cur, TIF_SIGPENDING)
            return
    tp.trace_signal_deliver(cpu, SIGKILL)
    vmstat.count_vm_event(cpu, vmstat.NR_SIGNALS_DELIVERED)
    from oomemu.kernel import exit as kexit
    await kexit.do_group_exit(cpu, SIGKILL)
