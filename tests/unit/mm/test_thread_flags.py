"""Thread-info flag words: atomic bit operations across real processes, the kernel paths that use them
(set_tsk_thread_flag for TIF_MEMDIE and TIF_SIGPENDING, recalc_sigpending under siglock), and the
`thread-flags` invariant that notices a lost update (KERNEL §5.2, §5.3).
"""
import dataclasses
import multiprocessing as mp
import time
from types import SimpleNamespace

import numpy as np
import pytest

from machine_helpers import add_process, mc
from oomemu import sync
from oomemu.check.signals import check_thread_flags
from oomemu.include.sched import EXIT_ZOMBIE, SIGKILL, TIF_MEMDIE, TIF_SIGPENDING
from oomemu.kernel import signal as ksignal
from oomemu.mm import oom_kill
from oomemu.percpu import CpuContext
from oomemu.trace.events import EVENT_ID, CATALOGUE
from oomemu.trace.reader import TRACE_DTYPE, Trace

LOCK_BIT = 1 << 18


def _hammer(m, sc, row, rounds, counter, barrier, slot):
    """Child process: `rounds` times, take a bit lock on task row `row`'s flag word with test_and_set_bit
    (as bit_spin_lock does), increment a shared counter with a plain read-modify-write inside it, and release
    it with clear_bit. If the bit operations are atomic the lock excludes, and no increment is lost."""
    cpu = CpuContext(m, slot, sc)
    barrier.wait(30)  # both start together, however loaded the host
    for _ in range(rounds):
        deadline = time.monotonic() + 5
        while sync.test_and_set_bit(cpu, m.v_task_tif, row, LOCK_BIT):
            sync.cpu_relax(cpu, "test.bit_lock")
            if time.monotonic() > deadline:
                counter[1] += 1    # the lock bit stayed set with no holder: a lost clear
                return
        value = counter[0]
        time.sleep(0.0001)         # a critical section long enough for a second holder to overlap it
        counter[0] = value + 1
        sync.clear_bit(cpu, m.v_task_tif, row, LOCK_BIT)


def _race(m, cpu, rounds, breaks=()):
    """Two CPU processes increment one counter under the bit lock; returns (increments, final flag word, how
    many found the lock stuck)."""
    sc = dataclasses.replace(cpu.scenario, debug_break=tuple(breaks))
    row = add_process(m, cpu, "target")
    m.task_tif[row] = 1 << 0          # an unrelated bit that must survive
    ctx = mp.get_context("fork")
    counter = ctx.RawArray("q", 2)
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_hammer, args=(m, sc, row, rounds, counter, barrier, slot)) for slot in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    return counter[0], int(m.task_tif[row]), counter[1]


def test_atomic_bitops_lose_no_update_across_processes(mc):
    """Two processes each take a test_and_set_bit lock 1000 times around a plain increment of a shared
    counter: exactly 2000 increments land, and the word's other bit is untouched."""
    m, cpu = mc
    assert _race(m, cpu, 1000) == (2000, 1 << 0, 0)


def test_python_fallback_is_atomic_too(mc, monkeypatch):
    """Without the compiled extension every update takes L_BITOPS: the lock still excludes."""
    m, cpu = mc
    monkeypatch.setattr(sync, "_fetch_or", None)
    monkeypatch.setattr(sync, "_fetch_and", None)
    assert _race(m, cpu, 400) == (800, 1 << 0, 0)


def test_nonatomic_break_loses_updates(mc):
    """The `nonatomic_bitops` break (a plain read-modify-write with a 0.5 ms window) lets both processes
    take the bit lock at once, so increments are lost: the control that shows the test above can fail.
    Both start at a barrier and every acquire has the window, so in 300 rounds each the two overlap on many
    acquires; fewer than 600 increments are required (or a lock left stuck by a lost clear)."""
    m, cpu = mc
    increments, _, stuck = _race(m, cpu, 300, breaks=("nonatomic_bitops",))
    assert increments < 600 or stuck


def test_bit_helpers_return_the_old_state(mc):
    """test_and_set_bit/test_and_clear_bit report the bit's previous value; other bits are untouched."""
    m, cpu = mc
    row = add_process(m, cpu, "t")
    m.task_tif[row] = 1 << 5
    assert not sync.test_and_set_bit(cpu, m.v_task_tif, row, TIF_MEMDIE)
    assert sync.test_and_set_bit(cpu, m.v_task_tif, row, TIF_MEMDIE)
    assert int(m.task_tif[row]) == (1 << 5) | TIF_MEMDIE
    assert sync.test_and_clear_bit(cpu, m.v_task_tif, row, TIF_MEMDIE)
    assert not sync.test_and_clear_bit(cpu, m.v_task_tif, row, TIF_MEMDIE)
    assert int(m.task_tif[row]) == 1 << 5


def test_get_signal_to_deliver_clears_sigpending_only_without_sigkill(mc):
    """recalc_sigpending: with nothing fatal pending TIF_SIGPENDING is cleared; other bits stay
    (KERNEL §5.2 step 3)."""
    m, cpu = mc
    row = add_process(m, cpu, "t")
    m.task_tif[row] = TIF_SIGPENDING | TIF_MEMDIE
    cpu.current = row
    coro = ksignal.get_signal_to_deliver(cpu)
    with pytest.raises(StopIteration):
        coro.send(None)
    assert int(m.task_tif[row]) == TIF_MEMDIE


def test_kill_sets_both_bits_on_a_word_with_other_bits(mc):
    """oom_kill_process ORs TIF_MEMDIE and TIF_SIGPENDING into the victim's word and keeps its other bits
    (KERNEL §5.1 steps 8-9)."""
    m, cpu = mc
    v = add_process(m, cpu, "victim", rss=100)
    m.task_tif[v] = 1 << 3
    oom_kill.oom_kill_process(cpu, v, 0xd0, 0, 0, 16384, None, None, "Out of memory")
    assert int(m.task_tif[v]) == (1 << 3) | TIF_MEMDIE | TIF_SIGPENDING


# --- the invariant ---------------------------------------------------------------------------------------------

def _trace(records):
    header = {"events": [{"id": i, "name": name} for i, (name, _, _) in enumerate(CATALOGUE)]}
    recs = np.zeros(len(records), dtype=TRACE_DTYPE)
    for i, (name, a) in enumerate(records):
        recs[i]["event"] = EVENT_ID[name]
        recs[i]["a"][:len(a)] = a
        recs[i]["ts"] = i
    return Trace(header, recs, 0, True)


def _state(rows):
    cols = {k: np.array([r[k] for r in rows], dtype=np.int64) for k in rows[0]}
    return SimpleNamespace(nr_tasks=len(rows), **cols)


ROW = dict(task_pid=5, task_tif=0, task_pending=0, task_exit_state=0, task_state=0)


@pytest.mark.parametrize("row,marked,ok", [
    (dict(ROW, task_tif=TIF_MEMDIE), True, True),
    (dict(ROW), True, False),                                              # TIF_MEMDIE lost
    (dict(ROW), False, True),                                              # never marked
    (dict(ROW, task_pending=1 << SIGKILL, task_tif=TIF_SIGPENDING), False, True),
    (dict(ROW, task_pending=1 << SIGKILL), False, False),                  # SIGPENDING lost: never acts
    (dict(ROW, task_pending=1 << SIGKILL, task_exit_state=EXIT_ZOMBIE), False, True),   # already exited
])
def test_thread_flags_invariant(row, marked, ok):
    trace = _trace([("mark_victim", (5, 0))] if marked else [])
    assert (check_thread_flags(trace, _state([row])) == []) is ok
