"""The command line: the built-in default scenario, bad input (exit 2, one line, nothing started), and the
shipped copy of the default scenario."""
import json

import pytest

from conftest import ROOT, run_cli, write_scenario

from oomemu.trace.ring import RingWriter


def test_default_scenario_kills_and_conserves_pages(tmp_path):
    """Plain `oomemu run` (the built-in scenario) ends in at least one OOM kill and meets its [expect]."""
    res = run_cli("run", "--quiet", "--out", tmp_path / "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["scenario"] == "default"
    assert report["outcome"] == "oom-kill"
    assert report["kills"] and all(k["comm"] not in ("init", "sshd") for k in report["kills"])
    assert all(c["ok"] for c in report["checks"])
    for cpu in ("cpu0", "cpu1"):
        assert report["per_cpu"][cpu]["allocs"] > 0
    # the run used the same record writer as this installation offers, and lost nothing
    assert report["trace"]["lost"] == 0 and report["trace"]["records"] > 0
    assert report["trace"]["writer"] == ("compiled" if RingWriter.compiled else "python")
    dmesg = (tmp_path / "run" / "dmesg.log").read_text()
    assert "invoked oom-killer: gfp_mask=0x200da, order=0, oom_score_adj=" in dmesg
    assert "Out of memory: Kill process" in dmesg and "Killed process" in dmesg


def test_shipped_default_matches_configs_default():
    """configs/default.toml and the copy inside the package are byte-identical."""
    assert (ROOT / "configs" / "default.toml").read_bytes() == (ROOT / "oomemu" / "config" / "default.toml").read_bytes()


BAD = [
    ("[machine]\ncpu = 2\n", "machine.cpu"),
    ("[machine]\ncpus = \"two\"\n", "machine.cpus"),
    ("[machine]\ncpus = 0\n", "machine.cpus"),
    ("[sysctl]\npanic_on_oom = 3\n", "sysctl.panic_on_oom"),
    ("[[task]]\nprogram = [{ op = \"fault\", pages = \"-1MiB\" }]\n", "task[0].program[0].pages"),
    ("[[task]]\nprogram = [{ op = \"faul\", pages = 1 }]\n", "task[0].program[0].op"),
]


@pytest.mark.parametrize("text,key", BAD)
def test_bad_scenario_exits_2_with_one_line_naming_the_key(tmp_path, text, key):
    path = write_scenario(tmp_path, text)
    res = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], res.stderr
    assert "allowed" in lines[0] or "must" in lines[0]
    assert not (tmp_path / "run").exists(), "a run directory was made for a bad scenario"
    assert not (tmp_path / "runs").exists()


def test_missing_file_exits_2(tmp_path):
    res = run_cli("run", tmp_path / "nope.toml", cwd=tmp_path)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "not found" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_option_value_exits_2(tmp_path):
    res = run_cli("run", "--seconds", "0", cwd=tmp_path)
    assert res.returncode == 2 and "--seconds" in res.stderr
