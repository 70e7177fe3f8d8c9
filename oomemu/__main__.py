"""python -m oomemu"""
import sys

from oomemu.cli.signals import GUARD

GUARD.install()          # before anything slow: a Ctrl-C from here on ends in one line, never a traceback
try:
    from oomemu.cli import main
except BaseException as exc:  # noqa: BLE001 - only Interrupted can come from importing the CLI
    from oomemu.cli.signals import Interrupted
    if not isinstance(exc, Interrupted):
        raise
    print(f"oomemu: interrupted by {GUARD.name}", file=sys.stderr)
    sys.exit(exc.exit_code)
sys.exit(main())
