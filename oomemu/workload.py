"""User space: the programs a scenario gives its tasks, run one user step at a time.

Each op of a program enters the kernel (a page fault, a read, an mmap_sem hold, a fork, ...) and every user
step ends with the return to user space, where a pending SIGKILL is acted on (DESIGN §1). Programs are
numbered once at boot (`build_programs`), so any CPU can start a task from its row's program number.
"""
import time

import numpy as np

from oomemu import sync
from oomemu.config.schema import Op
from oomemu.include.gfp import GFP_HIGHUSER_MOVABLE
from oomemu.include.sched import (CAP_SYS_RESOURCE, PF_KTHREAD, TASK_INTERRUPTIBLE, TASK_KILLABLE,
                                  TASK_UNINTERRUPTIBLE, TIF_SIGPENDING)
from oomemu.kernel import cpuset
from oomemu.kernel import exit as kexit
from oomemu.kernel import fork, rwsem
from oomemu.kernel import sched as ksched
from oomemu.kernel import signal as ksignal
from oomemu.kernel import sysctl as ksysctl
from oomemu.kernel import time as ktime
from oomemu.machine import MM_SWAPENTS, PAGE_ANON, PAGE_FILE
from oomemu.mm import filemap, memcontrol, memory, mempolicy, mmap, oom_kill, page_alloc, slab, swap, vmstat
from oomemu.trace import events as tp

INIT_PROGRAM = (Op("wait", {}), Op("repeat", {"times": 0}))
# SysRq-F's work item (moom_work), run by a kworker kthread the write creates on the writer's CPU
KWORKER_MOOM_PROGRAM = (Op("moom_work", {}),)
KTHREADD_ROW = 1   # boot creates kthreadd second: the parent of every kthread


def build_programs(scenario):
    """Number every program of the scenario (nested ones included); program 0 is init's.

    Returns (programs, ids) where ids maps id(program tuple) to its number.
    """
    programs, ids = [], {}

    def add(program):
        ids[id(program)] = len(programs)
        programs.append(program)
        for op in program:
            if op.op in ("fork", "clone_vm", "thread"):
                add(op["program"])

    add(INIT_PROGRAM)
    for task in scenario.tasks:
        add(task.program)
    add(KWORKER_MOOM_PROGRAM)
    return programs, ids


class UserState:
    """What a task's user space remembers between ops: held mmap_sem, kernel pages it kmalloc'd."""

    __slots__ = ("mmap_sem", "kpages", "repeats")

    def __init__(self):
        self.mmap_sem = None   # "read" or "write" while the program holds it
        self.kpages = []
        self.repeats = 0


async def ret_to_user(cpu, state):
    """The end of a user step: the tick (other tasks may run), then pending signals. Follows the x86
    exit-to-user work loop (schedule, then do_notify_resume → do_signal). While a program holds mmap_sem
    (`lock` … `unlock`) its ops run as one long system call, so signals wait until it returns."""
    vmstat.count_vm_event(cpu, vmstat.NR_USER_STEPS)
    await ksched.cond_resched(cpu)
    await do_notify_resume(cpu, state)


async def do_notify_resume(cpu, state):
    """Back to user space without a tick: act on a pending signal. Follows: arch/x86 do_notify_resume() →
    do_signal(), 3.14. Nothing happens while the program holds mmap_sem (it has not returned from its call)."""
    if state.mmap_sem is None and cpu.m.v_task_tif[cpu.current] & TIF_SIGPENDING:
        await ksignal.get_signal_to_deliver(cpu)


async def task_main(cpu, row):
    """A task's whole life: its program, then exit."""
    try:
        program = cpu.m.programs[cpu.m.v_task_prog[row]]
        await run_program(cpu, program, UserState())
        await kexit.do_exit(cpu, 0)
    except kexit.TaskExited:
        return


async def run_program(cpu, program, state):
    """Run the ops in order; `repeat` jumps back to the start."""
    pc = 0
    while pc < len(program):
        op = program[pc]
        if op.op == "repeat":
            state.repeats += 1
            if not op["times"] or state.repeats < op["times"]:
                pc = 0
                await ret_to_user(cpu, state)
                continue
            pc += 1
            continue
        await OPS[op.op](cpu, op, state)
        pc += 1


def _mm(cpu):
    return cpu.m.v_task_mm[cpu.current]


async def op_fault(cpu, op, state):
    """Touch `pages` new anonymous pages, `chunk` per user step, under mmap_sem for read."""
    await _fault_loop(cpu, op, state, memory.handle_mm_fault)


async def _read_one(c, mm, gfp):
    return 0 if await filemap.page_cache_read(c, mm, gfp) else memory.VM_FAULT_OOM


