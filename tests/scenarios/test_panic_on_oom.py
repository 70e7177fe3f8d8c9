"""vm.panic_on_oom 0/1/2 against each kind of OOM: a table, run for real (KERNEL §3.3).

The expectations are written out by hand from KERNEL §3.3 and §3.1, not computed by the code under test:
panic_on_oom = 0 never panics here and kills; = 1 panics only for CONSTRAINT_NONE ("system-wide") and kills
inside the constraint otherwise; = 2 panics for every constraint, memcg included ("compulsory"), before any
kill. Each cell is one run of a two-node machine (node 0: 8 MiB, node 1: 8 MiB, no swap) where one `hog`
faults until the OOM, next to a `bystander` confined to node 0 that the constrained OOMs may not kill.

- unconstrained: the hog may use both nodes (CONSTRAINT_NONE);
- cpuset: the hog's cpuset.mems is node 1 (CONSTRAINT_CPUSET: its user pages are __GFP_HARDWALL);
- mempolicy: the hog binds to node 1 (MPOL_BIND, CONSTRAINT_MEMORY_POLICY);
- memcg: the hog is in a memory cgroup whose limit it exceeds (CONSTRAINT_MEMCG). This column needs
  memory cgroups (issue 11 part 1); until the scenario schema has [[cgroup]] it is skipped, saying so.
"""
import pytest

from oomemu.api import run
from oomemu.config import load_scenario_text
from oomemu.config.schema import SCHEMA

BASE = """
[machine]
cpus = 2
[[machine.node]]
zones = {{ Normal = "8MiB" }}
[[machine.node]]
zones = {{ Normal = "8MiB" }}
[sysctl]
panic_on_oom = {mode}
{extra_top}
[[task]]
comm = "bystander"
mems = [0]
program = [{{ op = "fault", pages = "3MiB", chunk = 64 }}, {{ op = "sleep", ms = 2500 }}]
[[task]]
comm = "hog"
{hog}
program = [{{ op = "sleep", ms = 100 }}, {{ op = "fault", pages = "64MiB", chunk = 64 }}]
[run]
seconds = 15
"""

CONSTRAINTS = {
    "unconstrained": ("", ""),
    "cpuset": ("", 'mems = [1]'),
    "mempolicy": ("", 'mempolicy = { mode = "bind", nodes = [1] }'),
    "memcg": ('[[cgroup]]\nname = "/job"\nlimit = "2MiB"\n', 'cgroup = "/job"'),
}

# (panic_on_oom, constraint) -> the panic message, or None for "no panic, the hog is killed" (KERNEL §3.3)
TABLE = {
    (0, "unconstrained"): None, (0, "cpuset"): None, (0, "mempolicy"): None, (0, "memcg"): None,
    (1, "unconstrained"): "system-wide", (1, "cpuset"): None, (1, "mempolicy"): None, (1, "memcg"): None,
    (2, "unconstrained"): "compulsory", (2, "cpuset"): "compulsory", (2, "mempolicy"): "compulsory",
    (2, "memcg"): "compulsory",
}


def has_memcg():
    return "cgroup" in SCHEMA.names


@pytest.mark.parametrize("mode,constraint", sorted(TABLE), ids=[f"panic_on_oom={m}-{c}" for m, c in sorted(TABLE)])
def test_panic_on_oom_table(tmp_path, mode, constraint):
    if constraint == "memcg" and not has_memcg():
        pytest.skip("memory cgroups ([[cgroup]], issue 11 part 1) are not in this tree yet")
    extra_top, hog = CONSTRAINTS[constraint]
    sc = load_scenario_text(BASE.format(mode=mode, extra_top=extra_top, hog=hog), name=f"panic-{mode}-{constraint}")
    report = run(sc, out=tmp_path / "run")
    dmesg = (tmp_path / "run" / "dmesg.log").read_text()
    want = TABLE[mode, constraint]
    assert report["ended_by"] != "worker-died", report["error"]
    if want is None:
        assert report["verdict"] != "panic", dmesg[-2000:]
        assert report["kills"] and {k["comm"] for k in report["kills"]} == {"hog"}, report["kills"]
        assert "panic_on_oom is enabled" not in dmesg
    else:
        assert report["verdict"] == "panic", (report["verdict"], report["kills"])
        assert f"Kernel panic - not syncing: Out of memory: {want} panic_on_oom is enabled" in dmesg
        assert not report["kills"]
    fates = {t["comm"]: t["ended"] for t in report["tasks"]}
    assert fates["bystander"] == ("exited" if want is None else "alive")   # never killed; a panic stops it
