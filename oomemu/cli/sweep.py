"""`oomemu sweep SWEEP.toml [-j N] [--engine local|ray] [--address ADDR] [--out DIR]`: run a sweep of a scenario
over parameter axes; `oomemu sweep --report DIR` re-renders a finished one.

Every cell is validated before anything runs. Runs already in DIR/results.csv are skipped (resume); Ctrl-C
stops the runs in flight and keeps every finished one. Writes DIR/results.csv, summary.json, plots/*.png and
prints the table. Exit status: 0 every run finished, 1 some run failed in the emulator, 2 bad input,
130 interrupted.
"""
import sys


def add_arguments(p):
    p.add_argument("sweep", nargs="?", help="sweep TOML file (see configs/sweeps/)")
    p.add_argument("-j", "--jobs", type=int, metavar="N",
                   help="runs side by side (default: one per core; with --engine ray: the cluster's CPUs)")
    p.add_argument("--engine", default="local", metavar="ENGINE", help="local (a process pool, default) or ray")
    p.add_argument("--address", metavar="ADDR", help="with --engine ray: auto, HOST:PORT or ray://HOST:PORT")
    p.add_argument("--out", metavar="DIR", help="results directory (default: runs/sweeps/<sweep name>)")
    p.add_argument("--report", metavar="DIR", help="re-render the summary, table and plots of a sweep in DIR")
    p.add_argument("--lean", action="store_true",
                   help="keep only report.json, scenario.json and dmesg.log of each run (no trace)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    p.add_argument("--dry-run", action="store_true",
                   help="validate every cell and list the cells, their runs' seeds and which are done; run nothing")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no table")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")


def _error(msg):
    print(f"oomemu: error: {msg}", file=sys.stderr)
    return 2


def execute(args):
    from oomemu.errors import ScenarioError
    if args.report:
        if args.sweep:
            return _error("give a sweep file or --report DIR, not both")
        try:
            from oomemu.experiment.sweep import rerender
            result = rerender(args.report, plots=not args.no_plots)
        except ScenarioError as exc:
            return _error(str(exc))
        _print(args, result, rerendered=True)
        return 0
    if not args.sweep:
        return _error("a sweep file is needed (or --report DIR)")
    if args.jobs is not None and not 1 <= args.jobs <= 256:
        return _error(f"-j {args.jobs}: must be an integer from 1 to 256")
    try:
        from oomemu.experiment.engine import make_engine
        from oomemu.experiment.spec import load_sweep
        sweep = load_sweep(args.sweep)
        if args.dry_run:
            return _dry_run(sweep, args.out)
        engine = make_engine(args.engine, args.jobs, args.address)
    except ScenarioError as exc:
        return _error(str(exc))
    from oomemu.experiment.sweep import run_sweep
    bar = None if args.quiet or args.json else _Bar(sweep, engine)
    try:
        result = run_sweep(sweep, out=args.out, engine=engine, lean=args.lean, plots=not args.no_plots,
                           on_start=bar.start if bar else None, on_row=bar.row if bar else None)
    except ScenarioError as exc:                   # e.g. the Ray cluster went away at connect time
        return _error(str(exc))
    finally:
        if bar is not None:
            bar.close()
    _print(args, result)
    for err in result.errors[:3]:
        print(f"oomemu: error: a run failed: {err}", file=sys.stderr)
    if result.interrupted:
        print(f"oomemu: sweep interrupted: {len(result.rows)} runs kept in {result.out}; run it again to "
              f"resume", file=sys.stderr)
        return 130
    return 1 if result.errors else 0


def _dry_run(sweep, out):
    """Every cell with its runs' seeds (and which runs the results directory already has)."""
    from pathlib import Path

    from oomemu.experiment.results import read_rows
    from oomemu.experiment.sweep import default_out
    out = Path(out) if out else default_out(sweep)
    done = {r["run_id"] for r in read_rows(out)}
    for cell in sweep.cells:
        runs = [r for r in sweep.runs if r.cell.index == cell.index]
        seeds = " ".join(f"{r.seed}{'*' if r.run_id in done else ''}" for r in runs)
        print(f"cell {cell.index:3d}  {cell.label() or '(base)'}  seeds {seeds}")
    ndone = sum(r.run_id in done for r in sweep.runs)
    print(f"{len(sweep.cells)} cells, {len(sweep.runs)} runs, all valid; {ndone} already in {out} (*)")
    return 0


def _print(args, result, rerendered=False):
    if args.json:
        import json
        print(json.dumps(result.summary, indent=2))
        return
    if args.quiet:
        return
    from oomemu.experiment.results import table_lines
    print("\n".join(table_lines(result.summary)))
    if rerendered:
        print(f"re-rendered from {result.out / 'results.csv'}"
              + (f"; {len(result.plots)} plots in {result.out / 'plots'}" if result.plots else ""))
        return
    extra = f", {result.skipped} already done" if result.skipped else ""
    print(f"{result.ran} runs this time{extra}; results in {result.out}"
          + (f"; {len(result.plots)} plots in {result.out / 'plots'}" if result.plots else ""))


class _Bar:
    """The live progress bar: runs done of the total, hits so far, elapsed time and ETA (on stderr)."""

    def __init__(self, sweep, engine):
        self.sweep, self.engine = sweep, engine
        self.progress = None
        self.hits = 0

    def start(self, todo, done):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        console = Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("runs  hits {task.fields[hits]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
        self.progress.start()
        where = f"{self.engine.name}" + (f" -j {self.engine.jobs}" if getattr(self.engine, "jobs", None) else "")
        self.task = self.progress.add_task(f"sweep {self.sweep.name} ({where})", total=todo, hits=0)
        if done:
            console.print(f"{done} of {todo + done} runs already done: skipped")

    def row(self, row):
        self.hits += bool(row["hit"])
        self.progress.update(self.task, advance=1, hits=self.hits)

    def close(self):
        if self.progress is not None:
            self.progress.stop()