async def _read_one_exec(c, mm, gfp):
    return 0 if await filemap.page_cache_read(c, mm, gfp, exec_=True) else memory.VM_FAULT_OOM


async def op_read(cpu, op, state):
    """Read `pages` new file pages into the page cache, mapped by the task (executable with `exec`)."""
    await _fault_loop(cpu, op, state, _read_one_exec if op.get("exec") else _read_one)


async def _fault_loop(cpu, op, state, fault_one):
    """Each page is one fault, one trip into the kernel: do_page_fault takes mmap_sem for read, handles the
    fault, drops mmap_sem and returns to user space, where a pending SIGKILL is acted on before the next
    fault (KERNEL §5.2 step 3). `chunk` faults run back to back (one user step) before the tick lets the CPU's
    other tasks run.

    Differs: between two faults of one user step mmap_sem is dropped only if a signal is pending or someone
    waits for the semaphore; otherwise the release and the immediate re-acquire would change nothing, and
    keeping it saves two lock round trips a fault. A writer arriving between two faults gets in at the next
    fault boundary, as it would upstream.
    """
    m = cpu.m
    tif, wq_heads, cur = m.v_task_tif, m.v_wq, cpu.current
    left, chunk, gfp = op["pages"], op["chunk"], op.get("gfp", GFP_HIGHUSER_MOVABLE)
    while left > 0:
        n = min(chunk, left)
        mm = _mm(cpu)
        waiters = m.wq_mmap_sem(mm) * 2   # rwsem_is_contended(), read inline on this measured path
        held = False
        for i in range(n):
            if not held:
                await rwsem.down_read(cpu, mm)  # do_page_fault holds mmap_sem for read
                held = True
            oom = await fault_one(cpu, mm, gfp)
            if oom:
                rwsem.up_read(cpu, mm)
                held = False
                await oom_kill.pagefault_out_of_memory(cpu)  # then return to user and fault again
                break
            left -= 1
            if i + 1 == n:
                break
            # back to user space between two faults of this step
            if tif[cur] & TIF_SIGPENDING and state.mmap_sem is None:
                rwsem.up_read(cpu, mm)
                held = False
                await do_notify_resume(cpu, state)
            elif wq_heads[waiters] != -1:
                rwsem.up_read(cpu, mm)
                held = False
        if held:
            rwsem.up_read(cpu, mm)
        await ret_to_user(cpu, state)


async def op_touch(cpu, op, state):
    """Access the task's own pages again, `chunk` per user step, under mmap_sem for read.

    Through its mappings (via = "mapping"): each resident page's PTE accessed bit is set (page_referenced()
    sees it); of `pages` asked for, the ones no longer resident fault back in: anonymous pages the mm has
    swap entries for (do_swap_page), then page-cache pages reclaim took (read back: a refault). Through
    read(2) (via = "read"): each cached file page is marked accessed (mark_page_accessed()).
    Emulator-only: the user-space loads and stores of a working set (no kernel function).
    """
    m = cpu.m
    mm = _mm(cpu)
    what, via = op["what"], op["via"]
    kinds = {"all": (PAGE_ANON, PAGE_FILE), "anon": (PAGE_ANON,), "file": (PAGE_FILE,)}[what]
    if via == "read":
        kinds = (PAGE_FILE,)
    pfns = (m.page_owner == mm).nonzero()[0]
    pfns = pfns[np.isin(m.page_kind[pfns], kinds)]
    swapped = int(m.mm[mm, MM_SWAPENTS]) if via == "mapping" and PAGE_ANON in kinds else 0
    want = len(pfns) + swapped if op["pages"] == "all" else op["pages"]
    pfns = pfns[:want]
    swapins = min(swapped, want - len(pfns))
    refaults = want - len(pfns) - swapins if via == "mapping" and PAGE_FILE in kinds else 0
    chunk = op["chunk"]
    for start in range(0, len(pfns), chunk):
        part = pfns[start:start + chunk]
        await rwsem.down_read(cpu, mm)
        sync.sched_point(cpu, "touch", mm)
        if via == "read":
            for pfn in part.tolist():
                if m.v_page_owner[pfn] == mm and m.v_page_kind[pfn] == PAGE_FILE:
                    swap.mark_page_accessed(cpu, pfn)
        else:
            with sync.spinlock(cpu, m.mm_lock_index(mm)):   # the accesses of this step
                mine = part[(m.page_owner[part] == mm) & np.isin(m.page_kind[part], kinds)]
                m.page_young[mine] = 1
        rwsem.up_read(cpu, mm)
        await ret_to_user(cpu, state)
    if swapins:
        await _fault_loop(cpu, {"pages": swapins, "chunk": chunk, "gfp": GFP_HIGHUSER_MOVABLE}, state,
                          memory.do_swap_page)
    if refaults:
        await _fault_loop(cpu, {"pages": refaults, "chunk": chunk, "gfp": GFP_HIGHUSER_MOVABLE}, state,
                          _read_one)


