"""NUMA memory policies: where a task's pages come from (set_mempolicy's bind, preferred and interleave).

Follows mm/mempolicy.c of Linux 3.14. A task's policy is its row's `task_mpol_mode` (MPOL_*) and
`task_mpol_nodes` (a node bitmask); interleave's next node is `task_il_next`. Only the task policy exists
(no VMA policies, no MPOL_F_* mode flags).

Differs: interleave takes the next node of the task's round robin (interleave_nodes()) for every page,
where 3.14's alloc_pages_vma() places user pages by their offset in the VMA (interleave_nid()); a cpuset
change does not rebind the policy (mpol_rebind_task()).
"""
from oomemu.include.gfp import __GFP_THISNODE, gfp_zone
from oomemu.include.mmzone import ZONE_NORMAL
from oomemu.kernel import cpuset
from oomemu.machine import Z_IDX, Z_MANAGED, Z_NCOLS

# enum mempolicy modes (include/uapi/linux/mempolicy.h)
MPOL_DEFAULT = 0
MPOL_PREFERRED = 1
MPOL_BIND = 2
MPOL_INTERLEAVE = 3
MPOL_MODES = {"default": MPOL_DEFAULT, "preferred": MPOL_PREFERRED, "bind": MPOL_BIND,
              "interleave": MPOL_INTERLEAVE}
MPOL_NAMES = {v: k for k, v in MPOL_MODES.items()}


def policy_zone(m):
    """The highest zone type policies apply to: ZONE_NORMAL, or lower if no node has one.
    Follows: the policy_zone variable of mm/mempolicy.c, set by build_all_zonelists()/check_highest_zone()."""
    vz = m.v_zone
    best = 0
    for z in range(m.nr_zones):
        if vz[z * Z_NCOLS + Z_MANAGED]:
            best = max(best, min(vz[z * Z_NCOLS + Z_IDX], ZONE_NORMAL))
    return best


def apply_policy_zone(m, zone):
    """Does a bind policy restrict a request whose highest zone is `zone`? Follows: apply_policy_zone(), 3.14
    (no ZONE_MOVABLE here, so the dynamic policy zone is policy_zone)."""
    return zone >= policy_zone(m)


def policy_nodemask(cpu, gfp_mask, tsk):
    """The nodemask a bind policy gives this request (a frozenset), or None. Follows: policy_nodemask(), 3.14:
    only MPOL_BIND, only for zones the policy applies to, and only while the cpuset still allows some of the
    policy's nodes (cpuset_nodemask_valid_mems_allowed)."""
    m = cpu.m
    if m.v_task_mpol_mode[tsk] != MPOL_BIND:
        return None
    nodes = m.v_task_mpol_nodes[tsk]
    if apply_policy_zone(m, gfp_zone(gfp_mask)) and nodes & cpuset.cpuset_mems_allowed(m, tsk):
        return frozenset(cpuset.nodes_of_mask(nodes))
    return None


def policy_zonelist(cpu, gfp_mask, tsk, nd):
    """The zonelist the policy allocates from: the preferred node's for MPOL_PREFERRED, else node nd's (bind
    allocates node-locally within its nodemask; with __GFP_THISNODE outside the mask, the mask's first node).
    Follows: policy_zonelist(), 3.14."""
    from oomemu.mm import page_alloc
    m = cpu.m
    mode = m.v_task_mpol_mode[tsk]
    nodes = m.v_task_mpol_nodes[tsk]
    if mode == MPOL_PREFERRED and nodes:
        nd = cpuset.nodes_of_mask(nodes)[0]   # preferred_node (an empty preferred mask means local allocation)
    elif mode == MPOL_BIND and gfp_mask & __GFP_THISNODE and not nodes >> nd & 1:
        nd = cpuset.nodes_of_mask(nodes)[0]
    return page_alloc.node_zonelist(m, nd, gfp_mask)


