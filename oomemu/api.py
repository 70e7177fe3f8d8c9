"""The library behind the CLI (and for pytest users): load a scenario, change it, run it, sweep it.

```python
import oomemu

sc = oomemu.Scenario.load("configs/races/r3-extra-kill.toml").replace("machine.cpus", 2)
report = oomemu.run(sc, out=tmp_path / "run")         # a Report: typed fields, and the report.json dict
assert report.verdict in ("oom-kill", "extra-kill")
rows = oomemu.sweep("configs/sweeps/r3-cpus-min-free.toml", jobs=2, out=tmp_path / "sweep").rows
```
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomemu.config import Scenario as ScenarioConfig
from oomemu.config.load import scenario_from_dict
from oomemu.config.schema import scenario_to_dict


class Scenario:
    """A validated scenario with the document it came from, so key paths can be changed as in the file.

    `Scenario.load(path)` reads a scenario file; `.replace("machine.cpus", 4)` returns a new, validated
    Scenario (a bad value raises ScenarioError, naming the key path); `.config` is the resolved
    oomemu.config.Scenario the emulator runs, whose sections (`.machine`, `.sysctl`, `.run`, ...) are also
    readable here.
    """

    def __init__(self, document: dict[str, Any], *, name: str = "scenario", source: str = "<api>"):
        self.document = document
        self.config: ScenarioConfig = scenario_from_dict(document, name=name, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Scenario:
        """The scenario in the TOML file at `path` (None: the built-in default)."""
        from oomemu.config import DEFAULT_SCENARIO_PATH, load_scenario
        load_scenario(path)                              # its errors, worded as `oomemu run` words them
        p = Path(path) if path is not None else DEFAULT_SCENARIO_PATH
        return cls(tomllib.loads(p.read_text(encoding="utf-8-sig")), name=p.stem if path else "default",
                   source=os.fspath(path) if path else "<default>")

    @classmethod
    def from_text(cls, text: str, name: str = "scenario") -> Scenario:
        """The scenario in TOML `text`."""
        from oomemu.config import load_scenario_text
        load_scenario_text(text, name=name)
        return cls(tomllib.loads(text), name=name, source=name)

    def replace(self, path: str, value: Any) -> Scenario:
        """A new Scenario with `value` at key `path` (as in the file: "machine.cpus", "task[1].count")."""
        from oomemu.experiment.keypath import set_key_path
        return Scenario(set_key_path(self.document, path, value), name=self.name, source=self.source)

    def get(self, path: str, default: Any = None) -> Any:
        """The value at key `path` as written in the document (`default` if not written there)."""
        from oomemu.experiment.keypath import get_key_path
        return get_key_path(self.document, path, default)

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario as plain data (scenario.json of a run)."""
        return scenario_to_dict(self.config)

    def __getattr__(self, name: str) -> Any:
        if name in ("document", "config"):
            raise AttributeError(name)
        return getattr(self.config, name)

    def __repr__(self) -> str:
        return f"Scenario({self.config.name!r}, source={self.config.source!r})"


@dataclass(frozen=True)
class Kill:
    """One OOM (or sysrq) kill."""

    pid: int
    comm: str
    points: int
    kind: str
    by_cpu: int
    by_pid: int
    time_s: float


@dataclass(frozen=True)
class Check:
    """One invariant checked after the run."""

    invariant: str
    ok: bool
    violations: int
    details: tuple[str, ...]


@dataclass(frozen=True)
class TaskOutcome:
    """How one task of the run ended: "killed" (by an OOM kill), "exited", or "alive" at the end."""

    pid: int
    comm: str
    outcome: str
    oom_score_adj: int


