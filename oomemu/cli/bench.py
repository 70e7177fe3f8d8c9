"""`oomemu bench [--json] [--quick]`: measure the emulator's speed, scaling, latency and footprint.

Each figure is measured several times next to its reference and printed as its median with the spread over
the rounds, its target and whether the target is met (a table; --json prints one JSON document instead).
Exit status: 0 when every measurement ran (whether or not its target was met), 1 when one failed, 2 for a bad
command line, 130 when interrupted.
"""
import sys

from oomemu.bench import FAMILIES as GROUP_NAMES   # a light import: the family modules load on use


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON document with every figure")
    p.add_argument("--quick", action="store_true", help="fewer and shorter rounds (under 30 s)")
    p.add_argument("--repeats", type=int, metavar="N", help="rounds per measurement (default 5, --quick 3)")
    p.add_argument("--only", metavar="GROUPS",
                   help=f"comma-separated subset of {','.join(GROUP_NAMES)} (default: all)")
    p.add_argument("--keep", metavar="DIR", help="keep the run directories of the measurements in DIR")


def execute(args):
    only = None
    if args.only:
        only = [g.strip() for g in args.only.split(",") if g.strip()]
        bad = [g for g in only if g not in GROUP_NAMES]
        if bad or not only:
            print(f"oomemu: error: --only = {args.only!r}: must be a comma-separated subset of "
                  f"{', '.join(GROUP_NAMES)}", file=sys.stderr)
            return 2
    if args.repeats is not None and not 1 <= args.repeats <= 50:
        print(f"oomemu: error: --repeats = {args.repeats}: must be an integer from 1 to 50", file=sys.stderr)
        return 2
    if args.keep is not None:
        from pathlib import Path
        keep = Path(args.keep)
        try:
            if keep.exists() and not keep.is_dir():
                raise NotADirectoryError(20, "exists and is not a directory", str(keep))
            keep.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"oomemu: error: --keep {keep}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    from oomemu import bench

    def log(msg):
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    try:
        doc = bench.run_bench(quick=args.quick, repeats=args.repeats, only=only, keep=args.keep, log=log)
    except KeyboardInterrupt:
        print("oomemu: bench interrupted", file=sys.stderr)
        return 130
    if args.json:
        import json
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(bench.table_lines(doc)))
    for group, err in doc["errors"].items():
        print(f"oomemu: error: bench {group} failed: {err.strip().splitlines()[-1]}", file=sys.stderr)
    return 1 if doc["errors"] else 0