def interleave_nodes(cpu, tsk):
    """The node for the next interleaved page, advancing the task's round robin over the policy's nodes.
    Follows: interleave_nodes(), 3.14 (il_next, next_node() wrapping to first_node())."""
    m = cpu.m
    nodes = m.v_task_mpol_nodes[tsk]
    nid = m.v_task_il_next[tsk]
    later = nodes >> (nid + 1) << (nid + 1)
    nxt = (later & -later).bit_length() - 1 if later else (nodes & -nodes).bit_length() - 1
    if nxt >= 0:
        m.v_task_il_next[tsk] = nxt
    return nid


async def alloc_page_interleave(cpu, gfp_mask, order, nid):
    """Allocate from node nid's zonelist with no nodemask (so other nodes are the fallback).
    Follows: alloc_page_interleave(), 3.14."""
    from oomemu.mm import page_alloc
    zl = page_alloc.node_zonelist(cpu.m, nid, gfp_mask)
    return await page_alloc.__alloc_pages_nodemask(cpu, gfp_mask, order, zl, None)


async def alloc_pages_current(cpu, gfp_mask, order):
    """Allocate as current's policy says: interleave round robin, or the policy's zonelist and nodemask.
    Follows: alloc_pages_current(), 3.14 (which alloc_pages() is on NUMA). Differs: no cpuset mems cookie
    retry (mems change only between a task's own ops)."""
    from oomemu.mm import page_alloc
    cur = cpu.current
    m = cpu.m
    if cur < 0 or gfp_mask & __GFP_THISNODE or m.v_task_mpol_mode[cur] == MPOL_DEFAULT:
        zl = page_alloc.node_zonelist(m, page_alloc.numa_node_id(cpu), gfp_mask)
        return await page_alloc.__alloc_pages_nodemask(cpu, gfp_mask, order, zl, None)
    if m.v_task_mpol_mode[cur] == MPOL_INTERLEAVE:
        return await alloc_page_interleave(cpu, gfp_mask, order, interleave_nodes(cpu, cur))
    return await page_alloc.__alloc_pages_nodemask(cpu, gfp_mask, order,
                                                   policy_zonelist(cpu, gfp_mask, cur, page_alloc.numa_node_id(cpu)),
                                                   policy_nodemask(cpu, gfp_mask, cur))


def mempolicy_nodemask_intersects(m, tsk, mask):
    """Could tsk have memory on the nodes of `mask`? True without a mask or a policy, and for MPOL_PREFERRED
    (it falls back to other nodes); bind and interleave only if their nodes meet the mask.
    Follows: mempolicy_nodemask_intersects(), 3.14."""
    if mask is None:
        return True
    mode = m.v_task_mpol_mode[tsk]
    if mode in (MPOL_BIND, MPOL_INTERLEAVE):
        return bool(m.v_task_mpol_nodes[tsk] & cpuset.node_mask_of(mask))
    return True


def do_set_mempolicy(cpu, tsk, mode, nodes_mask):
    """Install a task policy. Follows: do_set_mempolicy(), 3.14: the nodes are narrowed to the cpuset's mems
    (mpol_set_nodemask); interleave starts at its first node. Returns 0 or -EINVAL (22) when bind or interleave
    would be left with no node."""
    m = cpu.m
    if mode != MPOL_DEFAULT:
        allowed = nodes_mask & cpuset.cpuset_mems_allowed(m, tsk)
        if mode in (MPOL_BIND, MPOL_INTERLEAVE) and not allowed:
            return -22
        nodes_mask = allowed
    else:
        nodes_mask = 0
    m.v_task_mpol_mode[tsk] = mode
    m.v_task_mpol_nodes[tsk] = nodes_mask
    if mode == MPOL_INTERLEAVE:
        m.v_task_il_next[tsk] = cpuset.nodes_of_mask(nodes_mask)[0]
    return 0


def node_spanned_pages(m, nid):
    """Pages the node spans, holes included. Follows: node_spanned_pages()."""
    from oomemu.include.mmzone import MAX_NR_ZONES
    from oomemu.machine import Z_SPANNED
    return int(m.zone[nid * MAX_NR_ZONES:(nid + 1) * MAX_NR_ZONES, Z_SPANNED].sum())
