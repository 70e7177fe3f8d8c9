"""LTP's memory-cgroup OOM tests as shipped scenarios (configs/ltp/oom03.toml, oom05.toml): each run meets its
[expect] block, which states LTP's own criterion (the allocating child is SIGKILLed by a memcg OOM kill inside
the test's cgroup; the -1000 parent survives), with every invariant holding.

Bound: LTP_TRIALS runs each (default 2 for CI's time); `oomemu run configs/ltp/oom03.toml --repeat 20` is the
acceptance figure (README: 20/20 for both).
"""
import os

import pytest

from oomemu.api import run
from oomemu.config import load_scenario

from conftest import ROOT

TRIALS = int(os.environ.get("LTP_TRIALS", "2"))


@pytest.mark.parametrize("name,child", [("oom03", "oom03_child"), ("oom05", "oom05_child")])
def test_ltp_memcg_scenario_meets_its_criterion(tmp_path, name, child):
    scenario = load_scenario(ROOT / "configs" / "ltp" / f"{name}.toml")
    for i in range(TRIALS):
        report = run(scenario, out=tmp_path / f"run{i}")
        assert report["exit_code"] == 0, (report["error"], [e for e in report["expect"] if not e["ok"]],
                                          [c for c in report["checks"] if c["ok"] is False])
        assert report["kills"] and {k["comm"] for k in report["kills"]} == {child}
        assert all(k["kind"] == "memcg" and k["cgroup"] == "/ltp" for k in report["kills"])
        assert report["ended_by"] == "all-exited"      # the parent's wait() returned: the child is gone
