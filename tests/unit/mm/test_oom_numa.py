"""The NUMA side of the OOM killer: which zones constrained_alloc walks, the mempolicy mask that
out_of_memory hands to the scan and to check_panic_on_oom, and the child loop's nodemask (KERNEL §2.3, §3.1,
§3.2, §3.3, §5.1).

The two-node unit machine of test_mempolicy.py: node 0 has DMA 16 MiB (4096 pages) and Normal 48 MiB (12288),
node 1 Normal 32 MiB (8192); no swap. CPU 0's zonelist is node 0's Normal and DMA, then node 1's Normal.
"""
import os
import re

import pytest

from machine_helpers import CONSTRAINED, NODE1, add_process, make_machine
from oomemu.include.gfp import GFP_DMA, GFP_KERNEL, GFP_USER, __GFP_HARDWALL
from oomemu.include.oom import CONSTRAINT_CPUSET, CONSTRAINT_MEMORY_POLICY, CONSTRAINT_NONE
from oomemu.include.sched import SIGKILL, TIF_MEMDIE
from oomemu.kernel import cpuset, fork, printk
from oomemu.machine import G_NR_TASK_ROWS
from oomemu.mm import mempolicy, oom_kill, page_alloc

NODE0_PAGES, NODE1_PAGES = 16384, 8192
SIGKILL_BIT = 1 << SIGKILL
THREAD = fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND
_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")


def machine(extra=""):
    m, cpu = make_machine(NODE1 + extra, CONSTRAINED)
    assert m.numa_constraints
    return m, cpu


@pytest.fixture
def mc():
    m, cpu = machine()
    yield m, cpu
    m.close()


def task(m, cpu, comm, *, mems=None, mode=None, nodes=(), rss=0, parent=0):
    row = add_process(m, cpu, comm, rss=rss, parent=parent)
    m.task_mems[row] = cpuset.node_mask_of(mems) if mems is not None else 0b11
    if mode is not None:
        assert mempolicy.do_set_mempolicy(cpu, row, mempolicy.MPOL_MODES[mode], cpuset.node_mask_of(nodes)) == 0
    return row


def sigkill_pending(m, row):
    return bool(m.task_pending[row] & SIGKILL_BIT)


def dmesg_lines(path):
    return [_PREFIX.sub("", line) for line in path.read_text().splitlines()]


# --- constrained_alloc's zone walk (§3.1 step 4) ---------------------------------------------------------------

def test_a_hardwall_request_up_to_normal_meets_node_1s_normal_zone(mc):
    """GFP_USER (hardwall, highest zone Normal) of a task caged to node 0: node 1's Normal zone (index ==
    gfp_zone) is in the walk and not allowed: CPUSET over node 0's spanned pages; the same with a mask of
    every node, which leaves the walk as it is."""
    m, cpu = mc
    zl = page_alloc.node_zonelist(m, 0)
    cpu.current = task(m, cpu, "caged", mems=[0])
    assert oom_kill.constrained_alloc(cpu, zl, GFP_USER, None) == (CONSTRAINT_CPUSET, NODE0_PAGES)
    assert oom_kill.constrained_alloc(cpu, zl, GFP_USER, frozenset({0, 1})) == (CONSTRAINT_CPUSET, NODE0_PAGES)


def test_a_dma_request_walks_only_dma_zones(mc):
    """GFP_DMA | __GFP_HARDWALL walks the DMA zone alone (index 0), skipping the Normal zones before and after
    it: a task caged to node 0 may use it (NONE); one caged to node 1 may not (CPUSET over node 1's pages),
    though the walk first skips node 0's Normal zone."""
    m, cpu = mc
    zl = page_alloc.node_zonelist(m, 0)
    total = NODE0_PAGES + NODE1_PAGES
    cpu.current = task(m, cpu, "caged0", mems=[0])
    assert oom_kill.constrained_alloc(cpu, zl, GFP_DMA | __GFP_HARDWALL, None) == (CONSTRAINT_NONE, total)
    cpu.current = task(m, cpu, "caged1", mems=[1])
    assert oom_kill.constrained_alloc(cpu, zl, GFP_DMA | __GFP_HARDWALL, None) == (CONSTRAINT_CPUSET, NODE1_PAGES)


# --- the mempolicy mask (§3.2 steps 3-7, §2.3) -----------------------------------------------------------------

