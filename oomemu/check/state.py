"""The machine's final (quiescent) state, saved into the run directory so `oomemu check` can re-check a run
offline: machine.npz holds the tables the invariants read, under the Machine's own attribute names."""
from types import SimpleNamespace

import numpy as np

from oomemu.machine import G_NR_MM_ROWS, G_NR_TASK_ROWS

_TABLES = ("glob", "zone", "page_next", "page_prev", "page_owner", "page_kind", "page_flags", "page_order",
           "page_zone", "pcp", "pvec", "mm", "memcg", "page_memcg")
_TASK_COLUMNS = ("task_pid", "task_tgid", "task_leader", "task_parent", "task_mm", "task_cpu", "task_exit_state",
                 "task_flags", "task_tif", "task_state", "task_pending", "task_wait_kind", "task_wait_obj",
                 "task_comm", "sig_oom_score_adj", "sig_flags", "task_memcg", "task_uid", "task_caps")


def save_state(m, path):
    """Write the tables of quiescent machine `m` to `path` (.npz)."""
    n = int(m.glob[G_NR_TASK_ROWS])
    arrays = {name: getattr(m, name) for name in _TABLES}
    arrays.update({name: getattr(m, name)[:n] for name in _TASK_COLUMNS})
    arrays["shape"] = np.array([m.nr_cpus, m.nr_nodes, m.nr_pages, m.max_tasks, n, int(m.glob[G_NR_MM_ROWS])])
    np.savez_compressed(path, **arrays)


def load_state(path):
    """A namespace with the saved tables and the Machine's size attributes (nr_cpus, nr_zones, ...)."""
    with np.load(path) as data:
        ns = SimpleNamespace(**{k: data[k] for k in data.files})
    ns.nr_cpus, ns.nr_nodes, ns.nr_pages, ns.max_tasks, ns.nr_tasks, ns.nr_mms = (int(v) for v in ns.shape)
    ns.nr_zones = ns.zone.shape[0]
    return ns


def state_of(m):
    """The live machine viewed like a loaded state (for checks at the end of `oomemu run`)."""
    n = int(m.glob[G_NR_TASK_ROWS])
    ns = SimpleNamespace(**{name: getattr(m, name) for name in _TABLES})
    for name in _TASK_COLUMNS:
        setattr(ns, name, getattr(m, name)[:n])
    ns.nr_cpus, ns.nr_nodes, ns.nr_pages, ns.max_tasks = m.nr_cpus, m.nr_nodes, m.nr_pages, m.max_tasks
    ns.nr_tasks, ns.nr_mms, ns.nr_zones = n, int(m.glob[G_NR_MM_ROWS]), m.nr_zones
    return ns
