"""`oomemu sweep` end to end on real runs: a 2-axis, 8-cell, 2-repeat sweep with the local pool (table, summary
intervals, PNGs, resume), an interrupted sweep that resumes to the same runs, the same sweep on a local Ray
cluster, `oomemu plot`, and the Python API. Runs are short (a 2-hog OOM on an 8 MiB machine, ~0.3 s each)."""
import csv
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from conftest import ROOT, run_cli

from oomemu.config.schema import RUN

TINY = """
[machine]
cpus = 2
[[machine.node]]
zones = { DMA = "0", DMA32 = "0", Normal = "8MiB" }
[sysctl]
oom_dump_tasks = 0
[[task]]
comm = "holder"
program = [{ op = "fault", pages = "6MiB", chunk = 16 }, { op = "sleep", ms = 500 }]
[[task]]
comm = "hog"
program = [{ op = "sleep", ms = 100 }, { op = "fault", pages = "4MiB", chunk = 16 }, { op = "exit" }]
[run]
seconds = 6
"""
# 10 MiB asked of an 8 MiB machine while the holder holds its 6: an OOM kill in every run, however the host
# schedules the CPUs (usually of the holder, the biggest; the run ends within the holder's 0.5 s sleep).
# With the controlled schedules on main, the sweep runs them: then equal seeds must mean equal verdicts.
CONTROLLED = "schedule" in RUN.names
SWEEP = """
base = "tiny.toml"
repeat = 2
seed = 3
hit = "oom-kill"
metrics = ["kills", "oom_invocations", "kill_latency_p50_ms"]
[sweep]
"machine.cpus" = [1, 2]
"sysctl.min_free_kbytes" = { range = [128, 1024], steps = 4, scale = "log" }
""" + ('[set]\n"run.schedule" = "pct"\n' if CONTROLLED else "")
CELLS = [(c, k) for c in (1, 2) for k in (128, 256, 512, 1024)]


@pytest.fixture
def sweep_file(tmp_path):
    (tmp_path / "tiny.toml").write_text(textwrap.dedent(TINY))
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(SWEEP))
    return path


