"""A sweep from start to finish: skip the runs already in the results (resume), map the rest over an engine,
append each row as it comes, then write summary.json and the plots."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from oomemu.experiment import results as res
from oomemu.experiment.spec import Sweep


@dataclass
class SweepResult:
    """What a sweep left: every row (old and new, in run order), the summary, and how this call went."""

    out: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    ran: int = 0                     # runs this call finished
    skipped: int = 0                 # runs already in the results
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    plots: list[Path] = field(default_factory=list)


def default_out(sweep: Sweep) -> Path:
    """runs/sweeps/<name>/: the same place every time, so running the sweep again resumes it."""
    return Path("runs") / "sweeps" / sweep.name


def run_sweep(sweep: Sweep, out=None, engine=None, *, lean=False, plots=True,
              on_start: Callable[[int, int], None] | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Run every run of `sweep` not yet in out/results.csv on `engine` (default: the local pool)."""
    from oomemu.experiment.engine import LocalEngine
    out = Path(out) if out is not None else default_out(sweep)
    out.mkdir(parents=True, exist_ok=True)
    engine = engine or LocalEngine()
    desc = sweep.describe()
    desc["engine"] = engine.name
    (out / res.SWEEP_JSON).write_text(json.dumps(desc, indent=2, default=str) + "\n")
    header = res.columns(desc["axes"], sweep.metrics) + ["wall_s", "replay"]
    wanted = {r.run_id for r in sweep.runs}
    by_id = {r.run_id: r for r in sweep.runs}
    existing = [r for r in res.read_rows(out) if r.get("run_id") in wanted]
    for row in existing:                       # the cell's index and values as this sweep numbers them
        spec = by_id[row["run_id"]]
        row.update(spec.cell.values, cell=spec.cell.index)
    done = {r["run_id"] for r in existing}
    todo = [r for r in sweep.runs if r.run_id not in done]
    rows = {r["run_id"]: r for r in existing}
    result = SweepResult(out=out, rows=[], summary={}, skipped=len(done))
    tasks = [_task(sweep, out, r, lean) for r in todo]
    file = None

    def on_result(kind, payload):
        if kind == "ok":
            file.add(payload)
            rows[payload["run_id"]] = payload
            result.ran += 1
            if on_row is not None:
                on_row(payload)
        elif kind == "error":
            result.errors.append(payload.strip().splitlines()[-1])

    t0 = time.monotonic()
    try:
        if hasattr(engine, "start"):
            engine.start(len(todo))        # fork the pool / connect before a progress bar's thread exists
        file = res.ResultsFile(out, header, existing)
        if on_start is not None:
            on_start(len(todo), len(done))
        engine.map(tasks, on_result)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if hasattr(engine, "close"):
            engine.close()
        if file is not None:
            file.close()
        result.wall_s = time.monotonic() - t0
    order = {r.run_id: i for i, r in enumerate(sweep.runs)}
    result.rows = sorted(rows.values(), key=lambda r: order[r["run_id"]])
    result.summary = res.summarize(desc, result.rows)
    res.write_summary(out, result.summary)
    if plots and result.rows:
        from oomemu.experiment.plots import render
        result.plots = render(out, result.summary, result.rows)
    return result


def _task(sweep: Sweep, out: Path, run, lean: bool) -> dict[str, Any]:
    row = {"run_id": run.run_id, "cell": run.cell.index, "repeat": run.repeat, "seed": run.seed}
    row.update(run.cell.values)
    return {"scenario": run.scenario, "run_dir": str((out / "runs" / run.dir_name).resolve()),
            "metrics": list(sweep.metrics), "hit": run.hit, "lean": lean, "run_id": run.run_id, "row": row}


def rerender(out, plots=True) -> SweepResult:
    """`oomemu sweep --report DIR`: the summary, table and plots again from DIR's finished results."""
    out = Path(out)
    desc_path = out / res.SWEEP_JSON
    if not desc_path.exists() or not (out / res.RESULTS).exists():
        from oomemu.errors import ScenarioError
        raise ScenarioError(f"--report {out}: not a sweep directory (no {res.SWEEP_JSON} and {res.RESULTS})")
    desc = json.loads(desc_path.read_text())
    rows = sorted(res.read_rows(out), key=lambda r: (r["cell"], r["repeat"]))
    summary = res.summarize(desc, rows)
    res.write_summary(out, summary)
    from oomemu.experiment.plots import render
    drawn = render(out, summary, rows) if rows and plots else []
    return SweepResult(out=out, rows=rows, summary=summary, plots=drawn)
