"""`oomemu explore SCENARIO --strategy random|pct --runs N`: search controlled schedules for a failure."""
import sys


def add_arguments(p):
    p.add_argument("scenario", help="scenario TOML file")
    p.add_argument("--strategy", default="pct", help="random or pct (default pct)")
    p.add_argument("--runs", type=int, default=100, metavar="N", help="schedules to try (default 100)")
    p.add_argument("--until", metavar="NAME",
                   help="a verdict or an invariant that counts as a hit (default: [expect] not met, or any "
                        "invariant broken)")
    p.add_argument("--all", action="store_true", help="run every schedule instead of stopping at the first hit")
    p.add_argument("-j", "--jobs", type=int, default=None, metavar="J",
                   help="parallel runs (default: the number of cores)")
    p.add_argument("--seed", type=int, metavar="S", help="base seed (default run.seed); schedule i uses "
                                                        "S * 1000003 + i")
    p.add_argument("--depth", type=int, metavar="D", help="override run.pct_depth")
    p.add_argument("--confirm", type=int, default=5, metavar="K", help="replay the first hit K times (default 5)")
    p.add_argument("--out", metavar="DIR", help="campaign directory (default runs/<time>-explore-<scenario>)")
    p.add_argument("--keep", action="store_true", help="keep every run directory, not only the hits")
    p.add_argument("--json", action="store_true", help="print the campaign summary as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")


def _validate(args, scenario):
    import dataclasses
    import os

    from oomemu.errors import ScenarioError
    from oomemu.control import MAX_CHANGES
    from oomemu.explore import STRATEGIES
    if args.strategy not in STRATEGIES:
        raise ScenarioError(f"--strategy = {args.strategy!r}: unknown strategy; allowed: {', '.join(STRATEGIES)}")
    if not 1 <= args.runs <= 1_000_000:
        raise ScenarioError(f"--runs = {args.runs}: must be an integer from 1 to 1000000")
    if args.jobs is not None and not 1 <= args.jobs <= 256:
        raise ScenarioError(f"-j = {args.jobs}: must be an integer from 1 to 256")
    if not 0 <= args.confirm <= 1000:
        raise ScenarioError(f"--confirm = {args.confirm}: must be an integer from 0 to 1000")
    if args.seed is not None and args.seed < 0:
        raise ScenarioError(f"--seed = {args.seed}: must be an integer >= 0")
    if args.depth is not None:
        if not 1 <= args.depth <= MAX_CHANGES + 1:
            raise ScenarioError(f"--depth = {args.depth}: must be an integer from 1 to {MAX_CHANGES + 1}")
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, pct_depth=args.depth))
    return scenario, args.jobs or os.cpu_count() or 1


def execute(args):
    from oomemu.config import load_scenario
    from oomemu.errors import ScenarioError
    from oomemu.explore import confirm, explore, target_of
    try:
        scenario = load_scenario(args.scenario)
        scenario, jobs = _validate(args, scenario)
        target_of(scenario, args.until)
    except ScenarioError as exc:
        print(f"oomemu: error: {exc}", file=sys.stderr)
        return 2
    out = _out_dir(args, scenario)
    bar = None if args.quiet or args.json else _Bar(args.runs)
    try:
        summary = explore(scenario, args.strategy, args.runs, until=args.until, jobs=jobs, base_seed=args.seed,
                          out=out, keep=args.keep, stop_at_first=not args.all,
                          on_result=None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    first = summary["first_hit"]
    if first is not None and args.confirm and not summary["interrupted"]:
        try:
            ok, problems = confirm(first, args.confirm, out)
        except KeyboardInterrupt:
            ok, problems, summary["interrupted"] = 0, ["interrupted"], True
        summary["confirm"] = {"reproduced": ok, "of": args.confirm, "problems": problems}
    if args.json:
        import json
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join(summary_lines(summary, out)))
    if summary["interrupted"]:
        return 130
    if summary.get("confirm") and summary["confirm"]["reproduced"] != summary["confirm"]["of"]:
        return 3
    return 1 if first is not None else 0


def _out_dir(args, scenario):
    import time
    from pathlib import Path
    if args.out:
        return Path(args.out)
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-explore-{scenario.name}"


def summary_lines(s, out):
    lines = [f"oomemu explore: {s['scenario']}: {s['runs']} {s['strategy']} schedules"
             + (f" (depth {s['pct_depth']}, {s['pct_steps']} expected steps)" if s["strategy"] == "pct" else "")
             + (" — interrupted" if s["interrupted"] else "") + f"; campaign directory {out}"]
    lines.append("  verdicts: " + ", ".join(f"{v} {n}" for v, n in sorted(s["verdicts"].items(), key=lambda kv: -kv[1])))
    if not s["targets"]:
        lines.append("  no hit")
    for name, t in sorted(s["targets"].items()):
        lines.append(f"  {name}: {t['count']}/{s['runs']} schedules; first at schedule {t['first_schedule']} "
                     f"(seed {t['first_seed']})")
        lines.append(f"    oomemu replay {t['replay']}")
    c = s.get("confirm")
    if c:
        lines.append(f"  reproduced {c['reproduced']}/{c['of']}")
        for p in c["problems"][:3]:
            lines.append(f"    replay diverged (an emulator bug: an uncontrolled source of nondeterminism): {p}")
    for e in s["errors"][:3]:
        lines.append(f"  emulator error: {e}")
    return lines


class _Bar:
    """A rich progress bar with ETA on a terminal, a line every few runs otherwise."""

    def __init__(self, total):
        self.total = total
        self.hits = 0
        self.tty = sys.stderr.isatty()
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            self.progress = Progress(TextColumn("explore"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("hits {task.fields[hits]}"), TimeElapsedColumn(),
                                     TimeRemainingColumn(), transient=True)
            self.task = self.progress.add_task("explore", total=total, hits=0)
            self.progress.start()

    def update(self, result, done):
        self.hits += bool(result["hits"])
        if self.tty:
            self.progress.update(self.task, completed=done, hits=self.hits)
        elif done % 10 == 0 or result["hits"]:
            print(f"oomemu explore: {done}/{self.total} schedules, {self.hits} hits", file=sys.stderr, flush=True)

    def close(self):
        if self.tty:
            self.progress.stop()
