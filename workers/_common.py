"""What every worker process does first and last: detach from the terminal's signals, die with the
supervisor, report a failure through the shared log, and leave with os._exit."""
import ctypes
import logging
import os
import signal

PR_SET_PDEATHSIG = 1
log = logging.getLogger("oomemu.worker")


def become_worker():
    """Ignore Ctrl-C (the supervisor stops us), die if the supervisor dies first, keep freed heap memory."""
    from oomemu.supervisor import retain_freed_heap
    retain_freed_heap()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's teardown still kills us


def run_worker(name, body):
    """Run body() and leave the process with 0 (clean), or 3 after logging the failure."""
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
        log.error("%s: %s", name, exc)
    except BaseException:  # noqa: BLE001 - a worker must report anything, then leave
        log.exception("%s: emulator failure", name)
    finally:
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: BLE001 - best effort while leaving
                pass
        os._exit(code)
