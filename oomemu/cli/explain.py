"""`oomemu explain REPORT.log [--kernel P ...] [--json]`: which task each kernel profile would kill, and why."""
import sys


def add_arguments(p):
    p.add_argument("report", help="a kernel OOM report (see `oomemu import`)")
    p.add_argument("--kernel", action="append", metavar="P",
                   help="a kernel profile to replay (repeatable; default: the one the report implies, 3.14 and 6.1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--index", type=int, default=0, help="which report of the file (0 = first)")


def execute(args):
    from oomemu.cli.import_ import read_report
    report, status = read_report(args.report, args.index)
    if report is None:
        return status
    from oomemu.oracle.explain import ExplainError, explain, format_text
    try:
        result = explain(report, args.kernel)
    except ExplainError as exc:
        print(f"oomemu: error: {args.report}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        import json
        print(json.dumps(result, indent=2))
    else:
        print(format_text(result))
    return 0
