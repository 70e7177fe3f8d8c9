"""The exploration table of README: how often free mode, random and PCT hit a narrow-window race.

    python tests/controlled/campaigns.py configs/races/narrow-oom-lock.toml --until oom-lock-exclusion \
        [--campaigns 10] [--budget 500] [--rate-runs 100] [--free-runs 100] [-j 2] [--confirm 5]

For each controlled strategy: `--campaigns` campaigns (base seeds 1..C) that each stop at their first hit
within `--budget` schedules (schedules to first hit; the hit replayed `--confirm` times), then the hit rate
per schedule over `--rate-runs` schedules; for free mode the hit rate over `--free-runs` runs. Prints one
JSON document and a markdown row per strategy.
"""
import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from oomemu.config import load_scenario  # noqa: E402
from oomemu.explore import confirm, explore  # noqa: E402


def campaign_rows(scenario, strategy, args, work):
    firsts, found, replays = [], 0, []
    for c in range(args.campaigns):
        t0 = time.monotonic()
        s = explore(scenario, strategy, args.budget, until=args.until, jobs=args.jobs, base_seed=1 + c,
                    out=work / f"{strategy}-c{c}")
        hit = s["first_hit"]
        if hit is not None:
            found += 1
            firsts.append(hit["i"] + 1)
            ok, problems = confirm(hit, args.confirm, work / f"{strategy}-c{c}-confirm")
            replays.append((ok, problems[:1]))
        print(f"  {strategy} campaign {c}: {'hit at schedule ' + str(hit['i'] + 1) if hit else 'no hit'} "
              f"({time.monotonic() - t0:.0f}s)", file=sys.stderr, flush=True)
    rate = explore(scenario, strategy, args.rate_runs, until=args.until, jobs=args.jobs, base_seed=1000,
                   out=work / f"{strategy}-rate", stop_at_first=False)
    hits = sum(t["count"] for t in rate["targets"].values())
    return {"strategy": strategy, "campaigns": args.campaigns, "found": found, "budget": args.budget,
            "schedules_to_first_hit": firsts, "replays": [r[0] for r in replays], "confirm": args.confirm,
            "replay_problems": [r[1] for r in replays if r[1]], "rate_hits": hits, "rate_runs": rate["runs"]}


def free_row(scenario, args, work):
    sc = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, schedule="free"))
    from oomemu.explore import Target, target_of
    target = target_of(sc, args.until)
    from oomemu.api import run
    hits = 0
    for i in range(args.free_runs):
        report = run(sc, out=work / f"free{i}")
        hits += bool(Target.hits(target, report))
    return {"strategy": "free", "rate_hits": hits, "rate_runs": args.free_runs}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario")
    p.add_argument("--until", required=True)
    p.add_argument("--campaigns", type=int, default=10)
    p.add_argument("--budget", type=int, default=500)
    p.add_argument("--rate-runs", type=int, default=100)
    p.add_argument("--free-runs", type=int, default=100)
    p.add_argument("--confirm", type=int, default=5)
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--strategies", default="random,pct")
    args = p.parse_args()
    scenario = load_scenario(args.scenario)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for strategy in args.strategies.split(","):
            rows.append(campaign_rows(scenario, strategy, args, work))
        if args.free_runs:
            rows.append(free_row(scenario, args, work))
    print(json.dumps({"scenario": args.scenario, "until": args.until, "rows": rows}, indent=2))
    for r in rows:
        rate = f"{r['rate_hits']}/{r['rate_runs']}"
        if r["strategy"] == "free":
            print(f"| {Path(args.scenario).stem} | free | {rate} | - | - |")
            continue
        firsts = sorted(r["schedules_to_first_hit"])
        med = firsts[len(firsts) // 2] if firsts else "-"
        print(f"| {Path(args.scenario).stem} | {r['strategy']} | {rate} | {r['found']}/{r['campaigns']} within "
              f"{r['budget']} (median {med}, max {max(firsts) if firsts else '-'}) | "
              f"{sum(1 for x in r['replays'] if x == r['confirm'])}/{len(r['replays'])} hits replayed "
              f"{r['confirm']}/{r['confirm']} |")


if __name__ == "__main__":
    main()
