"""`oomemu trace export` (Chrome trace-event JSON for Perfetto / chrome://tracing) and `oomemu trace show`.

One real run of configs/parallel-oom.toml is exported through the CLI and its structure checked (tracks named,
B/E balanced and nested per track, OOM slices and instants present); small hand-written traces check the
slice rules where a real run may or may not exercise them (crossing slices, missing end events)."""
import json
import re

import msgpack
import pytest

from conftest import ROOT, run_cli

from oomemu.trace.events import CATALOGUE, EVENT_ID
from oomemu.trace.export import SLICE_KSWAPD, SLICE_OOM, SLICE_RECLAIM, SLICE_SLOWPATH, chrome_trace
from oomemu.trace.reader import load_trace

LINE = re.compile(r"^\[\s*(\d+\.\d{6})\] (cpu\d+|kswapd\d+) pid (\d+) (\w+)((?: \w+=-?(?:0x)?[0-9a-f]+)*)$")
ARGS = {name: args for name, _, args in CATALOGUE}


@pytest.fixture(scope="module")
def oom_run(tmp_path_factory):
    """(run dir, report) of one parallel-oom run."""
    from oomemu.api import run
    from oomemu.config import load_scenario
    run_dir = tmp_path_factory.mktemp("trace-export") / "run"
    report = run(load_scenario(ROOT / "configs" / "parallel-oom.toml"), out=run_dir)
    assert report["kills"], report
    return run_dir, report


@pytest.fixture(scope="module")
def exported(oom_run):
    """The run exported with the CLI's defaults: (CompletedProcess, parsed JSON)."""
    run_dir, _ = oom_run
    res = run_cli("trace", "export", run_dir, "--format", "chrome")
    assert res.returncode == 0, res.stderr
    return res, json.loads((run_dir / "trace.chrome.json").read_text())


def check_well_formed(doc):
    """Assert the Chrome-JSON invariants; returns {tid: [(name, start, end), ...]} of the slices."""
    assert set(doc) >= {"traceEvents", "displayTimeUnit", "otherData"}
    assert doc["displayTimeUnit"] == "ms"
    stacks, last_ts, slices = {}, {}, {}
    for e in doc["traceEvents"]:
        assert e["pid"] == 0
        if e["ph"] not in "BE":
            continue
        tid, ts = e["tid"], e["ts"]
        assert ts >= last_ts.get(tid, float("-inf")), f"B/E out of order on tid {tid}: {e}"
        last_ts[tid] = ts
        stack = stacks.setdefault(tid, [])
        if e["ph"] == "B":
            if stack:
                assert ts >= stack[-1]["ts"]
            stack.append(e)
        else:
            assert stack, f"E without B on tid {tid}: {e}"
            begin = stack.pop()
            assert begin["name"] == e["name"], f"crossing slices on tid {tid}: {begin} closed by {e}"
            assert e["ts"] >= begin["ts"]
            slices.setdefault(tid, []).append((begin["name"], begin["ts"], e["ts"], begin["args"]))
    for tid, stack in stacks.items():
        assert not stack, f"unclosed slices on tid {tid}: {stack}"
    return slices


# --- the real run -----------------------------------------------------------------------------------------------

def test_export_prints_the_default_path(oom_run, exported):
    run_dir, _ = oom_run
    res, _ = exported
    assert res.stdout.strip() == str(run_dir / "trace.chrome.json")


def test_every_cpu_and_kswapd_track_is_named(oom_run, exported):
    run_dir, _ = oom_run
    _, doc = exported
    header = load_trace(run_dir).header
    meta = [e for e in doc["traceEvents"] if e["ph"] == "M"]
    assert {"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": "oomemu machine"}} in meta
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    nr_cpus, nr_nodes = header["nr_cpus"], header["nr_nodes"]
    assert names == {**{c: f"cpu{c}" for c in range(nr_cpus)},
                     **{nr_cpus + n: f"kswapd{n}" for n in range(nr_nodes)}}
    used = {e["tid"] for e in doc["traceEvents"] if e["ph"] != "M"}
    assert used <= set(names)


def test_slices_are_balanced_and_nested_per_track(exported):
    _, doc = exported
    slices = check_well_formed(doc)
    names = {name for per_tid in slices.values() for name, *_ in per_tid}
    assert {SLICE_SLOWPATH, SLICE_RECLAIM, SLICE_OOM, SLICE_KSWAPD} <= names


def test_oom_critical_sections_match_the_lock_records(oom_run, exported):
    """One OOM critical-section slice per acquiring oom_lock_try, on the acquirer's CPU, from try to release."""
    run_dir, _ = oom_run
    _, doc = exported
    trace = load_trace(run_dir)
    tries = trace.of("oom_lock_try")
    acquired = tries[tries["a"][:, 0] == 1]
    slices = check_well_formed(doc)
    oom = [(tid, s) for tid, per in slices.items() for s in per if s[0] == SLICE_OOM]
    assert len(oom) >= 1
    whole = [(tid, s) for tid, s in oom if "continued" not in s[3]]
    assert len(whole) == len(acquired)
    starts = sorted((int(r["cpu"]), round(int(r["ts"]) / 1000, 3), int(r["pid"])) for r in acquired)
    assert sorted((tid, s[1], s[3]["pid"]) for tid, s in whole) == starts
    assert all(s[3]["acquired"] == 1 and s[3]["ended_by"] in ("oom_lock_release", "trace end") for _, s in whole)


