"""Exploration: many controlled schedules of one scenario, in parallel, until a verdict or an invariant hits.

Each schedule is one controlled run (its own machine) with seed `derive_seed(base, i)`; runs go to a pool of
worker processes. A *hit* is a run that reaches the target: `until` names a verdict or an invariant, and
without it a run hits when its [expect] block is not met or an invariant broke. The first hit is then
replayed `confirm` times from its schedule.bin; each replay must reach the same verdict with the same
normalised trace, and a replay that does not is reported as an emulator bug naming the first differing event.
"""
import dataclasses
import shutil
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from oomemu.errors import ScenarioError

STRATEGIES = ("random", "pct")


def derive_seed(base, i):
    """The seed of schedule `i` of a campaign with base seed `base` (documented, so any schedule can be run
    on its own with `oomemu run --schedule S --seed N`)."""
    return base * 1_000_003 + i


@dataclasses.dataclass
class Target:
    """What counts as a hit."""

    until: str | None
    invariants: frozenset
    invariants_only: bool = False

    def hits(self, report):
        broken = [c["invariant"] for c in report["checks"] if c["ok"] is False]
        if self.invariants_only:
            return broken
        if self.until is None:
            return broken + [f"expect: {e['what']}" for e in report["expect"] if not e["ok"]]
        if self.until in self.invariants:
            return [self.until] if self.until in broken else []
        return [self.until] if report["verdict"] == self.until else []


def target_of(scenario, until, invariants_only=False):
    """The campaign's target; ScenarioError when there is nothing to look for. `invariants_only`: any broken
    invariant is a hit, and nothing else (a clean scenario explored)."""
    from oomemu.check import INVARIANTS
    from oomemu.config.schema import VERDICTS
    names = frozenset([name for name, *_ in INVARIANTS] + ["page-conservation-snapshots", "trace-complete"])
    if until is not None and until not in names and until not in VERDICTS:
        raise ScenarioError(f"--until = {until!r}: not a verdict or an invariant; verdicts: {', '.join(VERDICTS)}; "
                            f"invariants: {', '.join(sorted(names))}")
    if invariants_only:
        return Target(None, names, True)
    e = scenario.expect
    stated = (e.kills_min, e.kills_max, e.victims, e.panic, e.verdict)
    if until is None and all(v is None for v in stated) and not e.never_killed and not e.verdict_not:
        raise ScenarioError(f"{scenario.source}: no [expect] block and no --until: nothing to look for")
    return Target(until, names)


def _one(job):
    """Run schedule `i` (in a pool worker); returns what the campaign needs of its report."""
    from oomemu.api import run
    scenario, i, seed, out, target, keep = job
    sc = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=seed))
    run_dir = Path(out) / f"run{i:04d}"
    report = run(sc, out=run_dir)
    hits = target.hits(report) if report["exit_code"] in (0, 1) else []
    result = {"i": i, "seed": seed, "verdict": report["verdict"], "exit_code": report["exit_code"],
              "error": report["error"], "hits": hits, "broken": [c["invariant"] for c in report["checks"] if c["ok"] is False],
              "steps": report.get("schedule", {}).get("steps"), "run_dir": str(run_dir),
              "replay": report.get("schedule", {}).get("replay")}
    if not hits and not keep and report["exit_code"] != 3:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def _pool_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the campaign's parent handles Ctrl-C and stops the pool


def calibrate(scenario, out):
    """PCT needs the expected step count (points with a choice): one run with the base seed measures it
    (pct_steps = 0 only)."""
    from oomemu.api import run
    report = run(scenario, out=Path(out) / "calibration")
    shutil.rmtree(Path(out) / "calibration", ignore_errors=True)
    return max(1, int(report.get("schedule", {}).get("choice_points") or 1))


def explore(scenario, strategy, runs, *, until=None, jobs=1, base_seed=None, out, keep=False, stop_at_first=True,
            on_result=None, targets_invariants_only=False):
    """Run up to `runs` schedules; returns the campaign summary (hits per target, the first hit's run)."""
    if strategy not in STRATEGIES:
        raise ScenarioError(f"--strategy = {strategy!r}: unknown strategy; allowed: {', '.join(STRATEGIES)}")
    target = target_of(scenario, until, targets_invariants_only)
    base = scenario.run.seed if base_seed is None else base_seed
    sc = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, schedule=strategy, seed=base))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if strategy == "pct" and not sc.run.pct_steps:
        sc = dataclasses.replace(sc, run=dataclasses.replace(sc.run, pct_steps=calibrate(sc, out)))
    results, interrupted = [], False
    import multiprocessing
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork"),
                               initializer=_pool_init)
    try:
        pending, nxt = set(), 0
        while nxt < runs or pending:
            while nxt < runs and len(pending) < jobs:
                pending.add(pool.submit(_one, (sc, nxt, derive_seed(base, nxt), out, target, keep)))
                nxt += 1
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                r = f.result()
                results.append(r)
                if on_result is not None:
                    on_result(r, len(results))
            if stop_at_first and any(r["hits"] for r in results):
                for f in pending:
                    f.cancel()
                for f in pending:
                    if not f.cancelled():
                        results.append(f.result())
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return summarise(sc, strategy, base, results, interrupted, runs)


def summarise(scenario, strategy, base, results, interrupted, requested):
    results = sorted(results, key=lambda r: r["i"])
    by_target = {}
    for r in results:
        for h in r["hits"]:
            entry = by_target.setdefault(h, {"count": 0, "first": r})
            entry["count"] += 1
    verdicts = {}
    for r in results:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    first = min((r for r in results if r["hits"]), key=lambda r: r["i"], default=None)
    return {"scenario": scenario.name, "strategy": strategy, "base_seed": base, "pct_steps": scenario.run.pct_steps,
            "pct_depth": scenario.run.pct_depth, "requested": requested, "runs": len(results),
            "interrupted": interrupted, "verdicts": verdicts,
            "targets": {k: {"count": v["count"], "first_schedule": v["first"]["i"], "first_seed": v["first"]["seed"],
                            "replay": v["first"]["replay"]} for k, v in by_target.items()},
            "first_hit": first, "errors": [r["error"] for r in results if r["exit_code"] == 3]}


def confirm(first, k, out):
    """Replay the first hit `k` times from its schedule.bin; returns (reproduced, divergences)."""
    from oomemu.api import run
    from oomemu.schedule import first_differing_event, load_schedule, scenario_of
    record = load_schedule(Path(first["run_dir"]) / "schedule.bin")
    scenario, pairs = scenario_of(record)
    ok, problems = 0, []
    for j in range(k):
        run_dir = Path(out) / f"confirm{j}"
        report = run(scenario, out=run_dir, replay=pairs, strategy=record["strategy"])
        diff = first_differing_event(first["run_dir"], run_dir)
        if report["verdict"] == first["verdict"] and diff is None and report["exit_code"] != 3:
            ok += 1
        else:
            problems.append(diff or report["error"] or f"verdict {report['verdict']} instead of {first['verdict']}")
    return ok, problems
