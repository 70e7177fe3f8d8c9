"""kernel/signal.py in-process (KERNEL §5.2): which sleepers a SIGKILL wakes, that a group SIGKILL reaches every
thread once, and what fatal_signal_pending means. Expectations from KERNEL §5.2, not from the code."""
import pytest

from machine_helpers import add_process, run_to_completion, mc
from oomemu.include.sched import (SIGKILL, SIGNAL_GROUP_EXIT, SIGNAL_UNKILLABLE, TASK_INTERRUPTIBLE,
                                  TASK_KILLABLE, TASK_RUNNING, TASK_UNINTERRUPTIBLE, TIF_SIGPENDING)
from oomemu.kernel import fork
from oomemu.kernel import signal as ksignal

KILL = 1 << SIGKILL


def group(m, cpu, threads=2):
    """A process and `threads` more threads of it; their rows, leader first."""
    leader = add_process(m, cpu, "app", rss=10)
    rows = [leader] + [fork.copy_process(cpu, leader, fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND, 0,
                                         "app", 0) for _ in range(threads)]
    for r in rows:
        m.task_state[r] = TASK_RUNNING
    return rows


@pytest.mark.parametrize("tif,pending,fatal", [(0, 0, False), (TIF_SIGPENDING, 0, False), (0, KILL, False),
                                               (TIF_SIGPENDING, KILL, True)])
def test_fatal_signal_pending_needs_both(mc, tif, pending, fatal):
    m, cpu = mc
    (t,) = group(m, cpu, 0)
    m.task_tif[t] = tif
    m.task_pending[t] = pending
    assert ksignal.fatal_signal_pending(m, t) is fatal


@pytest.mark.parametrize("state,resume,woken", [
    (TASK_INTERRUPTIBLE, False, True), (TASK_INTERRUPTIBLE, True, True),
    (TASK_KILLABLE, False, False), (TASK_KILLABLE, True, True),
    (TASK_UNINTERRUPTIBLE, False, False), (TASK_UNINTERRUPTIBLE, True, False)])
def test_signal_wake_up_wakes_only_what_the_state_lets_in(mc, state, resume, woken):
    m, cpu = mc
    (t,) = group(m, cpu, 0)
    m.task_state[t] = state
    ksignal.signal_wake_up(cpu, t, resume)
    assert int(m.task_tif[t]) & TIF_SIGPENDING
    assert int(m.task_state[t]) == (TASK_RUNNING if woken else state)


def test_group_sigkill_reaches_every_thread_and_wakes_killable_ones(mc):
    m, cpu = mc
    rows = group(m, cpu, 2)
    m.task_state[rows[1]] = TASK_KILLABLE
    m.task_state[rows[2]] = TASK_UNINTERRUPTIBLE
    ksignal.do_send_sig_info(cpu, SIGKILL, rows[0], True)
    assert all(ksignal.fatal_signal_pending(m, r) for r in rows)
    assert int(m.sig_flags[rows[0]]) & SIGNAL_GROUP_EXIT
    assert int(m.task_state[rows[1]]) == TASK_RUNNING
    assert int(m.task_state[rows[2]]) == TASK_UNINTERRUPTIBLE
    assert not ksignal.fatal_signal_pending(m, 0)    # init, another group, untouched


@pytest.mark.parametrize("flags", [SIGNAL_GROUP_EXIT, SIGNAL_UNKILLABLE])
def test_group_already_exiting_or_unkillable_only_the_target_gets_it(mc, flags):
    m, cpu = mc
    rows = group(m, cpu, 2)
    m.sig_flags[rows[0]] = flags
    ksignal.complete_signal(cpu, SIGKILL, rows[1], True)
    assert [ksignal.fatal_signal_pending(m, r) for r in rows] == [False, True, False]
    assert int(m.sig_flags[rows[0]]) == flags


