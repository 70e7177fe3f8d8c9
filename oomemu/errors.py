"""The exceptions oomemu raises on purpose, and the exit status each one means.

Kernel outcomes (a failed allocation, an aborted scan) are values, never exceptions. Exceptions are kept for
three things (DESIGN §7): bad input (exit 2), a broken invariant (exit 1) and a fault in the emulator (exit 3).
This module imports nothing, so every layer may use it.
"""

from __future__ import annotations


class OomemuError(Exception):
    """Root of every error oomemu raises on purpose; `exit_code` is the status the CLI exits with."""

    exit_code = 3


class ScenarioError(OomemuError):
    """The scenario file or the command line is wrong: the user must fix the input (exit status 2).

    str(e) is one line that names the key path, the bad value and what is allowed, e.g.
    `machine.cpus = 0: must be an integer from 1 to 64`. `path` is that key path (None when the error is
    about the file as a whole); `source` is the scenario file it came from, filled in by the loader.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, source: str | None = None) -> None:
        # One line is part of the contract (the CLI prints it after the file name), so fold any
        # line breaks a wrapped library message may carry.
        super().__init__(" ".join(str(message).splitlines()))
        self.path = path
        self.source = source


class InvariantViolation(OomemuError):
    """A checked invariant broke during or after a run: the emulated kernel misbehaved (exit status 1)."""

    exit_code = 1


class EmulatorError(OomemuError):
    """The emulator itself failed, not the emulated kernel: a bug or an environment problem (exit status 3)."""

    exit_code = 3


class WorkerDied(EmulatorError):
    """A CPU or kswapd worker process ended unexpectedly; the message names it and its exit status."""


class LockTimeout(EmulatorError):
    """A blocking acquire of a shared lock timed out; the message names the lock and its holder (cpu, pid)."""


class RingOverflow(EmulatorError):
    """A per-CPU trace ring filled faster than the supervisor drained it and events were lost."""


class KernelBug(EmulatorError):
    """An emulated BUG_ON() fired: a state the kernel code asserts can never happen."""


class EnvironmentFailure(EmulatorError):
    """The host refused something the run needs: a full disk, a read-only file system, a missing permission.
    Exit status 3; str(e) is one line naming the file and the system's reason."""


class RunDirError(ScenarioError):
    """`--out` cannot be used as a run directory (a file, under a file, not empty, in use, not writable):
    exit status 2, nothing is started."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived outside the supervised part of a run (where signals are only recorded
    and polled): unwinds to the command, which exits 128 + signum. A KeyboardInterrupt, so code that already
    stops cleanly on Ctrl-C (a sweep, the benchmark) does the same on SIGTERM and SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def describe_os_error(error: OSError, what: str | None = None) -> str:
    """One line for an OSError: the file it concerns and the system's reason (`runs/x/trace.msgpack: No space
    left on device`)."""
    name = what or error.filename or ""
    reason = error.strerror or str(error) or type(error).__name__
    return f"{name}: {reason}" if name else reason
