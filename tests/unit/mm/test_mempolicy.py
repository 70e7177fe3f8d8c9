"""Cpusets and mempolicies: where allocations may go, constrained_alloc's constraint and totalpages, and which
tasks the constrained OOM may kill (kernel/cpuset.py, mm/mempolicy.py, mm/oom_kill.py).

Expectations are worked out by hand from KERNEL §2.3 and §3.1 on a two-node unit machine: node 0 has DMA
16 MiB (4096 pages) and Normal 48 MiB (12288 pages), 16384 pages in all; node 1 has Normal 32 MiB (8192
pages); no swap, so totalram = 24576 pages and every page spanned is managed.
"""
import numpy as np
import pytest

from machine_helpers import CONSTRAINED, NODE1, add_process, make_machine, run_to_completion
from oomemu.include.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL, __GFP_HARDWALL, __GFP_THISNODE
from oomemu.include.oom import CONSTRAINT_CPUSET, CONSTRAINT_MEMORY_POLICY, CONSTRAINT_NONE
from oomemu.include.sched import TIF_MEMDIE
from oomemu.kernel import cpuset
from oomemu.machine import Z_NODE
from oomemu.mm import mempolicy, oom_kill, page_alloc

NODE0_PAGES, NODE1_PAGES = 16384, 8192


@pytest.fixture
def mc():
    m, cpu = make_machine(NODE1, CONSTRAINED)
    assert m.numa_constraints
    yield m, cpu
    m.close()


def task(m, cpu, comm, *, mems=None, mode=None, nodes=(), rss=0):
    row = add_process(m, cpu, comm, rss=rss)
    m.task_mems[row] = cpuset.node_mask_of(mems) if mems is not None else 0b11
    if mode is not None:
        assert mempolicy.do_set_mempolicy(cpu, row, mempolicy.MPOL_MODES[mode], cpuset.node_mask_of(nodes)) == 0
    return row


def node_of(m, pfn):
    return int(m.zone[int(m.page_zone[pfn]), Z_NODE])


def alloc(cpu, gfp=GFP_HIGHUSER_MOVABLE):
    return run_to_completion(page_alloc.alloc_pages(cpu, gfp, 0))


# --- nodelists and masks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("nodes,text", [((), ""), ((0,), "0"), ((0, 1), "0-1"), ((0, 1, 3), "0-1,3"),
                                        ((1, 3, 4, 5, 7), "1,3-5,7")])
def test_nodelist_prints_ranges_as_the_kernel_does(nodes, text):
    assert cpuset.nodelist(cpuset.node_mask_of(nodes)) == text


# --- where allocations go ------------------------------------------------------------------------------------

def test_cpuset_mems_keep_user_pages_on_the_allowed_node(mc):
    """A task whose cpuset has node 1 only gets every user page (a __GFP_HARDWALL request) from node 1,
    though CPU 0's zonelist starts with node 0 (KERNEL §6.1 step 4, get_page_from_freelist's ALLOC_CPUSET)."""
    m, cpu = mc
    cpu.current = task(m, cpu, "caged", mems=[1])
    assert {node_of(m, alloc(cpu)) for _ in range(50)} == {1}


def test_a_softwall_request_of_a_cpuset_task_may_leave_its_cpuset_only_in_the_slowpath(mc):
    """The fast path ORs in __GFP_HARDWALL (KERNEL §6.1 step 5), so even GFP_KERNEL first comes from node 1;
    the slowpath's attempts use the request's own gfp, and GFP_KERNEL has no __GFP_HARDWALL: with no hardwall
    cpuset above it (the top cpuset has every node) __cpuset_node_allowed_softwall lets it use node 0."""
    m, cpu = mc
    cpu.current = task(m, cpu, "caged", mems=[1])
    assert node_of(m, alloc(cpu, GFP_KERNEL)) == 1
    assert cpuset.cpuset_allowed_nodes(cpu, GFP_KERNEL | __GFP_HARDWALL) == frozenset({1})
    assert cpuset.cpuset_allowed_nodes(cpu, GFP_KERNEL) is None
    assert cpuset.cpuset_allowed_nodes(cpu, GFP_HIGHUSER_MOVABLE) == frozenset({1})
    m.task_tif[cpu.current] |= TIF_MEMDIE
    assert cpuset.cpuset_allowed_nodes(cpu, GFP_HIGHUSER_MOVABLE) is None


