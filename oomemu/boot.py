"""Build a machine from a scenario: memory, programs, and the tasks that exist at boot.

Follows the order of init/main.c start_kernel() → rest_init() of Linux 3.14 in spirit: memory first, then
init (pid 1) and kthreadd (pid 2), the kswapd threads, and the scenario's tasks as children of init.
Runs in the supervisor before any worker exists.
"""
import time

from oomemu.config.schema import iter_ops
from oomemu.errors import ScenarioError
from oomemu.include.gfp import GFP_HIGHUSER_MOVABLE
from oomemu.include.mmzone import MAX_ORDER, MIGRATE_MOVABLE, NR_FREE_PAGES
from oomemu.include.sched import CAP_NAMES, PF_KSWAPD, PF_KTHREAD, PF_MEMALLOC, PF_SWAPWRITE, TASK_INTERRUPTIBLE
from oomemu.kernel import fork
from oomemu.kernel import sysctl as ksysctl
from oomemu.machine import (G_BOOT_NS, G_NEXT_PID, G_NR_SWAP_FREE, G_NR_TASK_ROWS, G_TOTAL_SWAP, LRU_ACTIVE,
                            LRU_ANON, LRU_FILE, PG_active,
                            MM_ANONPAGES, MM_FILEPAGES, MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM, PAGE_ANON,
                            PAGE_FILE, Z_STAT, Machine)
from oomemu.config.load import cgroup_paths
from oomemu.mm import memcontrol, mm_init, mmap, page_alloc, vmscan
from oomemu.mm.internal import ALLOC_NO_WATERMARKS
from oomemu.trace import events as tp
from oomemu.trace import ring
from oomemu.percpu import CpuContext
from oomemu import workload

RING_RECORDS = 1 << 16


def ring_records_for(max_tasks):
    """Records per trace ring: at least RING_RECORDS, and room for one OOM scan's candidate records (one per
    task) with some to spare, so a single scan of a big task table never overflows a drained ring."""
    need = max_tasks + 4096
    return max(RING_RECORDS, 1 << (need - 1).bit_length())


MAX_PRESET_RING = 1 << 20


def preset_pages_max(scenario):
    """The most pages one task's `mm` preset holds (at most MAX_PRESET_RING): its exit frees them in one go,
    one mm_page_free record each, so the rings are sized to hold that many."""
    most = max((t.mm["anon"] + t.mm["file"] for t in scenario.tasks if t.mm is not None), default=0)
    return min(most, MAX_PRESET_RING)


def create_machine(scenario, ring_records=None, replay=None):
    """Allocate the shared segment for `scenario` and boot memory, programs and tasks into it.

    In a controlled schedule mode the controller block is set up too; `replay` is the (row, steps) schedule a
    `replay` run follows.
    """
    mc = scenario.machine
    nr_tasks = 2 + len(mc.nodes) + int(scenario.features.oom_reaper) + sum(t.count for t in scenario.tasks)
    max_tasks = max(mc.max_tasks, nr_tasks)
    if not scenario.run.trace:
        ring_records = 1
    elif ring_records is None:
        ring_records = ring_records_for(max(max_tasks, preset_pages_max(scenario)))
    m = Machine(nr_cpus=mc.cpus, nr_nodes=len(mc.nodes), nr_pages=mm_init.nr_pages_of(scenario),
                max_tasks=max_tasks, ring_records=ring_records, hz=mc.hz,
                controlled=scenario.run.schedule != "free", replay_pairs=len(replay or ()),
                oom_reaper=scenario.features.oom_reaper, nr_memcgs=len(cgroup_paths(scenario.cgroups)))
    m.glob[G_BOOT_NS] = time.monotonic_ns()
    if m.controlled:
        from oomemu import control
        control.setup(m, scenario.run, mc.hz, replay)
    m.zonelists, m.min_free_kbytes = mm_init.boot_memory(m, scenario)
    m.totalreserve_pages = page_alloc.calculate_totalreserve_pages(m)
    mmap.init_reserves(m)
    ksysctl.sysctl_init(m, scenario.sysctl, m.min_free_kbytes)
    m.programs, m.program_ids = workload.build_programs(scenario)
    m.oom_notify_list = ()
    memcontrol.mem_cgroup_init(m, scenario)
    m.numa_constraints, m.cpuset_names = numa_constraints_of(scenario)
    boot_tasks(m, scenario)
    return m


