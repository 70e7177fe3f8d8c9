"""Exit and reaping (KERNEL §5.2 step 4; kernel/exit.c of 3.14): find_new_reaper hands an exiting thread's
children to a live thread of its own group before init, delay_group_leader keeps a zombie leader unreaped
while its other threads run, and child sacrifice still finds the children of a forking thread that exited.

Expectations by hand from the 3.14 rules: find_new_reaper walks the exiting task's thread group and returns the
first thread that is not PF_EXITING, else the namespace's child reaper (init); wait4 reaps a zombie leader only
when its thread group is empty; oom_kill_process scores the children on every thread's children list (§5.1
step 4).
"""
import pytest

from machine_helpers import add_process, mc
from oomemu.include.gfp import GFP_KERNEL
from oomemu.include.sched import EXIT_DEAD, EXIT_ZOMBIE, PF_EXITING, SIGKILL, TIF_MEMDIE
from oomemu.kernel import exit as kexit
from oomemu.kernel import fork

THREAD = fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND
INIT = 0


def thread(m, cpu, leader):
    return add_process(m, cpu, m.task_comm[leader].decode(), parent=leader, clone_flags=THREAD)


def exit_task(cpu, t):
    """do_exit's tail for t: PF_EXITING (exit_signals), then exit_notify (its mm is left alone here)."""
    cpu.m.task_flags[t] |= PF_EXITING
    kexit.exit_notify(cpu, t)


def test_children_of_an_exiting_thread_go_to_its_group_leader(mc):
    """Thread T of P forked C; T exits: C's parent becomes P (the first live thread), not init."""
    m, cpu = mc
    p = add_process(m, cpu, "p")
    t = thread(m, cpu, p)
    c = add_process(m, cpu, "c", parent=t)
    assert m.task_parent[c] == t
    exit_task(cpu, t)
    assert m.task_parent[c] == p


def test_children_skip_an_exiting_leader_for_the_next_live_thread(mc):
    """P (leader) is already PF_EXITING and T1 exits: T1's child goes to T2, the first thread not exiting."""
    m, cpu = mc
    p = add_process(m, cpu, "p")
    t1, t2 = thread(m, cpu, p), thread(m, cpu, p)
    c = add_process(m, cpu, "c", parent=t1)
    m.task_flags[p] |= PF_EXITING
    exit_task(cpu, t1)
    assert m.task_parent[c] == t2


def test_children_go_to_init_when_the_last_thread_exits(mc):
    """Every thread of P gone: its children go to init (pid 1)."""
    m, cpu = mc
    p = add_process(m, cpu, "p")
    t = thread(m, cpu, p)
    c = add_process(m, cpu, "c", parent=p)
    exit_task(cpu, t)
    exit_task(cpu, p)
    assert m.task_parent[c] == INIT and m.task_pid[INIT] == 1


def test_zombie_leader_is_not_reaped_while_a_thread_runs(mc):
    """delay_group_leader: P's leader exits first and is a zombie, but its parent's wait reaps nothing and
    still counts P as a child while thread T runs; once T exits, P is reaped."""
    m, cpu = mc
    parent = add_process(m, cpu, "parent")
    p = add_process(m, cpu, "p", parent=parent)
    t = thread(m, cpu, p)
    exit_task(cpu, p)
    assert m.task_exit_state[p] == EXIT_ZOMBIE
    cpu.current = parent
    assert kexit._reap_zombies(cpu, parent) == (0, 1)
    assert m.task_exit_state[p] == EXIT_ZOMBIE
    exit_task(cpu, t)
    assert m.task_exit_state[t] == EXIT_DEAD
    assert kexit._reap_zombies(cpu, parent) == (1, 0)
    assert m.task_exit_state[p] == EXIT_DEAD


def test_any_thread_of_the_parent_group_reaps(mc):
    """wait4 by one thread reaps the zombie children of every thread of its group (while_each_thread)."""
    m, cpu = mc
    p = add_process(m, cpu, "p")
    t = thread(m, cpu, p)
    c = add_process(m, cpu, "c", parent=t)   # t forked it
    exit_task(cpu, c)
    cpu.current = p
    assert kexit._reap_zombies(cpu, p) == (1, 0)
    assert m.task_exit_state[c] == EXIT_DEAD


def test_child_sacrifice_after_the_forking_thread_exited(mc):
    """P (8000 pages) has thread T, which forked C (300 pages, its own mm); T exits. C now belongs to P's
    live leader, so oom_kill_process(P) still sacrifices C (KERNEL §5.1 step 4): C gets SIGKILL and
    TIF_MEMDIE, P is untouched. (Reparenting to init would have killed P.)"""
    from oomemu.mm import oom_kill
    m, cpu = mc
    p = add_process(m, cpu, "parent", rss=8000)
    t = thread(m, cpu, p)
    c = add_process(m, cpu, "child", rss=300, parent=t)
    exit_task(cpu, t)
    oom_kill.oom_kill_process(cpu, p, GFP_KERNEL, 0, 0, 16384, None, None, "Out of memory")
    assert m.task_pending[c] & (1 << SIGKILL) and m.task_tif[c] & TIF_MEMDIE
    assert not m.task_pending[p] and not m.task_tif[p] & TIF_MEMDIE


