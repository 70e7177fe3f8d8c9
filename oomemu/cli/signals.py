"""How `oomemu` treats SIGINT, SIGTERM and SIGHUP: one handler for all three, installed before anything else.

Outside a run's supervised part a signal raises `Interrupted` (the command prints one line and exits
128 + signum: 130, 143, 129). Inside it (from the run directory's creation to its report being written) the
handler only records the first signal; the supervisor polls `signum` at every step of its loop, of the check
and of the teardown, so every exit path stops the workers, closes the trace with its end marker and writes
report.json, whatever moment the signal came at.
"""
import contextlib
import signal

from oomemu.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalGuard:
    """The process's record of the first terminating signal, and whether it may raise right now."""

    def __init__(self):
        self.signum = None
        self._held = 0

    def install(self):
        for sig in SIGNALS:
            signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        first = self.signum is None
        if first:
            self.signum = signum
        if first and not self._held:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def holding(self):
        """Within this block signals are recorded, never raised: the caller polls `signum`."""
        self._held += 1
        try:
            yield self
        finally:
            self._held -= 1

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else None


class NoGuard:
    """For library use without the CLI: nothing is installed and nothing is ever pending."""

    signum = None
    name = None

    @contextlib.contextmanager
    def holding(self):
        yield self


GUARD = SignalGuard()
