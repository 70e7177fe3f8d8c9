"""A sweep's results: results.csv (one row per finished run), summary.json (per cell: n, each verdict's rate
with its 95% Wilson interval, metric medians and spread) and the printed table."""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

from oomemu.experiment.metrics import percentile

RESULTS = "results.csv"
SUMMARY = "summary.json"
SWEEP_JSON = "sweep.json"
FIXED_COLUMNS = ("run_id", "cell", "repeat", "seed", "verdict", "exit_code", "ended_by", "hit", "elapsed_s",
                 "run_dir")


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval for k successes in n trials."""
    from oomemu.report import wilson_interval as report_wilson
    return report_wilson(k, n, z)


def columns(axes, metrics) -> list[str]:
    return list(FIXED_COLUMNS[:3]) + [a["path"] for a in axes] + list(FIXED_COLUMNS[3:]) + list(metrics)


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of out/results.csv with numbers parsed back (missing file: no rows)."""
    path = Path(out) / RESULTS
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _parse(text: str | None) -> Any:
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


class ResultsFile:
    """results.csv, appended one row at a time (flushed, so Ctrl-C or a crash keeps every finished run)."""

    def __init__(self, out: Path, header: list[str], existing: list[dict[str, Any]]):
        self.path = Path(out) / RESULTS
        self.header = header
        old_header = None
        if self.path.exists():
            with open(self.path, newline="") as f:
                old_header = next(csv.reader(f), None)
        if old_header != header:             # new axes or metrics: rewrite what is there under the new header
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, header, extrasaction="ignore")
                w.writeheader()
                w.writerows(existing)
        self.f = open(self.path, "a", newline="")
        self.w = csv.DictWriter(self.f, header, extrasaction="ignore")

    def add(self, row: dict[str, Any]) -> None:
        self.w.writerow(row)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


# --- summary ------------------------------------------------------------------------------------------------------

def summarize(desc: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json: per cell (in cell order) n, hits, every verdict's count and rate with its 95% Wilson
    interval, and each metric's median, quartiles, min, max and mean over the cell's runs."""
    axes = [a["path"] for a in desc["axes"]]
    by_cell: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault(int(row["cell"]), []).append(row)
    verdicts = sorted({r["verdict"] for r in rows} | ({desc["hit"]} if desc.get("hit") else set()))
    cells = []
    for index in sorted(by_cell):
        runs = sorted(by_cell[index], key=lambda r: r["repeat"])
        n = len(runs)
        values = desc["cells"][index]
        entry: dict[str, Any] = {"cell": index, "values": {a: values[a] for a in axes}, "n": n}
        hits = sum(1 for r in runs if r["hit"])
        entry["hits"] = {"count": hits, "rate": hits / n, "ci95": list(wilson_interval(hits, n))}
        entry["verdicts"] = {}
        for v in verdicts:
            k = sum(1 for r in runs if r["verdict"] == v)
            entry["verdicts"][v] = {"count": k, "rate": k / n, "ci95": list(wilson_interval(k, n))}
        entry["metrics"] = {}
        for m in desc["metrics"]:
            vals = [float(r[m]) for r in runs if isinstance(r.get(m), (int, float)) and not isinstance(r[m], bool)]
            entry["metrics"][m] = _spread(vals)
        cells.append(entry)
    return {"format": "oomemu-sweep-summary", "version": 1, "name": desc["name"], "hit": desc.get("hit"),
            "axes": desc["axes"], "metrics": desc["metrics"], "runs": len(rows), "cells": cells,
            "verdicts": verdicts}


def _spread(vals: list[float]) -> dict[str, Any]:
    if not vals:
        return {"n": 0, "median": None, "p25": None, "p75": None, "min": None, "max": None, "mean": None}
    return {"n": len(vals), "median": statistics.median(vals), "p25": percentile(vals, 25),
            "p75": percentile(vals, 75), "min": min(vals), "max": max(vals), "mean": statistics.fmean(vals)}


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (Path(out) / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")


# --- the printed table ----------------------------------------------------------------------------------------------

def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.0f}" if v.is_integer() or abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def table_lines(summary: dict[str, Any]) -> list[str]:
    """One line per cell: the axis values, n, the hit rate with its interval, and each metric's median."""
    from oomemu.experiment.keypath import short_name
    from oomemu.experiment.spec import value_label
    axes = [a["path"] for a in summary["axes"]]
    hit = summary.get("hit") or "race"
    head = [short_name(a) for a in axes] + ["n", f"{hit} rate (95% CI)"] + list(summary["metrics"])
    rows = [head]
    for c in summary["cells"]:
        h = c["hits"]
        rows.append([value_label(a, c["values"][a]) if a == "base" else _num(c["values"][a]) for a in axes]
                    + [str(c["n"]),
                    f"{h['rate']:.2f} [{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}]"]
                    + [_num(c["metrics"][m]["median"]) for m in summary["metrics"]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.rjust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append(f"{summary['runs']} runs in {len(summary['cells'])} cells"
               + ("; metrics: the median over a cell's runs (summary.json has quartiles, min, max, mean)"
                  if summary["metrics"] else ""))
    return out