def test_bind_policy_keeps_pages_on_its_nodes_and_preferred_falls_back(mc):
    """MPOL_BIND to node 1 gives the nodemask {1}; MPOL_PREFERRED node 1 allocates from node 1's zonelist
    first (policy_zonelist); the default policy allocates node-locally (CPU 0 is on node 0)."""
    m, cpu = mc
    cpu.current = task(m, cpu, "bound", mode="bind", nodes=[1])
    assert {node_of(m, alloc(cpu)) for _ in range(20)} == {1}
    assert mempolicy.policy_nodemask(cpu, GFP_HIGHUSER_MOVABLE, cpu.current) == frozenset({1})
    cpu.current = task(m, cpu, "pref", mode="preferred", nodes=[1])
    assert node_of(m, alloc(cpu)) == 1
    assert mempolicy.policy_nodemask(cpu, GFP_HIGHUSER_MOVABLE, cpu.current) is None
    cpu.current = task(m, cpu, "plain")
    assert node_of(m, alloc(cpu)) == 0


def test_interleave_goes_round_robin_over_its_nodes(mc):
    """MPOL_INTERLEAVE over nodes 0 and 1 starts at its first node and alternates (interleave_nodes)."""
    m, cpu = mc
    cpu.current = task(m, cpu, "weave", mode="interleave", nodes=[0, 1])
    assert [node_of(m, alloc(cpu)) for _ in range(6)] == [0, 1, 0, 1, 0, 1]


def test_set_mempolicy_narrows_nodes_to_the_cpuset_and_refuses_an_empty_bind(mc):
    """mpol_set_nodemask: the policy's nodes are anded with the cpuset's mems; bind to nodes outside it is
    EINVAL and leaves the old policy."""
    m, cpu = mc
    row = task(m, cpu, "t", mems=[0])
    assert mempolicy.do_set_mempolicy(cpu, row, mempolicy.MPOL_BIND, 0b11) == 0
    assert int(m.task_mpol_nodes[row]) == 0b01
    assert mempolicy.do_set_mempolicy(cpu, row, mempolicy.MPOL_BIND, 0b10) == -22
    assert int(m.task_mpol_nodes[row]) == 0b01 and int(m.task_mpol_mode[row]) == mempolicy.MPOL_BIND


# --- constrained_alloc (KERNEL §3.1) ---------------------------------------------------------------------------

def test_constrained_alloc_by_hand(mc):
    """NONE over totalram + swap without a mask or cpuset; MEMORY_POLICY over node 1's spanned pages for a
    mask of {1}; CPUSET over current's mems (node 1) for a hardwall request of a cpuset task; NONE again for
    the page-fault path (no zonelist), __GFP_THISNODE, a softwall request, and a mask of every node."""
    m, cpu = mc
    zl = page_alloc.node_zonelist(m, 0)
    cpu.current = task(m, cpu, "plain")
    total = NODE0_PAGES + NODE1_PAGES
    assert oom_kill.constrained_alloc(cpu, zl, GFP_HIGHUSER_MOVABLE, None) == (CONSTRAINT_NONE, total)
    assert oom_kill.constrained_alloc(cpu, zl, GFP_HIGHUSER_MOVABLE, frozenset({1})) == (
        CONSTRAINT_MEMORY_POLICY, NODE1_PAGES)
    assert oom_kill.constrained_alloc(cpu, zl, GFP_HIGHUSER_MOVABLE, frozenset({0, 1})) == (CONSTRAINT_NONE, total)
    cpu.current = task(m, cpu, "caged", mems=[1])
    assert oom_kill.constrained_alloc(cpu, zl, GFP_HIGHUSER_MOVABLE, None) == (CONSTRAINT_CPUSET, NODE1_PAGES)
    assert oom_kill.constrained_alloc(cpu, zl, GFP_KERNEL, None) == (CONSTRAINT_NONE, total)
    assert oom_kill.constrained_alloc(cpu, zl, GFP_HIGHUSER_MOVABLE | __GFP_THISNODE, None) == (
        CONSTRAINT_NONE, total)
    assert oom_kill.constrained_alloc(cpu, None, 0, None) == (CONSTRAINT_NONE, total)


