"""Every real report of tests/data/dmesg parses, names the victim its own kill line names (index.toml, written by
hand from that line), imports into a scenario that loads and boots, and the emulator's replay under the profile
the report implies picks that victim unless the index explains why it cannot."""
import tomllib
from pathlib import Path

import pytest

from oomemu.boot import create_machine
from oomemu.check.conservation import check_page_conservation
from oomemu.machine import G_NR_TASK_ROWS, MM_ANONPAGES, MM_FILEPAGES, MM_NR_PTES, MM_SWAPENTS
from oomemu.config import load_scenario_text
from oomemu.oracle.explain import explain, nr_ptes_for
from oomemu.oracle.report import parse_report
from oomemu.oracle.scenario import build_scenario, implied_profile, kernel_profiles

CORPUS = Path(__file__).resolve().parents[2] / "data" / "dmesg"
INDEX = tomllib.loads((CORPUS / "index.toml").read_text())["report"]


def test_the_corpus_is_indexed_and_large_enough():
    files = sorted(p.name for p in CORPUS.glob("*.log"))
    assert sorted(entry["file"] for entry in INDEX) == files
    assert len(files) >= 25
    for entry in INDEX:
        first = (CORPUS / entry["file"]).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# source: ") and len(first) > 40, entry["file"]


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_report_parses_and_names_the_indexed_victim(entry):
    r = parse_report((CORPUS / entry["file"]).read_text(encoding="utf-8"))
    assert r.tasks, "no task rows"
    victim = entry["victim"]
    assert (r.victim.pid, r.victim.comm) == (victim["pid"], victim["comm"])
    assert r.victim.score == victim.get("score")
    if "killed" in entry:
        assert r.killed.pid == entry["killed"]
    assert (r.constraint == "CONSTRAINT_MEMCG") == (entry["constraint"] == "memcg")
    # the parse uses nearly every line: what it cannot use is listed, and stays a small part of the report
    assert len(r.unusable) <= max(3, (r.end - r.start) // 4), r.unusable


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_replay_under_the_implied_profile_names_the_kernels_victim(entry):
    r = parse_report((CORPUS / entry["file"]).read_text(encoding="utf-8"))
    profile = implied_profile(r, kernel_profiles())
    out = explain(r, [profile])
    (p,) = out["profiles"]
    if "miss" in entry:
        assert p["agrees"] is not True, "the index explains a miss that no longer happens"
    else:
        assert p["agrees"] is True, (p, out["notes"])


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_import_writes_a_scenario_that_boots_with_the_table(entry):
    r = parse_report((CORPUS / entry["file"]).read_text(encoding="utf-8"))
    text, _ = build_scenario(r, source=entry["file"])
    sc = load_scenario_text(text, name="imported")
    rows = [t for t in sc.tasks if not t.kthread and t.mm is not None]
    assert [(t.comm, t.oom_score_adj, t.mm["swapents"]) for t in rows] == [
        (t.comm[:15], t.oom_score_adj, t.swapents) for t in r.tasks]
    if sum(t.rss for t in r.tasks) > 2_000_000:
        return  # a big machine: loading is checked, booting it is left to `oomemu run`
    m = create_machine(sc, ring_records=1 << 16)
    try:
        n = int(m.glob[G_NR_TASK_ROWS])
        user = [k for k in range(1, n) if m.task_mm[k] != -1][:len(r.tasks)]
        booted = [(int(m.mm[m.task_mm[k], MM_ANONPAGES] + m.mm[m.task_mm[k], MM_FILEPAGES]),
                   int(m.mm[m.task_mm[k], MM_NR_PTES]), int(m.mm[m.task_mm[k], MM_SWAPENTS]),
                   int(m.sig_oom_score_adj[k])) for k in user]
        # page tables: the PTE pages whose total with the profile's derived PMD pages is the row's (nr_ptes_for)
        assert booted == [(t.rss, nr_ptes_for(t, sc.features), t.swapents, t.oom_score_adj) for t in r.tasks]
        for t, (_, ptes, _, _) in zip(r.tasks, booted):
            with_pmds = ptes + -(-ptes // 512) if sc.features.nr_pmds or sc.features.pgtables_bytes else ptes
            assert with_pmds == (t.page_tables if with_pmds != ptes or t.nr_ptes is None else t.nr_ptes)
        assert check_page_conservation(m) == []
    finally:
        m.close()
