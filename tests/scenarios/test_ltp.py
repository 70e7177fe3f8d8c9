"""The LTP OOM scenarios (configs/ltp/) meet LTP's own pass criteria, run after run.

LTP's testcases/kernel/mem/oom/oom.h: the parent protects itself (oom_score_adj -1000) and forks a child that
allocates until something gives; the child passes if it was SIGKILLed (where the test allows it) or exited with
the errno it was to expect, ENOMEM (12). Each shipped file states its case in [expect]; the variants LTP runs
in the same test (oom01 with overcommit_memory 0 and 1, oom02 with MPOL_INTERLEAVE and MPOL_PREFERRED) are the
same file with one key changed and LTP's criterion for them checked here from report.json's tasks.

Each case runs OOMEMU_TRIALS times (default 1; the acceptance run is OOMEMU_TRIALS=20) and must pass every time.
"""
import os

import pytest

import oomemu
from oomemu.check import is_broken

from conftest import ROOT

TRIALS = int(os.environ.get("OOMEMU_TRIALS", "1"))
LTP = ROOT / "configs" / "ltp"
ENOMEM = 12

# (file, key path -> value overrides, SIGKILL allowed for the child, the child's comm)
CASES = [
    ("oom01", {}, False, "oom01_child"),
    ("oom01", {"sysctl.overcommit_memory": 0}, True, "oom01_child"),
    ("oom01", {"sysctl.overcommit_memory": 1}, True, "oom01_child"),
    ("oom02", {}, True, "oom02_child"),
    ("oom02", {"task[0].mempolicy": {"mode": "interleave", "nodes": [1, 2]}}, True, "oom02_child"),
    ("oom02", {"task[0].mempolicy": {"mode": "preferred", "nodes": [1, 2]}}, True, "oom02_child"),
    ("oom04", {}, True, "oom04_child"),
    ("oom03", {}, True, "oom03_child"),
    ("oom05", {}, True, "oom05_child"),
]
MEMCG = {"oom03", "oom05"}      # their child is killed by a memcg OOM (mem_cgroup_out_of_memory)


def case_id(case):
    name, changes, _, _ = case
    return name + "".join(f"-{k.split('.')[-1]}={v['mode'] if isinstance(v, dict) else v}"
                          for k, v in changes.items())


def ltp_verdict(report, child, allow_sigkill, killer="oom"):
    """LTP's oom(): TPASS if the child was SIGKILLed (and that is allowed) or exited with ENOMEM; the
    protected parent must have lived to see it (it exits 0 after waitpid)."""
    tasks = report["tasks"]
    children = [t for t in tasks if t["comm"] == child]
    parents = [t for t in tasks if t["comm"] == child.split("_")[0]]
    problems = []
    if len(children) != 1 or len(parents) != 1:
        return [f"expected one {child} and one parent, saw {[t['comm'] for t in tasks]}"]
    c, p = children[0], parents[0]
    killed = c["ended"] == "killed" and c["signal"] == 9
    if not ((allow_sigkill and killed) or (c["ended"] == "exited" and c["exit_code"] == ENOMEM)):
        problems.append(f"child ended {c['ended']} (exit {c['exit_code']}, signal {c['signal']})")
    if killed and c["killed_by"] != killer:
        problems.append(f"child killed by {c['killed_by']}, not the {killer} OOM killer")
    if p["ended"] != "exited" or p["exit_code"] != 0:
        problems.append(f"the -1000 parent ended {p['ended']} ({p['killed_by']})")
    problems += [f"invariant {c['invariant']} broke" for c in report["checks"] if is_broken(c)]
    return problems


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_ltp_scenario_meets_ltps_criterion_every_time(tmp_path, case):
    name, changes, allow_sigkill, child = case
    sc = oomemu.Scenario.load(LTP / f"{name}.toml")
    for key, value in changes.items():
        sc = sc.replace(key, value)
    failures = []
    for trial in range(TRIALS):
        report = oomemu.run(sc.replace("run.seed", trial + 1), out=tmp_path / f"run{trial}")
        problems = ltp_verdict(report, child, allow_sigkill, "memcg" if name in MEMCG else "oom")
        if not changes and report["exit_code"] != 0:
            problems.append(f"its own [expect] not met: {[e for e in report['expect'] if not e['ok']]}")
        if problems:
            failures.append((trial, problems))
    assert not failures, f"{len(failures)}/{TRIALS} runs failed LTP's criterion: {failures[:3]}"


@pytest.mark.parametrize("line,key", [
    ("mems = [5]", "task[0].mems[0] = 5: names a missing node"),
    ('mempolicy = { mode = "bind", nodes = [] }', "task[0].mempolicy.nodes = []: must name at least one node"),
    ('mempolicy = { mode = "lokal", nodes = [0] }', 'task[0].mempolicy.mode = "lokal": unknown mempolicy mode'),
])
def test_bad_numa_input_is_one_line_and_exit_2(tmp_path, line, key):
    import subprocess
    import sys
    path = tmp_path / "bad.toml"
    path.write_text(f'[[task]]\n{line}\nprogram = [{{ op = "wait" }}]\n')
    done = subprocess.run([sys.executable, "-m", "oomemu", "run", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], done.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
