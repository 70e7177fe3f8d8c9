"""Sweep files: a base scenario, axes (key paths -> values), a mode, repeats, a seed and the metrics to record.

```toml
base = "configs/races/r3-extra-kill.toml"    # or an inline [scenario] table; relative to this file or the cwd
mode = "grid"                                # every combination of the axes; "zip": the i-th value of each
repeat = 4                                   # runs per cell
seed = 1                                     # each run's run.seed is derived from it, the cell and the repeat
hit = "extra-kill"                           # the verdict counted as a hit (default: the base's expect.verdict)
metrics = ["kills", "oom_invocations", "kill_latency_p50_ms"]

[set]                                        # fixed overrides for every cell
"run.seconds" = 3

[sweep]                                      # the axes
"machine.cpus" = [2, 4, 8]
"sysctl.min_free_kbytes" = { range = [512, 8192], steps = 5, scale = "log" }
```

Every cell is built and validated against the scenario schema before anything runs; the first bad one is a
ScenarioError naming the axis, the cell and what the schema allows.

Seeds. Run r of a cell gets `run.seed = derive_seed(seed, cell, r)`: a hash of the sweep's seed, the cell's
values (by key path, not by position, so adding a value to an axis leaves every other cell's seeds alone) and
r. The resolved scenario of a run, seed included, is what identifies it (`run_id`): a sweep run again skips
every run already in its results, and in the controlled schedules (`run.schedule = "pct"` ...), whose choices
come from run.seed, the same run_id replays the same run. A cell that sets `run.seed` itself (an axis or
[set]) keeps that seed, plus r for its repeats.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomemu.errors import ScenarioError
from oomemu.experiment.keypath import get_key_path, parse_key_path, set_key_path, short_name

TOP_KEYS = ("base", "scenario", "name", "mode", "repeat", "seed", "hit", "metrics", "set", "sweep")
MODES = ("grid", "zip")
MAX_RUNS = 100000
RACE_FREE = ("no-oom-kill", "oom-kill")   # verdicts that are not a race; the default hit is any other
BASE_AXIS = "base"                          # an axis over whole scenario files (e.g. one per race)


@dataclass(frozen=True)
class Axis:
    """One axis: a key path and its values (in order); `log` if it came from a log-scale range."""

    path: str
    values: tuple[Any, ...]
    log: bool = False

    @property
    def name(self) -> str:
        return short_name(self.path)


@dataclass(frozen=True)
class Cell:
    """One point of the sweep: its index and the value of each axis (key path -> value)."""

    index: int
    values: Mapping[str, Any]

    def label(self) -> str:
        return ", ".join(f"{short_name(k)}={value_label(k, v)}" for k, v in self.values.items())

    def slug(self) -> str:
        text = "_".join(f"{short_name(k)}{value_label(k, v)}" for k, v in self.values.items()) or "base"
        return "".join(c if c.isalnum() or c in "._-=" else "-" for c in text)[:80]


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: its cell, repeat index, seed, validated scenario and identity."""

    cell: Cell
    repeat: int
    seed: int
    scenario: Any            # oomemu.config.Scenario
    run_id: str
    hit: str | None = None   # the verdict that counts as a hit for this run (None: any race verdict)

    @property
    def dir_name(self) -> str:
        return f"c{self.cell.index:03d}-{self.cell.slug()}-r{self.repeat:02d}-{self.run_id[:8]}"


