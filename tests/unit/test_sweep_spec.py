"""Sweep files without running anything: key paths, axes and ranges, grid and zip, per-cell seeds, every cell
validated before anything runs (one line naming the axis and the cell), the Wilson intervals of the summary,
and the metric names."""
import math
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

from oomemu.errors import ScenarioError
from oomemu.experiment import results
from oomemu.experiment.keypath import get_key_path, parse_key_path, set_key_path
from oomemu.experiment.spec import derive_seed, sweep_from_dict

BASE = {"machine": {"cpus": 2, "node": [{"zones": {"Normal": "8MiB"}}]},
        "task": [{"comm": "hog", "cpu": 1, "program": [{"op": "fault", "pages": "1MiB"}]}]}


def sweep(axes, **top):
    return sweep_from_dict({"scenario": BASE, "sweep": axes, **top}, source="s.toml")


def test_key_paths_parse_and_set_on_a_copy():
    assert parse_key_path("task[1].program[0].pages") == ("task", 1, "program", 0, "pages")
    doc = set_key_path(BASE, "machine.node[0].zones.DMA", "16MiB")
    assert doc["machine"]["node"][0]["zones"] == {"Normal": "8MiB", "DMA": "16MiB"}
    assert "DMA" not in BASE["machine"]["node"][0]["zones"]            # the original is untouched
    assert set_key_path(BASE, "sysctl.min_free_kbytes", 512)["sysctl"] == {"min_free_kbytes": 512}
    assert get_key_path(BASE, "task[0].comm") == "hog" and get_key_path(BASE, "task[3].comm", 7) == 7
    with pytest.raises(ScenarioError, match=r"index \[2\] does not exist"):
        set_key_path(BASE, "task[2].count", 3)
    with pytest.raises(ScenarioError, match="is not a key"):
        parse_key_path("machine..cpus")


def test_ranges_linear_log_and_step():
    """512..8192 in 5 log steps doubles each time; a linear range of ints stays ints; a step range counts up."""
    sw = sweep({"sysctl.min_free_kbytes": {"range": [512, 8192], "steps": 5, "scale": "log"},
                "machine.hz": [100, 250]})
    assert sw.axes[0].values == (512, 1024, 2048, 4096, 8192) and sw.axes[0].log
    assert len(sw.cells) == 10 and len(sw.runs) == 10
    lin = sweep({"sysctl.min_free_kbytes": {"range": [128, 1128], "steps": 3}})
    assert lin.axes[0].values == (128, 628, 1128)
    step = sweep({"sysctl.min_free_kbytes": {"range": [128, 1000], "step": 256}})
    assert step.axes[0].values == (128, 384, 640, 896)
    sec = sweep({"run.seconds": {"range": [0.5, 2.0], "steps": 4}})
    assert sec.axes[0].values == (0.5, 1.0, 1.5, 2.0)
    assert [r.scenario.run.seconds for r in sec.runs] == [0.5, 1.0, 1.5, 2.0]


def test_grid_and_zip_cells_and_repeats():
    g = sweep({"machine.cpus": [2, 4], "machine.hz": [100, 250, 1000]}, repeat=3)
    assert len(g.cells) == 6 and len(g.runs) == 18
    assert [dict(c.values) for c in g.cells[:2]] == [{"machine.cpus": 2, "machine.hz": 100},
                                                     {"machine.cpus": 2, "machine.hz": 250}]
    assert {r.scenario.machine.cpus for r in g.runs} == {2, 4}
    z = sweep({"machine.cpus": [2, 4, 8], "machine.hz": [100, 250, 1000]}, mode="zip")
    assert [(c.values["machine.cpus"], c.values["machine.hz"]) for c in z.cells] == [(2, 100), (4, 250), (8, 1000)]


