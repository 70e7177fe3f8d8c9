"""Each injected bug ([debug] break) is caught by its named invariant, and the same scenario without the
break passes every invariant (the checker is not always firing).

Rates: each break must be caught in all but one in twenty of OOMEMU_TRIALS runs. The suite runs 8 of each to
stay within CI's time; `OOMEMU_TRIALS=20 pytest -n auto tests/quality` is the full acceptance run (README).
"""
import dataclasses
import os

import pytest

from oomemu.api import run
from oomemu.config import load_scenario

from conftest import ROOT

TRIALS = int(os.environ.get("OOMEMU_TRIALS", "8"))
HERE = ROOT / "tests" / "quality" / "scenarios"

# break → (scenario, invariant that must catch it, run seconds). skip_zone_scan_lock opens a one-step window that
# free mode almost never hits: exploration finds it (test_explore_bugs.py, configs/races/narrow-oom-lock.toml).
CASES = {
    "skip_clear_zonelist_oom": (HERE / "hogs.toml", "oom-lock-released", 2),
    "double_free_victim": (HERE / "hogs.toml", "no-double-free", 8),
    "pick_lowest_badness": (HERE / "hogs.toml", "victim-selection", 8),
    "sigkill_wakes_uninterruptible": (HERE / "uninterruptible.toml", "sigkill-delivery", 8),
    "ignore_oom_score_adj_min": (HERE / "protected.toml", "never-killed", 8),
}


def _scenario(path, breaks, seconds):
    sc = load_scenario(path)
    return dataclasses.replace(sc, debug_break=tuple(breaks), run=dataclasses.replace(sc.run, seconds=seconds))


def _broken(report):
    return {c["invariant"] for c in report["checks"] if c["ok"] is False}


@pytest.mark.parametrize("brk", sorted(CASES))
def test_injected_bug_is_caught(tmp_path, brk):
    path, invariant, seconds = CASES[brk]
    caught = 0
    for i in range(TRIALS):
        report = run(_scenario(path, [brk], seconds), out=tmp_path / f"run{i}")
        caught += invariant in _broken(report)
        assert report["exit_code"] != 3, report["error"]
    assert caught >= TRIALS - max(1, TRIALS // 20), f"{brk}: caught by {invariant} in {caught}/{TRIALS} runs"


@pytest.mark.parametrize("path", sorted({c[0] for c in CASES.values()}), ids=lambda p: p.name)
def test_same_scenarios_without_a_break_pass(tmp_path, path):
    for i in range(max(3, TRIALS // 4)):
        report = run(_scenario(path, [], 8), out=tmp_path / f"run{i}")
        assert not _broken(report), [c for c in report["checks"] if not c["ok"]]
