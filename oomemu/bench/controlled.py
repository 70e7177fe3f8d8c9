"""Controlled schedules (DESIGN §8): scheduling steps per second, controlled runs per second, and what the
controlled-mode hooks cost free mode.

- steps per second: a PCT and a random run of parallel-oom (tracing off), steps / the run's wall time from
  boot to the quiescent end (the end-of-run check excluded). PCT mostly continues the current runner (the
  cheap path); random hands the token to another process at most points (a context switch each);
- controlled runs per second: `oomemu run --schedule pct` of parallel-oom end to end (boot, run, check, report),
  one after another;
- the hooks' cost in free mode, in one process: the fast-path loop (`EmulatorLoop`) as shipped against the
  same loop with sync's spin_lock/spin_unlock/spin_trylock/sched_point swapped for copies without the
  `cpu.ctl` test (interleaved cycle by cycle, process CPU time): the ratio is free mode's slowdown from the
  controlled modes' seam.
"""
import time

from oomemu.bench.core import figure, in_child

GROUP = "controlled"
FIGURES = {
    "ctl_steps_per_s_pct": ("controlled run (pct), parallel-oom: scheduling steps per second", "steps/s", ">=",
                            50000.0),
    "ctl_steps_per_s_random": ("controlled run (random), parallel-oom: scheduling steps per second", "steps/s",
                               None, None),
    "ctl_switches_per_s_random": ("controlled run (random): token hand-overs per second", "switches/s", None, None),
    "ctl_runs_per_s": ("oomemu run --schedule pct of parallel-oom, end to end: runs per second", "runs/s", None,
                       None),
    "free_hooks_ratio": ("free-mode fast path with the controlled hooks / without them (time)", "x", "<=", 1.05),
}


def _controlled_run(strategy, seed, trace):
    """Child body: one controlled run of parallel-oom; its steps, switches and wall times."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from oomemu.config import load_scenario
    from oomemu.supervisor import run_scenario
    from oomemu.api import run
    root = Path(__file__).resolve().parents[2]
    path = root / "configs" / "parallel-oom.toml"
    from oomemu.config.load import DEFAULT_SCENARIO_PATH
    if not path.exists():   # an installed package: the shipped default scenario stands in
        path = DEFAULT_SCENARIO_PATH
    sc = load_scenario(path)
    sc = dataclasses.replace(sc, run=dataclasses.replace(sc.run, schedule=strategy, seed=seed, trace=trace))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        if trace:
            report = run(sc, out=Path(d) / "run")
            wall = time.perf_counter() - t0
            return {"wall_s": wall, "steps": report["schedule"]["steps"], "switches": report["schedule"]["switches"],
                    "verdict": report["verdict"]}
        m, outcome = run_scenario(sc, Path(d))
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "steps": outcome.schedule["steps"], "switches": outcome.schedule["switches"],
                "verdict": outcome.reason}


def _hookless():
    """Copies of sync's hot primitives without the controlled-mode test (the code free mode ran before)."""
    from oomemu import sync

    def spin_lock(cpu, index):
        m = cpu.m
        lock = m.locks[index]
        if not lock.acquire(False):
            sync._spin_lock_slow(cpu, m, lock, index)
        owner = m.v_lock_owner
        base = index * 3
        owner[base] = cpu.id
        owner[base + 1] = cpu.os_pid
        owner[base + 2] = cpu.current

    def spin_unlock(cpu, index):
        m = cpu.m
        owner = m.v_lock_owner
        base = index * 3
        owner[base] = -1
        owner[base + 1] = -1
        owner[base + 2] = -1
        m.locks[index].release()

    def spin_trylock(cpu, index):
        m = cpu.m
        if not m.locks[index].acquire(False):
            return False
        base = index * 3
        m.v_lock_owner[base] = cpu.id
        m.v_lock_owner[base + 1] = cpu.os_pid
        m.v_lock_owner[base + 2] = cpu.current
        return True

    def sched_point(cpu, name, obj=-1):
        pass

    return {"spin_lock": spin_lock, "spin_unlock": spin_unlock, "spin_trylock": spin_trylock,
            "sched_point": sched_point}


def _hooks_rounds(rounds, n_allocs, batch=256):
    """Child body: the fast-path loop with the shipped primitives and with the hookless copies, interleaved."""
    from oomemu import sync
    from oomemu.bench.fastpath import EmulatorLoop
    loop = EmulatorLoop.boot(trace=False)
    shipped = {name: getattr(sync, name) for name in ("spin_lock", "spin_unlock", "spin_trylock", "sched_point")}
    bare = _hookless()
    cycles = max(1, n_allocs // batch)
    for _ in range(2):
        loop.cycle(batch)
    ratios = []
    for _ in range(rounds):
        t = {"shipped": 0.0, "bare": 0.0}
        for c in range(cycles):
            for kind in (("shipped", "bare") if c % 2 == 0 else ("bare", "shipped")):
                for name, fn in (shipped if kind == "shipped" else bare).items():
                    setattr(sync, name, fn)
                c0 = time.process_time()
                loop.cycle(batch)
                t[kind] += time.process_time() - c0
        for name, fn in shipped.items():
            setattr(sync, name, fn)
        ratios.append(t["shipped"] / t["bare"])
    return {"ratios": ratios}


def measure(bench):
    rounds = 1 if bench.quick else 3
    steps = {"pct": [], "random": []}
    switches = []
    details = []
    for r in range(rounds):
        for strategy in ("pct", "random"):
            res = in_child(_controlled_run, strategy, 1 + r, False)
            steps[strategy].append(res["steps"] / res["wall_s"])
            if strategy == "random":
                switches.append(res["switches"] / res["wall_s"])
            details.append({"strategy": strategy, "seed": 1 + r, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                                    for k, v in res.items()}})
    runs = []
    for r in range(rounds):
        res = in_child(_controlled_run, "pct", 1 + r, True)
        runs.append(1.0 / res["wall_s"])
    hooks = in_child(_hooks_rounds, bench.repeats, 4096 if bench.quick else 16384)
    f = bench.figures
    f["ctl_steps_per_s_pct"] = figure("ctl_steps_per_s_pct", steps["pct"], note="boot to quiescent end, tracing off")
    f["ctl_steps_per_s_random"] = figure("ctl_steps_per_s_random", steps["random"])
    f["ctl_switches_per_s_random"] = figure("ctl_switches_per_s_random", switches)
    f["ctl_runs_per_s"] = figure("ctl_runs_per_s", runs, note="traced, with the end-of-run check and report")
    f["free_hooks_ratio"] = figure("free_hooks_ratio", hooks["ratios"],
                                   note="process CPU time of the same loop, interleaved cycle by cycle")
    bench.details["controlled"] = details