def test_seeds_are_derived_per_cell_and_repeat_and_stable():
    """A run's seed is a function of the sweep seed, the cell's values and the repeat, nothing else: the same
    file gives the same seeds, every run has its own, and adding a value to an axis changes no other cell's
    seeds (so a resumed, extended sweep keeps its finished runs). A cell that sets run.seed keeps it."""
    a = sweep({"machine.cpus": [2, 4], "machine.hz": [100, 250]}, repeat=3, seed=11)
    b = sweep({"machine.cpus": [2, 4], "machine.hz": [100, 250]}, repeat=3, seed=11)
    assert [r.seed for r in a.runs] == [r.seed for r in b.runs]
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    assert len({r.seed for r in a.runs}) == 12
    assert all(r.scenario.run.seed == r.seed for r in a.runs)
    assert a.runs[0].seed == derive_seed(11, {"machine.cpus": 2, "machine.hz": 100}, 0)
    wider = sweep({"machine.cpus": [2, 3, 4], "machine.hz": [100, 250]}, repeat=3, seed=11)
    old = {(r.cell.values["machine.cpus"], r.cell.values["machine.hz"], r.repeat): r.run_id for r in a.runs}
    new = {(r.cell.values["machine.cpus"], r.cell.values["machine.hz"], r.repeat): r.run_id for r in wider.runs}
    assert all(new[k] == v for k, v in old.items())
    other = sweep({"machine.cpus": [2, 4], "machine.hz": [100, 250]}, repeat=3, seed=12)
    assert not {r.seed for r in other.runs} & {r.seed for r in a.runs}
    own = sweep({"run.seed": [5, 9]}, repeat=2)
    assert [r.seed for r in own.runs] == [5, 6, 9, 10]


