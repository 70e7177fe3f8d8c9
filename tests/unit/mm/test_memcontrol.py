"""Memory cgroups (oomemu/mm/memcontrol.py): the scenario's [[cgroup]]s, charging, the memcg OOM path.

Each run is a real machine (CPU processes, shared memory). Expectations come from KERNEL §1.7 and §3.3 by
hand: the memcg OOM's totalpages is the limit in pages (no swap), a victim's score is
(rss + nr_ptes) * 1000 // limit, panic_on_oom = 1 never panics for a memcg OOM and 2 always does.
"""
import re

import pytest

from oomemu.api import run
from oomemu.config.profiles import KERNELS
from oomemu.config import load_scenario_text
from oomemu.errors import ScenarioError
from oomemu.oracle.report import parse_reports

MACHINE = """
[machine]
cpus = 2
kernel = "{kernel}"
[[machine.node]]
zones = {{ DMA = "16MiB", Normal = "64MiB" }}
[sysctl]
panic_on_oom = {panic}
"""

# "big" (outside every cgroup) has the largest RSS of the machine; the memcg's two hogs fault past its 8 MiB
# limit (2048 pages): a global OOM would take "big", the memcg OOM must take a hog.
INSIDE = MACHINE + """
[[cgroup]]
name = "/batch/job1"
limit = "8MiB"

[[task]]
comm = "big"
cpu = 0
program = [{{ op = "fault", pages = "20MiB" }}, {{ op = "sleep", ms = 1500 }}]

[[task]]
comm = "hog"
cgroup = "/batch/job1"
cpu = 1
count = 2
program = [{{ op = "fault", pages = "6MiB" }}, {{ op = "sleep", ms = 1500 }}]

[run]
seconds = {seconds}
"""


def _scenario(text, kernel="3.14", panic=0, seconds=6):
    return load_scenario_text(text.format(kernel=kernel, panic=panic, seconds=seconds), name="memcg")


def _bad(text):
    with pytest.raises(ScenarioError) as err:
        load_scenario_text(text, name="bad")
    return str(err.value)


# --- the scenario -----------------------------------------------------------------------------------------------

def test_cgroups_resolve_with_implied_parents():
    sc = _scenario(INSIDE)
    assert [c.name for c in sc.cgroups] == ["/batch/job1"]
    assert sc.cgroups[0].limit == 8 << 20 and not sc.cgroups[0].oom_kill_disable
    assert [t.cgroup for t in sc.tasks] == ["/", "/batch/job1"]
    from oomemu.config.load import cgroup_paths
    assert cgroup_paths(sc.cgroups) == ["/batch", "/batch/job1"]


BAD = [
    ('[[task]]\ncgroup = "/nope"\nprogram = [{ op = "wait" }]', r"^task\[0\]\.cgroup = \"/nope\": is not a \[\[cgroup\]\]"),
    ('[[cgroup]]\nname = "/a"\nlimit = "1KiB"', r"^cgroup\[0\]\.limit = \"1KiB\": must be at least one page"),
    ('[[cgroup]]\nname = "/a"\nlimit = 100', r"^cgroup\[0\]\.limit = 100: must be at least one page"),
    ('[[cgroup]]\nname = "/a"\noom_group = true', r"^cgroup\[0\]\.oom_group = true: needs the memcg_oom_group switch"),
    ('[[cgroup]]\nname = "/a"\nswappiness = 10', r"^cgroup\[0\]\.swappiness = 10: needs swap"),
    ('[[cgroup]]\nname = "/a"\n[[cgroup]]\nname = "/a"', r"^cgroup\[1\]\.name = \"/a\": is already a \[\[cgroup\]\]"),
    ('[[cgroup]]\nname = "a/b"', r"^cgroup\[0\]\.name = \"a/b\": must be a path like"),
    ('[[cgroup]]\nname = "/"', r"^cgroup\[0\]\.name = \"/\": must be a path like"),
    ('[[cgroup]]\nname = "/a//b"', r"^cgroup\[0\]\.name = \"/a//b\": must be a path like"),
    ('[[task]]\nprogram = [{ op = "cgroup_move", cgroup = "/x" }]',
     r"^task\[0\]\.program\[0\]\.cgroup = \"/x\": is not a \[\[cgroup\]\]"),
    ('[[cgroup]]\nname = "/a"\n[[task]]\nprogram = [{ op = "memcg_limit", cgroup = "/a", limit = "0" }]',
     r"^task\[0\]\.program\[0\]\.limit = \"0\": must be at least one page"),
    ('[expect]\nkilled_in = "/zz"', r"^expect\.killed_in = \"/zz\": is not a \[\[cgroup\]\]"),
]


