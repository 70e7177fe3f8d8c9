"""`oomemu run [SCENARIO]`: run one scenario and report."""
import sys


def add_arguments(p):
    p.add_argument("scenario", nargs="?", help="scenario TOML file (default: the built-in default scenario)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<time>-<scenario>)")
    p.add_argument("--seconds", type=float, metavar="S", help="override run.seconds")
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress and no summary")
    p.add_argument("--json", action="store_true", help="print report.json instead of the summary")


def execute(args):
    from oomemu.errors import ScenarioError
    from oomemu.config import load_scenario
    try:
        scenario = load_scenario(args.scenario)
        if args.seconds is not None:
            if not 0 < args.seconds <= 3600:
                raise ScenarioError(f"--seconds = {args.seconds}: must be a number greater than 0 and at most 3600")
            import dataclasses
            scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seconds=args.seconds))
    except ScenarioError as exc:
        where = f"{args.scenario}: " if args.scenario else ""
        print(f"oomemu: error: {where}{exc}", file=sys.stderr)
        return 2
    from oomemu.api import run
    from oomemu.cli.progress import Progress
    from oomemu.report import summary_lines
    progress = None if args.quiet or args.json else Progress(scenario)
    try:
        report = run(scenario, out=args.out, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        import json
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        print("\n".join(summary_lines(report)))
    if report["error"]:
        print(f"oomemu: error: {report['error']}", file=sys.stderr)
    return report["exit_code"]