async def op_kmalloc(cpu, op, state):
    """Allocate `pages` of unreclaimable kernel memory in 2^order blocks, one block per step."""
    order = op["order"]
    blocks = max(1, op["pages"] >> order)
    for _ in range(blocks):
        pfn = await slab.kmalloc_large(cpu, op["gfp"], order)
        if pfn is not None:
            state.kpages.append((pfn, order))
        else:
            note_enomem(cpu)  # the system call fails with -ENOMEM
            if ksignal.fatal_signal_pending(cpu.m, cpu.current):
                break  # and unwinds to the pending SIGKILL
        await ret_to_user(cpu, state)


def note_enomem(cpu):
    """Count one system call of current's process that failed with ENOMEM (report.json tasks)."""
    m = cpu.m
    m.v_sig_enomem[m.v_task_leader[cpu.current]] += 1


async def op_mmap(cpu, op, state):
    """mmap(MAP_PRIVATE | MAP_ANONYMOUS) `pages`, then (touch) write each page, `chunk` faults a user step.

    The mapping is accounted as 3.14's mmap_region() does (accountable_mapping → security_vm_enough_memory_mm,
    vm.overcommit_memory); when that refuses it, the call fails with ENOMEM and the program goes on, or exits
    with status ENOMEM (on_enomem = "exit", as LTP's alloc_mem loop does). Committed pages not faulted in yet
    stay in mm_reserved. Differs: no VMAs; the pages are not unaccounted by munmap (`free`), only by exit.
    """
    m = cpu.m
    mm = _mm(cpu)
    pages = op["pages"]
    if mmap.security_vm_enough_memory_mm(cpu, mm, pages):
        note_enomem(cpu)
        if op["on_enomem"] == "exit":
            await kexit.do_group_exit(cpu, mmap.ENOMEM << 8)
        await ret_to_user(cpu, state)
        return
    if not op["touch"]:
        await ret_to_user(cpu, state)
        return
    chunk = op["chunk"]
    left = pages
    while left > 0:
        n = min(chunk, left)
        await _fault_loop(cpu, Op("fault", {"pages": n, "chunk": chunk, "gfp": GFP_HIGHUSER_MOVABLE}), state,
                          memory.handle_mm_fault)
        mmap.unreserve(cpu, mm, n)   # now mapped: counted as anonymous pages instead
        left -= n


async def op_kill(cpu, op, state):
    """kill(pid, SIGKILL) for every process named `comm` (not itself): the SIGKILL of a user-space sender.
    Follows: kernel/signal.c kill_pid_info() → group_send_sig_info(), 3.14 (a user's kill needs the same uid or
    CAP_KILL; here every sender may). Report.json says such a victim was killed by "signal"."""
    m = cpu.m
    from oomemu.include.sched import SIGKILL
    from oomemu.machine import G_NR_TASK_ROWS
    want = op["comm"].encode("ascii")
    me = m.v_task_leader[cpu.current]
    n = int(m.glob[G_NR_TASK_ROWS])
    for p in range(n):
        if (m.task_leader[p] == p and p != me and m.task_comm[p] == want and not m.task_exit_state[p]
                and not m.task_flags[p] & PF_KTHREAD):
            ksignal.do_send_sig_info(cpu, SIGKILL, p, True)
    await ret_to_user(cpu, state)


async def op_set_mems(cpu, op, state):
    """Write cpuset.mems: the process may allocate only from `nodes` from now on (kernel/cpuset.py)."""
    cpuset.set_mems_allowed(cpu, cpu.current, cpuset.node_mask_of(op["nodes"]))
    await ret_to_user(cpu, state)


async def op_set_mempolicy(cpu, op, state):
    """set_mempolicy(mode, nodes) for the calling thread (mm/mempolicy.py); EINVAL leaves the old policy."""
    mempolicy.do_set_mempolicy(cpu, cpu.current, mempolicy.MPOL_MODES[op["mode"]], cpuset.node_mask_of(op["nodes"]))
    await ret_to_user(cpu, state)


async def op_kfree(cpu, op, state):
    """kfree every block this task's kmalloc ops still hold (e.g. a buffer given back after use)."""
    for pfn, order in state.kpages:
        slab.kfree_large(cpu, pfn, order)
    state.kpages.clear()
    await ret_to_user(cpu, state)


