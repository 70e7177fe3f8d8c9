"""A sweep's plots (PNG, matplotlib): the hit rate and each metric against each axis, one line per value of a
second axis, with intervals (rates: 95% Wilson; metrics: median with the quartiles); a heatmap of the hit rate
for two axes. Runs that differ in other axes are pooled."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from oomemu.experiment.keypath import short_name
from oomemu.experiment.metrics import percentile
from oomemu.experiment.results import wilson_interval
from oomemu.experiment.spec import value_label

PLOTS_DIR = "plots"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _positions(axis):
    """x positions for an axis' values: the values themselves if numeric, else 0, 1, 2 ... with labels."""
    values = list(axis["values"])
    if _numeric(values):
        return {v: v for v in values}, None
    return {v: i for i, v in enumerate(values)}, [value_label(axis["path"], v) for v in values]


def _pooled(rows, cell_values, fixed):
    """The rows whose cell matches every (path, value) in `fixed`."""
    return [r for r in rows if all(cell_values[r["cell"]][p] == v for p, v in fixed.items())]


def _rate(rows):
    n = len(rows)
    k = sum(1 for r in rows if r["hit"] in (True, "True", 1))
    lo, hi = wilson_interval(k, n)
    return (k / n if n else None), lo, hi


def _median(rows, metric):
    vals = sorted(float(r[metric]) for r in rows if isinstance(r.get(metric), (int, float))
                  and not isinstance(r.get(metric), bool))
    if not vals:
        return None, None, None
    return percentile(vals, 50), percentile(vals, 25), percentile(vals, 75)


def _dodge(xs, k, categorical, log, all_x):
    """Shift line k's points a little sideways so overlapping lines and their intervals stay visible."""
    if categorical:
        return [x + 0.04 * k for x in xs]
    lo, hi = min(all_x), max(all_x)
    if log and lo > 0:
        return [x * (hi / lo) ** (0.012 * k) for x in xs]
    return [x + (hi - lo) * 0.012 * k for x in xs]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def render(out, summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    """Write every plot under out/plots/; returns their paths."""
    plt = _plt()
    pdir = Path(out) / PLOTS_DIR
    pdir.mkdir(parents=True, exist_ok=True)
    axes = summary["axes"]
    cell_values = {c["cell"]: c["values"] for c in summary["cells"]}
    rows = [r for r in rows if r["cell"] in cell_values]
    hit = summary.get("hit") or "race"
    quantities = [("rate", f"{hit} rate")] + [(m, m) for m in summary["metrics"]]
    written = []
    for xi, xaxis in enumerate(axes):
        others = [a for a in axes if a is not xaxis]
        line_axis = others[0] if others else None
        pos, labels = _positions(xaxis)
        for key, title in quantities:
            fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=80)
            lines = line_axis["values"] if line_axis else [None]
            for j, lv in enumerate(lines):
                xs, ys, lo, hi = [], [], [], []
                for xv in xaxis["values"]:
                    fixed = {xaxis["path"]: xv}
                    if line_axis is not None:
                        fixed[line_axis["path"]] = lv
                    sel = _pooled(rows, cell_values, fixed)
                    if not sel:
                        continue
                    y, a, b = _rate(sel) if key == "rate" else _median(sel, key)
                    if y is None:
                        continue
                    xs.append(pos[xv])
                    ys.append(y)
                    lo.append(max(0.0, y - a))           # rounding can put a bound a hair inside
                    hi.append(max(0.0, b - y))
                if not xs:
                    continue
                label = (f"{short_name(line_axis['path'])}={value_label(line_axis['path'], lv)}"
                         if line_axis is not None else None)
                xs = _dodge(xs, j - (len(lines) - 1) / 2, bool(labels), xaxis.get("log"), list(pos.values()))
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
            ax.set_xlabel(xaxis["path"])
            ax.set_ylabel(title)
            if key == "rate":
                ax.set_ylim(-0.03, 1.03)
            if labels:
                ax.set_xticks(range(len(labels)), labels)
            elif xaxis.get("log"):
                ax.set_xscale("log")
                ax.set_xticks(list(xaxis["values"]), [str(v) for v in xaxis["values"]])
                ax.minorticks_off()
            if line_axis is not None:
                ax.legend(fontsize="small")
            interval = "95% Wilson interval" if key == "rate" else "median, quartiles"
            pooled = f"; pooled over {', '.join(short_name(a['path']) for a in others[1:])}" if others[1:] else ""
            ax.set_title(f"{summary['name']}: {title} ({interval}{pooled})", fontsize="medium")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = pdir / f"{_slug(key if key != 'rate' else hit + '-rate')}-vs-{_slug(short_name(xaxis['path']))}.png"
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
    if len(axes) >= 2:
        written.append(_heatmap(plt, pdir, summary, rows, cell_values, axes[0], axes[1], hit))
    return written


def _heatmap(plt, pdir, summary, rows, cell_values, xa, ya, hit):
    import numpy as np
    grid = np.full((len(ya["values"]), len(xa["values"])), np.nan)
    counts = np.zeros_like(grid)
    for i, yv in enumerate(ya["values"]):
        for j, xv in enumerate(xa["values"]):
            sel = _pooled(rows, cell_values, {xa["path"]: xv, ya["path"]: yv})
            if sel:
                grid[i, j] = _rate(sel)[0]
                counts[i, j] = len(sel)
    fig, ax = plt.subplots(figsize=(1.2 + 1.0 * len(xa["values"]), 1.2 + 0.7 * len(ya["values"])), dpi=80)
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}\nn={int(counts[i, j])}", ha="center", va="center",
                        fontsize="x-small", color="white" if grid[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(xa["values"])), [value_label(xa["path"], v) for v in xa["values"]])
    ax.set_yticks(range(len(ya["values"])), [value_label(ya["path"], v) for v in ya["values"]])
    ax.set_xlabel(xa["path"])
    ax.set_ylabel(ya["path"])
    ax.set_title(f"{summary['name']}: {hit} rate", fontsize="medium")
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    path = pdir / f"heatmap-{_slug(hit)}-{_slug(short_name(xa['path']))}-{_slug(short_name(ya['path']))}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
