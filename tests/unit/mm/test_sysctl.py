"""Run-time sysctls (issue 14 point 12): the vm sysctls live in the shared segment and the `sysctl` op writes
them while the machine runs, as `echo 1 > /proc/sys/vm/panic_on_oom` does; a min_free_kbytes write recomputes
the watermarks (KERNEL §6.5, worked out by hand below)."""
import textwrap

import pytest

from machine_helpers import make_machine
from oomemu.api import run
from oomemu.config import load_scenario_text
from oomemu.errors import ScenarioError
from oomemu.include.mmzone import NR_ALLOC_BATCH
from oomemu.kernel import sysctl as ksysctl
from oomemu.machine import Z_STAT, Z_WMARK

DMA, NORMAL = 0, 2


def test_boot_values_come_from_the_scenario():
    m, cpu = make_machine("[sysctl]\npanic_on_oom = 2\noom_dump_tasks = 0\n")
    try:
        assert ksysctl.sysctl_panic_on_oom(m) == 2
        assert ksysctl.sysctl_oom_dump_tasks(m) == 0
        assert ksysctl.sysctl_oom_kill_allocating_task(m) == 0
    finally:
        m.close()


def test_min_free_kbytes_write_recomputes_the_watermarks():
    """2048 kB = 512 pages over 16384 lowmem pages: DMA (4096) tmp 128 -> min 128, low 160, high 192, batch 32;
    Normal (12288) tmp 384 -> 384, 480, 576, batch 96."""
    m, cpu = make_machine()
    try:
        ksysctl.proc_sys_write(cpu, "min_free_kbytes", 2048)
        assert [int(m.zone[DMA, Z_WMARK + i]) for i in range(3)] == [128, 160, 192]
        assert [int(m.zone[NORMAL, Z_WMARK + i]) for i in range(3)] == [384, 480, 576]
        assert int(m.zone[DMA, Z_STAT + NR_ALLOC_BATCH]) == 32
        assert int(m.zone[NORMAL, Z_STAT + NR_ALLOC_BATCH]) == 96
    finally:
        m.close()


SCENARIO = """
[machine]
cpus = 2
[[machine.node]]
zones = {{ DMA = "16MiB", Normal = "48MiB" }}

[[task]]
comm = "admin"
cpu = 1
program = [{{ op = "sleep", ms = 50 }}, {{ op = "sysctl", name = "panic_on_oom", value = {value} }}]

[[task]]
comm = "hog"
cpu = 0
program = [{{ op = "sleep", ms = 300 }}, {{ op = "fault", pages = "80MiB" }}]

[run]
seconds = 30
"""


@pytest.mark.parametrize("value,verdict", [(1, "panic"), (0, "oom-kill")])
def test_panic_on_oom_written_at_run_time_decides_the_oom(tmp_path, value, verdict):
    """The scenario boots with panic_on_oom = 0; the admin task writes VALUE 250 ms before the hog starts. The
    run has 30 s (a loaded host has taken over 8 s for the hog's faults) and ends at the panic or the kill."""
    sc = load_scenario_text(textwrap.dedent(SCENARIO.format(value=value)), name="sysctl")
    report = run(sc, out=tmp_path / "run")
    assert report["verdict"] == verdict, report
    if value:
        assert not report["kills"]
        assert "panic_on_oom is enabled" in (tmp_path / "run" / "dmesg.log").read_text()


@pytest.mark.parametrize("op,message", [
    ('{ op = "sysctl", name = "panic_on_oom", value = 3 }',
     "task[0].program[0].value = 3: must be an integer from 0 to 2"),
    ('{ op = "sysctl", name = "min_free_kbytes", value = 64 }',
     "task[0].program[0].value = 64: must be an integer from 128 to 65536"),
    ('{ op = "sysctl", name = "swappiness", value = 1 }', "task[0].program[0].name"),
])
def test_bad_sysctl_writes_are_one_clear_error(op, message):
    with pytest.raises(ScenarioError) as err:
        load_scenario_text(f"[[task]]\nprogram = [{op}]\n", name="bad")
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)
