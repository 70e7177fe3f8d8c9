"""Twenty clean runs of the built-in default scenario: every invariant holds and [expect] is met each time."""
import pytest

from oomemu.api import run
from oomemu.config import load_scenario


@pytest.mark.parametrize("batch", range(4))
def test_default_scenario_is_clean_every_time(tmp_path, batch):
    scenario = load_scenario(None)
    for i in range(5):
        report = run(scenario, out=tmp_path / f"run{i}")
        assert report["exit_code"] == 0, (report["expect"], [c for c in report["checks"] if not c["ok"]])
        assert report["outcome"] == "oom-kill"
