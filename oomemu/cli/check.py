"""`oomemu check RUN_DIR`: re-check a finished run's invariants offline (exit 0 all hold, 1 one broke)."""
import sys


def add_arguments(p):
    p.add_argument("run_dir", help="a run directory written by `oomemu run`")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def execute(args):
    from pathlib import Path
    run_dir = Path(args.run_dir)
    for name in ("trace.msgpack", "machine.npz"):
        if not (run_dir / name).is_file():
            print(f"oomemu: error: {run_dir}: no {name} (not a finished run directory, or run with trace = false)",
                  file=sys.stderr)
            return 2
    import json

    from oomemu.check import run_all
    from oomemu.check.state import load_state
    from oomemu.trace.reader import load_trace
    try:
        trace = load_trace(run_dir)
        state = load_state(run_dir / "machine.npz")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input here
        print(f"oomemu: error: {run_dir}: cannot read the run: {exc}", file=sys.stderr)
        return 2
    results = run_all(trace, state)
    report_path = run_dir / "report.json"
    if report_path.is_file():
        recorded = [c for c in json.loads(report_path.read_text()).get("checks", [])
                    if c["invariant"] == "page-conservation-snapshots"]
        results += [dict(c, recorded=True) for c in recorded]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            note = " (recorded during the run)" if r.get("recorded") else ""
            print(f"{r['invariant']:32s} {'ok' if r['ok'] else 'BROKEN'}  [{r['ref']}]{note}")
            for d in r["details"][:5]:
                print(f"    {d}")
    return 0 if all(r["ok"] for r in results) else 1