def boot_tasks(m, scenario):
    """init (pid 1, runs the reaper program), kthreadd (pid 2), kswapdN, then the scenario's task groups."""
    cpu = CpuContext(m, 0, scenario)
    if scenario.run.trace and any(group.mm for group in scenario.tasks):
        cpu.trace = ring.RingWriter(m, 0)  # preset pages are traced as allocated, for the trace checks
    m.glob[G_NEXT_PID] = 1
    init = fork.copy_process(cpu, -1, 0, 0, "init", 0, uid=0, caps=0, oom_score_adj=0)
    assert init == 0, "init must be task row 0"
    _kthread(m, "kthreadd", 0, 0)
    for nid in range(m.nr_nodes):
        _kthread(m, f"kswapd{nid}", PF_MEMALLOC | PF_SWAPWRITE | PF_KSWAPD, m.nr_cpus + nid)
    # 4.6+: the oom_reaper kthread (mm/oom_kill.c oom_init()), its own process like kswapd
    m.oom_reaper_task = _kthread(m, "oom_reaper", 0, m.oom_reaper_row) if m.oom_reaper_row >= 0 else -1
    for i, group in enumerate(scenario.tasks):
        prog = m.program_ids[id(group.program)]
        caps = 0
        for name in group.caps:
            caps |= CAP_NAMES[name]
        for _ in range(group.count):
            target = fork.pick_cpu(m, -1, group.cpu)
            row = fork.copy_process(cpu, 0, 0, prog, group.comm, target, uid=group.uid, caps=caps,
                                    oom_score_adj=group.oom_score_adj, flags=PF_KTHREAD if group.kthread else 0)
            m.task_memcg[row] = m.memcg_names.index(group.cgroup)
            if group.mm is not None:
                preset_mm(cpu, int(m.task_mm[row]), group.mm, f"task[{i}].mm")
            attach_numa(cpu, row, group)
    cpu.trace = None


def cpuset_path_of(group):
    """The cpuset a [[task]] group starts in: its `cpuset`, or "/" (with `mems`: "/mems" + the node list)."""
    if group.cpuset is not None:
        return group.cpuset
    if group.mems is not None:
        return "/mems" + "-".join(str(n) for n in sorted(group.mems))
    return "/"


def numa_constraints_of(scenario):
    """(whether any task may be held to fewer than every node, the cpuset paths in order, "/" first)."""
    names = ["/"]
    constrained = False
    for group in scenario.tasks:
        path = cpuset_path_of(group)
        if path not in names:
            names.append(path)
        constrained |= group.mems is not None or group.mempolicy is not None
        constrained |= any(op.op in ("set_mems", "set_mempolicy") for op, _ in iter_ops(group.program, ""))
    return constrained, names


def attach_numa(cpu, row, group):
    """Put a boot task in its group's cpuset (cpuset.mems) and give it the group's mempolicy
    (set_mempolicy() before its program starts). Follows: cpuset_attach() and do_set_mempolicy(), 3.14."""
    from oomemu.kernel import cpuset
    from oomemu.mm import mempolicy
    m = cpu.m
    m.task_cpuset[row] = m.cpuset_names.index(cpuset_path_of(group))
    if group.mems is not None:
        m.task_mems[row] = cpuset.node_mask_of(group.mems)
    if group.mempolicy is not None:
        policy = group.mempolicy
        mempolicy.do_set_mempolicy(cpu, row, mempolicy.MPOL_MODES[policy["mode"]],
                                   cpuset.node_mask_of(policy["nodes"]))


