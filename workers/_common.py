"""What every worker process does first and last: detach from the terminal's signals, die with the
supervisor, report a failure through the run's log, and leave with os._exit.

A worker's log records are written straight into the run's oomemu.log (an O_APPEND descriptor the supervisor
opened before forking, one write() per record), so a failure's reason is on disk before the worker's process
ends: the supervisor reads it from there the moment the worker's sentinel fires, with no queue to wait on.
"""
import ctypes
import logging
import os
import signal

PR_SET_PDEATHSIG = 1
log = logging.getLogger("oomemu.worker")
LOG_FORMAT = "%(asctime)s %(processName)s %(levelname)s %(message)s"
# Set by the supervisor before it forks the workers (inherited, the same in every worker of a run).
_log_fd = -1


class FdLogHandler(logging.Handler):
    """Formats a record and writes it with one os.write() on an O_APPEND descriptor (no buffer, no thread),
    so records from several processes never interleave within a record and none waits in memory."""

    def __init__(self, fd, level=logging.INFO):
        super().__init__(level)
        self.fd = fd
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record):
        try:
            os.write(self.fd, (self.format(record) + "\n").encode("utf-8", "replace"))
        except OSError:
            pass  # a full disk must not turn a worker's report into a second failure

    def createLock(self):
        self.lock = None   # one write() per record needs no lock (and a fork can never inherit a held one)

    def acquire(self):
        pass

    def release(self):
        pass


def set_log_fd(fd):
    """The supervisor's side: the descriptor every worker forked from now on logs into."""
    global _log_fd
    _log_fd = fd


def _log_to_run(fd):
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if fd >= 0:
        root.addHandler(FdLogHandler(fd))
    root.setLevel(logging.INFO)


def become_worker():
    """Ignore Ctrl-C, SIGTERM and SIGHUP (the supervisor stops us), die if the supervisor dies first, keep
    freed heap memory, log into the run's oomemu.log."""
    from oomemu.supervisor import retain_freed_heap
    retain_freed_heap()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _log_to_run(_log_fd)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's teardown still kills us


def run_worker(name, body):
    """Run body() and leave the process with 0 (clean), or 3 after logging the failure in one line first
    (`NAME: reason`; a traceback follows it in oomemu.log for failures that are not EmulatorErrors)."""
    from oomemu.errors import EmulatorError
    from oomemu.sync import RunStopped
    code = 3
    try:
        become_worker()
        body()
        code = 0
    except RunStopped:
        code = 0
    except EmulatorError as exc:
        log.error("%s: %s", name, " ".join(str(exc).splitlines()))
    except BaseException as exc:  # noqa: BLE001 - a worker must report anything, then leave
        reason = " ".join(str(exc).splitlines()) or "(no message)"
        log.error("%s: emulator failure: %s: %s", name, type(exc).__name__, reason, exc_info=True)
    finally:
        os._exit(code)


def start_kthread(machine, scenario, row, printk_fd, task_row):
    """The CPU context of a kernel-thread process (kswapd, oom_reaper) running task row `task_row`, returned once
    the supervisor has released the workers and, in a controlled mode, this row holds the token."""
    import time

    from oomemu.machine import C_PID, G_GO, G_STOP
    from oomemu.percpu import CpuContext
    from oomemu.trace.ring import RingWriter
    tracer = RingWriter(machine, row) if scenario.run.trace else None
    cpu = CpuContext(machine, row, scenario, tracer=tracer, printk_fd=printk_fd)
    cpu.current = task_row
    machine.cpu[row, C_PID] = cpu.os_pid
    while not machine.glob[G_GO] and not machine.glob[G_STOP]:
        time.sleep(0.002)
    if machine.controlled:
        from oomemu.control import Controller
        cpu.ctl = Controller(cpu)
        cpu.ctl.enter()
    return cpu
