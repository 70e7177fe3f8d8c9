"""SIGKILL across CPUs (KERNEL §5.2): it wakes killable and interruptible sleepers at once, never a
TASK_UNINTERRUPTIBLE one, which sleeps on until its wait ends and only then acts on the signal.

The killer runs on CPU 0 and uses SysRq-F (a forced OOM kill) to kill the biggest process, whose threads sleep
on CPU 1 in each state; the signal crosses processes through the shared task table and CPU 1's doorbell.
"""
import pytest

from oomemu.api import run
from oomemu.config import load_scenario_text
from oomemu.trace.events import WAKE_SIGNAL
from oomemu.trace.reader import load_trace

SCENARIO = """
[machine]
cpus = 2
[[task]]
comm = "victim"
cpu = 1
program = [
  { op = "fault", pages = "8MiB" },
  { op = "thread", program = [{ op = "sleep", ms = %(sleep)d, state = "uninterruptible" }] },
  { op = "thread", program = [{ op = "sleep", ms = %(sleep)d, state = "killable" }] },
  { op = "sleep", ms = 5000 },
]
[[task]]
comm = "killer"
cpu = 0
program = [{ op = "sleep", ms = 600 }, { op = "sysrq", key = "f" }, { op = "sleep", ms = 50 }]
[run]
seconds = 10
"""


def _first(trace, name, pid):
    recs = trace.of(name)
    recs = recs[recs["pid"] == pid]
    assert len(recs), f"no {name} for pid {pid}"
    return int(recs[0]["ts"])


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_wakes_killable_not_uninterruptible(tmp_path, trial):
    sleep_ms = 1500
    sc = load_scenario_text(SCENARIO % {"sleep": sleep_ms}, name="signals")
    report = run(sc, out=tmp_path / "run")
    assert report["kills"] and report["kills"][0]["comm"] == "victim", report["kills"]
    victim = report["kills"][0]["pid"]
    t = load_trace(tmp_path / "run")
    forks = t.of("sched_process_fork")
    unintr, killable = (int(f["a"][1]) for f in forks[forks["a"][:, 0] == victim])
    sent = _first(t, "signal_generate", int(t.of("signal_generate")[0]["pid"]))
    ms = 1_000_000
    # the killable sleeper is woken at once and exits on its way back to user space
    killable_exit = _first(t, "sched_process_exit", killable)
    assert 0 <= killable_exit - sent < 100 * ms
    # the uninterruptible sleeper stays asleep until its 1500 ms are over, then exits
    unintr_sleep = _first(t, "sleep", unintr)
    unintr_exit = _first(t, "sched_process_exit", unintr)
    assert unintr_exit - unintr_sleep >= sleep_ms * ms - 8 * ms   # two jiffies of rounding at HZ=250
    assert unintr_exit - sent > 500 * ms
    # `wakeup` records name the woken task in their first argument (the record's pid is the waker)
    wakeups = t.of("wakeup")
    woken, reason = wakeups["a"][:, 0], wakeups["a"][:, 2]
    assert ((woken == killable) & (reason == WAKE_SIGNAL)).sum() == 1, "SIGKILL did not wake the killable sleeper"
    assert ((woken == unintr) & (reason == WAKE_SIGNAL)).sum() == 0, "SIGKILL woke an uninterruptible sleeper"
    assert ((woken == unintr) & (reason != WAKE_SIGNAL)).sum() >= 1, "the uninterruptible sleep never ended"