def oom(cpu, current, nodemask, gfp=GFP_KERNEL, order=0):
    cpu.current = current
    zl = page_alloc.node_zonelist(cpu.m, 0)
    coro = oom_kill.out_of_memory(cpu, zl, gfp, order, nodemask, False)
    try:
        coro.send(None)
        cpu.m.task_state[current] = 0
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("out_of_memory slept twice")


def test_a_mempolicy_oom_scans_only_tasks_whose_policy_meets_the_mask(mc):
    """A request with nodemask {0} is CONSTRAINT_MEMORY_POLICY, and select_bad_process gets the mask: the hog
    bound to node 1 is unkillable (§2.3 with a mask), so the smaller task bound to node 0 dies."""
    m, cpu = mc
    hog = task(m, cpu, "hog1", mode="bind", nodes=[1], rss=6000)
    small = task(m, cpu, "small0", mode="bind", nodes=[0], rss=500)
    cur = task(m, cpu, "alloc", rss=10)
    assert oom_kill.constrained_alloc(cpu, page_alloc.node_zonelist(m, 0), GFP_KERNEL, frozenset({0}))[0] == (
        CONSTRAINT_MEMORY_POLICY)
    oom(cpu, cur, frozenset({0}))
    assert sigkill_pending(m, small) and m.task_tif[small] & TIF_MEMDIE
    assert not sigkill_pending(m, hog)


def test_panic_on_oom_2_table_of_a_mempolicy_oom_lists_only_tasks_that_meet_the_mask(tmp_path):
    """check_panic_on_oom gets mpol_mask (§3.2 step 4): the header's table (dump_tasks with the nodemask,
    §3.5) leaves out the task bound to node 1 and lists the one bound to node 0; the header names the order."""
    m, cpu = machine("\n[sysctl]\npanic_on_oom = 2\n")
    try:
        task(m, cpu, "bound1", mode="bind", nodes=[1], rss=600)
        task(m, cpu, "bound0", mode="bind", nodes=[0], rss=500)
        cur = task(m, cpu, "alloc", rss=10)
        path = tmp_path / "dmesg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        cpu.printk_fd = fd
        try:
            with pytest.raises(printk.Panic) as panic:
                oom(cpu, cur, frozenset({0}), order=1)
        finally:
            cpu.printk_fd = -1
            os.close(fd)
        assert str(panic.value) == "Out of memory: compulsory panic_on_oom is enabled\n"
        lines = dmesg_lines(path)
        assert lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0, order=1, oom_score_adj=0"
        assert any(line.endswith(" bound0") for line in lines)
        assert not any(line.endswith(" bound1") for line in lines)
    finally:
        m.close()


def test_the_child_loop_scores_children_against_the_nodemask(mc):
    """§5.1 step 4 scores children with oom_badness(child, memcg, nodemask, …): a child bound to node 1 is
    unkillable for a mask of {0} (score 0), so the parent itself is killed."""
    m, cpu = mc
    cpu.current = task(m, cpu, "alloc", rss=10)
    parent = task(m, cpu, "parent", rss=100)
    child = task(m, cpu, "child1", mode="bind", nodes=[1], rss=5000, parent=parent)
    oom_kill.oom_kill_process(cpu, parent, GFP_KERNEL, 0, 0, NODE0_PAGES, None, frozenset({0}), "Out of memory")
    assert sigkill_pending(m, parent) and not sigkill_pending(m, child)


def test_the_scan_counts_a_thread_that_meets_the_mask_for_its_whole_process(mc):
    """has_intersects_mems_allowed walks the thread group (§2.3): a process whose leader is bound to node 1
    but whose second thread is bound to node 0 is killable for a mask of {0}: being the biggest, it dies."""
    m, cpu = mc
    leader = task(m, cpu, "mixed", mode="bind", nodes=[1], rss=6000)
    t = add_process(m, cpu, "mixed", parent=leader, clone_flags=THREAD)
    assert mempolicy.do_set_mempolicy(cpu, t, mempolicy.MPOL_MODES["bind"], cpuset.node_mask_of([0])) == 0
    small = task(m, cpu, "small0", mode="bind", nodes=[0], rss=500)
    cur = task(m, cpu, "alloc", rss=10)
    oom(cpu, cur, frozenset({0}))
    assert sigkill_pending(m, leader) and not sigkill_pending(m, small)


