"""Real processes: one per CPU plus one kswapd per node, and nothing left behind on any exit path.

Each test starts `python -m oomemu run` as a subprocess, watches its children with psutil, and checks that
after a normal end, a SIGINT to the supervisor, or a SIGKILL of one CPU worker from outside, no worker process
survives and no shared memory of the run remains in /dev/shm.
"""
import json
import os
import signal
import subprocess
import sys
import time

import psutil

from conftest import ROOT, write_scenario

LONG = """
[machine]
cpus = 3
[[machine.node]]
zones = { DMA = "16MiB", Normal = "48MiB" }
[[machine.node]]
zones = { Normal = "16MiB" }
[[task]]
comm = "looper"
count = 3
cpu = "any"
program = [{ op = "fault", pages = "4MiB" }, { op = "free", pages = "all" }, { op = "repeat" }]
[run]
seconds = 30
"""


def _start(args, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "oomemu", "run", *map(str, args), "--quiet",
                             "--out", str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_children(proc, n, timeout=20):
    """The supervisor's worker children, once there are n of them."""
    sup = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [c for c in sup.children() if c.status() != psutil.STATUS_ZOMBIE]
        if len(kids) >= n:
            return kids
        time.sleep(0.02)
    raise AssertionError(f"supervisor has {len(sup.children())} children, expected {n}")


def _gone(pids, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _shm():
    return [e for e in os.listdir("/dev/shm") if "oomemu" in e]


def test_one_process_per_cpu_and_per_node_kswapd_each_cpu_allocates(tmp_path):
    """3 CPUs + 2 nodes: psutil sees 5 worker children with distinct pids, matching report.json; every CPU
    allocated; the run ends cleanly with nothing left."""
    path = write_scenario(tmp_path, LONG.replace("seconds = 30", "seconds = 2"))
    proc = _start([path], tmp_path)
    kids = _wait_children(proc, 5)
    pids = sorted(k.pid for k in kids)
    assert len(set(pids)) == 5
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 1), err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert sorted(report["workers"]["pids"].values()) == pids
    assert sorted(report["workers"]["pids"]) == ["cpu0", "cpu1", "cpu2", "kswapd0", "kswapd1"]
    for name in ("cpu0", "cpu1", "cpu2"):
        assert report["per_cpu"][name]["allocs"] > 0, name
    assert _gone(pids)
    assert not _shm()


def test_sigint_to_the_supervisor_stops_everything(tmp_path):
    """Ctrl-C (SIGINT to the supervisor only): exit 130, every worker gone, a report written."""
    proc = _start([write_scenario(tmp_path, LONG)], tmp_path)
    pids = [k.pid for k in _wait_children(proc, 5)]
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert _gone(pids)
    assert not _shm()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["verdict"] == "interrupted"


def test_a_cpu_worker_killed_from_outside_is_reported(tmp_path):
    """SIGKILL one CPU process mid-run: exit 3, one line naming that CPU, every other worker gone."""
    proc = _start([write_scenario(tmp_path, LONG)], tmp_path)
    kids = _wait_children(proc, 5)
    time.sleep(0.5)
    victim = sorted(kids, key=lambda k: k.pid)[1]  # the second worker started: cpu1
    victim.kill()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, (out, err)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    name = next(n for n, p in report["workers"]["pids"].items() if p == victim.pid)
    assert report["verdict"] == "emulator-failure"
    assert f"{name} (pid {victim.pid}) killed by SIGKILL" in report["error"]
    assert f"{name} (pid {victim.pid}) killed by SIGKILL" in err
    assert _gone([k.pid for k in kids])
    assert not _shm()
