"""The score a memcg OOM kill passes to oom_kill_process (mm/memcontrol.c mem_cgroup_out_of_memory, KERNEL
§3.3): chosen_points * 1000 / totalpages, totalpages the memcg's limit in pages (no swap). From 5.9 (the 6.1
profile's `signed_badness`, KERNEL §4.2, §8) the badness is a signed long and the division is C's, which
truncates a negative score toward zero.
"""
import pytest

from machine_helpers import add_process, mk
from oomemu.include.gfp import GFP_KERNEL
from oomemu.mm import memcontrol, oom_kill

CGROUP = """
[[cgroup]]
name = "/job"
limit = "8MiB"
"""


@pytest.mark.parametrize("kernel,adj,expected", [
    # 3.14: 1000 anon pages, no page tables, adj 0: 1000 * 1000 / 2048 = 488 (488.28 rounded down)
    ("3.14", 0, 488),
    # 6.1: adj -900 counts -900 * (2048 / 1000 = 2) = -1800 pages: 1000 - 1800 = -800 points, and
    # -800000 / 2048 = -390.6 is -390 in C (flooring would give -391)
    ("6.1", -900, -390),
])
def test_memcg_kill_score(mk, kernel, adj, expected, monkeypatch):
    m, cpu = mk(kernel, extra=CGROUP)
    job = m.memcg_names.index("/job")
    assert memcontrol.mem_cgroup_get_limit(m, job) == 2048
    hog = add_process(m, cpu, "hog", rss=1000, ptes=0, adj=adj)
    m.task_memcg[hog] = job
    cpu.current = hog
    killed = []
    monkeypatch.setattr(oom_kill, "oom_kill_process",
                        lambda cpu, p, gfp, order, points, *rest, **kw: killed.append((p, points)))
    assert memcontrol._mem_cgroup_out_of_memory(cpu, job, GFP_KERNEL, 0) is True
    assert killed == [(hog, expected)]
