"""Every run ends in a truthful report: signals at any moment, worker deaths, environment errors, run directories
that are not ours, a stopped CPU, a hung task. Each test drives `python -m oomemu` as a user would and checks
the exit status, the one-line message, report.json, the trace's end marker and that no process is left."""
import json
import os
import signal
import subprocess
import sys
import time

import msgpack
import psutil
import pytest

from conftest import ROOT, run_cli, write_scenario

LONG = """
[machine]
cpus = 2
[[machine.node]]
zones = { DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }
[[task]]
comm = "churn"
count = 2
program = [{ op = "fault", pages = "4MiB", chunk = 16 }, { op = "free", pages = "all" }, { op = "repeat" }]
[run]
seconds = {seconds}
"""


def start(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "oomemu", *map(str, args)], cwd=cwd or ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def report_of(run_dir):
    return json.loads((run_dir / "report.json").read_text())


def trace_end(run_dir):
    """The trace's last map (the end marker when the trace was closed)."""
    last = None
    with open(run_dir / "trace.msgpack", "rb") as f:
        for obj in msgpack.Unpacker(f, raw=False, strict_map_key=False):
            last = obj
    return last


def assert_no_workers(report):
    alive = [pid for pid in report["workers"]["pids"].values() if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"workers left running: {alive}"


def worker_pids_of(proc):
    try:
        return [c.pid for c in psutil.Process(proc.pid).children()]
    except psutil.Error:
        return []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_mid_run_stops_everything_and_reports_interrupted(tmp_path, sig, code):
    path = write_scenario(tmp_path, LONG.replace("{seconds}", "20"))
    out = tmp_path / "run"
    proc = start("run", path, "--out", out, "--quiet")
    assert wait_for(lambda: (out / "trace.msgpack").exists() and len(worker_pids_of(proc)) >= 3)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    report = report_of(out)
    assert report["verdict"] == "interrupted" and report["exit_code"] == code
    assert report["interrupted"] == {"signal": signal.Signals(sig).name, "during": "run"}
    assert all(c["status"] == "not-checked" for c in report["checks"]), report["checks"]
    from oomemu.check import all_invariants
    assert [c["invariant"] for c in report["checks"]] == [n for n, _ in all_invariants()]
    assert trace_end(out).get("end") is True
    assert_no_workers(report)


def _handles_sigterm(pid):
    """True once process `pid` catches SIGTERM (oomemu's handler is installed: its first line has run)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(mask & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1, 0.2, 0.35, 0.5])
def test_an_early_sigint_never_prints_a_traceback(tmp_path, delay):
    """At any moment after oomemu's first line (before that the interpreter itself is starting): exit 130, one
    line, and a report if the run directory was made."""
    path = write_scenario(tmp_path, LONG.replace("{seconds}", "5"))
    out = tmp_path / "run"
    proc = start("run", path, "--out", out, "--quiet")
    assert wait_for(lambda: _handles_sigterm(proc.pid) or proc.poll() is not None)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    if out.exists() and any(p.name != ".oomemu.lock" for p in out.iterdir()):
        report = report_of(out)
        assert report["verdict"] == "interrupted" and report["exit_code"] == 130


def test_sigterm_during_the_check_ends_the_check_and_reports_it(tmp_path):
    path = write_scenario(tmp_path, LONG.replace("{seconds}", "6"))
    out = tmp_path / "run"
    proc = start("run", path, "--out", out, "--quiet")
    assert wait_for(lambda: (out / "machine.npz").exists(), timeout=60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    report = report_of(out)
    assert report["verdict"] == "interrupted"
    assert report["interrupted"]["during"] in ("check", "report"), report["interrupted"]
    assert trace_end(out).get("end") is True


def test_a_dead_workers_reason_reaches_stderr_and_the_report_without_a_wait(tmp_path):
    """A task table overflow in a CPU: its reason is in report.json and on stderr, and the run does not hang."""
    path = write_scenario(tmp_path, """
        [machine]
        max_tasks = 16
        [[task]]
        program = [{ op = "fork", program = [{ op = "sleep", ms = 5000 }] }, { op = "repeat" }]
        [run]
        seconds = 20
        """)
    t0 = time.monotonic()
    res = run_cli("run", path, "--out", tmp_path / "run", "--quiet")
    wall = time.monotonic() - t0
    assert res.returncode == 3, res.stderr
    report = report_of(tmp_path / "run")
    assert "task table full" in report["error"], report["error"]
    assert "task table full" in res.stderr
    assert report["verdict"] == "emulator-failure"
    assert wall < 8, f"the run took {wall:.1f} s to end after the worker died"


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_text("x"), "exists and is not a directory"),
    (lambda p: None, "not empty"),
])
def test_an_unusable_out_is_one_line_and_exit_2(tmp_path, make, needle):
    target = tmp_path / "target"
    if needle == "not empty":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    else:
        make(target)
    res = run_cli("run", "--out", target, "--quiet")
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    if needle == "not empty":
        assert (target / "notes.txt").read_text() == "mine"


def test_out_under_a_file_and_empty_out_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "run", ""):
        res = run_cli("run", "--out", out, "--quiet", cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert not any(p.suffix == ".json" for p in tmp_path.iterdir())


def test_force_replaces_an_old_run_and_refuses_other_directories(tmp_path):
    traced = write_scenario(tmp_path, LONG.replace("{seconds}", "0.5"), name="traced")
    untraced = write_scenario(tmp_path, LONG.replace("{seconds}", "0.5") + "trace = false\n", name="untraced")
    out = tmp_path / "run"
    assert run_cli("run", traced, "--out", out, "--quiet").returncode == 0
    assert (out / "trace.msgpack").exists()
    res = run_cli("run", untraced, "--out", out, "--quiet")
    assert res.returncode == 2 and "--force" in res.stderr
    res = run_cli("run", untraced, "--out", out, "--quiet", "--force")
    assert res.returncode == 0, res.stderr
    assert not (out / "trace.msgpack").exists(), "--force must not keep the old run's trace"
    assert run_cli("check", out).returncode == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    res = run_cli("run", "--out", mine, "--quiet", "--force")
    assert res.returncode == 2 and (mine / "thesis.tex").exists(), res.stderr


def test_a_second_run_into_a_directory_in_use_is_refused_at_once(tmp_path):
    path = write_scenario(tmp_path, LONG.replace("{seconds}", "30"))
    out = tmp_path / "run"
    first = start("run", path, "--out", out, "--quiet")
    try:
        assert wait_for(lambda: (out / "trace.msgpack").exists())
        res = run_cli("run", path, "--out", out, "--quiet", "--force")
        assert res.returncode == 2 and "another oomemu run" in res.stderr, res.stderr
        assert first.poll() is None, "the second run must be refused at once, not after the first one ends"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert report_of(out)["verdict"] == "interrupted"


def _tmpfs(path, size):
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip() or 'mount failed'}); needs root")
    return path


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_the_trace_limit_comes_from_the_free_space_and_ends_the_run_cleanly(tmp_path):
    disk = _tmpfs(tmp_path / "small", "22m")
    try:
        path = write_scenario(tmp_path, LONG.replace("{seconds}", "90") + 'trace_limit = "1000GiB"\n')
        res = run_cli("run", path, "--out", disk / "run", "--quiet", timeout=120)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        report = report_of(disk / "run")
        assert report["ended_by"] == "trace-limit", report["ended_by"]
        assert "free space" in report["warnings"][0] and report["trace"]["limit_bytes"] < 22 << 20
        assert report["trace"]["bytes"] >= report["trace"]["limit_bytes"]
        assert trace_end(disk / "run").get("end") is True
        assert all(c["ok"] for c in report["checks"]), report["checks"]
        assert_no_workers(report)
    finally:
        _umount(disk)


def test_a_disk_too_small_for_the_trace_is_refused_before_the_run(tmp_path):
    disk = _tmpfs(tmp_path / "tiny", "3m")
    try:
        res = run_cli("run", "--out", disk / "run", "--quiet")
        assert res.returncode == 3, res.stderr
        assert "no room for the trace" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    finally:
        _umount(disk)


def test_a_disk_that_fills_mid_run_is_an_environment_error_in_one_line(tmp_path):
    disk = _tmpfs(tmp_path / "small", "40m")
    try:
        path = write_scenario(tmp_path, LONG.replace("{seconds}", "30"))
        proc = start("run", path, "--out", disk / "run", "--quiet")
        assert wait_for(lambda: (disk / "run" / "trace.msgpack").exists())
        with open(disk / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err
        assert "No space left on device" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    finally:
        _umount(disk)


def test_a_read_only_out_is_exit_2_with_one_line(tmp_path):
    disk = _tmpfs(tmp_path / "ro", "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        res = run_cli("run", "--out", disk / "run", "--quiet")
        assert res.returncode == 2, res.stderr
        assert "Read-only" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    finally:
        _umount(disk)


def test_oomemu_version():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("oomemu ")


PINNED = """
[machine]
cpus = 2
[[machine.node]]
zones = { DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }
[[task]]
comm = "churn0"
cpu = 0
program = [{ op = "fault", pages = "4MiB", chunk = 16 }, { op = "free", pages = "all" }, { op = "repeat" }]
[[task]]
comm = "churn1"
cpu = 1
program = [{ op = "fault", pages = "4MiB", chunk = 16 }, { op = "free", pages = "all" }, { op = "repeat" }]
[run]
seconds = 4
watchdog_ms = 500
"""


def test_a_stopped_cpu_is_named_by_the_watchdog_within_twice_watchdog_ms(tmp_path):
    # One churning task pinned to each CPU: cpu1 is never idle (an idle CPU waits on its doorbell by design and
    # has no heartbeat to miss), so stopping its process is a stall whatever the host's load.
    path = write_scenario(tmp_path, PINNED)
    out = tmp_path / "run"
    proc = start("run", path, "--out", out, "--quiet")
    assert wait_for(lambda: len(worker_pids_of(proc)) >= 3)
    time.sleep(0.5)
    children = sorted(psutil.Process(proc.pid).children(), key=lambda c: (c.create_time(), c.pid))
    victim = children[1].pid                          # forked second: cpu1
    os.kill(victim, signal.SIGSTOP)
    _, err = proc.communicate(timeout=90)
    report = report_of(out)
    row = next(name for name, pid in report["workers"]["pids"].items() if pid == victim)
    stalls = [s for s in report["stalls"] if s["pid"] == victim and s["process_status"] == "stopped"]
    assert stalls, (report["stalls"], report["workers"], err)
    s = stalls[0]
    assert s["kind"] == "emulator-stall" and s["row"] == row and s["process_status"] == "stopped", s
    assert 0.5 <= s["stalled_for_s"] < 1.0, s
    assert proc.returncode == 3 and row in err, err
    snap = next(c for c in report["checks"] if c["invariant"] == "page-conservation-snapshots")
    assert snap["status"] == "not-checked" or snap.get("skipped"), snap
    assert_no_workers(report)


def test_a_stopped_token_holder_ends_a_controlled_run_named_by_the_watchdog(tmp_path):
    """In a controlled mode only the token holder runs; stopping every worker stops the holder, whichever row
    it is. The watchdog names it (and only it) within 2x watchdog_ms, and the run ends instead of waiting out
    its wall-clock limit."""
    path = write_scenario(tmp_path, LONG.replace("{seconds}", "30") + 'schedule = "random"\nseed = 5\nwatchdog_ms = 500\n')
    out = tmp_path / "run"
    proc = start("run", path, "--out", out, "--quiet")
    assert wait_for(lambda: (out / "trace.msgpack").exists() and len(worker_pids_of(proc)) >= 3)
    time.sleep(0.5)
    stopped = worker_pids_of(proc)
    t0 = time.monotonic()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    _, err = proc.communicate(timeout=90)
    took = time.monotonic() - t0
    report = report_of(out)
    assert len(report["stalls"]) == 1, report["stalls"]
    s = report["stalls"][0]
    assert s["pid"] in stopped and s["process_status"] == "stopped", s
    assert s["row"] == next(name for name, pid in report["workers"]["pids"].items() if pid == s["pid"]), s
    assert 0.5 <= s["stalled_for_s"] < 1.0, s
    assert proc.returncode == 3 and s["row"] in err, err
    assert took < 30, took
    assert_no_workers(report)


def test_a_task_blocked_uninterruptibly_gets_the_hung_task_report_in_dmesg(tmp_path):
    path = write_scenario(tmp_path, """
        [sysctl]
        hung_task_timeout_secs = 1
        [[task]]
        comm = "stuck"
        program = [{ op = "sleep", ms = 2500, state = "uninterruptible" }, { op = "exit" }]
        [[task]]
        comm = "patient"
        program = [{ op = "sleep", ms = 2500, state = "killable" }, { op = "exit" }]
        [run]
        seconds = 4
        """)
    res = run_cli("run", path, "--out", tmp_path / "run", "--quiet")
    assert res.returncode == 0, res.stderr
    report = report_of(tmp_path / "run")
    dmesg = (tmp_path / "run" / "dmesg.log").read_text()
    pid = next(h["pid"] for h in report["hung_tasks"] if h["comm"] == "stuck")
    assert f"INFO: task stuck:{pid} blocked for more than 1 seconds." in dmesg
    assert '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.' in dmesg
    assert "patient" not in " ".join(h["comm"] for h in report["hung_tasks"])   # TASK_KILLABLE is not reported


# --- inputs that used to escape validation --------------------------------------------------------------------

def _fork_chain(depth):
    return ("[[task]]\nprogram = " + '[{ op = "fork", program = ' * depth + '[{ op = "exit" }]' + " }]" * depth
            + "\n")


@pytest.mark.parametrize("text, needle", [
    (_fork_chain(200), "nested"),
    (_fork_chain(17), "programs nested 17 deep; at most 16"),
    ('[[task]]\nprogram = [{ op = "unlock" }, { op = "lock" }]', "has no `lock` before it"),
    ('[[task]]\nprogram = [{ op = "fork", program = [{ op = "unlock" }] }]', "task[0].program[0].program[0].op"),
    ('[expect]\nverdict = "oom-kill"\nverdict_not = ["oom-kill"]', "expect.verdict_not"),
    ('[expect]\nkills = { min = 1 }\nvictims = ["a"]\nnever_killed = ["a"]', "expect.never_killed"),
])
def test_bad_scenarios_are_one_line_and_exit_2(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    res = run_cli("run", path, "--out", tmp_path / "run", "--quiet")
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.count(str(path)) <= 1, "the file is named once"
    assert not (tmp_path / "run").exists()


def test_a_fork_chain_16_deep_is_accepted():
    from oomemu.config import load_scenario_text
    assert load_scenario_text(_fork_chain(16)).tasks


def test_toml_errors_name_the_file_once(tmp_path):
    path = tmp_path / "syntax.toml"
    path.write_text("[machine\n")
    res = run_cli("run", path, "--quiet")
    assert res.returncode == 2 and res.stderr.count(str(path)) == 1, res.stderr


def test_special_files_are_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, needle in ((fifo, "a FIFO"), ("/dev/zero", "a character device")):
        res = run_cli("run", path, "--quiet", timeout=30)
        assert res.returncode == 2 and needle in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_a_machine_too_big_for_the_host_is_refused_unless_allowed():
    from oomemu.config import load_scenario_text
    from oomemu.config.host import check_fits_host
    from oomemu.errors import ScenarioError
    big = load_scenario_text("[[machine.node]]\nzones = { DMA = \"16MiB\", DMA32 = \"0\", Normal = \"64GiB\" }\n"
                             * 8 + "")
    with pytest.raises(ScenarioError, match="--allow-large"):
        check_fits_host(big, total=16 << 30)
    check_fits_host(big, allow_large=True, total=16 << 30)
    check_fits_host(load_scenario_text(""), total=16 << 30)


def test_a_terabyte_machine_is_refused_on_the_command_line(tmp_path):
    nodes = "".join('[[machine.node]]\nzones = { DMA = "16MiB", DMA32 = "64GiB", Normal = "64GiB" }\n'
                    for _ in range(8))
    path = tmp_path / "big.toml"
    path.write_text(nodes)
    res = run_cli("run", path, "--quiet", "--out", tmp_path / "run")
    assert res.returncode == 2 and "--allow-large" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_an_empty_scenario_warns(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("[run]\nseconds = 0.3\n")
    res = run_cli("run", path, "--quiet", "--out", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr and "starts no tasks" in res.stderr


def test_check_and_trace_on_a_batch_directory_point_at_its_runs(tmp_path):
    path = write_scenario(tmp_path, LONG.replace("{seconds}", "0.3"))
    assert run_cli("run", path, "--repeat", "2", "--out", tmp_path / "batch", "--quiet").returncode == 0
    for args in (("check", tmp_path / "batch"), ("trace", "show", tmp_path / "batch")):
        res = run_cli(*args)
        assert res.returncode == 2 and "run000" in res.stderr and "--repeat batch" in res.stderr, res.stderr
    assert run_cli("check", tmp_path / "batch" / "run000").returncode == 0


def test_bench_keep_that_is_a_file_is_exit_2(tmp_path):
    (tmp_path / "file").write_text("x")
    res = run_cli("bench", "--keep", tmp_path / "file", "--only", "shm")
    assert res.returncode == 2 and "not a directory" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_the_check_streams_the_trace_in_a_bounded_window(tmp_path):
    """The floors let the reader hand out time-ordered chunks while holding only a window of records; the
    chunks are exactly the whole trace's order, and the streaming check agrees with the whole-trace one."""
    import numpy as np

    from oomemu.check import check_run, run_all
    from oomemu.check.state import load_state
    from oomemu.trace.reader import TraceStream, load_trace
    path = write_scenario(tmp_path, LONG.replace("{seconds}", "2"))
    assert run_cli("run", path, "--out", tmp_path / "run", "--quiet").returncode == 0
    whole = load_trace(tmp_path / "run")
    held = []

    class Watched(TraceStream):
        def __iter__(self):
            for chunk in super().__iter__():
                held.append(len(chunk))
                yield chunk

    with Watched(tmp_path / "run", chunk=2000, window=50_000) as stream:
        parts = list(stream)
    assert stream.late == 0 and len(parts) > 5, (len(parts), len(whole.records))
    assert max(held) < max(60_000, len(whole.records) // 3), (max(held), len(whole.records))
    assert np.array_equal(np.concatenate(parts), whole.records)
    state = load_state(tmp_path / "run" / "machine.npz")
    streamed = check_run(tmp_path / "run", state, snapshots_expected=False, detect=False).results
    assert [(c["invariant"], c["status"]) for c in streamed] == \
        [(c["invariant"], c["status"]) for c in run_all(whole, state, snapshots_expected=False)]