# --- exit_notify's bookkeeping and wake-ups (KERNEL §5.2 step 4; kernel/exit.c exit_notify, 3.14) -----------

from oomemu import sync                                                  # noqa: E402
from oomemu.include.sched import PF_KTHREAD, TASK_INTERRUPTIBLE, TASK_RUNNING  # noqa: E402
from oomemu.machine import G_NR_USER_LIVE                                 # noqa: E402


def waiting_in_wait4(m, cpu, row):
    """row sleeps in wait4 on its group's wait_chldexit, as do_wait leaves it."""
    m.task_state[row] = TASK_INTERRUPTIBLE
    sync.wq_add_tail(cpu, m.wq_chldexit(int(m.task_leader[row])), row)


def test_the_parent_waiting_in_wait4_is_woken_when_its_child_exits_even_init(mc):
    """init (row 0) waits; its child exits: init is woken (a parent at row 0 is a parent too)."""
    m, cpu = mc
    c = add_process(m, cpu, "c", parent=INIT)
    waiting_in_wait4(m, cpu, INIT)
    exit_task(cpu, c)
    assert int(m.task_state[INIT]) == TASK_RUNNING


def test_a_thread_exiting_beside_its_live_leader_wakes_nobody(mc):
    """T exits while its leader P runs: nothing to report, so neither P's parent nor anyone else is woken."""
    m, cpu = mc
    parent = add_process(m, cpu, "parent")
    p = add_process(m, cpu, "p", parent=parent)
    t = thread(m, cpu, p)
    other = add_process(m, cpu, "other")
    for r in (parent, other, 1):                   # row 1: kthreadd, a bystander
        waiting_in_wait4(m, cpu, r)
    exit_task(cpu, t)
    assert [int(m.task_state[r]) for r in (parent, other, 1)] == [TASK_INTERRUPTIBLE] * 3


def test_the_last_thread_out_reports_the_zombie_leader(mc):
    m, cpu = mc
    parent = add_process(m, cpu, "parent")
    p = add_process(m, cpu, "p", parent=parent)
    t = thread(m, cpu, p)
    exit_task(cpu, p)                              # leader first: a zombie, not yet reported
    waiting_in_wait4(m, cpu, parent)
    exit_task(cpu, t)
    assert int(m.task_state[parent]) == TASK_RUNNING


def test_a_user_exit_counts_down_the_live_user_tasks_and_a_kthread_exit_does_not(mc):
    m, cpu = mc
    u = add_process(m, cpu, "u")
    k = add_process(m, cpu, "k", flags=PF_KTHREAD)
    live = int(m.glob[G_NR_USER_LIVE])
    exit_task(cpu, u)
    assert int(m.glob[G_NR_USER_LIVE]) == live - 1
    exit_task(cpu, k)
    assert int(m.glob[G_NR_USER_LIVE]) == live - 1


def test_forget_original_parent_says_when_a_zombie_moves_outside_the_group(mc):
    """No children: (-1, False). A zombie child handed to init (another group) must be reported (True); a zombie
    handed to a sibling thread stays in the family (False); a live child handed to init needs no report."""
    m, cpu = mc
    lone = add_process(m, cpu, "lone")
    assert kexit.forget_original_parent(cpu, lone) == (-1, False)
    p = add_process(m, cpu, "p")
    t = thread(m, cpu, p)
    z = add_process(m, cpu, "z", parent=t)
    m.task_exit_state[z] = EXIT_ZOMBIE
    assert kexit.forget_original_parent(cpu, t) == (p, False)
    q = add_process(m, cpu, "q")
    zq = add_process(m, cpu, "zq", parent=q)
    m.task_exit_state[zq] = EXIT_ZOMBIE
    assert kexit.forget_original_parent(cpu, q) == (INIT, True)
    r = add_process(m, cpu, "r")
    add_process(m, cpu, "live", parent=r)
    assert kexit.forget_original_parent(cpu, r) == (INIT, False)


@pytest.mark.parametrize("live,empty", [(0, True), (1, False), (2, False)])
def test_thread_group_empty_counts_live_threads(mc, live, empty):
    m, cpu = mc
    p = add_process(m, cpu, "p")
    m.sig_nr_live[p] = live
    assert bool(kexit.thread_group_empty(m, p)) is empty