def test_a_mask_of_every_node_is_no_mempolicy_oom_and_the_scan_tests_cpusets(mc):
    """A nodemask of both nodes is CONSTRAINT_NONE (§3.1 step 3), so mpol_mask is NULL (§3.2 step 3) and the
    scan applies the cpuset test instead (§2.3): current is caged to node 0, so the hog caged to node 1 is
    unkillable and the smaller node-0 task dies."""
    m, cpu = mc
    hog = task(m, cpu, "hog1", mems=[1], rss=6000)
    small = task(m, cpu, "small0", mems=[0], rss=500)
    cur = task(m, cpu, "alloc", mems=[0], rss=10)
    oom(cpu, cur, frozenset({0, 1}))
    assert sigkill_pending(m, small) and not sigkill_pending(m, hog)


def test_oom_kill_allocating_task_spares_a_current_outside_the_mask():
    """§3.2 step 5 tests oom_unkillable_task(current, NULL, nodemask): a current bound to node 1 cannot free
    memory for a request masked to node 0, so the scan runs; it spares current (§2.3) and kills the node-0 task."""
    m, cpu = machine("\n[sysctl]\noom_kill_allocating_task = 1\n")
    try:
        small = task(m, cpu, "small0", mode="bind", nodes=[0], rss=500)
        cur = task(m, cpu, "alloc1", mode="bind", nodes=[1], rss=10)
        oom(cpu, cur, frozenset({0}))
        assert sigkill_pending(m, small) and not sigkill_pending(m, cur)
    finally:
        m.close()


def test_oom_kill_allocating_task_scores_currents_children_against_the_nodemask():
    """Step 5 passes the nodemask on: current's child bound to node 1 is unkillable for a mask of {0} (§5.1
    step 4), so current itself dies."""
    m, cpu = machine("\n[sysctl]\noom_kill_allocating_task = 1\n")
    try:
        cur = task(m, cpu, "alloc0", mode="bind", nodes=[0], rss=10)
        child = task(m, cpu, "child1", mode="bind", nodes=[1], rss=5000, parent=cur)
        oom(cpu, cur, frozenset({0}))
        assert sigkill_pending(m, cur) and not sigkill_pending(m, child)
    finally:
        m.close()


def test_the_scans_victim_scores_its_children_against_the_nodemask(mc):
    """Step 7 passes the full nodemask to oom_kill_process: the node-0 parent is chosen, and its bigger child
    bound to node 1 scores 0 in the child loop, so the parent dies."""
    m, cpu = mc
    parent = task(m, cpu, "parent0", mode="bind", nodes=[0], rss=3000)
    child = task(m, cpu, "child1", mode="bind", nodes=[1], rss=5000, parent=parent)
    cur = task(m, cpu, "alloc", rss=10)
    oom(cpu, cur, frozenset({0}))
    assert sigkill_pending(m, parent) and not sigkill_pending(m, child)


def test_the_sysrq_kworker_scans_from_the_top_cpuset(mc):
    """SysRq-F's work item runs in a kworker (§1.8), in the top cpuset: the cpuset test (§2.3) compares with
    every node, so the hog caged to node 1 is killed although the writing task is caged to node 0."""
    m, cpu = mc
    hog = task(m, cpu, "hog1", mems=[1], rss=6000)
    small = task(m, cpu, "small0", mems=[0], rss=500)
    writer = task(m, cpu, "writer", mems=[0], rss=10)
    cpu.current = writer
    coro = oom_kill.out_of_memory(cpu, page_alloc.node_zonelist(m, 0), GFP_KERNEL, 0, None, True, True)
    try:
        while True:
            coro.send(None)
            m.task_state[writer] = 0
    except StopIteration:
        pass
    assert sigkill_pending(m, hog) and not sigkill_pending(m, small)