@pytest.mark.parametrize("axes, top, words", [
    ({"machine.cpu": [2]}, {}, ['axis "machine.cpu"', "cell 0", "unknown key"]),
    ({"machine.cpus": [2, 100]}, {}, ['axis "machine.cpus"', "cell 1", "cpus=100", "machine.cpus = 100"]),
    ({"machine.cpus": []}, {}, ['axis "machine.cpus"', "empty axis"]),
    ({"machine.cpus": [2, 4], "machine.hz": [100]}, {"mode": "zip"}, ["zip", "machine.cpus has 2",
                                                                       "machine.hz has 1"]),
    ({"machine.cpus": [1, 2]}, {}, ["cell 0", "cpus=1", "task[0].cpu"]),          # a cross-key check
    ({"sysctl.min_free_kbytes": {"range": [64, 8192], "steps": 3, "scale": "log"}}, {},
     ['axis "sysctl.min_free_kbytes"', "cell 0", "min_free_kbytes=64"]),
    ({"sysctl.min_free_kbytes": {"range": [0, 10], "scale": "log"}}, {}, ["log scale needs lo > 0"]),
    ({"task[4].count": [1]}, {}, ["index [4] does not exist"]),
    ({"machine.cpus": [2]}, {"mode": "diagonal"}, ["mode", "grid, zip"]),
    ({"machine.cpus": [2]}, {"metrics": ["kilss"]}, ["unknown metric 'kilss'"]),
    ({"machine.cpus": [2]}, {"repeat": 0}, ["repeat = 0"]),
])
def test_bad_sweeps_name_the_axis_and_cell(axes, top, words):
    with pytest.raises(ScenarioError) as info:
        sweep(axes, **top)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_cli_bad_sweep_is_one_line_exit_2(tmp_path):
    (tmp_path / "base.toml").write_text("[machine]\ncpus = 2\n")
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent("""
        base = "base.toml"
        [sweep]
        "machine.cpus" = [2, 4, 65]
    """))
    res = subprocess.run([sys.executable, "-m", "oomemu", "sweep", str(path), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and 'axis "machine.cpus", cell 2 (cpus=65)' in lines[0], res.stderr
    assert not (tmp_path / "o").exists()                                   # nothing started
    path.write_text(path.read_text().replace("65", "8"))
    dry = subprocess.run([sys.executable, "-m", "oomemu", "sweep", str(path), "--dry-run", "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    from oomemu.experiment.spec import load_sweep
    seeds = [str(r.seed) for r in load_sweep(path).runs]
    assert dry.returncode == 0 and dry.stdout.splitlines()[2] == f"cell   2  cpus=8  seeds {seeds[2]}", dry.stdout
    assert "3 cells, 3 runs, all valid; 0 already in" in dry.stdout and not (tmp_path / "o").exists()


def test_cli_unreachable_address_and_missing_ray(tmp_path):
    """An address nothing listens on is exit 2 naming it; without Ray installed, --engine ray says how to
    install it (exit 2)."""
    import socket
    (tmp_path / "s.toml").write_text('[sweep]\n"machine.cpus" = [2]\n')
    with socket.socket() as s:                  # a loopback port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys\nif sys.argv[1] == 'noray': sys.modules['ray'] = None\n"
            "from oomemu.cli import main; sys.exit(main(sys.argv[2:]))")
    base = [sys.executable, "-c", code]
    res = subprocess.run(base + ["ray", "sweep", str(tmp_path / "s.toml"), "--engine", "ray", "--address",
                                 f"127.0.0.1:{port}"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    try:
        import ray  # noqa: F401
        assert res.returncode == 2 and f"--address 127.0.0.1:{port}: cannot reach" in res.stderr, res.stderr
    except ImportError:
        assert res.returncode == 2 and "pip install" in res.stderr
    res = subprocess.run(base + ["noray", "sweep", str(tmp_path / "s.toml"), "--engine", "ray"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "pip install 'oomemu[ray]'" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def _wilson_by_hand(k, n):
    """The Wilson score interval written out: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96."""
    z = 1.959963984540054
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_summary_rates_and_intervals_against_a_direct_computation():
    desc = {"name": "t", "hit": "extra-kill", "metrics": ["kills"],
            "axes": [{"path": "machine.cpus", "values": [2, 4], "log": False}],
            "cells": [{"machine.cpus": 2}, {"machine.cpus": 4}]}
    verdicts = {0: ["extra-kill"] * 3 + ["oom-kill"] * 7, 1: ["oom-kill"] * 4}
    rows = [{"cell": c, "repeat": i, "verdict": v, "hit": v == "extra-kill", "kills": 1 + i % 3,
             "machine.cpus": desc["cells"][c]["machine.cpus"]} for c, vs in verdicts.items() for i, v in enumerate(vs)]
    s = results.summarize(desc, rows)
    c0, c1 = s["cells"]
    assert c0["n"] == 10 and c0["hits"]["count"] == 3 and c0["hits"]["rate"] == 0.3
    for got, want in zip(c0["hits"]["ci95"], _wilson_by_hand(3, 10)):
        assert got == pytest.approx(want, abs=1e-6)
    assert c0["hits"]["ci95"][0] == pytest.approx(0.1078, abs=1e-4)   # the textbook value for 3/10
    assert c0["verdicts"]["oom-kill"]["count"] == 7
    for got, want in zip(c0["verdicts"]["oom-kill"]["ci95"], _wilson_by_hand(7, 10)):
        assert got == pytest.approx(want, abs=1e-6)
    assert c1["hits"]["count"] == 0 and c1["hits"]["ci95"][0] == 0.0
    assert c1["hits"]["ci95"][1] == pytest.approx(_wilson_by_hand(0, 4)[1], abs=1e-6)
    assert c0["metrics"]["kills"]["median"] == 2.0 and c0["metrics"]["kills"]["min"] == 1
    lines = results.table_lines(s)
    assert "0.30 [0.11, 0.60]" in lines[2] and lines[-1].startswith("14 runs in 2 cells; metrics: the median")


def test_metric_counters_are_the_reports_counters():
    from oomemu.experiment.metrics import COUNTERS, check_metric
    from oomemu.mm.vmstat import COUNTERS as VMSTAT
    assert COUNTERS == tuple(VMSTAT)
    for ok in ("kills", "oom_lock_busy", "counters.scan_aborts", "timing.teardown_s", "kill_latency_p99_ms"):
        check_metric(ok)
    with pytest.raises(ScenarioError):
        check_metric("counters.nope")


def test_a_base_axis_sweeps_whole_scenarios_each_with_its_own_hit(tmp_path):
    """`base = [files]` as an axis: each cell runs its own scenario file (other axes applied on top), and
    without `hit` a cell's hit is its own file's [expect] verdict."""
    from oomemu.experiment.spec import load_sweep
    (tmp_path / "a.toml").write_text('[machine]\ncpus = 2\n[expect]\nverdict = "livelock"\n')
    (tmp_path / "b.toml").write_text('[machine]\ncpus = 4\n[expect]\nverdict = "extra-kill"\n')
    (tmp_path / "s.toml").write_text('[sweep]\nbase = ["a.toml", "b.toml"]\n"machine.hz" = [100, 1000]\n')
    sw = load_sweep(tmp_path / "s.toml")
    assert len(sw.cells) == 4 and sw.describe()["hit"] is None
    assert [(r.scenario.machine.cpus, r.scenario.machine.hz, r.hit) for r in sw.runs] == [
        (2, 100, "livelock"), (2, 1000, "livelock"), (4, 100, "extra-kill"), (4, 1000, "extra-kill")]
    assert sw.cells[2].label() == "base=b, hz=100"
    (tmp_path / "bad.toml").write_text('[sweep]\nbase = ["a.toml", "missing.toml"]\n')
    with pytest.raises(ScenarioError, match=r'axis "base", cell 1 \(base=missing\).*not found'):
        load_sweep(tmp_path / "bad.toml")


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    from oomemu.experiment.spec import load_sweep
    sw = load_sweep(path)
    assert len(sw.runs) == len(sw.cells) * sw.repeat >= 2