@pytest.mark.parametrize("text,pattern", BAD, ids=[p for _, p in BAD])
def test_bad_cgroup_input_names_the_key(text, pattern):
    message = _bad(text)
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_oom_group_is_accepted_where_the_profile_has_it():
    sc = load_scenario_text('[machine]\nkernel = "5.1"\n[[cgroup]]\nname = "/a"\noom_group = true', name="ok")
    assert sc.cgroups[0].oom_group and sc.features.memcg_oom_group


def test_bad_cgroup_is_exit_2_from_the_cli(tmp_path):
    from conftest import run_cli, write_scenario
    path = write_scenario(tmp_path, '[[task]]\ncgroup = "/nope"\nprogram = [{ op = "wait" }]')
    proc = run_cli("run", str(path), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "task[0].cgroup" in proc.stderr


# --- runs ---------------------------------------------------------------------------------------------------------

def _ok(report):
    assert report["exit_code"] in (0, 1), report["error"]
    broken = [c for c in report["checks"] if c["ok"] is False]
    assert not broken, broken
    memcg = next(c for c in report["checks"] if c["invariant"] == "memcg-usage")
    assert memcg["ok"] is True
    return report


def _memcg(report, name):
    return next(c for c in report["memcgs"] if c["name"] == name)


def test_memcg_oom_kills_only_inside_the_subtree(tmp_path):
    report = _ok(run(_scenario(INSIDE), out=tmp_path / "r"))
    kills = report["kills"]
    assert kills and all(k["comm"] == "hog" and k["kind"] == "memcg" and k["cgroup"] == "/batch/job1"
                         for k in kills), kills
    # totalpages = the limit, 2048 pages; the first victim had 1024 anon pages + 2 page-table pages (KERNEL §4.1)
    assert kills[0]["points"] == (1024 + 2) * 1000 // 2048
    job = _memcg(report, "/batch/job1")
    assert job["limit_pages"] == 2048 and job["failcnt"] > 0
    assert job["oom_control"]["oom_kill"] == len(kills) and job["oom_control"]["under_oom"] == 0
    assert report["counters"]["kills"] == len(kills)
    dmesg = (tmp_path / "r" / "dmesg.log").read_text()
    assert "Memory cgroup out of memory: Kill process" in dmesg
    assert "Task in /batch/job1 killed as a result of limit of /batch/job1" in dmesg
    assert re.search(r"memory: usage 8192kB, limit 8192kB, failcnt \d+", dmesg)
    assert "big" not in dmesg.split("Memory cgroup out of memory")[0].split("[ pid ]")[1]  # dump_tasks(memcg)


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_oracle_reads_the_memcg_report(tmp_path, kernel):
    """The dmesg is a real memcg report, in each profile's format, to the parser that reads kernel logs
    (oomemu/oracle): the constraint, the limit, the OOM domain and the victim come back out of it."""
    for kernel in (kernel,):
        run(_scenario(INSIDE, kernel=kernel), out=tmp_path / kernel)
        reports = parse_reports((tmp_path / kernel / "dmesg.log").read_text())
        assert reports, kernel
        r = reports[0]
        assert r.constraint == "CONSTRAINT_MEMCG", (kernel, r.constraint)
        domain = r.memcg.get("oom_memcg") or r.summary.get("oom_memcg")   # 4.19+: in the oom-kill: summary
        assert r.memcg.get("limit_kb") == 8192 and domain == "/batch/job1", (kernel, r.memcg, r.summary)
        assert r.killed is not None and r.killed.comm == "hog"


def test_memcg_summary_line_on_later_profiles(tmp_path):
    run(_scenario(INSIDE, kernel="6.1"), out=tmp_path / "r")
    dmesg = (tmp_path / "r" / "dmesg.log").read_text()
    assert re.search(r"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=\(null\),cpuset=/,mems_allowed=0,"
                     r"oom_memcg=/batch/job1,task_memcg=/batch/job1,task=hog,pid=\d+,uid=1000", dmesg)
    assert "Task in " not in dmesg
    assert "Memory cgroup out of memory: Killed process" in dmesg


@pytest.mark.parametrize("panic,panics", [(0, False), (1, False), (2, True)])
def test_panic_on_oom_for_a_memcg_oom(tmp_path, panic, panics):
    """KERNEL §3.3: 1 panics only for CONSTRAINT_NONE, 2 for every constraint ("compulsory")."""
    report = run(_scenario(INSIDE, panic=panic), out=tmp_path / "r")
    assert (report["ended_by"] == "panic") is panics, report["ended_by"]
    dmesg = (tmp_path / "r" / "dmesg.log").read_text()
    if panics:
        assert "Out of memory: compulsory panic_on_oom is enabled" in dmesg
        assert not report["kills"]
    else:
        assert report["kills"] and all(k["kind"] == "memcg" for k in report["kills"])


WAIT = MACHINE + """
[[cgroup]]
name = "/w"
limit = "4MiB"
oom_kill_disable = true

[[task]]
comm = "hog"
cgroup = "/w"
cpu = 1
program = [{{ op = "fault", pages = "6MiB" }}, {{ op = "exit", code = 7 }}]

[[task]]
comm = "admin"
cpu = 0
program = [{{ op = "sleep", ms = 2000 }}{raise_limit}]

[run]
seconds = 6
"""


@pytest.mark.parametrize("schedule", ["free", "random"])
def test_oom_kill_disable_waits_until_the_limit_rises(tmp_path, schedule):
    """Also under a controlled schedule: the waiter is a blocked row the controller passes over until the
    limit write wakes it (a raw wait would deadlock the token)."""
    raise_limit = ', {{ op = "memcg_limit", cgroup = "/w", limit = "16MiB" }}'
    text = WAIT.replace("{raise_limit}", raise_limit)
    if schedule != "free":
        text += f'schedule = "{schedule}"\nseed = 5\n'
    report = _ok(run(_scenario(text), out=tmp_path / "raised"))
    assert report["kills"] == []
    assert report["ended_by"] == "all-exited"            # the hog finished its 6 MiB and exited
    w = _memcg(report, "/w")
    assert w["limit_pages"] == 4096 and w["oom_events"] >= 1 and w["oom_control"]["oom_kill"] == 0
    from oomemu.trace.events import WAIT_MEMCG_OOM
    from oomemu.trace.reader import load_trace
    trace = load_trace(tmp_path / "raised")
    sleeps = trace.of("sleep")
    assert (sleeps["a"][:, 1] == WAIT_MEMCG_OOM).any()  # it waited on memcg_oom_waitq


def test_oom_kill_disable_without_a_raise_keeps_waiting(tmp_path):
    report = _ok(run(_scenario(WAIT.replace("{raise_limit}", "")), out=tmp_path / "kept"))
    assert report["kills"] == []
    assert report["ended_by"] == "deadline"
    w = _memcg(report, "/w")
    assert w["oom_control"]["under_oom"] == 1 and w["usage_pages"] == 1024


def test_hierarchical_usage_and_the_injected_leak(tmp_path):
    """Usage counts the whole subtree; memcg_uncharge_leak (one page a freed batch stays on the counters) is
    caught by memcg-usage."""
    text = INSIDE.replace('[[cgroup]]\nname = "/batch/job1"', '[[cgroup]]\nname = "/batch/job2"\n[[cgroup]]\nname = "/batch/job1"')
    text = text.replace('[[task]]\ncomm = "big"', '[[task]]\ncomm = "other"\ncgroup = "/batch/job2"\ncpu = 0\n'
                        'program = [{{ op = "fault", pages = "2MiB" }}, {{ op = "sleep", ms = 20000 }}]\n\n'
                        '[[task]]\ncomm = "big"')
    report = _ok(run(_scenario(text, seconds=5), out=tmp_path / "ok"))
    batch, job2 = _memcg(report, "/batch"), _memcg(report, "/batch/job2")
    assert job2["usage_pages"] == 512 and batch["usage_pages"] >= 512
    assert batch["usage_pages"] == sum(c["local_pages"] for c in report["memcgs"] if c["name"].startswith("/batch"))
    broken = load_scenario_text(text.format(kernel="3.14", panic=0, seconds=5) +
                                '\n[debug]\nbreak = ["memcg_uncharge_leak"]', name="leak")
    report = run(broken, out=tmp_path / "leak")
    memcg = next(c for c in report["checks"] if c["invariant"] == "memcg-usage")
    assert memcg["ok"] is False and "usage" in " ".join(memcg["details"]), (memcg, report["kills"], report["memcgs"])


READER = MACHINE + """
[[cgroup]]
name = "/cache"
limit = "2MiB"

[[task]]
comm = "reader"
cgroup = "/cache"
cpu = 0
program = [{{ op = "read", pages = "6MiB" }}, {{ op = "sleep", ms = 200 }}]

[[task]]
comm = "mover"
cpu = 1
program = [{{ op = "fault", pages = "1MiB" }}, {{ op = "cgroup_move", cgroup = "/cache" }},
           {{ op = "fault", pages = "256KiB" }}, {{ op = "sleep", ms = 1500 }}]

[run]
seconds = 8
"""


def test_page_cache_is_reclaimed_within_the_cgroup_and_moves_keep_charges(tmp_path):
    """A reader of 6 MiB in a 2 MiB memcg: each charge past the limit reclaims the memcg's own cache pages
    (try_to_free_mem_cgroup_pages), so it never OOMs and usage stays at the limit. The mover's first 1 MiB is
    charged nowhere (the root), its 256 KiB after cgroup_move to /cache (charges do not move)."""
    report = _ok(run(_scenario(READER), out=tmp_path / "r"))
    assert report["kills"] == []
    cache = _memcg(report, "/cache")
    assert cache["failcnt"] > 0 and cache["max_usage_pages"] <= 512 and cache["oom_events"] == 0
    assert report["counters"]["pages_reclaimed"] >= 1536 - 512 - 64
    assert cache["usage_pages"] <= 512


GROUP = MACHINE + """
[[cgroup]]
name = "/svc"
limit = "8MiB"
oom_group = true

[[task]]
comm = "worker"
cgroup = "/svc"
cpu = 0
count = 3
program = [{{ op = "fault", pages = "1MiB" }}, {{ op = "sleep", ms = 3000 }}]

[[task]]
comm = "hog"
cgroup = "/svc"
cpu = 1
program = [{{ op = "sleep", ms = 300 }}, {{ op = "fault", pages = "12MiB" }}]

[run]
seconds = 8
"""


def test_oom_group_kills_the_whole_cgroup_on_later_profiles(tmp_path):
    report = _ok(run(_scenario(GROUP, kernel="5.1"), out=tmp_path / "r"))
    dmesg = (tmp_path / "r" / "dmesg.log").read_text()
    assert "Tasks in /svc are going to be killed due to memory.oom.group set" in dmesg
    assert [k["comm"] for k in report["kills"]] == ["hog", "worker", "worker", "worker"]   # the victim first
    assert _memcg(report, "/svc")["oom_control"]["oom_kill"] == 4
    parsed = parse_reports(dmesg)[0]                      # read back as a real 4.19+ oom.group report
    assert parsed.oom_group and len(parsed.group_kills) == 3, (parsed.oom_group, parsed.group_kills)
    ended = {t["comm"]: t["ended"] for t in report["tasks"]}
    assert ended["worker"] == "killed" and ended["hog"] == "killed", report["tasks"]


SWAP = """
[machine]
cpus = 2
swap = "16MiB"
[[machine.node]]
zones = {{ DMA = "16MiB", Normal = "64MiB" }}

[[cgroup]]
name = "/s"
limit = "4MiB"
swappiness = {seconds}

[[task]]
comm = "hog"
cgroup = "/s"
cpu = 0
program = [{{ op = "fault", pages = "8MiB" }}, {{ op = "sleep", ms = 300 }}]

[run]
seconds = 8
"""


@pytest.mark.parametrize("swappiness", [60, 0])
def test_swappiness_decides_whether_the_memcg_swaps_or_ooms(tmp_path, swappiness):
    """With swap and swappiness 60 the memcg reclaims its own anonymous pages to swap and the 8 MiB fit in a
    4 MiB limit; with swappiness 0 it may not (get_scan_count: SCAN_FILE) and the memcg OOMs, with totalpages =
    the limit only (mem_cgroup_get_limit adds swap only when swappiness is not 0)."""
    report = _ok(run(_scenario(SWAP, seconds=swappiness), out=tmp_path / "r"))
    s = _memcg(report, "/s")
    if swappiness:
        assert report["kills"] == [] and report["counters"]["pages_swapped_out"] >= 2048 - 1024
        assert s["max_usage_pages"] <= 1024
    else:
        assert [k["comm"] for k in report["kills"]] == ["hog"]
        # rss at the kill: the limit (1024 pages) + 2 page-table pages, over totalpages = 1024
        assert report["kills"][0]["points"] == (1024 + 2) * 1000 // 1024
