"""Cpusets: the nodes a task may allocate from (cpuset.mems), as the allocator and the OOM killer ask.

Follows kernel/cpuset.c of Linux 3.14. A task's mems_allowed is a node bitmask in its row (`task_mems`, bit n =
node n) and its cpuset is an index into the machine's cpuset paths (`task_cpuset`, 0 = the top cpuset "/",
which holds every node). Nodemasks passed around the allocator are frozensets of node ids (None = no mask).

Differs: cpusets are flat labels with their mems (no hierarchy, no cpus, no mem_exclusive / mem_hardwall, so
the nearest hardwall ancestor of every cpuset is the top one: a request without __GFP_HARDWALL may use any
node, as in 3.14 with those flags off); `set_mems` changes one process's mems (as writing cpuset.mems of a
cpuset that holds only that process would), without rebinding its mempolicy or migrating its pages.
"""
from oomemu.include.gfp import __GFP_HARDWALL, __GFP_THISNODE
from oomemu.include.sched import PF_EXITING, TIF_MEMDIE
from oomemu.machine import G_NR_TASK_ROWS, Z_NCOLS, Z_NODE


def node_mask_of(nodes):
    """A node bitmask from node ids. Emulator-only (nodemask_t as an int)."""
    mask = 0
    for nid in nodes:
        mask |= 1 << nid
    return mask


def nodes_of_mask(mask):
    """The node ids of a bitmask, lowest first (for_each_node_mask)."""
    return tuple(nid for nid in range(mask.bit_length()) if mask >> nid & 1)


def all_nodes_mask(m):
    """node_states[N_MEMORY] as a bitmask (every node of the machine)."""
    return (1 << m.nr_nodes) - 1


def nodelist(mask):
    """The node list as the kernel prints it: ranges joined by commas ("0-1,3"; "" for none).
    Follows: nodelist_scnprintf() / bitmap_scnlistprintf() (%*pbl)."""
    parts, nodes = [], nodes_of_mask(mask)
    i = 0
    while i < len(nodes):
        j = i
        while j + 1 < len(nodes) and nodes[j + 1] == nodes[j] + 1:
            j += 1
        parts.append(str(nodes[i]) if i == j else f"{nodes[i]}-{nodes[j]}")
        i = j + 1
    return ",".join(parts)


def cpuset_mems_allowed(m, tsk):
    """tsk->mems_allowed as a bitmask; a task row of -1 (a kworker, the SysRq-F path) is in the top cpuset."""
    return int(m.task_mems[tsk]) if tsk >= 0 else all_nodes_mask(m)


def cpuset_current_mems_allowed(cpu):
    """current->mems_allowed. Follows: the cpuset_current_mems_allowed macro, 3.14."""
    return cpuset_mems_allowed(cpu.m, cpu.current)


def task_cs_name(m, tsk):
    """The path of tsk's cpuset ("/" for the top cpuset)."""
    return m.cpuset_names[int(m.task_cpuset[tsk])] if tsk >= 0 else "/"


def cgroup_name(path):
    """A cgroup's own name: the last part of its path, "/" for the root. Follows: cgroup_name(), 3.14."""
    return "/" if path == "/" else path.rsplit("/", 1)[1]


def __cpuset_node_allowed_softwall(cpu, node, gfp_mask):
    """May current allocate on `node`? Follows: kernel/cpuset.c __cpuset_node_allowed_softwall(), 3.14:
    __GFP_THISNODE and a node in mems_allowed are allowed; so is any node for a TIF_MEMDIE task; a
    __GFP_HARDWALL request stops there; a PF_EXITING task may use any node; otherwise the nearest hardwall
    ancestor decides, which here is always the top cpuset (every node).
    """
    m = cpu.m
    cur = cpu.current
    if cur < 0 or gfp_mask & __GFP_THISNODE:
        return True
    if m.v_task_mems[cur] >> node & 1:
        return True
    if m.v_task_tif[cur] & TIF_MEMDIE:
        return True
    if gfp_mask & __GFP_HARDWALL:
        return False
    if m.v_task_flags[cur] & PF_EXITING:
        return True  # let a dying task allocate freely
    return True      # nearest_hardwall_ancestor() is the top cpuset, which has every node


def cpuset_zone_allowed_softwall(cpu, z, gfp_mask):
    """Follows: cpuset_zone_allowed_softwall(), 3.14 (always true with one cpuset, number_of_cpusets <= 1)."""
    m = cpu.m
    if not m.numa_constraints:
        return True
    return __cpuset_node_allowed_softwall(cpu, m.v_zone[z * Z_NCOLS + Z_NODE], gfp_mask)


def cpuset_zone_allowed_hardwall(cpu, z, gfp_mask):
    """May current use zone z at all (reclaim, kswapd wake-ups)? A node in mems_allowed, __GFP_THISNODE, or a
    TIF_MEMDIE current. Follows: cpuset_zone_allowed_hardwall() / __cpuset_node_allowed_hardwall(), 3.14."""
    m = cpu.m
    cur = cpu.current
    if not m.numa_constraints or cur < 0 or gfp_mask & __GFP_THISNODE:
        return True
    if m.v_task_mems[cur] >> m.v_zone[z * Z_NCOLS + Z_NODE] & 1:
        return True
    return bool(m.v_task_tif[cur] & TIF_MEMDIE)


def cpuset_allowed_nodes(cpu, gfp_mask):
    """The nodes get_page_from_freelist's ALLOC_CPUSET test lets this request use, as a frozenset, or None
    when it lets every node (most requests: no cpusets, a top-cpuset task, TIF_MEMDIE, or a softwall request).

    Emulator-only: __cpuset_node_allowed_softwall() asked once per request instead of once per zone.
    """
    m = cpu.m
    cur = cpu.current
    if not m.numa_constraints or cur < 0 or gfp_mask & __GFP_THISNODE:
        return None
    mems = m.v_task_mems[cur]
    if mems == all_nodes_mask(m) or m.v_task_tif[cur] & TIF_MEMDIE or not gfp_mask & __GFP_HARDWALL:
        return None
    return frozenset(nodes_of_mask(mems))


def cpuset_mems_allowed_intersects(m, tsk1, tsk2):
    """Do two tasks' mems_allowed meet? Follows: cpuset_mems_allowed_intersects(), 3.14."""
    return bool(cpuset_mems_allowed(m, tsk1) & cpuset_mems_allowed(m, tsk2))


def cpuset_print_task_mems_allowed(cpu, tsk):
    """The "COMM cpuset=NAME mems_allowed=LIST" line of an OOM report.
    Follows: kernel/cpuset.c cpuset_print_task_mems_allowed(), 3.14 (the cgroup's own name, not its path)."""
    from oomemu.kernel import printk
    m = cpu.m
    printk.printk(cpu, printk.KERN_INFO, f"{printk.task_comm(m, tsk)} cpuset={cgroup_name(task_cs_name(m, tsk))} "
                                         f"mems_allowed={nodelist(cpuset_mems_allowed(m, tsk))}")


def set_mems_allowed(cpu, tsk, mask):
    """Give every thread of tsk's process a new mems_allowed. Follows: cpuset_change_task_nodemask(), 3.14, for
    each task of the cpuset (see the module's Differs)."""
    m = cpu.m
    n = int(m.glob[G_NR_TASK_ROWS])
    group = m.task_leader[:n] == m.v_task_leader[tsk]
    m.task_mems[:n][group] = mask
