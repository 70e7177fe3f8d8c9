"""Build a machine from a scenario: memory, programs, and the tasks that exist at boot.

Follows the order of init/main.c start_kernel() → rest_init() of Linux 3.14 in spirit: memory first, then
init (pid 1) and kthreadd (pid 2), the kswapd threads, and the scenario's tasks as children of init.
Runs in the supervisor before any worker exists.
"""
import time

from oomemu.include.sched import CAP_NAMES, PF_KSWAPD, PF_KTHREAD, PF_MEMALLOC, PF_SWAPWRITE, TASK_INTERRUPTIBLE
from oomemu.kernel import fork
from oomemu.machine import G_BOOT_NS, G_NEXT_PID, G_NR_TASK_ROWS, Machine
from oomemu.mm import mm_init
from oomemu.percpu import CpuContext
from oomemu import workload

RING_RECORDS = 1 << 16


def ring_records_for(max_tasks):
    """Records per trace ring: at least RING_RECORDS, and room for one OOM scan's candidate records (one per
    task) with some to spare, so a single scan of a big task table never overflows a drained ring."""
    need = max_tasks + 4096
    return max(RING_RECORDS, 1 << (need - 1).bit_length())


def create_machine(scenario, ring_records=None):
    """Allocate the shared segment for `scenario` and boot memory, programs and tasks into it."""
    mc = scenario.machine
    nr_tasks = 2 + len(mc.nodes) + sum(t.count for t in scenario.tasks)
    max_tasks = max(mc.max_tasks, nr_tasks)
    if not scenario.run.trace:
        ring_records = 1
    elif ring_records is None:
        ring_records = ring_records_for(max_tasks)
    m = Machine(nr_cpus=mc.cpus, nr_nodes=len(mc.nodes), nr_pages=mm_init.nr_pages_of(scenario),
                max_tasks=max_tasks, ring_records=ring_records, hz=mc.hz)
    m.glob[G_BOOT_NS] = time.monotonic_ns()
    m.zonelists, m.min_free_kbytes = mm_init.boot_memory(m, scenario)
    m.programs, m.program_ids = workload.build_programs(scenario)
    m.oom_notify_list = ()
    boot_tasks(m, scenario)
    return m


def boot_tasks(m, scenario):
    """init (pid 1, runs the reaper program), kthreadd (pid 2), kswapdN, then the scenario's task groups."""
    cpu = CpuContext(m, 0, scenario)
    m.glob[G_NEXT_PID] = 1
    init = fork.copy_process(cpu, -1, 0, 0, "init", 0, uid=0, caps=0, oom_score_adj=0)
    assert init == 0, "init must be task row 0"
    _kthread(m, "kthreadd", 0, 0)
    for nid in range(m.nr_nodes):
        _kthread(m, f"kswapd{nid}", PF_MEMALLOC | PF_SWAPWRITE | PF_KSWAPD, m.nr_cpus + nid)
    for group in scenario.tasks:
        prog = m.program_ids[id(group.program)]
        caps = 0
        for name in group.caps:
            caps |= CAP_NAMES[name]
        for _ in range(group.count):
            target = fork.pick_cpu(m, -1, group.cpu)
            fork.copy_process(cpu, 0, 0, prog, group.comm, target, uid=group.uid, caps=caps,
                              oom_score_adj=group.oom_score_adj, flags=PF_KTHREAD if group.kthread else 0)


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