class Report(dict):
    """A run's report: the report.json document (it is that dict), with typed fields for the common questions."""

    @property
    def verdict(self) -> str:
        return self["verdict"]

    @property
    def exit_code(self) -> int:
        return self["exit_code"]

    @property
    def ended_by(self) -> str:
        return self["ended_by"]

    @property
    def error(self) -> str | None:
        return self["error"]

    @property
    def elapsed_s(self) -> float:
        return self["elapsed_s"]

    @property
    def run_dir(self) -> Path:
        return Path(self["run_dir"])

    @property
    def races(self) -> tuple[str, ...]:
        return tuple(r["race"] for r in self["races"])

    @property
    def kills(self) -> tuple[Kill, ...]:
        return tuple(Kill(**{f: k[f] for f in Kill.__dataclass_fields__}) for k in self["kills"])

    @property
    def counters(self) -> dict[str, int]:
        return dict(self["counters"])

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(Check(c["invariant"], bool(c["ok"]), int(c.get("violations", 0)), tuple(c.get("details", ())))
                     for c in self["checks"])

    @property
    def ok(self) -> bool:
        """Every invariant held and every [expect] was met."""
        return all(c["ok"] for c in self["checks"]) and all(e["ok"] for e in self["expect"])

    @property
    def tasks(self) -> tuple[TaskOutcome, ...]:
        """Every task the run had (user tasks and kernel threads, init first), from the run's final state."""
        from oomemu.check.state import load_state
        from oomemu.include.sched import EXIT_DEAD, EXIT_ZOMBIE
        state = load_state(self.run_dir / "machine.npz")
        killed = {k["pid"] for k in self["kills"]}
        out = []
        for row in range(state.nr_tasks):
            pid = int(state.task_pid[row])
            if pid <= 0:
                continue
            dead = int(state.task_exit_state[row]) & (EXIT_ZOMBIE | EXIT_DEAD)
            fate = "killed" if pid in killed else "exited" if dead else "alive"
            comm = bytes(state.task_comm[row]).split(b"\0", 1)[0].decode("ascii", "replace")
            out.append(TaskOutcome(pid, comm, fate, int(state.sig_oom_score_adj[row])))
        return tuple(out)


def _config(scenario) -> ScenarioConfig:
    return scenario.config if isinstance(scenario, Scenario) else scenario


def run(scenario, out=None, progress=None, replay=None, strategy=None, *, force=False, guard=None,
        on_check=None) -> Report:
    """Run `scenario` (a Scenario or an oomemu.config.Scenario) once on a fresh machine; write report.json in
    the run directory (`out`, default runs/<time>-<name>) and return it as a Report.

    `out` must be a new or empty directory (or an old run directory with `force`); it is locked while the run
    lasts (a RunDirError otherwise). `guard` (oomemu/cli/signals.py) carries SIGINT/SIGTERM/SIGHUP: the run
    then ends as `interrupted` with its report written. `on_check(done, total, records, elapsed_s)` follows
    the end-of-run check. If report.json cannot be written, the returned report says so (exit_code 3).

    Controlled modes: `replay` is the (row, steps) schedule a `replay` run follows, `strategy` the strategy
    that first chose it (kept in the new replay string); the run directory gets schedule.bin and the report a
    `schedule` section with the replay string.
    """
    from oomemu.cli.signals import NoGuard
    from oomemu.report import build_report
    from oomemu.supervisor import make_run_dir, run_scenario
    scenario = _config(scenario)
    guard = guard or NoGuard()
    run_dir = make_run_dir(scenario, out, force=force)
    try:
        with guard.holding():
            m, outcome = run_scenario(scenario, run_dir.path, progress, guard, replay=replay)
            report = build_report(scenario, m, outcome, run_dir.path, guard=guard, on_check=on_check)
            if outcome.schedule is not None:
                report["schedule"] = _schedule_section(scenario, outcome.schedule, run_dir.path, strategy)
            _write(report, run_dir.path)
    finally:
        run_dir.release()
    return Report(report)


