"""Every shipped scenario meets its own [expect] block, with page conservation intact."""
import pytest

from oomemu.api import run
from oomemu.config import load_scenario

from conftest import ROOT

SCENARIOS = sorted(p for p in (ROOT / "configs").glob("**/*.toml")
                   if "sweeps" not in p.relative_to(ROOT / "configs").parts)   # sweep files: tests/unit/test_sweep_spec.py


@pytest.mark.parametrize("path", SCENARIOS, ids=[str(p.relative_to(ROOT / "configs")) for p in SCENARIOS])
def test_scenario_meets_its_expectations(tmp_path, path):
    report = run(load_scenario(path), out=tmp_path / "run")
    assert report["exit_code"] == 0, (report["expect"], report["checks"], report["error"])