def test_a_non_group_sigkill_reaches_only_its_target(mc):
    m, cpu = mc
    rows = group(m, cpu, 2)
    ksignal.complete_signal(cpu, SIGKILL, rows[2], False)
    assert [ksignal.fatal_signal_pending(m, r) for r in rows] == [False, False, True]
    assert not int(m.sig_flags[rows[0]]) & SIGNAL_GROUP_EXIT


def test_get_signal_to_deliver_without_sigkill_clears_sigpending_and_returns(mc):
    m, cpu = mc
    (t,) = group(m, cpu, 0)
    cpu.current = t
    m.task_tif[t] = TIF_SIGPENDING
    run_to_completion(ksignal.get_signal_to_deliver(cpu))
    assert not int(m.task_tif[t]) & TIF_SIGPENDING


def traced(m, cpu):
    """Give cpu a trace ring; returns a function that drains it into (event name, pid, args) tuples."""
    from oomemu.trace.events import CATALOGUE
    from oomemu.trace.ring import RingWriter, drain_ring
    cpu.trace = RingWriter(m, cpu.id)
    names = [c[0] for c in CATALOGUE]

    def records():
        recs = drain_ring(m, cpu.id)
        return [(names[int(r["event"])], int(r["pid"]), [int(x) for x in r["a"]]) for r in recs]
    return records


def test_group_sigkill_is_traced_as_sent_and_each_wake_up_names_the_woken(mc):
    """signal_generate(sig, target pid, group, result 0) once; a wakeup(woken pid, its old state, WAKE_SIGNAL)
    per woken thread."""
    from oomemu.trace.events import WAKE_SIGNAL
    m, cpu = mc
    rows = group(m, cpu, 1)
    m.task_state[rows[1]] = TASK_KILLABLE
    records = traced(m, cpu)
    ksignal.do_send_sig_info(cpu, SIGKILL, rows[0], True)
    recs = records()
    gen = [a for name, _, a in recs if name == "signal_generate"]
    assert gen == [[SIGKILL, int(m.task_pid[rows[0]]), 1, 0, 0]]
    wakes = [a for name, _, a in recs if name == "wakeup"]
    assert wakes == [[int(m.task_pid[rows[1]]), TASK_KILLABLE, WAKE_SIGNAL, 0, 0]]


def test_injected_break_wakes_uninterruptible_and_still_interruptible(mc):
    """[debug] break sigkill_wakes_uninterruptible adds TASK_UNINTERRUPTIBLE to the wake mask (and keeps the
    rest): both sleepers wake."""
    m, cpu = mc
    rows = group(m, cpu, 1)
    m.task_state[rows[0]] = TASK_UNINTERRUPTIBLE
    m.task_state[rows[1]] = TASK_INTERRUPTIBLE
    cpu.debug_break = frozenset({"sigkill_wakes_uninterruptible"})
    for r in rows:
        ksignal.signal_wake_up(cpu, r, True)
    assert [int(m.task_state[r]) for r in rows] == [TASK_RUNNING, TASK_RUNNING]


def test_get_signal_to_deliver_with_sigkill_exits_the_group(mc):
    """A pending SIGKILL on the way to user space: signal_deliver(SIGKILL) is traced, counted, and the task
    never comes back (do_group_exit with exit code SIGKILL)."""
    from oomemu.kernel import exit as kexit
    from oomemu.mm import vmstat
    m, cpu = mc
    (t,) = group(m, cpu, 0)
    cpu.current = t
    m.task_pending[t] = KILL
    m.task_tif[t] = TIF_SIGPENDING
    records = traced(m, cpu)
    coro = ksignal.get_signal_to_deliver(cpu)
    with pytest.raises((kexit.TaskExited, StopIteration)):
        while True:
            coro.send(None)
            m.task_state[t] = TASK_RUNNING
    assert [a[0] for name, _, a in records() if name == "signal_deliver"] == [SIGKILL]
    assert vmstat.counters_total(m)["signals_delivered"] == 1
    assert int(m.task_exit_code[t]) & 0x7f == SIGKILL
