"""The machinery every figure family shares: running a measurement in a forked child, one figure's entry (median,
spread, target, met), the `Bench` runner that calls each family in turn, and the printed table."""
import importlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

from oomemu.bench import FAMILIES, GROUPS
from oomemu.supervisor import retain_freed_heap

BUDGET_S = {False: 170.0, True: 27.0}  # wall-clock budget of a whole bench (full, --quick)


def family(name):
    """The module of one figure family (`oomemu.bench.<name>`)."""
    return importlib.import_module(f"oomemu.bench.{name}")


_CATALOGUE = {}


def catalogue():
    """Every figure, in catalogue order: id -> (title, unit, comparison, target); comparison None: no target."""
    if not _CATALOGUE:
        for name in FAMILIES:
            _CATALOGUE.update(family(name).FIGURES)
    return _CATALOGUE


def group_of(fid):
    """The family a figure id belongs to."""
    for name in FAMILIES:
        if fid in family(name).FIGURES:
            return name
    raise KeyError(fid)


# --- running things in children ---------------------------------------------------------------------------------

class ChildFailed(RuntimeError):
    """A measurement's child process raised or died."""


def in_child(fn, *args, timeout=300):
    """Run fn(*args) in a forked child; return its (JSON-able) result. The child's workers end with it."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            retain_freed_heap()             # as every worker does
            try:
                data = json.dumps({"ok": fn(*args)})
            except BaseException:  # noqa: BLE001 - report anything to the parent
                data = json.dumps({"error": traceback.format_exc()})
            view = memoryview(data.encode())
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        import select
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildFailed(f"{fn.__name__} did not finish in {timeout}s")
            ready, _, _ = select.select([r], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        os.close(r)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
    if not chunks:
        raise ChildFailed(f"{fn.__name__}: the child died (status {status})")
    doc = json.loads(b"".join(chunks))
    if "error" in doc:
        raise ChildFailed(f"{fn.__name__} failed:\n{doc['error']}")
    return doc["ok"]


# --- statistics and the document -------------------------------------------------------------------------------

def percentile(values, q):
    """Percentile q (0..100) by linear interpolation."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def figure(fid, samples, value=None, note=None):
    """One figure's entry: median (or an explicit headline `value`), spread, target and whether it is met."""
    title, unit, op, target = catalogue()[fid]
    samples = [float(s) for s in samples if s is not None]
    entry = {"title": title, "unit": unit, "n": len(samples), "samples": [round(s, 6) for s in samples]}
    if samples:
        med = statistics.median(samples)
        entry.update(median=med, min=min(samples), max=max(samples),
                     spread_pct=(max(samples) - min(samples)) / med * 100 if med else 0.0)
    else:
        entry.update(median=None, min=None, max=None, spread_pct=None)
    entry["value"] = float(value) if value is not None else entry["median"]
    entry["target"] = None if op is None else {"op": op, "value": target}
    entry["met"] = None
    entry["miss"] = None
    v = entry["value"]
    if op is not None and v is not None:
        met = v >= target if op == ">=" else v <= target
        entry["met"] = bool(met)
        if not met:
            if op == ">=":
                entry["miss"] = f"{target / v:.1f}x below target" if v > 0 else "no progress"
            else:
                entry["miss"] = f"{v / target:.1f}x over target"
    if note:
        entry["note"] = note
    return entry


def _missing(fid, why):
    entry = figure(fid, [])
    entry["error"] = why
    return entry


