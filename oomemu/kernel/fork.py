"""Creating tasks and mms, and dropping mm references.

Follows kernel/fork.c of Linux 3.14: copy_process() for fork, CLONE_VM and CLONE_THREAD children, mm_alloc,
and mmput() (which upstream lives here too). A new task is a row in TASK_NEW state on its CPU's runqueue
inbox; that CPU builds its execution context when its doorbell rings.

Differs: fork gives the child a fresh, empty mm (as if it exec'd at once) instead of copying the parent's
pages copy-on-write; task_struct and kernel stacks are not charged to memory.
"""
from oomemu import sync
from oomemu.include.sched import PF_FORKNOEXEC, PF_KTHREAD, TASK_NEW
from oomemu.errors import KernelBug
from oomemu.machine import (G_NEXT_CPU, G_NEXT_PID, G_NR_MM_ROWS, G_NR_TASK_ROWS, G_NR_USER_LIVE, G_TASKLIST_RW,
                            L_TASKLIST, MM_COUNT, MM_OWNER, MM_SEM_WRITER, MM_USED, MM_USERS)
from oomemu.mm import mmap
from oomemu.trace import events as tp

CLONE_VM = 0x00000100
CLONE_THREAD = 0x00010000
CLONE_SIGHAND = 0x00000800


def mm_alloc(cpu, owner):
    """A new, empty mm_struct row with one user. Follows: kernel/fork.c mm_alloc()."""
    m = cpu.m
    with sync.write_locked(cpu, L_TASKLIST, G_TASKLIST_RW):
        mm = int(m.glob[G_NR_MM_ROWS])
        if mm >= m.max_tasks:
            raise KernelBug(f"mm table full ({m.max_tasks} rows): raise machine.max_tasks")
        m.glob[G_NR_MM_ROWS] = mm + 1
    m.mm[mm] = 0
    m.mm[mm, MM_SEM_WRITER] = -1
    m.mm[mm, MM_USERS] = 1
    m.mm[mm, MM_COUNT] = 1
    m.mm[mm, MM_OWNER] = owner
    m.mm[mm, MM_USED] = 1
    return mm


def pick_cpu(m, parent, cpu_spec):
    """The CPU a new task runs on: "same" (the parent's), "any" (round robin) or an index.

    Emulator-only: tasks do not migrate, so fork chooses once.
    """
    if cpu_spec == "same" and parent >= 0:
        return int(m.task_cpu[parent])
    if cpu_spec in ("any", "same"):
        n = int(m.glob[G_NEXT_CPU])
        m.glob[G_NEXT_CPU] = n + 1
        return n % m.nr_cpus
    return int(cpu_spec)


def copy_process(cpu, parent, clone_flags, prog, comm, target_cpu, *, uid=None, caps=None, oom_score_adj=None,
                 flags=0, mm=None):
    """Make a task row: a new process (own mm, or the parent's with CLONE_VM) or a thread (CLONE_THREAD).

    Follows: kernel/fork.c copy_process(), 3.14. Returns the new row. `parent` -1 is boot (no parent).
    """
    m = cpu.m
    with sync.write_locked(cpu, L_TASKLIST, G_TASKLIST_RW):
        row = int(m.glob[G_NR_TASK_ROWS])
        if row >= m.max_tasks:
            raise KernelBug(f"task table full ({m.max_tasks} rows): raise machine.max_tasks")
        pid = int(m.glob[G_NEXT_PID])
        m.glob[G_NEXT_PID] = pid + 1
        _init_row(m, row, pid, parent, clone_flags, prog, comm, target_cpu, uid, caps, flags)
        if mm is None and parent >= 0 and clone_flags & CLONE_VM:
            mm = int(m.task_mm[parent])
            with sync.spinlock(cpu, m.mm_lock_index(mm)):
                m.mm[mm, MM_USERS] += 1
        if clone_flags & CLONE_THREAD:
            m.sig_nr_live[m.task_leader[row]] += 1
        else:
            adj = oom_score_adj if oom_score_adj is not None else (
                int(m.sig_oom_score_adj[m.task_leader[parent]]) if parent >= 0 else 0)
            m.sig_oom_score_adj[row] = adj
            # fork copies oom_score_adj_min; a boot task's value was set by a privileged writer, which
            # records it as the floor too (fs/proc/base.c with CAP_SYS_RESOURCE)
            m.sig_oom_score_adj_min[row] = (int(m.sig_oom_score_adj_min[m.task_leader[parent]])
                                            if parent >= 0 else adj)
            m.sig_nr_live[row] = 1
        if not flags & PF_KTHREAD:
            m.glob[G_NR_USER_LIVE] += 1
        m.glob[G_NR_TASK_ROWS] = row + 1
    if mm is None and not flags & PF_KTHREAD:
        mm = mm_alloc(cpu, row)
    m.task_mm[row] = -1 if mm is None else mm
    tp.trace_sched_process_fork(cpu, int(m.task_pid[parent]) if parent >= 0 else 0, pid, clone_flags,
                                int(m.task_tgid[row]))
    m.task_state[row] = TASK_NEW  # publish last: the target CPU adopts it from here on
    sync.ring_doorbell(m, target_cpu)
    return row


