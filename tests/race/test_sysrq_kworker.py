"""SysRq-F runs from a kworker (issue 14 point 12; drivers/tty/sysrq.c, 3.14: sysrq_handle_moom queues
moom_work): the "invoked oom-killer" header names the kworker, not the writer, and after its kill the kworker
(current) takes out_of_memory's killable one-jiffy sleep (KERNEL §3.2); the writer's write returns at once."""
import textwrap

from oomemu.api import run
from oomemu.check.state import load_state
from oomemu.config import load_scenario_text
from oomemu.include.sched import TASK_KILLABLE
from oomemu.trace.events import WAIT_TIMER
from oomemu.trace.reader import load_trace

SCENARIO = """
[machine]
cpus = 2
[[machine.node]]
zones = { DMA = "16MiB", Normal = "48MiB" }

[[task]]
comm = "fat"
cpu = 1
program = [{ op = "fault", pages = "8MiB" }, { op = "sleep", ms = 20000 }]

[[task]]
comm = "operator"
cpu = 0
program = [{ op = "sleep", ms = 300 }, { op = "sysrq", key = "f" }, { op = "exit" }]

[run]
seconds = 20
"""


def test_sysrq_f_is_run_by_a_kworker_that_sleeps_a_jiffy_after_its_kill(tmp_path):
    out = tmp_path / "run"
    report = run(load_scenario_text(textwrap.dedent(SCENARIO), name="sysrq"), out=out)
    assert [(k["comm"], k["kind"]) for k in report["kills"]] == [("fat", "sysrq")], report["kills"]
    dmesg = (out / "dmesg.log").read_text()
    assert "kworker/0:1 invoked oom-killer: gfp_mask=0xd0, order=0" in dmesg
    assert "operator invoked oom-killer" not in dmesg
    state = load_state(out / "machine.npz")
    comms = {c.decode(): int(p) for c, p in zip(state.task_comm.tolist(), state.task_pid.tolist())}
    kworker = comms["kworker/0:1"]
    trace = load_trace(out)
    sleeps = trace.of("sleep")
    mine = sleeps[sleeps["pid"] == kworker]
    assert [(int(r["a"][0]), int(r["a"][1]), int(r["a"][2])) for r in mine] == [(TASK_KILLABLE, WAIT_TIMER, 1)]
    kill_ts = int(trace.of("oom_kill")["ts"][0])
    assert int(mine["ts"][0]) > kill_ts
