"""The library entry points behind the CLI: run a scenario, get its report."""
from oomemu.report import build_report, write_report
from oomemu.supervisor import make_run_dir, run_scenario


def run(scenario, out=None, progress=None, replay=None, strategy=None):
    """Run `scenario` once; write and return its report (a dict, as in report.json).

    Controlled modes: `replay` is the (row, steps) schedule a `replay` run follows, `strategy` the strategy
    that first chose it (kept in the new replay string); the run directory gets schedule.bin and the report a
    `schedule` section with the replay string.
    """
    run_dir = make_run_dir(scenario, out)
    m, outcome = run_scenario(scenario, run_dir, progress, replay=replay)
    report = build_report(scenario, m, outcome, run_dir)
    if outcome.schedule is not None:
        report["schedule"] = _schedule_section(scenario, outcome.schedule, run_dir, strategy)
    write_report(report, run_dir)
    return report


def _schedule_section(scenario, schedule, run_dir, strategy):
    from oomemu.schedule import record_of, replay_string, save_schedule
    if strategy is None and scenario.run.schedule != "replay":
        strategy = scenario.run.schedule
    record = record_of(scenario, {**schedule, "strategy": strategy or "replay"})
    save_schedule(run_dir / "schedule.bin", record)
    summary = {k: v for k, v in schedule.items() if k != "log"}
    return {**summary, "strategy": record["strategy"], "seed": scenario.run.seed, "pairs": len(schedule["log"]),
            "choices": record["choices"], "replay": replay_string(record)}


def run_batch(scenario, repeat, out=None, on_run=None):
    """Run `scenario` `repeat` times on a fresh machine each; write and return the batch report (verdict
    counts with 95% Wilson intervals, per-run exit codes, and the [expect] min_rate result)."""
    from oomemu.report import build_batch_report
    batch_dir = make_run_dir(scenario, out)
    reports = []
    try:
        for i in range(repeat):
            report = run(scenario, out=batch_dir / f"run{i:03d}")
            reports.append(report)
            if on_run is not None:
                on_run(i, report)
            if report["exit_code"] == 130:
                break
    except KeyboardInterrupt:
        pass
    batch = build_batch_report(scenario, reports, batch_dir, repeat)
    write_report(batch, batch_dir)
    return batch
