"""tasklist_lock as a reader-writer spinlock (rwlock_t, 3.14): readers are inside together, a writer waits for
all of them and excludes everyone; checked across real processes."""
import multiprocessing as mp
import time

from machine_helpers import mc
from oomemu import sync
from oomemu.machine import G_TASKLIST_RW, L_TASKLIST
from oomemu.percpu import CpuContext


def test_two_readers_are_inside_at_once(mc):
    """Two CPUs take read_lock; both are inside (the state counts 2) and leave in any order."""
    m, cpu = mc
    other = CpuContext(m, 1, cpu.scenario)
    sync.read_lock(cpu, L_TASKLIST, G_TASKLIST_RW)
    sync.read_lock(other, L_TASKLIST, G_TASKLIST_RW)
    assert int(m.glob[G_TASKLIST_RW]) == 2
    sync.read_unlock(cpu, L_TASKLIST, G_TASKLIST_RW)
    sync.read_unlock(other, L_TASKLIST, G_TASKLIST_RW)
    assert int(m.glob[G_TASKLIST_RW]) == 0


def _writer(m, sc, times):
    cpu = CpuContext(m, 1, sc)
    times[0] = time.monotonic()
    with sync.write_locked(cpu, L_TASKLIST, G_TASKLIST_RW):
        times[1] = time.monotonic()
        time.sleep(0.2)
    times[2] = time.monotonic()


def test_writer_waits_for_readers_and_excludes_them(mc):
    """A writer in another process waits while a reader is inside (0.3 s), gets in after read_unlock, and while
    it holds the lock (0.2 s) a new reader waits until write_unlock."""
    m, cpu = mc
    ctx = mp.get_context("fork")
    times = ctx.RawArray("d", 3)
    sync.read_lock(cpu, L_TASKLIST, G_TASKLIST_RW)
    p = ctx.Process(target=_writer, args=(m, cpu.scenario, times))
    p.start()
    time.sleep(0.3)
    assert times[1] == 0.0, "the writer got in while a reader was inside"
    released = time.monotonic()
    sync.read_unlock(cpu, L_TASKLIST, G_TASKLIST_RW)
    deadline = time.monotonic() + 20
    while int(m.glob[G_TASKLIST_RW]) != -1 and times[2] == 0.0:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    sync.read_lock(cpu, L_TASKLIST, G_TASKLIST_RW)
    entered = time.monotonic()
    sync.read_unlock(cpu, L_TASKLIST, G_TASKLIST_RW)
    p.join(20)
    assert p.exitcode == 0
    assert times[1] >= released
    assert entered >= times[2] - 0.01, "a reader got in while the writer held the lock"