async def op_free(cpu, op, state):
    """munmap anonymous pages (all, or the newest `pages`) under mmap_sem for write."""
    mm = _mm(cpu)
    await rwsem.down_write(cpu, mm)
    mmap.do_munmap_anon(cpu, mm, None if op["pages"] == "all" else op["pages"])
    rwsem.up_write(cpu, mm)
    await ret_to_user(cpu, state)


async def _spawn(cpu, op, state, clone_flags):
    m = cpu.m
    prog = m.program_ids[id(op["program"])]
    parent = cpu.current
    for _ in range(op["count"]):
        target = fork.pick_cpu(m, parent, op.get("cpu", "same"))
        comm = op.get("comm") or m.task_comm[parent].decode()
        fork.copy_process(cpu, parent, clone_flags, prog, comm, target,
                          oom_score_adj=op.get("oom_score_adj"),
                          flags=int(m.task_flags[parent] & PF_KTHREAD))
    await ret_to_user(cpu, state)


async def op_fork(cpu, op, state):
    """fork(): a child process with its own (new) mm."""
    await _spawn(cpu, op, state, 0)


async def op_clone_vm(cpu, op, state):
    """clone(CLONE_VM): a new process sharing this task's mm."""
    await _spawn(cpu, op, state, fork.CLONE_VM)


async def op_thread(cpu, op, state):
    """clone(CLONE_VM|CLONE_THREAD|CLONE_SIGHAND): a new thread of this process."""
    await _spawn(cpu, op, state, fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND)


async def op_lock(cpu, op, state):
    """Take mmap_sem (read or write) and keep it across the following ops."""
    mm = _mm(cpu)
    if op["mode"] == "write":
        await rwsem.down_write(cpu, mm)
    else:
        await rwsem.down_read(cpu, mm)
    state.mmap_sem = op["mode"]
    await ret_to_user(cpu, state)


async def op_unlock(cpu, op, state):
    """Release the mmap_sem hold taken by `lock`."""
    if state.mmap_sem == "write":
        rwsem.up_write(cpu, _mm(cpu))
    elif state.mmap_sem == "read":
        rwsem.up_read(cpu, _mm(cpu))
    state.mmap_sem = None
    await ret_to_user(cpu, state)


async def op_oom_score_adj(cpu, op, state):
    """Write /proc/self/oom_score_adj. Follows: fs/proc/base.c oom_score_adj_write(), 3.14 (KERNEL §4.3)."""
    m = cpu.m
    cur = cpu.current
    leader = m.v_task_leader[cur]
    value = op["value"]
    has_resource = bool(m.v_task_caps[cur] & CAP_SYS_RESOURCE) or m.v_task_uid[cur] == 0
    if m.v_task_mm[cur] == -1:
        pass  # -EINVAL: no mm
    elif value < m.v_sig_oom_score_adj_min[leader] and not has_resource:
        pass  # -EACCES: lowering below the floor needs CAP_SYS_RESOURCE
    else:
        m.v_sig_oom_score_adj[leader] = value
        if has_resource:
            m.v_sig_oom_score_adj_min[leader] = value
        tp.trace_oom_score_adj_update(cpu, m.v_task_pid[cur], value)
    await ret_to_user(cpu, state)


_SLEEP_STATES = {"interruptible": TASK_INTERRUPTIBLE, "killable": TASK_KILLABLE,
                 "uninterruptible": TASK_UNINTERRUPTIBLE}


async def op_sleep(cpu, op, state):
    """Sleep `ms` in the given task state: nanosleep (interruptible, the default) ends early on a signal, a
    killable sleep only on a fatal one, an uninterruptible sleep never (as msleep() in a driver would)."""
    m = cpu.m
    task_state = _SLEEP_STATES[op.get("state", "interruptible")]
    left = ktime.msecs_to_jiffies(m, op["ms"])
    while left > 0 and not ksched.signal_pending_state(m, task_state, cpu.current):
        ksched.set_current_state(cpu, task_state)
        left = await ksched.schedule_timeout(cpu, left)
    await ret_to_user(cpu, state)


async def op_spin(cpu, op, state):
    """Burn CPU in user space for `ms`, a tick (~1 ms) per user step."""
    end = time.monotonic() + op["ms"] / 1000
    while time.monotonic() < end:
        tick_end = min(end, time.monotonic() + 0.001)
        while time.monotonic() < tick_end:
            pass
        await ret_to_user(cpu, state)


async def op_exit(cpu, op, state):
    """exit_group(code): the wait status is code << 8 (a signal death's is the signal number)."""
    await kexit.do_group_exit(cpu, (op["code"] & 0xff) << 8)