def test_a_memdie_cpuset_task_is_not_constrained(mc):
    """TIF_MEMDIE lets a task allocate on any node (KERNEL §5.3), so its zones are all allowed: NONE."""
    m, cpu = mc
    zl = page_alloc.node_zonelist(m, 0)
    cpu.current = task(m, cpu, "caged", mems=[1])
    m.task_tif[cpu.current] |= TIF_MEMDIE
    assert oom_kill.constrained_alloc(cpu, zl, GFP_HIGHUSER_MOVABLE, None)[0] == CONSTRAINT_NONE


# --- who may be killed (KERNEL §2.3) --------------------------------------------------------------------------

def test_oom_unkillable_task_skips_tasks_whose_mems_or_policy_cannot_help(mc):
    """Without a mask: a task whose cpuset mems miss current's is unkillable. With a (mempolicy) mask: a task
    whose bind/interleave nodes miss it is unkillable; preferred and default policies may have memory anywhere."""
    m, cpu = mc
    cur = task(m, cpu, "cur", mems=[1])
    other = task(m, cpu, "node0", mems=[0])
    both = task(m, cpu, "both", mems=[0, 1])
    assert oom_kill.oom_unkillable_task(m, other, None, None, cur)
    assert not oom_kill.oom_unkillable_task(m, both, None, None, cur)
    bound0 = task(m, cpu, "bound0", mode="bind", nodes=[0])
    weave0 = task(m, cpu, "weave0", mode="interleave", nodes=[0])
    pref0 = task(m, cpu, "pref0", mode="preferred", nodes=[0])
    plain = task(m, cpu, "plain")
    mask = frozenset({1})
    assert oom_kill.oom_unkillable_task(m, bound0, None, mask, cur)
    assert oom_kill.oom_unkillable_task(m, weave0, None, mask, cur)
    assert not oom_kill.oom_unkillable_task(m, pref0, None, mask, cur)
    assert not oom_kill.oom_unkillable_task(m, plain, None, mask, cur)


def test_one_thread_that_intersects_makes_the_process_killable(mc):
    """has_intersects_mems_allowed walks the whole thread group: one thread on node 1 is enough."""
    m, cpu = mc
    from oomemu.kernel import fork
    cur = task(m, cpu, "cur", mems=[1])
    leader = task(m, cpu, "proc", mems=[0])
    t = add_process(m, cpu, "proc", parent=leader,
                    clone_flags=fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND)
    assert oom_kill.oom_unkillable_task(m, leader, None, None, cur)
    m.task_mems[t] = 0b10
    assert not oom_kill.oom_unkillable_task(m, leader, None, None, cur)


def test_the_vectorised_mems_test_matches_the_scalar_one_on_random_tasks(mc):
    """mems_disjoint_vector (the scan's twin) agrees with oom_unkillable_task's mems test for 40 tasks with
    random cpusets and policies, 5 times over, with and without a mask, for two different currents."""
    m, cpu = mc
    rng = np.random.default_rng(7)
    rows = []
    for i in range(40):
        mode = [None, "bind", "preferred", "interleave"][int(rng.integers(4))]
        rows.append(task(m, cpu, f"t{i}", mems=[[0], [1], [0, 1]][int(rng.integers(3))], mode=mode,
                         nodes=[0, 1]))
    for _ in range(5):
        for r in rows:
            m.task_mems[r] = int(rng.integers(1, 4))
            m.task_mpol_nodes[r] = int(rng.integers(1, 4))
        for cur in rows[:2]:
            for mask in (None, frozenset({0}), frozenset({1})):
                vec = oom_kill.mems_disjoint_vector(m, np.array(rows), mask, cur).tolist()
                ref = [not oom_kill.has_intersects_mems_allowed(m, r, mask, cur) for r in rows]
                assert vec == ref


