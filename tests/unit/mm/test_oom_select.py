"""select_bad_process and oom_kill_process as the trace records them, and their profile-dependent steps
(KERNEL §2.1, §4.1, §5.1, §8).

Expectations by hand on the unit machine (DMA 16 MiB + Normal 48 MiB, no swap: totalpages = 16384, so
adj × (totalpages // 1000) = adj × 16). add_process(rss=R) gives nr_ptes = ceil(R / 512).
"""
import textwrap

import pytest

from machine_helpers import add_process, make_machine
from oomemu.boot import create_machine
from oomemu.config import load_scenario_text
from oomemu.include.gfp import GFP_KERNEL
from oomemu.include.oom import OOM_FLAG_ORIGIN
from oomemu.include.sched import PF_EXITING, SIGKILL, TIF_MEMDIE
from oomemu.kernel import fork
from oomemu.machine import G_NR_KILLS, G_NR_TASK_ROWS, G_OOM_REAPER_LIST, K_POINTS
from oomemu.mm import oom_kill
from oomemu.percpu import CpuContext
from oomemu.trace import events as tp

TOTALPAGES = 16384
SIGKILL_BIT = 1 << SIGKILL
THREAD = fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND


def machine(kernel=None):
    if kernel is None:
        return make_machine()
    text = textwrap.dedent(f"""
        [machine]
        cpus = 2
        max_tasks = 64
        kernel = "{kernel}"
        [[machine.node]]
        zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }}
        """)
    sc = load_scenario_text(text, name="unit")
    m = create_machine(sc, ring_records=64)
    return m, CpuContext(m, 0, sc)


@pytest.fixture
def mc():
    m, cpu = machine()
    yield m, cpu
    m.close()


@pytest.fixture
def mk():
    made = []

    def make(kernel):
        made.append(machine(kernel))
        return made[-1]
    yield make
    for m, _ in made:
        m.close()


def traced(m, cpu):
    """Give cpu a trace ring; returns a function that drains it into (event name, args) pairs."""
    from oomemu.trace.events import CATALOGUE
    from oomemu.trace.ring import RingWriter, drain_ring
    cpu.trace = RingWriter(m, cpu.id)
    names = [c[0] for c in CATALOGUE]

    def records():
        return [(names[int(r["event"])], [int(x) for x in r["a"]]) for r in drain_ring(m, cpu.id)]
    return records


def of(recs, name, k):
    return [a[:k] for n, a in recs if n == name]


def sigkill_pending(m, row):
    return bool(m.task_pending[row] & SIGKILL_BIT)


def pid(m, row):
    return int(m.task_pid[row])


# --- the traced scan -------------------------------------------------------------------------------------------

