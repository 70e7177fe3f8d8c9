"""The [[task]] `mm` key: a task holds memory at boot, as a kernel OOM report's task dump describes it."""
import textwrap

import pytest

from oomemu.boot import create_machine
from oomemu.check.conservation import check_page_conservation
from oomemu.config import load_scenario_text, scenario_to_dict
from oomemu.config.load import scenario_from_dict
from oomemu.errors import ScenarioError
from oomemu.machine import (G_NR_MM_ROWS, G_NR_SWAP_FREE, MM_ANONPAGES, MM_FILEPAGES, MM_NR_PTES, MM_SWAPENTS,
                            MM_TOTAL_VM, PAGE_ANON, PAGE_FILE, Z_STAT)
from oomemu.include.mmzone import NR_FREE_PAGES

BASE = """
[machine]
swap = "16MiB"
[[machine.node]]
zones = { DMA = "16MiB", Normal = "64MiB" }
"""


def scenario(tasks):
    return load_scenario_text(textwrap.dedent(BASE) + textwrap.dedent(tasks), name="preset")


def test_preset_counters_frames_and_swap():
    sc = scenario("""
        [[task]]
        comm = "a"
        mm = { anon = 5000, file = 300, swapents = 20, nr_ptes = 33, total_vm = 90000 }
        program = [{ op = "sleep", ms = 1 }]
        [[task]]
        comm = "b"
        count = 2
        mm = { anon = 7001 }
        program = [{ op = "sleep", ms = 1 }]
    """)
    m = create_machine(sc, ring_records=4096)
    try:
        assert check_page_conservation(m) == []
        n = int(m.glob[G_NR_MM_ROWS])
        rows = [r for r in range(n) if m.mm[r, MM_ANONPAGES]]
        assert [int(m.mm[r, MM_ANONPAGES]) for r in rows] == [5000, 7001, 7001]
        a, b = rows[0], rows[1]
        assert (int(m.mm[a, MM_FILEPAGES]), int(m.mm[a, MM_SWAPENTS]), int(m.mm[a, MM_NR_PTES]),
                int(m.mm[a, MM_TOTAL_VM])) == (300, 20, 33, 90000)
        # absent nr_ptes / total_vm: one page-table page per 512 pages of the mapped size
        assert (int(m.mm[b, MM_TOTAL_VM]), int(m.mm[b, MM_NR_PTES])) == (7001, 14)
        assert int((m.page_owner == a).sum()) == 5300
        assert int(((m.page_owner == a) & (m.page_kind == PAGE_FILE)).sum()) == 300
        assert int(((m.page_owner == b) & (m.page_kind == PAGE_ANON)).sum()) == 7001
        assert int(m.glob[G_NR_SWAP_FREE]) == 16 * 256 - 20
        # 19,302 pages: Normal (16,384 pages) fills first, the other 2,918 come from DMA (4,096 pages)
        assert int(m.zone[2, Z_STAT + NR_FREE_PAGES]) == 0
        assert int(m.zone[0, Z_STAT + NR_FREE_PAGES]) == 4096 - 2918
    finally:
        m.close()


def test_preset_that_does_not_fit_is_a_scenario_error():
    sc = scenario("""
        [[task]]
        mm = { anon = 30000 }
        program = [{ op = "sleep", ms = 1 }]
    """)
    with pytest.raises(ScenarioError, match=r"task\[0\]\.mm: 30000 pages do not fit"):
        create_machine(sc, ring_records=64)


def test_preset_swap_needs_room():
    sc = scenario("""
        [[task]]
        mm = { swapents = 5000 }
        program = [{ op = "sleep", ms = 1 }]
    """)
    with pytest.raises(ScenarioError, match=r"swapents: 5000 swap entries but only 4096"):
        create_machine(sc, ring_records=64)


def test_preset_is_validated_and_round_trips():
    with pytest.raises(ScenarioError, match=r"task\[0\]\.mm\.anon"):
        scenario('[[task]]\nmm = { anon = -1 }\nprogram = [{ op = "sleep", ms = 1 }]\n')
    with pytest.raises(ScenarioError, match=r"task\[0\]\.mm\.rss: unknown key"):
        scenario('[[task]]\nmm = { rss = 1 }\nprogram = [{ op = "sleep", ms = 1 }]\n')
    with pytest.raises(ScenarioError, match=r"task\[0\]\.mm.*kernel thread"):
        scenario('[[task]]\nkthread = true\nmm = { anon = 1 }\nprogram = [{ op = "sleep", ms = 1 }]\n')
    sc = scenario('[[task]]\nmm = { anon = 10, nr_ptes = 3 }\nprogram = [{ op = "sleep", ms = 1 }]\n')
    back = scenario_from_dict(scenario_to_dict(sc), name="preset", source="<dict>")
    assert back.tasks[0].mm == sc.tasks[0].mm
    assert dict(sc.tasks[0].mm) == {"anon": 10, "file": 0, "swapents": 0, "nr_ptes": 3, "total_vm": None}
