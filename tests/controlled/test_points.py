"""Every scheduling point the code names is registered in control.POINTS (so logs and traces name it), and the
controller's own pieces behave as documented."""
import ast

from oomemu import control

from conftest import ROOT

CALLS = {"sched_point", "cpu_relax", "wait_until", "_kthread_wait", "wait", "point", "relax"}


def _literal_point_names():
    names = set()
    for path in (ROOT / "oomemu").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if fn not in CALLS:
                continue
            args = list(node.args) + [k.value for k in node.keywords if k.arg == "name"]
            for a in args:
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.replace(".", "_").isidentifier():
                    names.add((a.value, str(path.relative_to(ROOT))))
        for node in ast.walk(tree):
            if isinstance(node, ast.IfExp) and isinstance(node.body, ast.Constant) and isinstance(node.body.value, str) \
                    and str(node.body.value).startswith("rwlock"):
                names.add((node.body.value, str(path.relative_to(ROOT))))
                names.add((node.orelse.value, str(path.relative_to(ROOT))))
    return names


def test_every_named_point_is_registered():
    found = _literal_point_names()
    assert len(found) >= 20, found
    missing = sorted((n, p) for n, p in found if n not in control.POINT_INDEX)
    assert not missing, f"scheduling points not in control.POINTS: {missing}"


def test_point_names_are_unique_and_indexes_stable():
    assert len(set(control.POINTS)) == len(control.POINTS)
    assert [control.POINT_INDEX[n] for n in control.POINTS] == list(range(len(control.POINTS)))
    assert control.point_index("no.such.point") == control.point_index("no.such.point") >= 1000


def test_mix64_is_a_stateless_function_of_seed_and_step():
    values = [control.mix64(7, step) for step in range(1000)]
    assert values == [control.mix64(7, step) for step in range(1000)]
    assert len(set(values)) == 1000
    # uniform enough over a few rows: each of 4 rows gets 25% +- 5% of 1000 choices
    counts = [sum(1 for v in values if v % 4 == r) for r in range(4)]
    assert all(200 <= c <= 300 for c in counts), counts
    assert control.mix64(8, 5) != control.mix64(7, 5)
