"""`oomemu run [SCENARIO] [--repeat N]`: run a scenario (N times, on a fresh machine each) and report."""
import sys


def add_arguments(p):
    p.add_argument("scenario", nargs="?", help="scenario TOML file (default: the built-in default scenario)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<time>-<scenario>); must be new or "
                                                "empty unless --force")
    p.add_argument("--force", action="store_true", help="empty an existing run directory given by --out first")
    p.add_argument("--seconds", type=float, metavar="S", help="override run.seconds")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run N times and report how often each verdict occurred (95%% confidence intervals)")
    p.add_argument("--schedule", metavar="MODE",
                   help="override run.schedule: free (real concurrency), or a controlled mode: random, pct, replay")
    p.add_argument("--seed", type=int, metavar="N", help="override run.seed (in a controlled mode: the schedule)")
    p.add_argument("--replay", metavar="FILE",
                   help="with --schedule replay: a schedule.bin or a file holding a replay string")
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress and no summary")
    p.add_argument("--json", action="store_true", help="print report.json instead of the summary")
    p.add_argument("--allow-large", action="store_true",
                   help="run a machine whose shared memory would exceed the host-relative cap")


def _load(args):
    from oomemu.config import load_scenario
    from oomemu.errors import ScenarioError
    if not 1 <= args.repeat <= 10000:
        raise ScenarioError(f"--repeat = {args.repeat}: must be an integer from 1 to 10000")
    scenario = load_scenario(args.scenario)
    if args.seconds is not None:
        if not 0 < args.seconds <= 3600:
            raise ScenarioError(f"--seconds = {args.seconds}: must be a number greater than 0 and at most 3600")
        import dataclasses
        scenario = dataclasses.replace(scenario, run=dataclasses.replace(scenario.run, seconds=args.seconds))
    return apply_schedule_options(scenario, args.schedule, args.seed)


def apply_schedule_options(scenario, schedule, seed):
    """`--schedule` and `--seed` on top of the scenario's [run] table."""
    import dataclasses

    from oomemu.errors import ScenarioError
    run = scenario.run
    if seed is not None:
        if seed < 0:
            raise ScenarioError(f"--seed = {seed}: must be an integer >= 0")
        run = dataclasses.replace(run, seed=seed)
    if schedule is not None:
        from oomemu.config.schema import SCHEDULES, suggest
        if schedule not in SCHEDULES:
            raise ScenarioError(f"--schedule = {schedule!r}: unknown schedule; allowed: {', '.join(SCHEDULES)}"
                                + suggest(schedule, SCHEDULES))
        run = dataclasses.replace(run, schedule=schedule)
    return dataclasses.replace(scenario, run=run)


def _replay_input(args, scenario):
    """--schedule replay: the scenario and (row, steps) schedule to follow, from --replay FILE."""
    from oomemu.errors import ScenarioError
    from oomemu.schedule import load_schedule, scenario_of
    if not args.replay:
        raise ScenarioError("--schedule replay needs --replay FILE (a schedule.bin or a replay string)")
    record = load_schedule(args.replay)
    scenario, pairs = scenario_of(record, scenario if args.scenario else None)
    return scenario, pairs, record["strategy"]


def _usage_error(args, exc):
    where = f"{args.scenario}: " if args.scenario else ""
    text = str(exc)
    if where and args.scenario in text:
        where = ""          # the loader already named the file
    print(f"oomemu: error: {where}{text}", file=sys.stderr)
    return 2


def execute(args):
    from oomemu.cli.signals import GUARD
    from oomemu.errors import RunDirError, ScenarioError, describe_os_error
    try:
        scenario = _load(args)
        _host_checks(args, scenario)
    except RunDirError as exc:
        print(f"oomemu: error: {exc}", file=sys.stderr)
        return 2
    except ScenarioError as exc:
        return _usage_error(args, exc)
    replay, strategy = None, None
    if scenario.run.schedule == "replay" or args.replay:
        try:
            scenario, replay, strategy = _replay_input(args, scenario)
        except ScenarioError as exc:
            print(f"oomemu: error: {exc}", file=sys.stderr)
            return 2
    if not scenario.tasks:
        print(f"oomemu: warning: {scenario.source}: the scenario starts no tasks; the machine boots and idles "
              "until run.seconds", file=sys.stderr)
    if args.repeat > 1:
        return _execute_batch(args, scenario)
    from oomemu.api import run
    from oomemu.cli.progress import CheckProgress, Progress
    from oomemu.report import summary_lines
    progress = None if args.quiet or args.json else Progress(scenario)
    on_check = None if args.quiet or args.json else CheckProgress()
    try:
        report = run(scenario, out=args.out, progress=progress, replay=replay, strategy=strategy, force=args.force,
                     guard=GUARD, on_check=on_check)
    except RunDirError as exc:
        print(f"oomemu: error: {exc}", file=sys.stderr)
        return 2
    except ScenarioError as exc:          # found only when the machine boots (e.g. a preset mm that cannot fit)
        return _usage_error(args, exc)
    except OSError as exc:
        print(f"oomemu: error: cannot write the report: {describe_os_error(exc)}", file=sys.stderr)
        return 3
    finally:
        if progress is not None:
            progress.close()
        if on_check is not None:
            on_check.close()
    if args.json:
        import json
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        print("\n".join(summary_lines(report)))
    if "schedule" in report and not args.json:
        print(f"replay: oomemu replay {report['schedule']['replay']}", file=sys.stderr if args.quiet else sys.stdout)
    if report["error"]:
        print(f"oomemu: error: {report['error']}", file=sys.stderr)
    elif report.get("interrupted"):
        print(f"oomemu: interrupted by {report['interrupted']['signal']} during {report['interrupted']['during']}; "
              f"report in {report['run_dir']}", file=sys.stderr)
    return report["exit_code"]


def _host_checks(args, scenario):
    """What the scenario asks of this host, checked before anything starts (exit 2)."""
    from oomemu.config.host import check_fits_host
    check_fits_host(scenario, allow_large=args.allow_large)


def _execute_batch(args, scenario):
    import json

    from oomemu.api import run_batch
    from oomemu.cli.signals import GUARD
    from oomemu.errors import RunDirError, describe_os_error
    from oomemu.report import batch_lines

    def progress(i, report):
        if not args.quiet and not args.json:
            print(f"oomemu: run {i + 1}/{args.repeat}: {report['verdict']} ({report['elapsed_s']:.2f}s)",
                  file=sys.stderr, flush=True)

    try:
        batch = run_batch(scenario, args.repeat, out=args.out, on_run=progress, force=args.force, guard=GUARD)
    except RunDirError as exc:
        print(f"oomemu: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"oomemu: error: cannot write the report: {describe_os_error(exc)}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(batch, indent=2))
    elif not args.quiet:
        print("\n".join(batch_lines(batch)))
    for err in batch["errors"][:3]:
        print(f"oomemu: error: {err}", file=sys.stderr)
    return batch["exit_code"]