def _rows(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _is_png(path, min_bytes=5000):
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < min_bytes:
        return False
    width, height = struct.unpack(">II", data[16:24])
    return width >= 200 and height >= 150


def _wilson(k, n, z=1.959963984540054):
    p = k / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    h = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return (c - h) / d, (c + h) / d


def test_local_sweep_table_summary_plots_and_resume(sweep_file, tmp_path):
    out = tmp_path / "out"
    res = run_cli("sweep", sweep_file, "-j", "2", "--out", out, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(out)
    assert len(rows) == 16
    assert {(int(r["machine.cpus"]), int(r["sysctl.min_free_kbytes"])) for r in rows} == set(CELLS)
    assert sorted((int(r["cell"]), int(r["repeat"])) for r in rows) == [(c, r) for c in range(8) for r in range(2)]
    assert len({r["seed"] for r in rows}) == 16
    for r in rows:                      # every run's own directory holds its report, with the row's seed
        report = json.loads((tmp_path / r["run_dir"] / "report.json").read_text())
        scenario = json.loads((tmp_path / r["run_dir"] / "scenario.json").read_text())
        assert scenario["run"]["seed"] == int(r["seed"])
        assert scenario["machine"]["cpus"] == int(r["machine.cpus"])
        assert scenario["sysctl"]["min_free_kbytes"] == int(r["sysctl.min_free_kbytes"])
        assert report["verdict"] == r["verdict"] and int(r["kills"]) == len(report["kills"])
        assert int(r["oom_invocations"]) == report["counters"]["oom_invocations"]
    if CONTROLLED:                       # each pct run is replayable from its row alone
        assert all(r["replay"].startswith("oomemu1:") for r in rows)
        pick = rows[5]
        (tmp_path / "replay.txt").write_text(pick["replay"])
        again = run_cli("run", "--schedule", "replay", "--replay", tmp_path / "replay.txt", "--quiet", "--out",
                        tmp_path / "replayed")
        assert again.returncode in (0, 1), again.stderr[-2000:]
        replayed = json.loads((tmp_path / "replayed" / "report.json").read_text())
        original = json.loads((tmp_path / pick["run_dir"] / "report.json").read_text())
        assert replayed["verdict"] == original["verdict"]
        assert [(k["pid"], k["comm"]) for k in replayed["kills"]] == [(k["pid"], k["comm"]) for k in original["kills"]]
    # the printed table: a header, a rule, one line per cell
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["cpus", "min_free_kbytes", "n"]
    assert sum(1 for ln in lines[2:10] if ln.split()[2] == "2") == 8
    assert "16 runs in 8 cells" in res.stdout
    # summary.json: each cell's rates and intervals computed directly from the rows
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["cells"]) == 8
    for cell in summary["cells"]:
        mine = [r for r in rows if int(r["cell"]) == cell["cell"]]
        k = sum(r["verdict"] == "oom-kill" for r in mine)
        assert cell["n"] == 2 and cell["hits"]["count"] == k
        assert cell["hits"]["ci95"] == pytest.approx(list(_wilson(k, 2)), abs=1e-6)
        for verdict, entry in cell["verdicts"].items():
            kv = sum(r["verdict"] == verdict for r in mine)
            assert entry["count"] == kv and entry["ci95"] == pytest.approx(list(_wilson(kv, 2)), abs=1e-6)
        kills = sorted(float(r["kills"]) for r in mine)
        assert cell["metrics"]["kills"]["median"] == sum(kills) / 2
    pngs = sorted((out / "plots").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"oom-kill-rate-vs-cpus.png", "oom-kill-rate-vs-min_free_kbytes.png",
            "heatmap-oom-kill-cpus-min_free_kbytes.png", "oom_invocations-vs-cpus.png"} <= names
    assert all(_is_png(p) for p in pngs), [p.name for p in pngs if not _is_png(p)]
    # a second invocation runs nothing new
    before = (out / "results.csv").read_bytes()
    dirs = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = run_cli("sweep", sweep_file, "--out", out, "--no-plots", timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 runs this time, 16 already done" in again.stdout
    assert (out / "results.csv").read_bytes() == before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == dirs
    # --report re-renders from the finished results alone
    shutil.rmtree(out / "plots")
    (out / "summary.json").unlink()
    rep = run_cli("sweep", "--report", out, timeout=120)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert {p.name for p in (out / "plots").glob("*.png")} == names


def test_interrupted_sweep_keeps_finished_runs_and_resumes(sweep_file, tmp_path):
    """Ctrl-C (SIGINT to the sweep's process group, as a terminal sends it) stops the sweep with exit 130 and
    keeps every finished run; running it again runs only the rest, and ends with the runs (same cells, repeats
    and seeds) an uninterrupted sweep has, the kept rows untouched."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "oomemu", "sweep", str(sweep_file), "-j", "1", "--out", str(out), "--no-plots"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "results.csv").exists() and len(_rows(out)) >= 3:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "sweep interrupted" in err
    kept = _rows(out)
    assert 3 <= len(kept) < 16
    for r in kept:
        assert (tmp_path / r["run_dir"] / "report.json").exists() and r["verdict"]
    res = run_cli("sweep", sweep_file, "-j", "2", "--out", out, "--no-plots", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{16 - len(kept)} runs this time, {len(kept)} already done" in res.stdout
    final = _rows(out)
    assert final[:len(kept)] == kept
    from oomemu.experiment.spec import load_sweep
    want = {(r.run_id, r.cell.index, r.repeat, r.seed) for r in load_sweep(sweep_file).runs}
    assert {(r["run_id"], int(r["cell"]), int(r["repeat"]), int(r["seed"])) for r in final} == want
    assert len(final) == 16


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A local Ray cluster on 127.0.0.1 (`ray start --head --block` in its own process group), stopped by
    that process group at the end."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")
    exe = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if exe is None:
        pytest.skip("the ray command is not installed")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")      # 0: Ray's node address is the loopback one
    log = open(tmp_path / "ray.log", "w")
    temp = tempfile.mkdtemp(prefix="oomemu-ray-", dir="/tmp")   # short: Ray's socket paths must fit 107 bytes
    proc = subprocess.Popen([exe, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--object-store-memory=80000000",
                             f"--temp-dir={temp}", "--disable-usage-stats"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "Ray runtime started" not in (tmp_path / "ray.log").read_text():
            if proc.poll() is not None:
                pytest.fail(f"ray start failed: {(tmp_path / 'ray.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", env
    finally:
        del ray
        for sig, wait_s in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_alive(proc.pid):
                proc.poll()
                time.sleep(0.2)
            if not _group_alive(proc.pid):
                break
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    import psutil
    return any(p.info["status"] != psutil.STATUS_ZOMBIE for p in psutil.process_iter(["status"])
               if _pgid(p.pid) == pgid)


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_ray_engine_gives_the_same_rows(sweep_file, tmp_path, ray_head):
    """The same sweep on a local Ray cluster: the rows have the cells, repeats, seeds and run identities the
    local pool's have (both are the sweep file's runs), one per run, with the run's own report (and, in a
    controlled schedule, the same verdicts as a local run of the same seeds)."""
    from oomemu.experiment.spec import load_sweep
    address, env = ray_head
    remote = tmp_path / "ray"
    b = subprocess.run([sys.executable, "-m", "oomemu", "sweep", str(sweep_file), "--engine", "ray", "--address",
                        address, "--out", str(remote), "--no-plots", "-q"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=600)
    assert b.returncode == 0, b.stderr[-3000:]
    rb = _rows(remote)
    want = sorted((r.run_id, r.cell.index, r.repeat, r.seed, r.cell.values["machine.cpus"],
                   r.cell.values["sysctl.min_free_kbytes"]) for r in load_sweep(sweep_file).runs)
    got = sorted((r["run_id"], int(r["cell"]), int(r["repeat"]), int(r["seed"]), int(r["machine.cpus"]),
                  int(r["sysctl.min_free_kbytes"])) for r in rb)
    assert got == want
    summary = json.loads((remote / "summary.json").read_text())
    assert [(c["cell"], c["n"]) for c in summary["cells"]] == [(i, 2) for i in range(8)]
    for r in rb:
        report = json.loads((tmp_path / r["run_dir"] / "report.json").read_text())
        assert report["verdict"] == r["verdict"] and int(r["kills"]) == len(report["kills"])
    if CONTROLLED:
        local = tmp_path / "local"
        a = run_cli("sweep", sweep_file, "-j", "2", "--out", local, "--no-plots", timeout=300)
        assert a.returncode == 0, a.stderr[-2000:]
        assert {r["run_id"]: r["verdict"] for r in _rows(local)} == {r["run_id"]: r["verdict"] for r in rb}


def test_plot_run_and_free_page_samples(tmp_path):
    """`oomemu plot RUN_DIR` draws the run's timeline; the trace's last zone_free_pages sample of each zone is
    the zone's final NR_FREE_PAGES in the report (a sample is written at each change)."""
    (tmp_path / "tiny.toml").write_text(textwrap.dedent(TINY))
    run = run_cli("run", tmp_path / "tiny.toml", "--quiet", "--out", tmp_path / "run")
    assert run.returncode == 0, run.stderr
    from oomemu.trace.reader import load_trace
    tr = load_trace(tmp_path / "run")
    assert tr.lost == 0
    samples = tr.of("zone_free_pages")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    normal = next(z for z in report["zones"] if z["zone"] == "Normal")
    zone_index = 2                                   # node 0, ZONE_NORMAL
    own = samples[samples["a"][:, 0] == zone_index]
    assert len(own) > 10 and int(own["a"][-1, 1]) == normal["free"]
    res = run_cli("plot", tmp_path / "run", "-o", tmp_path / "t.png")
    assert res.returncode == 0, res.stderr
    assert _is_png(tmp_path / "t.png", 15000)
    bad = run_cli("plot", tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_python_api(tmp_path):
    """Scenario.load / replace / run -> Report with typed fields; oomemu.sweep returns the rows."""
    import oomemu
    (tmp_path / "tiny.toml").write_text(textwrap.dedent(TINY))
    sc = oomemu.Scenario.load(tmp_path / "tiny.toml").replace("sysctl.min_free_kbytes", 256)
    assert sc.sysctl.min_free_kbytes == 256 and sc.machine.cpus == 2
    with pytest.raises(oomemu.ScenarioError, match="machine.cpus = 0"):
        sc.replace("machine.cpus", 0)
    report = oomemu.run(sc, out=tmp_path / "run")
    assert isinstance(report, oomemu.Report) and isinstance(report, dict)
    assert report.verdict == report["verdict"] and report.exit_code == 0
    assert report.kills, report
    assert all(isinstance(k, oomemu.Kill) and k.comm in ("holder", "hog") for k in report.kills), report.kills
    assert report.counters["oom_invocations"] >= 1
    assert not [c for c in report.checks if not c.ok], report.checks
    tasks = {t.pid: t for t in report.tasks}
    victims = {k.pid for k in report.kills}
    assert {t.outcome for t in tasks.values() if t.comm in ("holder", "hog")} <= {"killed", "exited"}, tasks
    assert all(tasks[v].outcome == "killed" for v in victims), tasks
    result = oomemu.sweep({"base": str(tmp_path / "tiny.toml"), "sweep": {"machine.cpus": [1, 2]},
                           "metrics": ["kills"]}, jobs=2, out=tmp_path / "sw", plots=False)
    assert [r["machine.cpus"] for r in result.rows] == [1, 2]
    assert result.ran == 2 and all(r["kills"] >= 1 for r in result.rows), result.rows
