"""Controlled schedules: one seed gives one exact interleaving of the real CPU processes.

What must hold under every schedule: the same seed gives byte-identical normalised traces (event, cpu row, pid,
args, virtual timestamp) and the same report; different seeds give different interleavings; the interleaving
is of distinct OS processes. OOMEMU_TRIALS sets the repeats per scenario (CI: 3; the acceptance run: 10).
"""
import dataclasses
import os

import numpy as np
import pytest

from oomemu.api import run
from oomemu.config import load_scenario
from oomemu.schedule import first_differing_event, normalised_trace

from conftest import ROOT

TRIALS = int(os.environ.get("OOMEMU_TRIALS", "3"))
SHIPPED = [ROOT / "configs" / "default.toml", ROOT / "configs" / "parallel-oom.toml",
           *sorted((ROOT / "configs" / "races").glob("*.toml")), *sorted((ROOT / "configs" / "ltp").glob("*.toml"))]


LONG = {"r1-livelock", "r1-livelock-blocked-thread", "r4-parallel-kills", "r6-exiting-thread",  # a million steps
        "r4-memcg-parallel", "r7-reserve-exhaustion", "r8-thrashing"}                 # each in full: shortened in CI
SHORT_S = float(os.environ.get("OOMEMU_LONG_SECONDS", "0.3"))


def controlled(path, schedule="pct", seed=7, seconds=None):
    sc = load_scenario(path)
    if seconds is None and path.stem in LONG:
        seconds = min(sc.run.seconds, SHORT_S)
    run_cfg = dataclasses.replace(sc.run, schedule=schedule, seed=seed,
                                  seconds=sc.run.seconds if seconds is None else seconds)
    return dataclasses.replace(sc, run=run_cfg)


def essentials(report):
    """The parts of a report a schedule decides (everything but host timing and paths)."""
    return {"verdict": report["verdict"], "ended_by": report["ended_by"], "counters": report["counters"],
            "kills": report["kills"], "checks": [(c["invariant"], c["ok"]) for c in report["checks"]],
            "steps": report["schedule"]["steps"], "choices": report["schedule"]["choices"]}


CASES = [(p, "pct") for p in SHIPPED] + [(ROOT / "configs" / "parallel-oom.toml", "random")]


@pytest.mark.parametrize("path,strategy", CASES, ids=[f"{p.stem}-{s}" for p, s in CASES])
def test_one_seed_gives_one_trace_and_one_report(tmp_path, path, strategy):
    scenario = controlled(path, strategy)
    first = run(scenario, out=tmp_path / "run0")
    assert first["exit_code"] != 3, first["error"]
    for i in range(1, TRIALS):
        again = run(scenario, out=tmp_path / f"run{i}")
        assert essentials(again) == essentials(first)
        diff = first_differing_event(tmp_path / "run0", tmp_path / f"run{i}")
        assert diff is None, f"run {i} of {path.name} diverged: {diff}"


def test_different_seeds_give_different_interleavings(tmp_path):
    path = ROOT / "configs" / "parallel-oom.toml"
    traces = set()
    for seed in range(10):
        report = run(controlled(path, "random", seed=seed), out=tmp_path / f"s{seed}")
        assert report["exit_code"] != 3, report["error"]
        traces.add(normalised_trace(tmp_path / f"s{seed}").tobytes())
    assert len(traces) >= 5, f"10 seeds gave only {len(traces)} distinct traces"


def test_a_controlled_run_interleaves_distinct_os_processes(tmp_path):
    from oomemu.trace.reader import load_trace
    report = run(controlled(ROOT / "configs" / "parallel-oom.toml", "random", seed=1), out=tmp_path / "run")
    trace = load_trace(tmp_path / "run")
    hand = trace.of("sched_token")
    os_pids = hand["a"][:, 4]
    workers = set(report["workers"]["pids"].values())
    assert len(set(os_pids.tolist())) >= 2 and set(os_pids.tolist()) <= workers
    # the token really goes back and forth: A hands to B, and later B's process hands on again
    changes = np.count_nonzero(os_pids[1:] != os_pids[:-1])
    assert changes >= 10, changes
    # and each hand-over names as the next runner the row whose process makes the following hand-over
    rows = hand["cpu"]
    assert (hand["a"][:-1, 3] == rows[1:]).all()
