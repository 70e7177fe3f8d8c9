"""report.json's per-process outcome: how each task ended, read without the trace, and [[expect.task]] on it.

One run holds a process of each kind, each written so its ending is known in advance:
- quitter: exit(3) → exited with 3;
- group: a thread calls exit_group(7) while the leader sleeps → the whole process exited with 7 (the group
  exit code, not the SIGKILL the other thread got from the group exit);
- refused: vm.overcommit_memory = 2 and an mmap of 64 MiB on a 64 MiB machine (CommitLimit 8192 pages) →
  ENOMEM once, then exit(0) → exited 0 with enomem 1;
- fat: holds 24 MiB and sleeps; trigger writes SysRq-F at 0.5 s → fat killed by "sysrq" (signal 9);
- sleeper: sleeps past the end of the run → alive;
- target: killed by killer's kill(2) at 0.3 s → killed by "signal".
"""
import pytest

from oomemu.api import run
from oomemu.config import load_scenario_text
from oomemu.errors import ScenarioError

SCENARIO = """
[machine]
cpus = 2
[sysctl]
overcommit_memory = 2
[[task]]
comm = "quitter"
program = [{ op = "exit", code = 3 }]
[[task]]
comm = "group"
program = [
  { op = "thread", program = [{ op = "sleep", ms = 50 }, { op = "exit", code = 7 }] },
  { op = "sleep", ms = 60000 },
]
[[task]]
comm = "refused"
program = [{ op = "mmap", pages = "64MiB" }, { op = "exit" }]
[[task]]
comm = "fat"
program = [{ op = "fault", pages = "24MiB", chunk = 64 }, { op = "sleep", ms = 60000 }]
[[task]]
comm = "trigger"
uid = 0
program = [{ op = "sleep", ms = 500 }, { op = "sysrq" }, { op = "exit" }]
[[task]]
comm = "sleeper"
program = [{ op = "sleep", ms = 60000 }]
[[task]]
comm = "target"
program = [{ op = "sleep", ms = 60000 }]
[[task]]
comm = "killer"
program = [{ op = "sleep", ms = 300 }, { op = "kill", comm = "target" }, { op = "exit" }]
[run]
seconds = 4
[[expect.task]]
comm = "quitter"
ended = ["exited"]
exit_code = 3
[[expect.task]]
comm = "fat"
ended = ["killed"]
killed_by = ["sysrq"]
[[expect.task]]
comm = "refused"
enomem = 1
[[expect.task]]
comm = "sleeper"
ended = ["alive"]
"""


def test_each_process_ending_is_reported(tmp_path):
    report = run(load_scenario_text(SCENARIO, name="outcomes"), out=tmp_path / "run")
    tasks = {t["comm"]: t for t in report["tasks"] if t["comm"] != "init"}
    summary = {c: (t["ended"], t["exit_code"], t["signal"], t["killed_by"], t["enomem"]) for c, t in tasks.items()}
    assert summary == {
        "quitter": ("exited", 3, None, None, 0),
        "group": ("exited", 7, None, None, 0),
        "refused": ("exited", 0, None, None, 1),
        "fat": ("killed", None, 9, "sysrq", 0),
        "trigger": ("exited", 0, None, None, 0),
        "sleeper": ("alive", None, None, None, 0),
        "target": ("killed", None, 9, "signal", 0),
        "killer": ("exited", 0, None, None, 0),
    }, summary
    assert tasks["group"]["threads"] == 2
    assert all(e["ok"] for e in report["expect"]), report["expect"]
    assert report["exit_code"] == 0


def test_an_unmet_task_expectation_fails_the_run_and_says_what_it_saw(tmp_path):
    text = SCENARIO.replace('comm = "sleeper"\nended = ["alive"]', 'comm = "sleeper"\nended = ["killed"]')
    report = run(load_scenario_text(text, name="outcomes"), out=tmp_path / "run")
    bad = [e for e in report["expect"] if not e["ok"]]
    assert len(bad) == 1 and "sleeper" in bad[0]["what"] and bad[0]["seen"][0]["ended"] == "alive"
    assert report["exit_code"] == 1


def test_a_task_expectation_for_a_comm_that_never_ran_is_not_met(tmp_path):
    text = SCENARIO + '[[expect.task]]\ncomm = "ghost"\nended = ["exited"]\n'
    report = run(load_scenario_text(text, name="outcomes"), out=tmp_path / "run")
    bad = [e for e in report["expect"] if not e["ok"]]
    assert [e["seen"] for e in bad] == ["0 process(es) named ghost"]


@pytest.mark.parametrize("toml,message", [
    ('[[expect.task]]\ncomm = "x"\nended = ["dead"]',
     'expect.task[0].ended[0] = "dead": must be one of "killed", "exited", "alive"'),
    ('[[expect.task]]\ncomm = "x"\nkilled_by = ["oom-killer"]',
     'expect.task[0].killed_by[0] = "oom-killer": must be one of "oom", "allocating_task", "sysrq", "memcg", '
     '"signal"'),
    ('[[expect.task]]\ncomm = "x"\nexit_code = 300', 'expect.task[0].exit_code = 300: must be an integer from 0 to 255'),
    ('[expect]\nkill_cpuset = "job"',
     'expect.kill_cpuset = "job": must be a cpuset path such as "/" or "/job" (names of letters, digits, "-", '
     '"_", ".")'),
])
def test_bad_task_expectations_name_the_key(toml, message):
    with pytest.raises(ScenarioError) as error:
        load_scenario_text(toml, name="bad")
    assert str(error.value) == message
