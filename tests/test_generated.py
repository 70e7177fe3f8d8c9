"""Generated scenarios (Hypothesis): random valid scenarios run to a truthful end, and random invalid mutations of
valid files are refused in one line.

For each valid scenario (machines, tasks, programs with forks and locks, sysctls, traced or not) `oomemu run`
must exit 0 or 1, print no traceback, write a report.json that lists every invariant (holding, broken, or
not-checked with a reason) and leave no worker process behind. Each invalid mutation (a wrong type, a value
out of range, an unknown key or op, a missing key, contradictory [expect], an unpaired unlock, programs nested
too deep, broken TOML) must be a ScenarioError of one line, and on the command line exit 2 with one line.

The default counts keep CI short (OOMEMU_GEN_VALID=6, OOMEMU_GEN_INVALID=60); the long run is

    OOMEMU_GEN_VALID=200 OOMEMU_GEN_INVALID=200 pytest -n 2 tests/test_generated.py
"""
import json
import os
import subprocess
import sys

import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import ROOT

VALID = int(os.environ.get("OOMEMU_GEN_VALID", "6"))
INVALID = int(os.environ.get("OOMEMU_GEN_INVALID", "60"))
CLI_EVERY = 10          # every tenth invalid mutation also goes through `oomemu run`


# --- a small TOML writer: every section as `name = { inline table }` -----------------------------------------

def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def toml_text(doc):
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in doc.items())


# --- valid scenarios -------------------------------------------------------------------------------------------

MIB4 = st.integers(1, 8).map(lambda n: f"{4 * n}MiB")


def leaf_ops(cpus):
    pages = st.one_of(st.integers(1, 4096), st.sampled_from(["1MiB", "4MiB", "16MiB", "48MiB"]))
    return st.one_of(
        st.fixed_dictionaries({"op": st.just("fault"), "pages": pages, "chunk": st.integers(1, 64)}),
        st.fixed_dictionaries({"op": st.just("read"), "pages": pages}),
        st.fixed_dictionaries({"op": st.just("kmalloc"), "pages": st.integers(1, 64), "order": st.integers(0, 2)}),
        st.fixed_dictionaries({"op": st.just("free"), "pages": st.one_of(st.just("all"), st.integers(1, 512))}),
        st.fixed_dictionaries({"op": st.just("sleep"), "ms": st.integers(1, 20),
                               "state": st.sampled_from(["interruptible", "killable", "uninterruptible"])}),
        st.fixed_dictionaries({"op": st.just("spin"), "ms": st.integers(1, 3)}),
        st.fixed_dictionaries({"op": st.just("oom_score_adj"), "value": st.integers(-1000, 1000)}),
        st.fixed_dictionaries({"op": st.just("wait")}),
    )


def programs(cpus, depth=0):
    """A list of ops: leaves, lock ... unlock blocks, a fork/clone_vm/thread with its own program (two levels
    at most), and maybe a final repeat or exit."""
    block = leaf_ops(cpus)
    if depth < 2:
        child = st.fixed_dictionaries({
            "op": st.sampled_from(["fork", "clone_vm", "thread"]),
            "program": st.deferred(lambda: programs(cpus, depth + 1)),
            "count": st.integers(1, 2),
            "cpu": st.one_of(st.just("same"), st.just("any"), st.integers(0, cpus - 1))})
        block = st.one_of(block, child)
    locked = st.tuples(st.sampled_from(["read", "write"]), st.lists(leaf_ops(cpus), max_size=2)).map(
        lambda t: [{"op": "lock", "mode": t[0]}] + t[1] + [{"op": "unlock"}])
    body = st.lists(st.one_of(block.map(lambda op: [op]), locked), min_size=1, max_size=4).map(
        lambda parts: [op for part in parts for op in part])
    tail = st.sampled_from([[], [{"op": "repeat", "times": 2}], [{"op": "repeat"}], [{"op": "exit", "code": 3}]])
    return st.tuples(body, tail).map(lambda t: t[0] + _bounded_tail(t[0], t[1]))