async def op_wait(cpu, op, state):
    """wait4(-1): reap exited children, sleeping until one exits."""
    await kexit.do_wait(cpu)
    await ret_to_user(cpu, state)


async def op_sysrq(cpu, op, state):
    """Write 'f' to /proc/sysrq-trigger: sysrq_handle_moom() queues moom_work, which a kworker of this CPU
    runs (op_moom_work); the write itself returns at once.

    Follows: drivers/tty/sysrq.c sysrq_handle_moom() → schedule_work(&moom_work), 3.14 (KERNEL §1.8).
    Differs: each write starts a fresh kworker kthread (kworker/N:1, a child of kthreadd) that exits after the
    work item, instead of a pool's long-lived worker; a write while one is still pending queues another.
    """
    m = cpu.m
    fork.copy_process(cpu, KTHREADD_ROW, 0, m.program_ids[id(KWORKER_MOOM_PROGRAM)], f"kworker/{cpu.id}:1",
                      cpu.id, uid=0, caps=0, flags=PF_KTHREAD)
    await ret_to_user(cpu, state)


async def op_moom_work(cpu, op, state):
    """The kworker's work item: a manual OOM kill with force_kill and no zonelist lock, current being the
    kworker (so the dump header names it and it takes the killable one-jiffy sleep after the kill).

    Follows: drivers/tty/sysrq.c moom_callback(), 3.14 (KERNEL §1.8); the "current is dying" shortcut is
    skipped, as a kworker never has a fatal signal. With `oom_lock_mutex` (4.2, seen in 4.2.8) it holds
    oom_lock (mutex_lock) around out_of_memory.
    """
    from oomemu.include.gfp import GFP_KERNEL
    zonelist = page_alloc.node_zonelist(cpu.m, 0, GFP_KERNEL)  # first_online_node
    if cpu.features.oom_lock_mutex:
        await oom_kill.mutex_lock_oom_lock(cpu)
        try:
            await oom_kill.out_of_memory(cpu, zonelist, GFP_KERNEL, 0, None, True, from_kworker=True)
        finally:
            oom_kill.mutex_unlock_oom_lock(cpu)
    else:
        await oom_kill.out_of_memory(cpu, zonelist, GFP_KERNEL, 0, None, True, from_kworker=True)


async def op_cgroup_move(cpu, op, state):
    """Write this task's pid to a memory cgroup's cgroup.procs: the whole process moves, its charges stay."""
    m = cpu.m
    memcontrol.mem_cgroup_attach(cpu, cpu.current, m.memcg_names.index(op["cgroup"]))
    await ret_to_user(cpu, state)


async def op_memcg_limit(cpu, op, state):
    """Write a memory cgroup's memory.limit_in_bytes (and, if given, memory.oom_control): lowering it reclaims
    down to the new limit (or fails with EBUSY), raising it or clearing oom_kill_disable wakes its OOM waiters."""
    from oomemu.machine import MEMCG_UNLIMITED
    m = cpu.m
    memcg = m.memcg_names.index(op["cgroup"])
    limit = MEMCG_UNLIMITED if op["limit"] is None else -(-op["limit"] // 4096)
    await memcontrol.mem_cgroup_resize_limit(cpu, memcg, limit)
    if op.get("oom_kill_disable") is not None:
        memcontrol.mem_cgroup_oom_control_write(cpu, memcg, op["oom_kill_disable"])
    await ret_to_user(cpu, state)


async def op_sysctl(cpu, op, state):
    """Write a vm sysctl, as `echo VALUE > /proc/sys/vm/NAME`: every CPU sees the new value from now on."""
    ksysctl.proc_sys_write(cpu, op["name"], op["value"])
    await ret_to_user(cpu, state)


OPS = {
    "fault": op_fault, "read": op_read, "touch": op_touch, "kmalloc": op_kmalloc, "kfree": op_kfree, "free": op_free, "fork": op_fork,
    "clone_vm": op_clone_vm, "thread": op_thread, "lock": op_lock, "unlock": op_unlock,
    "oom_score_adj": op_oom_score_adj, "sleep": op_sleep, "spin": op_spin, "exit": op_exit, "wait": op_wait,
    "sysrq": op_sysrq, "cgroup_move": op_cgroup_move, "memcg_limit": op_memcg_limit,
    "mmap": op_mmap, "set_mems": op_set_mems, "set_mempolicy": op_set_mempolicy, "kill": op_kill, "sysctl": op_sysctl,
    "moom_work": op_moom_work,   # internal: the SysRq-F kworker's program, not a scenario op
}

