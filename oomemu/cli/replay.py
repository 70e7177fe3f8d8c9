"""`oomemu replay STRING`: run a recorded controlled schedule again, choice for choice."""
import sys


def add_arguments(p):
    p.add_argument("string", help="the replay string a controlled run printed (oomemu1:...)")
    p.add_argument("--scenario", metavar="FILE", help="replay on this scenario file (it must be the recorded one)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<time>-<scenario>)")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary")
    p.add_argument("--json", action="store_true", help="print report.json")


def execute(args):
    from oomemu.config import load_scenario
    from oomemu.errors import ScenarioError
    from oomemu.schedule import parse_replay_string, scenario_of
    try:
        record = parse_replay_string(args.string)
        given = load_scenario(args.scenario) if args.scenario else None
        scenario, pairs = scenario_of(record, given)
    except ScenarioError as exc:
        print(f"oomemu: error: {exc}", file=sys.stderr)
        return 2
    from oomemu.api import run
    from oomemu.report import summary_lines
    report = run(scenario, out=args.out, replay=pairs, strategy=record["strategy"])
    sched = report.get("schedule", {})
    same = sched.get("steps") == record["steps"] and sched.get("choices") == record["choices"]
    if args.json:
        import json
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        print("\n".join(summary_lines(report)))
    if report["error"]:
        print(f"oomemu: error: {report['error']}", file=sys.stderr)
        return report["exit_code"]
    if not same:
        print(f"oomemu: error: the replay diverged from the recorded schedule ({sched.get('steps')} steps, "
              f"choices {sched.get('choices')}; recorded {record['steps']} steps, choices {record['choices']}): "
              "an emulator bug (an uncontrolled source of nondeterminism)", file=sys.stderr)
        return 3
    if not args.quiet and not args.json:
        print(f"replayed {record['steps']} steps exactly (choices {record['choices']})")
    return report["exit_code"]
