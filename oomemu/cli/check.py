"""`oomemu check RUN_DIR`: re-check a finished run's invariants offline (exit 0 all hold, 1 one broke).

The trace is read in one streaming pass (oomemu/check/__init__.py check_run), so a long run's check needs
memory for the machine, not for the run; a progress line follows it on stderr after the first second.
"""
import sys


def add_arguments(p):
    p.add_argument("run_dir", help="a run directory written by `oomemu run`")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def batch_hint(run_dir):
    """For a --repeat batch directory: one line pointing at its runs, else None."""
    runs = sorted(p.name for p in run_dir.glob("run[0-9][0-9][0-9]") if p.is_dir())
    if not runs:
        return None
    shown = ", ".join(str(run_dir / r) for r in runs[:3]) + (", ..." if len(runs) > 3 else "")
    return f"{run_dir}: a --repeat batch directory of {len(runs)} runs; give one of them: {shown}"


def execute(args):
    from pathlib import Path
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"oomemu: error: {run_dir}: no such run directory", file=sys.stderr)
        return 2
    hint = batch_hint(run_dir)
    if hint and not (run_dir / "machine.npz").exists():
        print(f"oomemu: error: {hint}", file=sys.stderr)
        return 2
    for name in ("trace.msgpack", "machine.npz"):
        if not (run_dir / name).is_file():
            print(f"oomemu: error: {run_dir}: no {name} (not a finished run directory, or run with trace = false)",
                  file=sys.stderr)
            return 2
    import json

    from oomemu.check import check_run
    from oomemu.check.state import load_state
    from oomemu.cli.progress import CheckProgress
    progress = None if args.json else CheckProgress()
    try:
        state = load_state(run_dir / "machine.npz")
        found = check_run(run_dir, state, snapshots_expected=False, detect=False, on_progress=progress)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input here
        print(f"oomemu: error: {run_dir}: cannot read the run: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.close()
    results = found.results
    report_path = run_dir / "report.json"
    if report_path.is_file():
        try:
            recorded = [c for c in json.loads(report_path.read_text()).get("checks", [])
                        if c["invariant"] == "page-conservation-snapshots"]
        except (ValueError, KeyError, TypeError, AttributeError):
            recorded = []
        if recorded:
            results.insert(len(results) - 1, dict(recorded[0], recorded=True))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            note = " (recorded during the run)" if r.get("recorded") else ""
            status = r.get("status") or ("ok" if r["ok"] else "BROKEN")
            print(f"{r['invariant']:32s} {status}  [{r['ref']}]{note}")
            for d in r["details"][:5]:
                print(f"    {d}")
        print(f"checked {found.stats['records']:,} records in {found.stats['seconds']:.1f} s")
    return 1 if any(r["ok"] is False for r in results) else 0
