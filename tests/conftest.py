"""Shared fixtures: an in-process machine for unit tests, scenario runs for end-to-end tests, and a leak guard
that fails any test leaving a child process or an oomemu shared-memory file behind."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _shm_entries():
    try:
        return {e for e in os.listdir("/dev/shm") if "oomemu" in e}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def leak_guard():
    """Fail a test that leaves a child process or an oomemu /dev/shm entry behind."""
    before = _shm_entries()
    yield
    me = psutil.Process()
    children = [c for c in me.children(recursive=True) if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    for c in children:
        c.kill()
    assert not children, f"test left child processes: {[c.pid for c in children]}"
    leaked = _shm_entries() - before
    assert not leaked, f"test left shared memory: {leaked}"


def run_cli(*args, timeout=120, cwd=None):
    """Run `python -m oomemu ARGS` in a subprocess; returns CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "oomemu", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT)


def write_scenario(tmp_path, text, name="scenario"):
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path