@dataclass
class Sweep:
    """A loaded, fully validated sweep."""

    name: str
    source: str
    base_source: str
    base_document: dict[str, Any]
    axes: tuple[Axis, ...]
    mode: str
    repeat: int
    seed: int
    hit: str | None
    metrics: tuple[str, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    here: Path | None = None
    hit_given: bool = False
    cells: tuple[Cell, ...] = ()
    runs: tuple[RunSpec, ...] = ()

    def describe(self) -> dict[str, Any]:
        """What `--report` needs to re-render: the axes, the metrics, the hit verdict."""
        return {"format": "oomemu-sweep", "version": 1, "name": self.name, "source": self.source,
                "base": self.base_source, "mode": self.mode, "repeat": self.repeat, "seed": self.seed,
                "hit": self.hit if self.hit_given or not self.per_base_hit else None,
                "metrics": list(self.metrics), "set": dict(self.fixed),
                "axes": [{"path": a.path, "values": list(a.values), "log": a.log} for a in self.axes],
                "cells": [dict(c.values) for c in self.cells], "runs": len(self.runs)}

    @property
    def per_base_hit(self) -> bool:
        """With a `base` axis and no `hit`, each cell's hit is its own scenario's [expect] verdict."""
        return any(a.path == BASE_AXIS for a in self.axes) and not self.hit_given


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def value_label(path: str, v: Any) -> str:
    """How an axis value is shown: a `base` axis by its scenario's file stem."""
    return Path(str(v)).stem if path == BASE_AXIS else _fmt(v)


def derive_seed(sweep_seed: int, cell_values: Mapping[str, Any], repeat: int) -> int:
    """A 32-bit run seed from the sweep's seed, the cell's values (by key path) and the repeat index."""
    text = json.dumps([sweep_seed, sorted(cell_values.items()), repeat], sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


def scenario_id(document: Mapping[str, Any]) -> str:
    """A stable identity of a resolved scenario (its plain data, seed included)."""
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- loading ----------------------------------------------------------------------------------------------------

def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """The sweep in the TOML file at `path`, every cell validated."""
    path = Path(path)
    source = os.fspath(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"sweep file not found: {source}") from None
    except IsADirectoryError:
        raise ScenarioError(f"sweep path is a directory, not a file: {source}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{source}: TOML syntax error: {error}") from None
    return sweep_from_dict(doc, name=path.stem, source=source, here=path.parent)


def sweep_from_dict(doc: Mapping[str, Any], *, name: str = "sweep", source: str = "<sweep>",
                    here: Path | None = None) -> Sweep:
    """The sweep in an already parsed document; `here` is where a relative `base` is looked up first."""
    def bad(msg: str) -> ScenarioError:
        return ScenarioError(f"{source}: {msg}")

    if not isinstance(doc, Mapping):
        raise bad("a sweep must be a table")
    for key in doc:
        if key not in TOP_KEYS:
            raise bad(f"{key}: unknown key; allowed: {', '.join(TOP_KEYS)}")
    axes_doc = doc.get("sweep", {})
    if isinstance(axes_doc, Mapping) and BASE_AXIS in axes_doc and ("base" in doc or "scenario" in doc):
        raise bad("a \"base\" axis replaces base = / [scenario]: give one or the other")
    base_doc, base_source, base_name = _base(doc, source, here)
    mode = doc.get("mode", "grid")
    if mode not in MODES:
        raise bad(f"mode = {mode!r}: must be one of {', '.join(MODES)}")
    repeat = doc.get("repeat", 1)
    if not _is_int(repeat) or not 1 <= repeat <= 10000:
        raise bad(f"repeat = {repeat!r}: must be an integer from 1 to 10000")
    seed = doc.get("seed", 1)
    if not _is_int(seed) or seed < 0:
        raise bad(f"seed = {seed!r}: must be an integer >= 0")
    from oomemu.experiment.metrics import check_metric
    metrics = doc.get("metrics", ["kills", "oom_invocations"])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise bad(f"metrics = {metrics!r}: must be a list of metric names")
    for m in metrics:
        try:
            check_metric(m)
        except ScenarioError as error:
            raise bad(f"metrics: {error}") from None
    fixed = doc.get("set", {})
    if not isinstance(fixed, Mapping):
        raise bad("set: must be a table of key paths and values")
    axes_doc = doc.get("sweep", {})
    if not isinstance(axes_doc, Mapping):
        raise bad("sweep: must be a table of axes (key path = list of values, or { range = ... })")
    axes = tuple(_axis(p, v, source) for p, v in axes_doc.items())
    overlap = set(fixed) & set(axes_doc)
    if overlap:
        raise bad(f"{sorted(overlap)[0]}: both an axis and in [set]")
    if mode == "zip" and axes:
        lengths = {a.path: len(a.values) for a in axes}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            raise bad(f"mode = \"zip\" needs axes of equal length: {listed}")
    hit = doc.get("hit")
    from oomemu.config.schema import VERDICTS
    if hit is not None and hit not in VERDICTS:
        raise bad(f"hit = {hit!r}: unknown verdict; allowed: {', '.join(VERDICTS)}")
    if hit is None:
        hit = get_key_path(base_doc, "expect.verdict")
    hit_given = "hit" in doc
    sweep = Sweep(name=doc.get("name", name), source=source, base_source=base_source, base_document=base_doc,
                  axes=axes, mode=mode, repeat=repeat, seed=seed, hit=hit, metrics=tuple(metrics),
                  fixed=dict(fixed), here=here, hit_given=hit_given)
    _expand(sweep, base_name)
    return sweep


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _base(doc: Mapping[str, Any], source: str, here: Path | None) -> tuple[dict[str, Any], str, str]:
    """The base scenario's raw document, where it came from, and its name."""
    axes = doc.get("sweep")
    if isinstance(axes, Mapping) and isinstance(axes.get(BASE_AXIS), list) and axes[BASE_AXIS]:
        return _base({"base": axes[BASE_AXIS][0]}, f"{source}: axis \"base\"", here)
    if "base" in doc and "scenario" in doc:
        raise ScenarioError(f"{source}: give either base = \"FILE\" or an inline [scenario], not both")
    if "scenario" in doc:
        if not isinstance(doc["scenario"], Mapping):
            raise ScenarioError(f"{source}: scenario: must be a table (an inline scenario)")
        return dict(doc["scenario"]), f"{source} [scenario]", Path(source).stem
    if "base" not in doc:
        from oomemu.config import DEFAULT_SCENARIO_PATH
        return tomllib.loads(DEFAULT_SCENARIO_PATH.read_text()), "<default>", "default"
    base = doc["base"]
    if not isinstance(base, str) or not base:
        raise ScenarioError(f"{source}: base = {base!r}: must be the path of a scenario file")
    candidates = ([here / base] if here is not None else []) + [Path(base)]
    for cand in candidates:
        if cand.is_file():
            try:
                return tomllib.loads(cand.read_text()), os.fspath(cand), cand.stem
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
                raise ScenarioError(f"{cand}: TOML syntax error: {error}") from None
    raise ScenarioError(f"{source}: base = {base!r}: scenario file not found (looked in "
                        f"{', '.join(os.fspath(c) for c in candidates)})")


def _axis(path: str, spec: Any, source: str) -> Axis:
    """One axis from its file form: a list of values, or { range = [lo, hi], steps = N | step = S, scale }."""
    where = f"{source}: axis \"{path}\""
    if path == BASE_AXIS:
        if not isinstance(spec, list) or not spec or not all(isinstance(v, str) and v for v in spec):
            raise ScenarioError(f"{where}: must be a non-empty list of scenario file paths")
        return Axis(path, tuple(spec))
    try:
        parse_key_path(path)
    except ScenarioError as error:
        raise ScenarioError(f"{where}: {error}") from None
    if isinstance(spec, list):
        if not spec:
            raise ScenarioError(f"{where}: empty axis; give at least one value")
        return Axis(path, tuple(spec))
    if not isinstance(spec, Mapping) or "range" not in spec:
        raise ScenarioError(f"{where}: must be a list of values or {{ range = [lo, hi], steps = N, "
                            f"scale = \"linear\" | \"log\" }}")
    unknown = set(spec) - {"range", "steps", "step", "scale"}
    if unknown:
        raise ScenarioError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: range, steps, step, scale")
    rng = spec["range"]
    if (not isinstance(rng, list) or len(rng) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rng) or rng[0] > rng[1]):
        raise ScenarioError(f"{where}: range = {rng!r}: must be [lo, hi], two numbers with lo <= hi")
    scale = spec.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise ScenarioError(f"{where}: scale = {scale!r}: must be \"linear\" or \"log\"")
    lo, hi = rng
    ints = _is_int(lo) and _is_int(hi) and ("step" not in spec or _is_int(spec["step"]))
    if "step" in spec:
        step = spec["step"]
        if scale == "log" or "steps" in spec or not isinstance(step, (int, float)) or isinstance(step, bool) \
                or step <= 0:
            raise ScenarioError(f"{where}: step = {step!r}: must be a number > 0, with a linear scale and no steps")
        n = int(math.floor((hi - lo) / step + 1e-9)) + 1
        values = [lo + i * step for i in range(n)]
    else:
        steps = spec.get("steps", 5)
        if not _is_int(steps) or not 1 <= steps <= 1000:
            raise ScenarioError(f"{where}: steps = {steps!r}: must be an integer from 1 to 1000")
        if scale == "log" and lo <= 0:
            raise ScenarioError(f"{where}: range = {rng!r}: a log scale needs lo > 0")
        if steps == 1:
            values = [lo]
        elif scale == "log":
            values = [lo * (hi / lo) ** (i / (steps - 1)) for i in range(steps)]
        else:
            values = [lo + (hi - lo) * i / (steps - 1) for i in range(steps)]
    values = [round(v) for v in values] if ints else [round(float(v), 12) for v in values]
    return Axis(path, tuple(dict.fromkeys(values)), log=scale == "log")


def _expand(sweep: Sweep, base_name: str) -> None:
    """Build every cell's scenario, validate it, and derive every run: the first bad cell raises."""
    from oomemu.config.load import scenario_from_dict
    from oomemu.config.schema import scenario_to_dict
    axes = sweep.axes
    if sweep.mode == "grid":
        combos = list(itertools.product(*(a.values for a in axes)))
    else:
        combos = list(zip(*(a.values for a in axes))) if axes else [()]
    if len(combos) * sweep.repeat > MAX_RUNS:
        raise ScenarioError(f"{sweep.source}: {len(combos)} cells x repeat {sweep.repeat} = "
                            f"{len(combos) * sweep.repeat} runs, more than {MAX_RUNS}")
    bases: dict[str, tuple[dict[str, Any], str, str]] = {}
    cells, runs = [], []
    for index, combo in enumerate(combos):
        cell = Cell(index, dict(zip((a.path for a in axes), combo)))
        where = f"{sweep.source}: axis \"{BASE_AXIS}\", cell {index} ({cell.label()})"
        if BASE_AXIS in cell.values:
            file = cell.values[BASE_AXIS]
            if file not in bases:
                bases[file] = _base({"base": file}, where, sweep.here)
            doc, source, name = bases[file]
        else:
            doc, source, name = sweep.base_document, sweep.base_source, base_name
        hit = sweep.hit if sweep.hit_given or BASE_AXIS not in cell.values else get_key_path(doc, "expect.verdict")
        for path, value in sweep.fixed.items():
            doc = _apply(doc, path, value, f"{sweep.source}: [set] \"{path}\"")
        for axis, value in zip(axes, combo):
            if axis.path == BASE_AXIS:
                continue
            doc = _apply(doc, axis.path, value, f"{sweep.source}: axis \"{axis.path}\", cell {index} "
                                                f"({cell.label()})")
        own_seed = "run.seed" in cell.values or "run.seed" in sweep.fixed
        for r in range(sweep.repeat):
            seed = get_key_path(doc, "run.seed", 0) + r if own_seed else derive_seed(sweep.seed, cell.values, r)
            run_doc = set_key_path(doc, "run.seed", seed)
            try:
                scenario = scenario_from_dict(run_doc, name=name, source=source)
            except ScenarioError as error:
                raise ScenarioError(f"{sweep.source}: {_blame(error, cell, sweep.fixed)}, cell {index} "
                                    f"({cell.label()}): {error}") from None
            runs.append(RunSpec(cell, r, seed, scenario, scenario_id(scenario_to_dict(scenario)), hit))
        cells.append(cell)
    sweep.cells, sweep.runs = tuple(cells), tuple(runs)


def _apply(doc: dict[str, Any], path: str, value: Any, where: str) -> dict[str, Any]:
    try:
        return set_key_path(doc, path, value)
    except ScenarioError as error:
        raise ScenarioError(f"{where}: {error}") from None


def _blame(error: ScenarioError, cell: Cell, fixed: Mapping[str, Any]) -> str:
    """Which axis a schema error is about: the one whose key path it names (or the [set] key), else every
    axis of the cell."""
    where = error.path or ""

    def under(path: str) -> bool:
        return where == path or where.startswith(path + ".") or where.startswith(path + "[")
    for path in cell.values:
        if under(path):
            return f"axis \"{path}\""
    for path in fixed:
        if under(path):
            return f"[set] \"{path}\""
    if not cell.values:
        return "the base scenario"
    return "axes " + ", ".join(f"\"{p}\"" for p in cell.values)