def test_no_killable_process_in_a_mempolicy_oom_lists_only_tasks_that_meet_the_mask(tmp_path):
    """Step 6's dump_header gets mpol_mask: every task with memory is bound to node 1 (or is current at adj
    -1000, as is the boot-time "idle" task), a request masked to node 0 finds nobody, and the table before the
    panic leaves out the node-1 tasks."""
    m, cpu = machine()
    try:
        for row in range(int(m.glob[G_NR_TASK_ROWS])):
            if m.task_comm[row] == b"idle":
                m.sig_oom_score_adj[row] = -1000
        task(m, cpu, "bound1", mode="bind", nodes=[1], rss=600)
        cur = add_process(m, cpu, "alloc0", rss=10, adj=-1000)
        path = tmp_path / "dmesg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        cpu.printk_fd = fd
        try:
            with pytest.raises(printk.Panic) as panic:
                oom(cpu, cur, frozenset({0}))
        finally:
            cpu.printk_fd = -1
            os.close(fd)
        assert str(panic.value) == "Out of memory and no killable processes...\n"
        lines = dmesg_lines(path)
        assert any(line.endswith(" alloc0") for line in lines)
        assert not any(line.endswith(" bound1") for line in lines)
    finally:
        m.close()


# --- the scalar reference functions take the mask and current too (§2.2, §2.3, §4.1) ------------------------------

def test_oom_badness_and_the_scan_verdict_follow_the_mask_and_currents_cpuset(mc):
    """oom_badness is 0 and oom_scan_process_thread CONTINUEs for a task bound to node 1 under a mask of {0}
    (no mask: 600 + 2 ptes = 602 and OK), and for a task caged to node 1 when current is caged to node 0."""
    from oomemu.include.oom import OOM_SCAN_CONTINUE, OOM_SCAN_OK
    m, cpu = mc
    total = NODE0_PAGES + NODE1_PAGES
    cur = task(m, cpu, "alloc", mems=[0], rss=10)
    cpu.current = cur
    bound1 = task(m, cpu, "bound1", mode="bind", nodes=[1], rss=600)
    m.task_mems[bound1] = cpuset.node_mask_of([0, 1])
    caged1 = task(m, cpu, "caged1", mems=[1], rss=600)
    mask = frozenset({0})
    assert oom_kill.oom_badness(cpu, bound1, None, mask, total) == 0
    assert oom_kill.oom_badness(cpu, bound1, None, None, total) == 602
    assert oom_kill.oom_scan_process_thread(m, bound1, total, mask, False, current=cur) == OOM_SCAN_CONTINUE
    assert oom_kill.oom_scan_process_thread(m, bound1, total, None, False, current=cur) == OOM_SCAN_OK
    assert oom_kill.oom_badness(cpu, caged1, None, None, total) == 0
    assert oom_kill.oom_scan_process_thread(m, caged1, total, None, False, current=cur) == OOM_SCAN_CONTINUE
    assert oom_kill.oom_scan_process_thread(m, caged1, total, None, False, current=-1) == OOM_SCAN_OK


def test_init_is_never_chosen_on_a_numa_machine(mc):
    """init is unkillable (§2.3 step 1) whatever its mems: even with the biggest mm it is not the victim."""
    from oomemu.machine import MM_ANONPAGES
    m, cpu = mc
    assert int(m.task_mm[0]) >= 0
    m.mm[int(m.task_mm[0]), MM_ANONPAGES] = 9000
    small = task(m, cpu, "small", rss=500)
    cpu.current = small
    row, _ = oom_kill.select_bad_process(cpu, NODE0_PAGES + NODE1_PAGES, None, False)
    assert row != 0 and row == small


def test_the_kills_header_table_uses_the_nodemask(tmp_path):
    """oom_kill_process hands the nodemask to dump_header (§5.1 step 2), whose table (§3.5) leaves out a task
    bound to node 1 for a mask of {0}."""
    m, cpu = machine()
    try:
        cpu.current = task(m, cpu, "alloc", rss=10)
        task(m, cpu, "bound1", mode="bind", nodes=[1], rss=600)
        v = task(m, cpu, "victim0", mode="bind", nodes=[0], rss=700)
        path = tmp_path / "dmesg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        cpu.printk_fd = fd
        try:
            oom_kill.oom_kill_process(cpu, v, GFP_KERNEL, 0, 1, NODE0_PAGES, None, frozenset({0}), "Out of memory")
        finally:
            cpu.printk_fd = -1
            os.close(fd)
        lines = dmesg_lines(path)
        assert any(line.endswith(" victim0") and line.startswith("[") for line in lines)
        assert not any(line.endswith(" bound1") for line in lines)
    finally:
        m.close()
