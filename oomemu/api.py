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
