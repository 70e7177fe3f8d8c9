"""Layering rules (STYLE §4, DESIGN §2): the emulated kernel touches other CPUs only through oomemu/sync.py,
and only kernel/sched.py holds the yield that returns control to a CPU's loop."""
import ast

import pytest

from conftest import ROOT

PKG = ROOT / "oomemu"
LOW_LEVEL = {"mmap", "ctypes", "select", "multiprocessing", "multiprocessing.synchronize", "threading"}
KERNEL_FILES = sorted(p for d in ("mm", "kernel", "include", "lib") for p in (PKG / d).glob("*.py"))


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("path", KERNEL_FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_emulated_kernel_uses_only_the_sync_seam(path):
    """mm/, kernel/, include/, lib/ never reach shared memory, locks or doorbells except through sync.py."""
    bad = set(_imports(path)) & LOW_LEVEL
    assert not bad, f"{path.name} imports {bad}: go through oomemu.sync"
    assert "os.eventfd" not in path.read_text()


def test_only_the_scheduler_yields():
    """Every sleep ends in kernel/sched.py's trap: no other module of the emulated kernel or of user space is
    a generator (a stray yield would hand a value to the CPU loop)."""
    offenders = []
    for path in KERNEL_FILES + [PKG / "workload.py", PKG / "sync.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Yield, ast.YieldFrom)) and path != PKG / "kernel" / "sched.py":
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert not offenders


def test_cli_start_up_does_not_import_numpy():
    """`oomemu --help` and bad-input exits stay fast: the CLI and the config loader import no numpy."""
    import subprocess
    import sys
    code = "import sys, oomemu.cli, oomemu.config; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
