"""The library entry points behind the CLI: run a scenario, get its report."""
from oomemu.report import build_report, write_report
from oomemu.supervisor import make_run_dir, run_scenario


def run(scenario, out=None, progress=None):
    """Run `scenario` once; write and return its report (a dict, as in report.json)."""
    run_dir = make_run_dir(scenario, out)
    m, outcome = run_scenario(scenario, run_dir, progress)
    report = build_report(scenario, m, outcome, run_dir)
    write_report(report, run_dir)
    return report


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
