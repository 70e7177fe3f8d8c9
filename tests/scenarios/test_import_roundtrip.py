"""Round trip: the dmesg.log a run of a shipped scenario writes, in each kernel profile's formats, imports back
into the task table the kernel printed, and the replay names the victim the run's kernel killed.

One run per profile (the shipped scenarios in turn); OOMEMU_ROUNDTRIP_ALL=1 runs every scenario under every
profile.
"""
import json
import os
from pathlib import Path

import pytest

import oomemu
from oomemu.boot import create_machine
from oomemu.config import load_scenario_text
from oomemu.config.profiles import KERNELS
from oomemu.machine import G_NR_TASK_ROWS, MM_ANONPAGES, MM_FILEPAGES, MM_NR_PTES, MM_SWAPENTS
from oomemu.oracle.explain import explain, nr_ptes_for
from oomemu.oracle.report import parse_reports
from oomemu.oracle.scenario import build_scenario

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "configs" / "default.toml", ROOT / "configs" / "races" / "r3-extra-kill.toml",
           ROOT / "configs" / "parallel-oom.toml"]
if os.environ.get("OOMEMU_ROUNDTRIP_ALL"):
    CASES = [(sc, k) for sc in SHIPPED for k in KERNELS]
else:
    CASES = [(SHIPPED[i % len(SHIPPED)], k) for i, k in enumerate(KERNELS)]


@pytest.mark.parametrize("path,kernel", CASES, ids=[f"{p.stem}-{k}" for p, k in CASES])
def test_a_runs_report_imports_back(tmp_path, path, kernel):
    sc = oomemu.Scenario.load(path).replace("machine.kernel", kernel).replace("run.seconds", 15)
    run = oomemu.run(sc, out=tmp_path / "run")
    kills = json.loads((tmp_path / "run" / "report.json").read_text())["kills"]
    assert kills, f"{path.name} under {kernel} killed nothing ({run.verdict})"
    reports = [r for r in parse_reports((tmp_path / "run" / "dmesg.log").read_text()) if r.tasks and r.victim]
    assert reports, "no report with a task table in dmesg.log"
    r = reports[0]
    # every line the emulator printed for the report is understood
    assert r.unusable == [], r.unusable
    assert r.killed.pid == kills[0]["pid"]
    # the imported scenario boots into the table the kernel printed
    text, _ = build_scenario(r, source="dmesg.log")
    imported = load_scenario_text(text, name="imported")
    assert imported.machine.kernel == kernel
    m = create_machine(imported, ring_records=1 << 16)
    try:
        n = int(m.glob[G_NR_TASK_ROWS])
        rows = [k for k in range(1, n) if m.task_mm[k] != -1][:len(r.tasks)]
        booted = [(m.task_comm[k].decode(), int(m.mm[m.task_mm[k], MM_ANONPAGES] + m.mm[m.task_mm[k], MM_FILEPAGES]),
                   int(m.mm[m.task_mm[k], MM_NR_PTES]), int(m.mm[m.task_mm[k], MM_SWAPENTS]),
                   int(m.sig_oom_score_adj[k]), int(m.task_uid[k])) for k in rows]
    finally:
        m.close()
    assert booted == [(t.comm, t.rss, nr_ptes_for(t, imported.features), t.swapents, t.oom_score_adj, t.uid)
                      for t in r.tasks]
    # and the replay under the run's profile picks the victim the run's kernel chose
    (p,) = explain(r, [kernel])["profiles"]
    assert p["agrees"] is True, (p, r.victim)


FORWARD = ["tutorial-4.x-memcg-v1-stress.log", "lkml-2015-chinner-xfs084-4.0.log"]


@pytest.mark.parametrize("name", FORWARD if os.environ.get("OOMEMU_ROUNDTRIP_ALL") else FORWARD[:1])
def test_an_imported_report_runs_forward_to_the_kernels_victim(tmp_path, name):
    """`oomemu run` on an imported real report: the machine, preset as the report shows it, runs into OOM and
    the emulator's first kill is the kernel's own victim, with every invariant holding."""
    from oomemu.oracle.report import parse_report
    r = parse_report((ROOT / "tests" / "data" / "dmesg" / name).read_text())
    text, _ = build_scenario(r, source=name)
    path = tmp_path / "imported.toml"
    path.write_text(text)
    sc = oomemu.Scenario.load(path).replace("run.seconds", 8)
    run = oomemu.run(sc, out=tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "report.json").read_text())
    assert doc["kills"] and doc["kills"][0]["comm"] == r.victim.comm[:15], doc["kills"][:2]
    assert all(c["ok"] for c in doc["checks"]), [c for c in doc["checks"] if not c["ok"]]
    assert run.verdict == "oom-kill"