def _write(report, run_dir):
    """Write report.json; if the disk refuses, the returned report says so (exit 3) instead of raising."""
    from oomemu.errors import describe_os_error
    from oomemu.report import write_report
    try:
        write_report(report, run_dir)
    except OSError as exc:
        why = f"report.json could not be written: {describe_os_error(exc)}"
        report["report_written"] = False
        report["error"] = f"{report['error']} ({why})" if report["error"] else why
        if report["exit_code"] < 128:
            report["exit_code"] = 3


def _schedule_section(scenario, schedule, run_dir, strategy):
    from oomemu.schedule import record_of, replay_string, save_schedule
    if strategy is None and scenario.run.schedule != "replay":
        strategy = scenario.run.schedule
    record = record_of(scenario, {**schedule, "strategy": strategy or "replay"})
    save_schedule(run_dir / "schedule.bin", record)
    summary = {k: v for k, v in schedule.items() if k != "log"}
    return {**summary, "strategy": record["strategy"], "seed": scenario.run.seed, "pairs": len(schedule["log"]),
            "choices": record["choices"], "replay": replay_string(record)}


def _batch_member(scenario, i):
    """Run i of a batch: a controlled schedule takes the seed explore would give schedule i (in free mode the
    host's timing varies the runs)."""
    if scenario.run.schedule not in ("random", "pct"):
        return scenario
    import dataclasses

    from oomemu.explore import derive_seed
    return dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seed=derive_seed(scenario.run.seed, i)))


def run_batch(scenario, repeat, out=None, on_run=None, *, force=False, guard=None):
    """Run `scenario` `repeat` times on a fresh machine each; write and return the batch report (verdict
    counts with 95% Wilson intervals, per-run exit codes, and the [expect] min_rate result). A signal ends the
    batch after the run it came in (that run's report says interrupted; the batch exits 128 + signum)."""
    from oomemu.cli.signals import NoGuard
    from oomemu.report import build_batch_report, write_report
    from oomemu.supervisor import make_run_dir
    scenario = _config(scenario)
    guard = guard or NoGuard()
    batch_dir = make_run_dir(scenario, out, force=force)
    reports = []
    try:
        with guard.holding():
            for i in range(repeat):
                if guard.signum is not None:
                    break
                report = run(_batch_member(scenario, i), out=batch_dir.path / f"run{i:03d}", guard=guard)
                reports.append(report)
                if on_run is not None:
                    on_run(i, report)
                if report["exit_code"] >= 128:
                    break
            batch = build_batch_report(scenario, reports, batch_dir.path, repeat)
            if guard.signum is not None:
                batch["exit_code"] = 128 + guard.signum
            write_report(batch, batch_dir.path)
    finally:
        batch_dir.release()
    return batch


def load_sweep(path):
    """The sweep in the TOML file at `path`, every cell validated (see oomemu.experiment.spec)."""
    from oomemu.experiment.spec import load_sweep as load
    return load(path)


def sweep(spec, *, jobs=None, engine="local", address=None, out=None, lean=False, plots=True,
          on_start=None, on_row=None):
    """Run a sweep (a sweep file's path, a dict shaped like one, or a loaded Sweep) and return its
    SweepResult: `.rows` (one dict per run, as in results.csv), `.summary` (as summary.json), `.out`.

    Runs already in out/results.csv are not run again. `engine` is "local" (a pool of `jobs` processes) or
    "ray" (a Ray cluster at `address`)."""
    from oomemu.experiment.engine import make_engine
    from oomemu.experiment.spec import Sweep, sweep_from_dict
    from oomemu.experiment.sweep import run_sweep
    if isinstance(spec, (str, os.PathLike)):
        spec = load_sweep(spec)
    elif not isinstance(spec, Sweep):
        spec = sweep_from_dict(spec, here=Path.cwd())
    return run_sweep(spec, out=out, engine=make_engine(engine, jobs, address), lean=lean, plots=plots,
                     on_start=on_start, on_row=on_row)
