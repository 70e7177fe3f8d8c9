"""The hung-task detector: a task in TASK_UNINTERRUPTIBLE that has not run for hung_task_timeout_secs gets the
kernel's "INFO: task … blocked for more than … seconds." report in dmesg.

Follows: kernel/hung_task.c check_hung_uninterruptible_tasks() / check_hung_task() of Linux 3.14 (message
format, sysctl_hung_task_warnings counting down, the exact TASK_UNINTERRUPTIBLE test that leaves
TASK_KILLABLE sleepers alone). Differs: khungtaskd is not a kthread of the machine; the supervisor watches the
task table from outside every poll, and a task counts as switched when the trace shows it doing anything (a
record of its own, or a wake-up naming it) instead of by its nvcsw + nivcsw, so a task is reported after
hung_task_timeout_secs of continuous blocking rather than at the second of two checks that far apart.
"""
import os
import time

from oomemu.include.sched import TASK_UNINTERRUPTIBLE
from oomemu.machine import G_BOOT_NS, G_NR_TASK_ROWS

# kernel/sched/core.c sched_show_task(): TASK_STATE_TO_CHAR_STR
_STATE_CHARS = "RSDTtXZxKWP"


class HungTaskDetector:
    """State of the watch: since when each blocked task row has been seen blocked without running."""

    def __init__(self, m, timeout_s, printk_fd, warnings=10, release="3.14.0"):
        self.m = m
        self.timeout = timeout_s
        self.fd = printk_fd
        self.warnings = warnings          # sysctl_hung_task_warnings: reports left (-1: unlimited)
        self.release = release
        self.since = {}                   # task row -> host monotonic seconds it was first seen blocked
        self.reported = set()
        self.wakeup_id = None

    def saw_records(self, trace, records_before):
        """Forget the blocked-since time of every watched task that shows up in the records just drained."""
        if not self.since or not getattr(trace, "last_batches", None):
            return
        if self.wakeup_id is None:
            from oomemu.trace.events import CATALOGUE
            self.wakeup_id = next(i for i, (name, _, _) in enumerate(CATALOGUE) if name == "wakeup")
        pids = self.m.task_pid
        for row in list(self.since):
            pid = int(pids[row])
            for recs in trace.last_batches:       # a few watched tasks: one vector compare each per batch
                if (recs["pid"] == pid).any() or (recs["a"][recs["event"] == self.wakeup_id, 0] == pid).any():
                    self.since.pop(row, None)
                    break

    def poll(self, now, outcome):
        """check_hung_uninterruptible_tasks(): report each task blocked longer than the timeout, once."""
        m = self.m
        n = int(m.glob[G_NR_TASK_ROWS])
        blocked = set((m.task_state[:n] == TASK_UNINTERRUPTIBLE).nonzero()[0].tolist())
        for row in list(self.since):
            if row not in blocked:
                del self.since[row]
                self.reported.discard(row)
        for row in blocked:
            t0 = self.since.setdefault(row, now)
            if now - t0 >= self.timeout and row not in self.reported and self.warnings:
                self.reported.add(row)
                if self.warnings > 0:
                    self.warnings -= 1
                outcome.hung_tasks.append(self.check_hung_task(row, now - t0))

    def check_hung_task(self, row, blocked_s):
        """Print the report of one hung task. Follows: check_hung_task() and sched_show_task()."""
        m = self.m
        comm = m.task_comm[row].decode("ascii", "replace")
        pid = int(m.task_pid[row])
        parent = int(m.task_parent[row])
        ppid = int(m.task_pid[parent]) if parent >= 0 else 0
        state = int(m.task_state[row])
        char = _STATE_CHARS[(state & -state).bit_length()] if state else "R"
        lines = [f"INFO: task {comm}:{pid} blocked for more than {self.timeout} seconds.",
                 f"      Not tainted {self.release} #1",
                 '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
                 f"{comm:<15.15} {char} {0:016x} {0:5d} {pid:5d} {ppid:6d} 0x{0:08x}"]
        self._printk(lines)
        return {"pid": pid, "comm": comm, "blocked_s": round(blocked_s, 3), "line": lines[0]}

    def _printk(self, lines):
        if self.fd < 0:
            return
        ns = time.monotonic_ns() - int(self.m.glob[G_BOOT_NS])
        prefix = f"[{ns // 1_000_000_000:5d}.{(ns // 1000) % 1_000_000:06d}] "
        try:
            os.write(self.fd, "".join(prefix + line + "\n" for line in lines).encode())
        except OSError:
            pass  # dmesg on a full disk: the report.json entry still says it