class Bench:
    """One `oomemu bench` invocation: its settings, its figures and the errors of measurements that failed."""

    def __init__(self, quick=False, repeats=None, only=None, keep=None, log=None):
        self.quick = quick
        self.repeats = repeats or (3 if quick else 5)
        self.only = set(only) if only else set(GROUPS)
        self.keep = keep
        self.log = log or (lambda msg: None)
        self.figures = {}
        self.details = {}
        self.errors = {}

    def time_left(self):
        return BUDGET_S[self.quick] - (time.monotonic() - self.t0)

    def run(self):
        t0 = self.t0 = time.monotonic()
        load0 = os.getloadavg()
        work = Path(self.keep) if self.keep else Path(tempfile.mkdtemp(prefix="oomemu-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        try:
            for group in GROUPS:
                if group not in self.only:
                    continue
                self.log(f"bench: {group} ...")
                tg = time.monotonic()
                try:
                    family(group).measure(self)
                except ChildFailed as exc:
                    self.errors[group] = str(exc)
                except Exception:  # noqa: BLE001 - one failed measurement must not lose the others
                    self.errors[group] = traceback.format_exc()
                self.details.setdefault("group_seconds", {})[group] = round(time.monotonic() - tg, 2)
        finally:
            if not self.keep:
                shutil.rmtree(work, ignore_errors=True)
        ids = tuple(catalogue())
        for fid in ids:
            if fid not in self.figures and group_of(fid) in self.only:
                self.figures[fid] = _missing(fid, self.errors.get(group_of(fid), "not measured"))
        return {
            "format": "oomemu-bench", "version": 1,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform,
                     "loadavg_before": [round(x, 2) for x in load0],
                     "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "quick": self.quick, "repeats": self.repeats, "duration_s": round(time.monotonic() - t0, 2),
            "figures": {fid: self.figures[fid] for fid in ids if fid in self.figures},
            "details": self.details, "errors": self.errors,
        }

    def _dir(self, name):
        """A fresh directory for one measurement's run under the bench's work directory."""
        d = self.work / name
        if d.exists():
            shutil.rmtree(d)
        return d

    def _done(self, d):
        """A measurement's run directory is removed at once unless --keep asked for it."""
        if not self.keep:
            shutil.rmtree(d, ignore_errors=True)


def run_bench(quick=False, repeats=None, only=None, keep=None, log=None):
    """Measure everything; returns the JSON-able document."""
    return Bench(quick=quick, repeats=repeats, only=only, keep=keep, log=log).run()


# --- presentation ------------------------------------------------------------------------------------------------

def _fmt(v, unit):
    if v is None:
        return "-"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "x":
        return f"{v:.2f}x"
    if not unit and float(v).is_integer():
        return f"{v:.0f}"
    a = abs(v)
    s = f"{v:.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"
    return f"{s} {unit}".strip()


def table_lines(doc):
    """The readable table: figure, value (median), spread, target, met."""
    rows = [("figure", "value", "spread (min..max)", "n", "target", "met")]
    for fid, e in doc["figures"].items():
        unit = e["unit"]
        spread = "-" if e["min"] is None or e["n"] < 2 else (
            f"{_fmt(e['min'], unit)}..{_fmt(e['max'], unit)} ({e['spread_pct']:.0f}%)")
        tgt = "-" if e["target"] is None else f"{e['target']['op']} {_fmt(e['target']['value'], unit)}"
        met = "-" if e["met"] is None else ("yes" if e["met"] else f"NO: {e['miss']}")
        if e.get("error"):
            met = "NOT MEASURED"
        elif e["value"] is None and e.get("note"):
            met = e["note"]            # e.g. the traced rows under --quick: say why the row is blank
        rows.append((e["title"], _fmt(e["value"], unit), spread, str(e["n"]), tgt, met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(widths[j]) if j in (0, 2, 4, 5) else c.rjust(widths[j])
                             for j, c in enumerate(r)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    h = doc["host"]
    out.append("")
    out.append(f"{doc['date']}; {h['cpus']} cores; Python {h['python']}; repeats {doc['repeats']}"
               f"{' (quick)' if doc['quick'] else ''}; {doc['duration_s']:.1f}s; "
               f"load average {h['loadavg_before'][0]} before, {h['loadavg_after'][0]} after")
    missed = [e for e in doc["figures"].values() if e["met"] is False]
    met = [e for e in doc["figures"].values() if e["met"] is True]
    out.append(f"targets met: {len(met)}, missed: {len(missed)}")
    for group, err in doc["errors"].items():
        out.append(f"error in {group}: {err.strip().splitlines()[-1]}")
    return out
