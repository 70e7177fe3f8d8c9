"""Replay strings give a controlled run back exactly, refuse what does not match, and bad input is one line."""
import base64
import os
import signal
import subprocess
import sys
import time
import zlib

import msgpack
import psutil

from oomemu.schedule import PREFIX, first_differing_event

from conftest import ROOT, run_cli, write_scenario

SMALL = """
[machine]
cpus = 2
[[machine.node]]
zones = { DMA = "0", DMA32 = "0", Normal = "8MiB" }
[[task]]
comm = "hog"
count = 2
program = [{ op = "fault", pages = "6MiB", chunk = 16 }, { op = "sleep", ms = 20 }]
[run]
seconds = 2
schedule = "pct"
seed = 4
[expect]
kills = { min = 1 }
"""


def _replay_line(out):
    lines = [line for line in out.splitlines() if line.startswith("replay: oomemu replay ")]
    assert len(lines) == 1, out
    return lines[0].split()[-1]


def _reencode(string, **changes):
    body = string[len(PREFIX):]
    doc = msgpack.unpackb(zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))), raw=False)
    doc.update(changes)
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(msgpack.packb(doc, use_bin_type=True))).decode()


def test_a_replay_string_reproduces_the_run(tmp_path):
    path = write_scenario(tmp_path, SMALL)
    first = run_cli("run", path, "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    string = _replay_line(first.stdout)
    again = run_cli("replay", string, "--out", tmp_path / "b")
    assert again.returncode == 0, again.stderr
    assert "replayed" in again.stdout
    assert first_differing_event(tmp_path / "a", tmp_path / "b") is None
    from_file = run_cli("run", "--schedule", "replay", "--replay", tmp_path / "a" / "schedule.bin",
                        "--out", tmp_path / "c", "-q")
    assert from_file.returncode == 0, from_file.stderr
    assert first_differing_event(tmp_path / "a", tmp_path / "c") is None


def test_refused_strings_say_which_part_differs(tmp_path):
    path = write_scenario(tmp_path, SMALL)
    first = run_cli("run", path, "--out", tmp_path / "a", "-q")
    string = _replay_line(first.stdout + first.stderr)
    old = run_cli("replay", _reencode(string, v="0.0.1"))
    assert old.returncode == 2 and "recorded by oomemu 0.0.1" in old.stderr and len(old.stderr.splitlines()) == 1
    edited = write_scenario(tmp_path, SMALL.replace('"6MiB"', '"5MiB"'), name="edited")
    refused = run_cli("replay", string, "--scenario", edited)
    assert refused.returncode == 2 and "scenario differs" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    for bad in (string[:len(string) // 2], "oomemu1:!!!", "hello", _reencode(string, steps="x")):
        r = run_cli("replay", bad)
        assert r.returncode == 2, (bad[:40], r.stderr)
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("oomemu: error:"), r.stderr


def test_bad_schedule_input_is_one_line_and_exit_2(tmp_path):
    path = write_scenario(tmp_path, SMALL)
    no_expect = write_scenario(tmp_path, SMALL.split("[expect]")[0], name="noexpect")
    depth0 = write_scenario(tmp_path, SMALL.replace('schedule = "pct"', 'schedule = "pct"\npct_depth = 0'),
                            name="depth0")
    cases = [("run", path, "--schedule", "fair"), ("run", depth0), ("run", path, "--schedule", "replay"),
             ("explore", path, "--strategy", "dfs"), ("explore", no_expect),
             ("explore", path, "--until", "no-such-thing"), ("run", path, "--seed", "-1")]
    for args in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_interrupted_explore_reports_and_leaves_nothing(tmp_path):
    path = write_scenario(tmp_path, SMALL)
    out = tmp_path / "campaign"
    proc = subprocess.Popen([sys.executable, "-m", "oomemu", "explore", str(path), "--runs", "500", "--all",
                             "-j", "2", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("run*")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout
    time.sleep(0.5)
    left = [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])]
    assert not left, [p.pid for p in left]
    assert not [e for e in os.listdir("/dev/shm") if "oomemu" in e]


def test_repeat_gives_each_controlled_run_its_own_seed(tmp_path):
    import json
    path = write_scenario(tmp_path, SMALL)
    r = run_cli("run", path, "--repeat", "3", "--out", tmp_path / "batch", "-q")
    assert r.returncode == 0, r.stderr
    seeds = [json.loads((tmp_path / "batch" / f"run{i:03d}" / "report.json").read_text())["schedule"]["seed"]
             for i in range(3)]
    assert seeds == [4 * 1_000_003 + i for i in range(3)]
