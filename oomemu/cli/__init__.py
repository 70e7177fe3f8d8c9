"""The `oomemu` command: parse, call the library, print. Heavy imports wait until a subcommand runs.

SIGINT, SIGTERM and SIGHUP are handled from the first line of `main` (oomemu/cli/signals.py): the command
always ends with one line and exit 128 + signum, never a traceback. So does an environment error (exit 3).
"""
import argparse
import sys

from oomemu.cli.signals import GUARD
from oomemu.errors import Interrupted, describe_os_error

COMMANDS = {
    "run": ("oomemu.cli.run", "run a scenario on the emulated machine"),
    "replay": ("oomemu.cli.replay", "run a recorded controlled schedule again (a replay string)"),
    "explore": ("oomemu.cli.explore", "search controlled schedules (random, PCT) for a failure, in parallel"),
    "check": ("oomemu.cli.check", "re-check a finished run's invariants offline"),
    "trace": ("oomemu.cli.trace", "show or export a run's trace"),
    "bench": ("oomemu.cli.bench", "measure the emulator's speed, scaling and footprint"),
    "import": ("oomemu.cli.import_", "rebuild a kernel OOM report's machine and task table as a scenario"),
    "explain": ("oomemu.cli.explain", "replay a kernel OOM report's victim choice under each kernel profile"),
    "oracle": ("oomemu.cli.oracle", "check the emulator's victim against the host kernel's in a memory cgroup"),
    "sweep": ("oomemu.cli.sweep", "run a scenario over parameter axes (local pool or Ray) with tables and plots"),
    "plot": ("oomemu.cli.plot", "draw a run's free pages, watermarks, reclaim and OOM events (PNG)"),
}


def version():
    from oomemu.version import __version__
    return __version__


def build_parser():
    parser = argparse.ArgumentParser(prog="oomemu", description="A multi-process emulator of the Linux 3.14 OOM path.")
    parser.add_argument("--version", action="version", version=f"oomemu {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        __import__(module, fromlist=["add_arguments"]).add_arguments(p)
    return parser


def main(argv=None):
    """Entry point of the console script; returns (and exits with) the command's status."""
    try:
        GUARD.install()
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        module = __import__(COMMANDS[args.command][0], fromlist=["execute"])
        code = module.execute(args)
        sys.stdout.flush()
        return code
    except Interrupted as exc:
        print(f"oomemu: interrupted by {GUARD.name}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"oomemu: error: {describe_os_error(exc)}", file=sys.stderr)
        return 3