def _init_row(m, row, pid, parent, clone_flags, prog, comm, target_cpu, uid, caps, flags):
    m.task_pid[row] = pid
    m.task_parent[row] = -1 if parent < 0 else (m.task_parent[parent] if clone_flags & CLONE_THREAD else parent)
    leader = m.task_leader[parent] if clone_flags & CLONE_THREAD else row
    m.task_leader[row] = leader
    m.task_tgid[row] = m.task_pid[leader] if leader != row else pid
    m.task_cpu[row] = target_cpu
    m.task_prog[row] = prog
    m.task_comm[row] = comm.encode("ascii", "replace")[:15]
    m.task_uid[row] = uid if uid is not None else (m.task_uid[parent] if parent >= 0 else 0)
    m.task_caps[row] = caps if caps is not None else (m.task_caps[parent] if parent >= 0 else 0)
    m.task_flags[row] = flags | (PF_FORKNOEXEC if parent >= 0 else 0)
    m.task_tif[row] = 0
    m.task_pending[row] = 0
    m.task_exit_state[row] = 0
    m.task_seq[row] = row
    m.task_wq_next[row] = -1
    m.task_wait_kind[row] = 0
    m.task_wait_obj[row] = -1
    m.task_memcg[row] = m.task_memcg[parent] if parent >= 0 else 0   # cgroup_post_fork: the parent's cgroups
    m.task_memcg_oom[row] = -1
    m.sig_flags[row] = 0
    m.sig_oom_flags[row] = 0
    m.sig_group_exit_code[row] = 0
    m.sig_kill_kind[row] = 0
    m.sig_enomem[row] = 0
    # The child inherits its parent's cpuset and mempolicy (cgroup_fork, mpol_dup), 3.14.
    if parent >= 0:
        for column in ("task_mems", "task_cpuset", "task_mpol_mode", "task_mpol_nodes", "task_il_next"):
            getattr(m, column)[row] = getattr(m, column)[parent]
    else:
        m.task_mems[row] = (1 << m.nr_nodes) - 1   # the top cpuset: every node
        m.task_cpuset[row] = 0
        m.task_mpol_mode[row] = m.task_mpol_nodes[row] = m.task_il_next[row] = 0


def mmput(cpu, mm):
    """Drop one user of mm; the last one tears the address space down. Follows: kernel/fork.c mmput(), 3.14."""
    m = cpu.m
    with sync.spinlock(cpu, m.mm_lock_index(mm)):
        m.mm[mm, MM_USERS] -= 1
        users = int(m.mm[mm, MM_USERS])
    freed = 0
    if users == 0:
        freed = mmap.exit_mmap(cpu, mm)
        m.mm[mm, MM_USED] = 0
    tp.trace_mmput(cpu, mm, users, freed)
    return freed
