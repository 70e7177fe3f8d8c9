"""SIGKILL delivery (KERNEL §5.2): it wakes only interruptible and killable sleepers; a killed task either
exits or is reported stuck with what it waits on."""
from oomemu.include.sched import (EXIT_DEAD, EXIT_ZOMBIE, SIGKILL, TASK_DEAD, TASK_INTERRUPTIBLE, TASK_WAKEKILL,
                                  TIF_MEMDIE, TIF_SIGPENDING)
from oomemu.kernel import rwsem
from oomemu.trace.events import WAIT_MMAP_SEM_READ, WAIT_MMAP_SEM_WRITE, WAIT_NAMES, WAKE_SIGNAL


def check_sigkill_delivery(trace, state):
    """No signal wake-up of a TASK_UNINTERRUPTIBLE sleeper."""
    problems = []
    for r in trace.of("wakeup"):
        pid, old_state, reason = (int(x) for x in r["a"][:3])
        if reason == WAKE_SIGNAL and not old_state & (TASK_INTERRUPTIBLE | TASK_WAKEKILL):
            problems.append(f"{r['ts'] / 1e9:.6f}s: a signal woke pid {pid} out of an uninterruptible sleep "
                            f"(state {old_state})")
    return problems


def stuck_tasks(state):
    """SIGKILLed tasks that had not exited when the run ended, each with the chain it waits on."""
    out = []
    pid_of = state.task_pid.tolist()
    for row in range(state.nr_tasks):
        if not state.task_pending[row] & (1 << SIGKILL):
            continue
        if state.task_exit_state[row] in (EXIT_ZOMBIE, EXIT_DEAD) or state.task_state[row] == TASK_DEAD:
            continue
        out.append({"pid": pid_of[row], "comm": state.task_comm[row].decode("ascii", "replace"),
                    "chain": wait_chain(state, row)})
    return out


def wait_chain(state, row):
    """task → what it waits on → who holds it, as text."""
    pid_of = state.task_pid.tolist()
    kind, obj = int(state.task_wait_kind[row]), int(state.task_wait_obj[row])
    head = f"pid {pid_of[row]}"
    if kind in (WAIT_MMAP_SEM_READ, WAIT_MMAP_SEM_WRITE):
        writer, readers = rwsem.mmap_sem_holders(state, obj)
        holder = f"held for write by pid {pid_of[writer]}" if writer >= 0 else f"held by {readers} reader(s)"
        return f"{head} → {WAIT_NAMES[kind]} of mm {obj} → {holder}"
    if state.task_state[row] == 0:
        return f"{head} → runnable (looping in the kernel)"
    return f"{head} → sleeping (state {int(state.task_state[row])}, {WAIT_NAMES[kind]})"


def check_thread_flags(trace, state):
    """No thread-info flag update was lost (KERNEL §5.2, §5.3): TIF_MEMDIE, never cleared in 3.14, is still set
    on every thread the trace marked (unless a later exit_oom_victim, 4.0+, cleared it); every live task with SIGKILL pending still has TIF_SIGPENDING (the bit that
    makes it act on the signal). Both bits are set by other CPUs while the task updates the same word itself, so
    only atomic bit operations keep them (include/asm-generic/bitops)."""
    problems = []
    row_of = {pid: row for row, pid in enumerate(state.task_pid.tolist()) if pid > 0}
    # Profiles from 4.0 clear TIF_MEMDIE (exit_oom_victim, traced): a mark cleared after it is no lost update.
    cleared = {}
    if "exit_oom_victim" in trace.event_id:
        for r in trace.of("exit_oom_victim"):
            cleared[int(r["a"][0])] = int(r["ts"])
    for r in trace.of("mark_victim"):
        pid = int(r["a"][0])
        row = row_of.get(pid)
        if cleared.get(pid, -1) >= int(r["ts"]):
            continue
        if row is not None and not state.task_tif[row] & TIF_MEMDIE:
            problems.append(f"pid {pid} was marked TIF_MEMDIE at {r['ts'] / 1e9:.6f}s but the flag is gone")
    for row in range(state.nr_tasks):
        if not state.task_pending[row] & (1 << SIGKILL):
            continue
        if state.task_exit_state[row] in (EXIT_ZOMBIE, EXIT_DEAD) or state.task_state[row] == TASK_DEAD:
            continue
        if not state.task_tif[row] & TIF_SIGPENDING:
            problems.append(f"pid {int(state.task_pid[row])} has SIGKILL pending without TIF_SIGPENDING: "
                            "it will never act on it")
    return problems