def test_select_bad_process_in_a_cpuset_oom_passes_over_the_bigger_task_outside(mc):
    """The scan with current caged on node 1 chooses the biggest task that may hold node-1 memory, not the
    bigger one confined to node 0."""
    m, cpu = mc
    big0 = task(m, cpu, "big0", mems=[0], rss=9000)
    small1 = task(m, cpu, "small1", mems=[1], rss=3000)
    cpu.current = task(m, cpu, "cur", mems=[1], rss=10)
    chosen, _ = oom_kill.select_bad_process(cpu, NODE1_PAGES, None, False)
    assert chosen == small1 and chosen != big0


def test_the_zones_of_each_node_are_where_the_tests_think(mc):
    m, _ = mc
    nodes = [int(m.zone[z, Z_NODE]) for z in page_alloc.node_zonelist(m, 1)]
    assert nodes[0] == 1 and set(nodes) == {0, 1}


def test_dump_header_prints_the_cpuset_name_and_mems(mc, tmp_path):
    """3.14's cpuset_print_task_mems_allowed line: "COMM cpuset=NAME mems_allowed=LIST" with the cgroup's own
    name (not its path); 5.0's oom-kill: line carries the constraint, the nodemask and the victim's cpuset."""
    from oomemu.config.profiles import features_for
    from oomemu.include.oom import CONSTRAINT_MEMORY_POLICY
    from test_oom_kill import dmesg
    m, cpu = mc
    m.cpuset_names.append("/batch/job")
    cur = task(m, cpu, "caged", mems=[1])
    m.task_cpuset[cur] = len(m.cpuset_names) - 1
    cpu.current = cur
    with dmesg(cpu, tmp_path) as log:
        oom_kill.dump_header(cpu, cur, GFP_HIGHUSER_MOVABLE, 0, None, None)
    assert "caged cpuset=job mems_allowed=1" in log.lines
    plain = task(m, cpu, "plain")
    cpu.current = plain
    with dmesg(cpu, tmp_path) as log:
        oom_kill.dump_header(cpu, plain, GFP_HIGHUSER_MOVABLE, 0, None, None)
    assert "plain cpuset=/ mems_allowed=0-1" in log.lines
    cpu.features = features_for("5.1")
    with dmesg(cpu, tmp_path) as log:
        oom_kill.dump_header(cpu, cur, GFP_HIGHUSER_MOVABLE, 0, None, frozenset({1}), CONSTRAINT_MEMORY_POLICY)
    summary = [line for line in log.lines if line.startswith("oom-kill:")]
    assert summary and summary[0].startswith(
        "oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,cpuset=job,mems_allowed=1,global_oom,")


def test_set_mems_moves_the_whole_process_and_its_next_pages(mc):
    """The set_mems op (cpuset_change_task_nodemask for each task of the process): every thread gets the new
    mems, and the next user page comes from the new node."""
    m, cpu = mc
    from oomemu.kernel import fork
    leader = task(m, cpu, "mover", mems=[0])
    t = add_process(m, cpu, "mover", parent=leader, clone_flags=fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND)
    cpu.current = leader
    assert node_of(m, alloc(cpu)) == 0
    cpuset.set_mems_allowed(cpu, t, 0b10)
    assert int(m.task_mems[leader]) == int(m.task_mems[t]) == 0b10
    assert node_of(m, alloc(cpu)) == 1


def test_direct_reclaim_of_a_cpuset_task_walks_only_its_own_nodes(mc):
    """shrink_zones() and all_unreclaimable() skip zones the cpuset does not allow (hardwall): page cache on
    node 0 is no progress for a task caged on node 1 (nothing reclaimable there: progress 0, so it may OOM),
    while a task of the top cpuset reclaims it."""
    from oomemu.mm import filemap, vmscan
    m, cpu = mc
    cpu.current = task(m, cpu, "reader", mems=[0])
    mm = int(m.task_mm[cpu.current])
    for _ in range(64):
        assert run_to_completion(filemap.page_cache_read(cpu, mm, GFP_HIGHUSER_MOVABLE))
    zl = page_alloc.node_zonelist(m, 0)
    cpu.current = task(m, cpu, "caged", mems=[1])
    assert run_to_completion(vmscan.try_to_free_pages(cpu, zl, 0, GFP_HIGHUSER_MOVABLE, None)) == 0
    cpu.current = task(m, cpu, "free")
    assert run_to_completion(vmscan.try_to_free_pages(cpu, zl, 0, GFP_HIGHUSER_MOVABLE, None)) >= 1