def _spawns(program):
    return any(op["op"] in ("fork", "clone_vm", "thread") for op in program)


def _bounded_tail(body, tail):
    """Task rows are never reused (machine.max_tasks bounds every task a run ever creates, and a full table is
    an emulator limit, exit 3), so a program that spawns repeats at most once: the tasks a scenario can create
    stay far below the generated machine's max_tasks."""
    if _spawns(body) and tail and tail[0]["op"] == "repeat":
        return [{"op": "repeat", "times": 1}]
    return tail


@st.composite
def scenarios(draw):
    cpus = draw(st.integers(1, 3))
    nodes = [{"zones": {"DMA": draw(st.sampled_from(["0", "16MiB"])), "DMA32": "0", "Normal": draw(MIB4)}}
             for _ in range(draw(st.integers(1, 2)))]
    doc = {
        "machine": {"cpus": cpus, "hz": draw(st.sampled_from([100, 250, 1000])), "max_tasks": 4096,
                    "kernel": draw(st.sampled_from(["3.14", "3.16"])), "node": nodes},
        "sysctl": {"panic_on_oom": draw(st.integers(0, 2)), "oom_kill_allocating_task": draw(st.integers(0, 1)),
                   "oom_dump_tasks": draw(st.integers(0, 1)),
                   "min_free_kbytes": draw(st.one_of(st.just(0), st.integers(128, 2048)))},
        "task": [{"comm": draw(st.sampled_from(["hog", "cache", "worker", "sshd"])), "count": draw(st.integers(1, 3)),
                  "cpu": draw(st.one_of(st.just("any"), st.integers(0, cpus - 1))),
                  "oom_score_adj": draw(st.sampled_from([-1000, -500, 0, 300, 1000])),
                  "uid": draw(st.sampled_from([0, 1000])), "program": draw(programs(cpus))}
                 for _ in range(draw(st.integers(0, 3)))],
        "run": {"seconds": draw(st.sampled_from([0.3, 0.6, 1.0])), "trace": draw(st.booleans()),
                "stall_jiffies": draw(st.sampled_from([0, 50]))},
    }
    return doc