def preset_mm(cpu, mm, preset, path):
    """Give a new mm the memory a scenario says it already holds: anonymous and page-cache pages taken from
    the buddy lists (highest zone first, as a GFP_HIGHUSER_MOVABLE fault would), swap entries charged to swap,
    and the page-table and virtual sizes it reports.

    Emulator-only: the state of a task at the moment a kernel OOM report was taken (KERNEL §3.5's columns),
    reached without running the faults that built it.
    """
    m = cpu.m
    for kind, counter, lru, pages in ((PAGE_ANON, MM_ANONPAGES, LRU_ANON, preset["anon"]),
                                      (PAGE_FILE, MM_FILEPAGES, LRU_FILE, preset["file"])):
        left = pages
        for z in page_alloc.node_zonelist(m, 0, GFP_HIGHUSER_MOVABLE):
            left = _take_pages(cpu, z, mm, kind, counter, lru, left)
            if not left:
                break
        if left:
            raise ScenarioError(f"{path}: {pages} pages do not fit in the machine ({left} left over); "
                                "make the zones larger", path=path)
    swap = preset["swapents"]
    if swap > m.glob[G_NR_SWAP_FREE]:
        raise ScenarioError(f"{path}.swapents: {swap} swap entries but only {int(m.glob[G_NR_SWAP_FREE])} free "
                            "swap pages; make machine.swap larger", path=f"{path}.swapents")
    m.glob[G_NR_SWAP_FREE] -= swap
    m.mm[mm, MM_SWAPENTS] = swap
    total_vm = preset["total_vm"]
    if total_vm is None:
        total_vm = preset["anon"] + preset["file"] + swap
    m.mm[mm, MM_TOTAL_VM] = total_vm
    nr_ptes = preset["nr_ptes"]
    m.mm[mm, MM_NR_PTES] = -(-total_vm // mmap.PTRS_PER_PTE) if nr_ptes is None else nr_ptes
    memcontrol.charge_preset(m, mm)


def _take_pages(cpu, z, mm, kind, counter, lru, want):
    """Map up to `want` pages of zone z into mm in buddy blocks of up to MAX_ORDER - 1; returns how many are
    still wanted. Each block is traced as one allocation (mm_page_alloc) and then owned page by page."""
    m = cpu.m
    on_lru = lru == LRU_FILE or m.glob[G_TOTAL_SWAP] > 0  # the anon LRU exists only with swap (mm/swap.py)
    while want:
        order = min(MAX_ORDER - 1, want.bit_length() - 1)
        pfn = -1
        while order >= 0:
            pfn = page_alloc.__rmqueue(cpu, z, order, MIGRATE_MOVABLE)
            if pfn != -1:
                break
            order -= 1
        if pfn == -1:
            return want
        n = 1 << order
        free = int(m.zone[z, Z_STAT + NR_FREE_PAGES])
        m.zone[z, Z_STAT + NR_FREE_PAGES] = free - n
        m.page_order[pfn] = 0
        m.page_kind[pfn:pfn + n] = kind
        m.page_owner[pfn:pfn + n] = mm
        # not subject to watermarks: the pages were taken before the report's moment
        tp.trace_mm_page_alloc(cpu, pfn, order, GFP_HIGHUSER_MOVABLE, free, ALLOC_NO_WATERMARKS)
        m.mm[mm, counter] += n
        if on_lru:   # anonymous pages start active (lru_cache_add_active_or_unevictable), file ones inactive
            if lru == LRU_ANON:
                m.page_flags[pfn:pfn + n] |= PG_active
            for page in range(pfn, pfn + n):
                vmscan.add_page_to_lru_list(m, z, page, lru + (LRU_ACTIVE if lru == LRU_ANON else 0))
        want -= n
    return want


def _kthread(m, comm, flags, cpu_row):
    """A kernel thread row that no CPU scheduler runs (kthreadd, or a kswapd that is its own process)."""
    row = int(m.glob[G_NR_TASK_ROWS])
    pid = int(m.glob[G_NEXT_PID])
    m.glob[G_NEXT_PID] = pid + 1
    fork._init_row(m, row, pid, -1, 0, -1, comm, cpu_row, 0, 0, PF_KTHREAD | flags)
    m.task_parent[row] = -1
    m.task_state[row] = TASK_INTERRUPTIBLE
    m.glob[G_NR_TASK_ROWS] = row + 1
    return row
