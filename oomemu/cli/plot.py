"""`oomemu plot RUN_DIR [-o FILE]`: draw a run's free pages per zone against time with the min/low/high
watermarks, kswapd wake and sleep, direct reclaims, OOM invocations and kills (PNG; default
RUN_DIR/timeline.png). Exit status: 0 drawn, 2 not a run directory with a trace."""
import sys


def add_arguments(p):
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's directory (with trace.msgpack)")
    p.add_argument("-o", "--out", metavar="FILE", help="the PNG to write (default RUN_DIR/timeline.png)")


def execute(args):
    from oomemu.errors import ScenarioError
    from oomemu.experiment.runplot import plot_run
    try:
        path = plot_run(args.run_dir, args.out)
    except ScenarioError as exc:
        print(f"oomemu: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
