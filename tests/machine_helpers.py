"""Build small machines in-process for unit tests and drive kernel coroutines without a CPU process."""
import textwrap

import pytest

from oomemu.boot import create_machine
from oomemu.config import load_scenario_text
from oomemu.include.sched import CAP_SYS_ADMIN
from oomemu.kernel import fork
from oomemu.machine import MM_ANONPAGES, MM_FILEPAGES, MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM
from oomemu.percpu import CpuContext

BASE = """
[machine]
cpus = 2
max_tasks = 64
[[machine.node]]
zones = { DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }
"""


def make_machine(extra="", tasks="", kernel=None):
    """A booted machine with no scenario tasks (unless `tasks` TOML is given) and a CPU-0 context; `kernel`
    picks a profile (default 3.14)."""
    base = textwrap.dedent(BASE)
    if kernel is not None:
        base = base.replace("[machine]\n", f'[machine]\nkernel = "{kernel}"\n', 1)
    sc = load_scenario_text(base + textwrap.dedent(extra) + textwrap.dedent(tasks), name="unit")
    m = create_machine(sc, ring_records=64)
    cpu = CpuContext(m, 0, sc)
    return m, cpu


# A second NUMA node, and the task group that switches the NUMA constraints on at boot (any task with mems or a
# policy does): one zero-size task.
NODE1 = """
[[machine.node]]
zones = { Normal = "32MiB" }
"""
CONSTRAINED = """
[[task]]
comm = "idle"
mems = [0]
mempolicy = { mode = "preferred", nodes = [0] }
program = [{ op = "sleep", ms = 1 }]
"""


@pytest.fixture
def mc():
    """(machine, CPU 0's context) of BASE's machine, closed after the test (`from machine_helpers import mc`)."""
    m, cpu = make_machine()
    yield m, cpu
    m.close()


@pytest.fixture
def mk():
    """make(kernel="3.14", extra="", tasks="") -> (machine, CPU 0's context): make_machine()'s machine under that
    kernel profile, closed after the test. A test module imports it (`from machine_helpers import mk`) to use it
    as its fixture."""
    made = []

    def make(kernel="3.14", extra="", tasks=""):
        m, cpu = make_machine(extra, tasks, kernel)
        made.append(m)
        return m, cpu
    yield make
    for m in made:
        m.close()


def add_process(m, cpu, comm, *, rss=0, file=0, swap=0, ptes=None, adj=0, uid=1000, caps=0, parent=0,
                clone_flags=0, flags=0):
    """A task row (a new process unless clone_flags say otherwise) with the given mm counters."""
    row = fork.copy_process(cpu, parent, clone_flags, 0, comm, 0, uid=uid, caps=caps, oom_score_adj=adj,
                            flags=flags)
    mm = int(m.task_mm[row])
    if mm >= 0 and not clone_flags & fork.CLONE_VM:
        m.mm[mm, MM_ANONPAGES] = rss
        m.mm[mm, MM_FILEPAGES] = file
        m.mm[mm, MM_SWAPENTS] = swap
        m.mm[mm, MM_NR_PTES] = (rss + file + 511) // 512 if ptes is None else ptes
        m.mm[mm, MM_TOTAL_VM] = rss + file
    m.task_state[row] = 0  # not adopted by any CPU: these rows never run
    return row


def run_to_completion(coro):
    """Drive a kernel coroutine that must not sleep; returns its value."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine tried to sleep")


SYS_ADMIN = CAP_SYS_ADMIN
