"""`explain`: the emulator's select_bad_process over a report's table, per profile (KERNEL §4.1 by hand)."""
import json
import subprocess
import sys

from oomemu.oracle.explain import explain, format_text
from oomemu.oracle.report import parse_report

from test_report_parse import R314, R66

# R314: totalpages = managed (15908 + 485940 kB) / 4 + swap 1048572 kB / 4 = 125462 + 262143 = 387605; unit 387
TOTAL = 387605
UDEVD = 193 - 193 * 3 // 100            # 100 rss + 13 ptes + 80 swap, root: 3% off
MEMHOG = 90000 + 189 + 1500 + 500 * 387  # adj 500 × (totalpages / 1000)


def test_explain_3_14_names_the_kernels_victim_with_hand_computed_points():
    out = explain(parse_report(R314), ["3.14"])
    assert out["totalpages"] == TOTAL
    assert out["kernel_victim"] == {"pid": 812, "comm": "memhog", "score": 555}
    (p,) = out["profiles"]
    assert p["kernel"] == "3.14" and p["implied"] is True and p["agrees"] is True
    assert p["victim"] == {"pid": 812, "comm": "memhog", "points": MEMHOG}
    assert p["score"] == MEMHOG * 1000 // TOTAL
    assert "terms" not in p


def test_a_disagreement_shows_both_tasks_terms():
    text = R314.replace("Kill process 812 (memhog) score 555", "Kill process 343 (udevd) score 0")
    text = text.replace("Killed process 812 (memhog)", "Killed process 343 (udevd)")
    out = explain(parse_report(text), ["3.14"])
    (p,) = out["profiles"]
    assert p["agrees"] is False
    emu, kern = p["terms"]
    assert (emu["pid"], emu["points"], emu["adj_term"]) == (812, MEMHOG, 500 * 387)
    assert (kern["pid"], kern["points"], kern["root"], kern["rss"], kern["page_tables"], kern["swapents"]) == (
        343, UDEVD, True, 100, 13, 80)
    text_out = format_text(out)
    assert "why 3.14 disagrees" in text_out and "NO" in text_out


def test_memcg_report_uses_the_limit_as_totalpages():
    out = explain(parse_report(R66), ["3.14"])
    assert out["totalpages"] == 131072
    # bash: 120000 rss + 256 page-table pages + 0 swap + 1000 × 131 = 251256; pause: adj -997 → clamped to 1
    (p,) = out["profiles"]
    assert p["victim"] == {"pid": 7788, "comm": "bash", "points": 120000 + 256 + 1000 * 131}
    assert p["agrees"] is True and p["implied"] is False  # the report is 6.6: 3.14 was asked for


def test_cli_json_shape_and_errors(tmp_path):
    report = tmp_path / "r.log"
    report.write_text(R314)
    run = subprocess.run([sys.executable, "-m", "oomemu", "explain", str(report), "--json"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert set(doc["kernel_victim"]) == {"pid", "comm", "score"}
    for p in doc["profiles"]:
        assert {"kernel", "implied", "victim", "agrees"} <= set(p) and set(p["victim"]) == {"pid", "comm", "points"}
    assert sum(p["implied"] for p in doc["profiles"]) == 1
    bad = subprocess.run([sys.executable, "-m", "oomemu", "explain", str(report), "--kernel", "2.4"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--kernel 2.4: unknown profile" in bad.stderr
    empty = tmp_path / "none.log"
    empty.write_text("nothing to see\n")
    for cmd in ("explain", "import"):
        run = subprocess.run([sys.executable, "-m", "oomemu", cmd, str(empty)], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 2 and "no OOM report found" in run.stderr and run.stderr.count("\n") == 1


def test_a_pre_3_10_saturated_score_is_explained():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "data" / "dmesg" / "lkml-2013-mhocko-azurit-memcg-3.2.log").read_text()
    out = explain(parse_report(text), ["3.14"])
    assert out["profiles"][0]["agrees"] is False
    assert any("pre-3.10" in n and "first one scanned" in n for n in out["notes"])