def test_oom_kill_instants_carry_named_args(oom_run, exported):
    run_dir, report = oom_run
    _, doc = exported
    trace = load_trace(run_dir)
    kills = [e for e in doc["traceEvents"] if e["ph"] == "i" and e["name"] == "oom_kill"]
    assert len(kills) == len(trace.of("oom_kill")) >= 1
    assert all(e["s"] == "t" for e in kills)
    args = next(e["args"] for e in trace.header["events"] if e["name"] == "oom_kill")
    for e in kills:
        assert set(e["args"]) == {"pid", *args}
    assert sorted(e["args"]["victim_pid"] for e in kills) == sorted(k["pid"] for k in report["kills"])
    rec = trace.of("oom_kill")[0]  # timestamps are microseconds of the trace's nanoseconds
    assert any(abs(e["ts"] - int(rec["ts"]) / 1000) < 1e-3 and e["tid"] == int(rec["cpu"]) for e in kills)
    for name in ("mark_victim", "signal_generate", "sched_process_exit", "out_of_memory", "oom_scan_result"):
        assert any(e["ph"] == "i" and e["name"] == name for e in doc["traceEvents"]), name


def test_export_to_a_chosen_file(oom_run, tmp_path):
    run_dir, _ = oom_run
    out = tmp_path / "x.json"
    res = run_cli("trace", "export", run_dir, "-o", out)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    check_well_formed(json.loads(out.read_text()))


def test_show_task_lists_the_victims_records(oom_run):
    run_dir, report = oom_run
    victim = report["kills"][0]["pid"]
    res = run_cli("trace", "show", run_dir, "--task", victim)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines
    assert all(f"pid {victim} " in line or f"pid={victim} " in line + " " for line in lines), lines[:5]
    assert any(" oom_kill " in line or " signal_" in line for line in lines)
    kill = next(line for line in lines if " oom_kill " in line)
    assert f"victim_pid={victim} " in kill and "points=" in kill and "kind=" in kill
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m][:5]
    stamps = [float(m[1]) for m in parsed]
    assert stamps == sorted(stamps)


def test_show_event_filter_and_limit(oom_run):
    run_dir, _ = oom_run
    res = run_cli("trace", "show", run_dir, "--event", "oom_kill", "signal_*", "--limit", "2")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert all(m[4] in ("oom_kill", "signal_generate", "signal_deliver") for m in parsed), lines


def test_show_unknown_event_exits_2(oom_run):
    run_dir, _ = oom_run
    res = run_cli("trace", "show", run_dir, "--event", "oom_kil")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "oom_kil" in res.stderr


# --- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action", ["show", "export"])
def test_missing_run_dir_exits_2(tmp_path, action):
    res = run_cli("trace", action, tmp_path / "nope")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "nope" in res.stderr
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("content", [None, b"", b"\xc1\xc1 not msgpack", msgpack.packb([1, 2, 3]),
                                     msgpack.packb({"format": "other"})])
