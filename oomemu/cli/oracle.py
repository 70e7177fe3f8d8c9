"""`oomemu oracle SCENARIO`: run a scenario's task table on the host kernel in a child memory cgroup and compare
the host's OOM victim with the emulator's choice (exit 0 agree, 1 disagree, 2 cannot run here, 130 interrupted).
"""
import sys


def add_arguments(p):
    p.add_argument("scenario", nargs="?", help="a scenario file whose [[task]] tables (mm, oom_score_adj, uid) "
                                               "become the processes")
    p.add_argument("--limit", help='the child cgroup\'s memory limit (default: the machine\'s RAM), at most "256MiB"')
    p.add_argument("--generate", type=int, metavar="N",
                   help="instead of a scenario: N random tables (2-12 tasks of 1-64 MiB, adj 0..1000, limit 32-256 MiB)")
    p.add_argument("--seed", type=int, default=1, help="seed of --generate")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def execute(args):
    from oomemu.oracle import host
    if (args.scenario is None) == (args.generate is None):
        print("oomemu: error: give a SCENARIO or --generate N", file=sys.stderr)
        return 2
    limit = None
    if args.limit is not None:
        from oomemu.config.units import parse_size
        from oomemu.errors import ScenarioError
        try:
            limit = parse_size(args.limit, "--limit")
        except ScenarioError as exc:
            print(f"oomemu: error: {exc}", file=sys.stderr)
            return 2
        if not 0 < limit <= host.MAX_LIMIT:
            print(f"oomemu: error: --limit {args.limit}: must be more than 0 and at most 256MiB", file=sys.stderr)
            return 2
    if args.scenario is not None:
        from oomemu.config import load_scenario
        from oomemu.errors import ScenarioError
        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as exc:
            print(f"oomemu: error: {exc}", file=sys.stderr)
            return 2
        tables = [host.table_from_scenario(scenario, limit)]
        if not tables[0].tasks:
            print(f"oomemu: error: {args.scenario}: no user tasks to build", file=sys.stderr)
            return 2
    else:
        rng = host.seeded(args.seed)
        tables = [host.generate_table(rng, f"table{k}") for k in range(args.generate)]
    try:
        version, parent = host.check_host()
    except host.HostUnavailable as exc:
        print(f"oomemu: error: the host oracle cannot run here: {exc}", file=sys.stderr)
        return 2
    import signal
    old = signal.signal(signal.SIGTERM, _interrupt)
    outcomes = []
    try:
        for table in tables:
            o = host.run_table(table, version, parent)
            outcomes.append(o)
            if not args.json:
                print(_line(o))
    except host.HostUnavailable as exc:
        print(f"oomemu: error: the host oracle cannot run this table: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oomemu: interrupted; the cgroup and its processes were removed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    agreed = sum(1 for o in outcomes if o.agrees)
    if args.json:
        import json
        print(json.dumps({"agreed": agreed, "tables": len(outcomes), "outcomes": [_doc(o) for o in outcomes]},
                         indent=2))
    else:
        print(f"{agreed}/{len(outcomes)} agree with the host kernel")
    return 0 if agreed == len(outcomes) else 1


def _line(o):
    t = o.table
    kernel = f"{o.kernel_pid} ({o.kernel_comm})" if o.kernel_pid else "no kill"
    emu = f"{o.emulator_pid} ({o.emulator_comm})" if o.emulator_pid else "none"
    verdict = {True: "agree", False: "DISAGREE", None: "?"}[o.agrees]
    notes = "".join(f"\n    note: {n}" for n in o.notes)
    return (f"{t.name}: {len(t.tasks)} tasks, limit {t.limit >> 20} MiB: host kernel killed {kernel}, "
            f"emulator ({o.profile}) picks {emu}: {verdict}{notes}")


def _doc(o):
    return {"name": o.table.name, "limit": o.table.limit, "tasks": len(o.table.tasks), "profile": o.profile,
            "kernel_victim": {"pid": o.kernel_pid, "comm": o.kernel_comm},
            "emulator_victim": {"pid": o.emulator_pid, "comm": o.emulator_comm}, "agrees": o.agrees,
            "notes": o.notes}