def run_cli(args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "oomemu", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


# No shrinking of a failing run: each example is a whole `oomemu run` (the failing one is printed as it is).
@settings(max_examples=VALID, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(doc=scenarios())
def test_valid_generated_scenarios_run_to_a_truthful_end(tmp_path_factory, doc):
    from oomemu.check import all_invariants
    from oomemu.config import load_scenario_text
    text = toml_text(doc)
    load_scenario_text(text, name="generated")          # a generator bug if this raises
    work = tmp_path_factory.mktemp("gen")
    path = work / "generated.toml"
    path.write_text(text)
    res = run_cli(["run", path, "--out", work / "run", "--quiet"])
    assert res.returncode in (0, 1), (res.returncode, res.stderr, text)
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, (res.stderr, text)
    report = json.loads((work / "run" / "report.json").read_text())
    assert [c["invariant"] for c in report["checks"]] == [n for n, _ in all_invariants()], report["checks"]
    for c in report["checks"]:
        assert c["status"] in ("ok", "BROKEN", "not-checked"), c
        if c["status"] == "not-checked":
            assert c["details"] and c["details"][0], c
    assert (report["exit_code"] == 1) == (any(c["status"] == "BROKEN" for c in report["checks"])
                                          or not all(e["ok"] for e in report["expect"])), report
    alive = [p for p in report["workers"]["pids"].values()
             if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive


# --- invalid mutations -----------------------------------------------------------------------------------------

def _task_paths(doc):
    return [("task", i) for i in range(len(doc["task"]))]


def _set(doc, keys, value):
    d = doc
    for k in keys[:-1]:
        d = d[k]
    d[keys[-1]] = value


MUTATIONS = {
    "cpus": lambda doc, v: _set(doc, ("machine", "cpus"), v),
    "hz": lambda doc, v: _set(doc, ("machine", "hz"), v),
    "normal": lambda doc, v: _set(doc, ("machine", "node", 0, "zones", "Normal"), v),
    "panic_on_oom": lambda doc, v: _set(doc, ("sysctl", "panic_on_oom"), v),
    "seconds": lambda doc, v: _set(doc, ("run", "seconds"), v),
    "unknown_section": lambda doc, v: doc.__setitem__("mashine", {"cpus": 2}),
    "unknown_key": lambda doc, v: _set(doc, ("machine", v), 1),
    "count": lambda doc, v: _set(doc, ("task", 0, "count"), v),
    "adj": lambda doc, v: _set(doc, ("task", 0, "oom_score_adj"), v),
    "program": lambda doc, v: _set(doc, ("task", 0, "program"), v),
    "op_key": lambda doc, v: doc["task"][0]["program"][0].__setitem__("bogus", v),
    "no_program": lambda doc, v: doc["task"][0].pop("program"),
    "unlock": lambda doc, v: doc["task"][0]["program"].insert(0, {"op": "unlock"}),
    "deep": lambda doc, v: _set(doc, ("task", 0, "program"), _deep(17)),
    "kills": lambda doc, v: doc.__setitem__("expect", {"kills": {"min": 3, "max": 1}}),
    "verdicts": lambda doc, v: doc.__setitem__("expect", {"verdict": "oom-kill", "verdict_not": ["oom-kill"]}),
}
BAD_VALUES = {
    "cpus": [0, 65, "2", 2.5, True, [2]], "hz": [0, 200, "250", 99.5], "normal": ["5MiB", -1, "lots", "0", 3.5],
    "panic_on_oom": [3, -1, "0"], "seconds": [0, -1, 3601, "10"], "unknown_section": [None],
    "unknown_key": ["cpu", "zones", "xyzzy"], "count": [0, 10001, "1", 1.5], "adj": [-1001, 1001, "0"],
    "program": [[], "fault", [{"op": "nope"}], [{"ms": 5}], [1]], "op_key": [1, "x"], "no_program": [None],
    "unlock": [None], "deep": [None], "kills": [None], "verdicts": [None],
}
NEEDS_TASK = {"count", "adj", "program", "op_key", "no_program", "unlock", "deep"}


def _deep(depth):
    prog = [{"op": "exit"}]
    for _ in range(depth):
        prog = [{"op": "fork", "program": prog}]
    return prog


@st.composite
def mutations(draw):
    import copy
    doc = copy.deepcopy(draw(scenarios()))
    kind = draw(st.sampled_from(sorted(MUTATIONS) + ["toml"]))
    if kind == "toml":
        text = toml_text(doc)
        cut = draw(st.sampled_from(["\n[machine\n", "\nrun = { seconds = }\n", "\n= 3\n", "\ntask = [{ comm = \"x\" \n"]))
        return kind, text + cut
    if kind in NEEDS_TASK and not doc["task"]:
        doc["task"] = [{"comm": "t", "program": [{"op": "sleep", "ms": 1}]}]
    value = draw(st.sampled_from(BAD_VALUES[kind]))
    MUTATIONS[kind](doc, value)
    return kind, toml_text(doc)


_seen = {"n": 0}


@settings(max_examples=INVALID, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(case=mutations())
def test_invalid_mutations_are_refused_in_one_line(tmp_path_factory, case):
    from oomemu.config import load_scenario_text
    from oomemu.errors import ScenarioError
    kind, text = case
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, name="mutated")
    assert "\n" not in str(info.value) and str(info.value), (kind, str(info.value))
    _seen["n"] += 1
    if _seen["n"] % CLI_EVERY == 1:
        work = tmp_path_factory.mktemp("bad")
        path = work / "mutated.toml"
        path.write_text(text)
        res = run_cli(["run", path, "--out", work / "run", "--quiet"], timeout=60)
        assert res.returncode == 2, (kind, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, (kind, res.stderr)
        assert not (work / "run").exists()
