"""kernel/signal.py in-process (KERNEL §5.2): which sleepers a SIGKILL wakes, that a group SIGKILL reaches every
thread once, and what fatal_signal_pending means. Expectations from KERNEL §5.2, not from the code."""
import pytest

from machine_helpers import add_process, make_machine, run_to_completion
from oomemu.include.sched import (SIGKILL, SIGNAL_GROUP_EXIT, SIGNAL_UNKILLABLE, TASK_INTERRUPTIBLE,
                                  TASK_KILLABLE, TASK_RUNNING, TASK_UNINTERRUPTIBLE, TIF_SIGPENDING)
from oomemu.kernel import fork
from oomemu.kernel import signal as ksignal

KILL = 1 << SIGKILL


@pytest.fixture
def mc():
    m, cpu = make_machine()
    yield m, cpu
    m.close()


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
