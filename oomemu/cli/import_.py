"""`oomemu import REPORT.log [-o scenario.toml]`: rebuild the machine and task table a kernel OOM report shows."""
import sys


def add_arguments(p):
    p.add_argument("report", help="a kernel OOM report as pasted: dmesg, syslog, journalctl or /dev/kmsg lines")
    p.add_argument("-o", "--output", help="write the scenario here (default: print it)")
    p.add_argument("--index", type=int, default=0, help="which report of the file, when it holds several (0 = first)")


def read_report(path, index):
    """(report, text) or (None, exit status) after printing the one-line reason."""
    from oomemu.oracle.report import NoReport, parse_report
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        print(f"oomemu: error: {path}: {exc.strerror or exc}", file=sys.stderr)
        return None, 2
    try:
        return parse_report(text, index), text
    except NoReport as exc:
        print(f"oomemu: error: {path}: {exc}", file=sys.stderr)
        return None, 2


def execute(args):
    report, text = read_report(args.report, args.index)
    if report is None:
        return text
    from oomemu.oracle.scenario import build_scenario
    scenario, notes = build_scenario(report, source=args.report)
    for lineno, line in report.unusable:
        print(f"{args.report}:{lineno}: not used: {line}", file=sys.stderr)
    if report.ignored:
        known = ", ".join(f"{count} {what}" for what, count in sorted(report.ignored.items()))
        print(f"{args.report}: skipped as not needed: {known}", file=sys.stderr)
    for note in notes:
        print(f"{args.report}: note: {note}", file=sys.stderr)
    print(f"{args.report}: {len(report.tasks)} tasks, {len(report.zones)} zones, "
          f"{len(report.unusable)} lines not used", file=sys.stderr)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(scenario)
    else:
        sys.stdout.write(scenario)
    return 0