def test_the_scan_traces_each_candidate_what_it_read_and_the_choice(mc):
    """Each OK thread is an oom_scan_candidate(pid, points, CAND_SCAN, 0) and an oom_badness_mm(pid, rss,
    nr_ptes, swapents, adj); then oom_scan_result(chosen pid, its points, no abort, threads scanned).
    a: rss 300 + file 20 + swap 5 + 1 pte = 326 points; b: rss 40 + 1 pte + adj 100 × 16 = 1641."""
    m, cpu = mc
    a = add_process(m, cpu, "a", rss=300, file=20, swap=5, ptes=1)
    b = add_process(m, cpu, "b", rss=40, adj=100)
    records = traced(m, cpu)
    cpu.current = a
    row, score = oom_kill.select_bad_process(cpu, TOTALPAGES, None, False)
    assert (row, score) == (b, 1641 * 1000 // TOTALPAGES)
    recs = records()
    n = int(m.glob[G_NR_TASK_ROWS])
    assert of(recs, "oom_scan_candidate", 4) == [[pid(m, a), 326, tp.CAND_SCAN, 0], [pid(m, b), 1641, tp.CAND_SCAN, 0]]
    assert of(recs, "oom_badness_mm", 5) == [[pid(m, a), 320, 1, 5, 0], [pid(m, b), 40, 1, 0, 100]]
    assert of(recs, "oom_scan_result", 4) == [[pid(m, b), 1641, 0, n]]


def test_an_abort_and_an_empty_scan_are_traced(mc):
    """An ABORT records oom_scan_result(0, 0, the aborting thread's pid, threads); no candidate at all records
    oom_scan_result(0, 0, 0, threads)."""
    m, cpu = mc
    a = add_process(m, cpu, "a", rss=300, adj=-1000)
    records = traced(m, cpu)
    cpu.current = a
    n = int(m.glob[G_NR_TASK_ROWS])
    assert oom_kill.select_bad_process(cpu, TOTALPAGES, None, False) == (-1, 0)
    assert of(records(), "oom_scan_result", 4) == [[0, 0, 0, n]]
    m.task_tif[a] |= TIF_MEMDIE
    assert oom_kill.select_bad_process(cpu, TOTALPAGES, None, False) == (oom_kill.ABORT, 0)
    assert of(records(), "oom_scan_result", 4) == [[0, 0, pid(m, a), n]]


def test_the_kill_is_traced_with_victim_points_kind_and_adj(mc):
    """oom_kill(victim pid, points as passed, kind, the victim's oom_score_adj, not a kthread)."""
    m, cpu = mc
    v = add_process(m, cpu, "victim", rss=300, adj=250)
    records = traced(m, cpu)
    oom_kill.oom_kill_process(cpu, v, GFP_KERNEL, 0, 123, TOTALPAGES, None, None, "Out of memory",
                              oom_kill.KILL_ALLOCATING)
    assert of(records(), "oom_kill", 5) == [[pid(m, v), 123, oom_kill.KILL_ALLOCATING, 250, 0]]


def test_a_lone_task_scoring_one_point_is_chosen(mc):
    """An eligible task never scores 0 (§4.1 step 7): an empty mm scores 1, which is enough to be chosen."""
    m, cpu = mc
    a = add_process(m, cpu, "empty", rss=0)
    cpu.current = a
    assert oom_kill.select_bad_process(cpu, TOTALPAGES, None, False) == (a, 1000 // TOTALPAGES)


# --- signed badness (5.9, in the 6.1 profile) --------------------------------------------------------------------

def test_6_1_scores_are_signed_and_a_select_scores_zero(mk):
    """5.9 (KERNEL §4.2, §8): badness is signed and not clamped, so a task at adj -900 (rss 10 + 1 pte - 900 × 16
    = -14389) is still eligible and chosen when it is the only one; its score is
    -14389 × 1000 / 16384 in C's division, which truncates toward zero: -878. An OOM_FLAG_ORIGIN task is
    chosen with no score (0)."""
    m, cpu = mk("6.1")
    a = add_process(m, cpu, "neg", rss=10, adj=-900)
    cpu.current = a
    assert oom_kill.select_bad_process(cpu, TOTALPAGES, None, False) == (a, -878)
    b = add_process(m, cpu, "pos", rss=9000)
    assert oom_kill.select_bad_process(cpu, TOTALPAGES, None, False) == (b, 9018 * 1000 // TOTALPAGES)
    m.sig_oom_flags[a] |= OOM_FLAG_ORIGIN
    assert oom_kill.select_bad_process(cpu, TOTALPAGES, None, False) == (a, 0)


# --- oom_kill_process by profile ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,queued", [("4.6", False), ("4.9", True)])
def test_an_exiting_victim_goes_to_the_reaper_only_from_4_9(mk, kernel, queued):
    """§5.1 step 1 marks an exiting p and returns; with MMF_OOM_SKIP (4.9 in the profiles) it is also handed to
    the oom_reaper. An exiting p that will free its memory: SIGNAL_GROUP_EXIT set, one thread."""
    from oomemu.include.sched import SIGNAL_GROUP_EXIT
    m, cpu = mk(kernel)
    p = add_process(m, cpu, "dying", rss=300)
    m.task_flags[p] |= PF_EXITING
    m.sig_flags[p] |= SIGNAL_GROUP_EXIT
    oom_kill.oom_kill_process(cpu, p, GFP_KERNEL, 0, 1, TOTALPAGES, None, None, "Out of memory")
    assert m.task_tif[p] & TIF_MEMDIE and not sigkill_pending(m, p)
    assert (int(m.glob[G_OOM_REAPER_LIST]) == p) == queued


def test_4_9_an_exiting_thread_of_a_live_group_is_killed_not_just_marked(mk):
    """4.8's task_will_free_mem (KERNEL §8): PF_EXITING on one thread while the group lives on (no
    SIGNAL_GROUP_EXIT, another live thread) will not free the memory, so oom_kill_process kills the group."""
    m, cpu = mk("4.9")
    p = add_process(m, cpu, "proc", rss=300)
    t = add_process(m, cpu, "proc", parent=p, clone_flags=THREAD)
    m.task_flags[p] |= PF_EXITING
    oom_kill.oom_kill_process(cpu, p, GFP_KERNEL, 0, 1, TOTALPAGES, None, None, "Out of memory")
    assert sigkill_pending(m, p) and sigkill_pending(m, t)
    assert int(m.glob[G_NR_KILLS]) == 1


def test_4_6_sigkill_reaches_every_thread_of_the_victim(mk):
    """From 4.6 SIGKILL is sent before the mark (KERNEL §5.1, step order), still to the whole group."""
    m, cpu = mk("4.6")
    p = add_process(m, cpu, "proc", rss=300)
    t = add_process(m, cpu, "proc", parent=p, clone_flags=THREAD)
    oom_kill.oom_kill_process(cpu, p, GFP_KERNEL, 0, 1, TOTALPAGES, None, None, "Out of memory")
    assert sigkill_pending(m, p) and sigkill_pending(m, t)
    assert m.task_tif[p] & TIF_MEMDIE and not m.task_tif[t] & TIF_MEMDIE


# --- the oom_lock mutex (4.2) ----------------------------------------------------------------------------------

def test_4_2_oom_lock_is_one_mutex_traced_over_every_zone(mk):
    """4.2's global oom_lock (KERNEL §8, dc56401): a trylock takes it (1), a second one, even from the SysRq
    kworker (no current), finds it busy (0, counted as a busy OOM lock), the unlock frees it for the kworker.
    The trace records each try and the release over every zone of the machine (MAX_NR_ZONES = 4 on its one
    node: 0b1111), with
    consecutive OOM sequence numbers."""
    from oomemu.machine import G_OOM_SEQ
    from oomemu.mm import vmstat
    m, cpu = mk("4.2")
    cpu.current = add_process(m, cpu, "alloc", rss=10)
    seq = int(m.glob[G_OOM_SEQ])
    from oomemu.trace.events import CATALOGUE
    from oomemu.trace.ring import RingWriter, drain_ring
    cpu.trace = RingWriter(m, cpu.id)
    names = [c[0] for c in CATALOGUE]
    assert oom_kill.mutex_trylock_oom_lock(cpu) == 1
    cpu.current = -1
    assert oom_kill.mutex_trylock_oom_lock(cpu) == 0
    assert int(cpu.vm_events[vmstat.NR_OOM_LOCK_BUSY]) == 1
    oom_kill.mutex_unlock_oom_lock(cpu)
    assert oom_kill.mutex_trylock_oom_lock(cpu) == 1          # the kworker holds it now
    assert oom_kill.mutex_trylock_oom_lock(cpu) == 0
    recs = [(names[int(r["event"])], int(r["seq"]), [int(x) for x in r["a"]]) for r in drain_ring(m, cpu.id)]
    lock = [(n, s, a[:2] if n == "oom_lock_try" else a[:1]) for n, s, a in recs if n.startswith("oom_lock")]
    assert lock == [("oom_lock_try", seq + 1, [1, 0b1111]), ("oom_lock_try", seq + 2, [0, 0b1111]),
                    ("oom_lock_release", seq + 3, [0b1111]), ("oom_lock_try", seq + 4, [1, 0b1111]),
                    ("oom_lock_try", seq + 5, [0, 0b1111])]