def test_missing_or_corrupt_trace_exits_2(tmp_path, content):
    (tmp_path / "run").mkdir()
    if content is not None:
        (tmp_path / "run" / "trace.msgpack").write_bytes(content)
    for action in ("show", "export"):
        res = run_cli("trace", action, tmp_path / "run")
        assert res.returncode == 2, (action, res.stdout, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "trace.msgpack" in res.stderr, res.stderr
    assert not (tmp_path / "run" / "trace.chrome.json").exists()


# --- slice rules on hand-written traces ---------------------------------------------------------------------

def write_trace(run_dir, rows, nr_cpus=1, nr_nodes=1, end=True):
    """rows: {row: [(ts_ns, event name, pid, a0, a1, ...)]} -> RUN_DIR/trace.msgpack."""
    run_dir.mkdir(parents=True, exist_ok=True)
    header = {"format": "oomemu-trace", "version": 1, "scenario": "hand", "nr_cpus": nr_cpus, "nr_nodes": nr_nodes,
              "hz": 250, "fields": ["ts_ns", "seq", "event", "pid", "a0", "a1", "a2", "a3", "a4"],
              "events": [{"id": i, "name": n, "system": s, "args": list(a)} for i, (n, s, a) in enumerate(CATALOGUE)]}
    out = [msgpack.packb(header)]
    total = 0
    for row, recs in rows.items():
        batch = []
        for ts, name, pid, *a in recs:
            batch.append([ts, 0, EVENT_ID[name], pid, *(list(a) + [0] * 5)[:5]])
        total += len(batch)
        out.append(msgpack.packb({"cpu": row, "records": batch}))
    if end:
        out.append(msgpack.packb({"end": True, "records": total, "lost": 0}))
    (run_dir / "trace.msgpack").write_bytes(b"".join(out))
    return run_dir


def slices_of(run_dir):
    doc = chrome_trace(load_trace(run_dir))
    return doc, check_well_formed(doc)


def test_a_slice_crossing_another_tasks_sleep_is_split(tmp_path):
    """pid 2's slowpath starts inside pid 1's sleep on the same CPU and outlives it: cut, then continued."""
    run_dir = write_trace(tmp_path / "run", {
        0: [(100_000, "sleep", 1, 1, 1, 25), (150_000, "slowpath_enter", 2, 0x200da, 0),
            (250_000, "slowpath_exit", 2, 77, 0, 0)],
        1: [(200_000, "wakeup", 3, 1, 1, 0)],
    }, nr_cpus=2)
    doc, slices = slices_of(run_dir)
    cpu0 = slices[0]
    sleep = [s for s in cpu0 if s[0] == "sleep (timer)"]
    assert [(s[1], s[2]) for s in sleep] == [(100.0, 200.0)]
    assert sleep[0][3]["ended_by"] == "wakeup" and sleep[0][3]["ended_by_pid"] == 3
    slow = sorted((s[1], s[2], "continued" in s[3]) for s in cpu0 if s[0] == SLICE_SLOWPATH)
    assert slow == [(150.0, 200.0, False), (200.0, 250.0, True)]
    assert any("split" in k for k in doc["otherData"]["notes"])


def test_missing_end_events(tmp_path):
    """Unmatched ends are dropped (never an E without B); open slices end at the last timestamp; a sleep with no
    wakeup ends at the pid's next record; kswapd wake -> next wake or sleep."""
    run_dir = write_trace(tmp_path / "run", {
        0: [(30_000, "slowpath_enter", 6, 0x200da, 0),
            (40_000, "oom_lock_try", 6, 0, 5),          # busy: no slice
            (45_000, "oom_lock_try", 6, 1, 5),
            (50_000, "oom_kill", 6, 5, 100, 1, 2, 3),
            (90_000, "oom_lock_release", 7, 5)],        # not the holder: ignored
        1: [(10_000, "mm_vmscan_direct_reclaim_end", 5, 0, 0),
            (20_000, "sleep", 5, 2, 2, 9),
            (60_000, "signal_deliver", 5, 9)],         # pid 5's next record: ends its sleep
        2: [(5_000, "mm_vmscan_kswapd_sleep", 9, 0),
            (15_000, "mm_vmscan_kswapd_wake", 9, 0, 0),
            (25_000, "mm_vmscan_kswapd_wake", 9, 0, 0),
            (35_000, "mm_vmscan_kswapd_sleep", 9, 0),
            (70_000, "mm_vmscan_kswapd_wake", 9, 0, 0)],
    }, nr_cpus=2)
    doc, slices = slices_of(run_dir)
    assert sorted((s[0], s[1], s[2]) for s in slices[0]) == [(SLICE_OOM, 45.0, 90.0), (SLICE_SLOWPATH, 30.0, 90.0)]
    sleep = slices[1]
    assert [(s[0], s[1], s[2]) for s in sleep] == [("sleep (mmap_sem (read))", 20.0, 60.0)]
    assert sleep[0][3]["ended_by"] == "next record of the pid (signal_deliver)"
    assert [(s[1], s[2], s[3]["ended_by"]) for s in slices[2]] == [
        (15.0, 25.0, "next mm_vmscan_kswapd_wake"), (25.0, 35.0, "mm_vmscan_kswapd_sleep"), (70.0, 90.0, "trace end")]
    notes = doc["otherData"]["notes"]
    assert notes["mm_vmscan_direct_reclaim_end without mm_vmscan_direct_reclaim_begin"] == 1
    assert notes["oom_lock_release without an acquiring oom_lock_try of that pid"] == 1
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert names == {0: "cpu0", 1: "cpu1", 2: "kswapd0"}
    kill = next(e for e in doc["traceEvents"] if e["name"] == "oom_kill")
    assert kill["args"] == {"pid": 6, **dict(zip(ARGS["oom_kill"], (5, 100, 1, 2, 3)))}
    assert kill["ts"] == 50.0 and kill["tid"] == 0


def test_show_on_a_truncated_trace_warns_and_prints(tmp_path):
    run_dir = write_trace(tmp_path / "run", {0: [(1_500_000, "oom_kill", 4, 5, 573, 1, 2, 3)]}, end=False)
    res = run_cli("trace", "show", run_dir)
    assert res.returncode == 0, res.stderr
    named = " ".join(f"{k}={v}" for k, v in zip(ARGS["oom_kill"], (5, 573, 1, 2, 3)))
    assert res.stdout == f"[    0.001500] cpu0 pid 4 oom_kill {named}\n"
    assert "end marker" in res.stderr
