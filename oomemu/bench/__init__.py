"""`oomemu bench`: the emulator's speed, scaling, latency and footprint, each figure next to its reference.

Every measurement runs several times in one invocation (rounds interleave a figure with its reference, so a
change in the machine's load hits both alike) and is reported as its median with the spread (min..max) over
the rounds. Each figure states its target and whether the median met it.

Figures (ids are the keys of the JSON document):

- fast path: one CPU process allocates and frees order-0 pages in a tight loop through the emulator's real code
  (`alloc_pages` → `get_page_from_freelist` → per-CPU list, refilled from and spilled to the buddy allocator
  with split and merge, the watermark check, do_anonymous_page's rss accounting under the mm lock, tracing
  into the shared ring), side by side with `ReferenceAllocator`, a single-process pure-Python allocator doing
  the same bookkeeping in plain lists and ints (no shared memory, no locks); and the same loop with tracing
  off, which gives the cost of one trace event;
- scenario throughput and scaling: `oomemu run` scenarios with 1, 2 and 8 CPU processes, each CPU with its own
  task looping `fault` + `free all` with memory to spare; the rate is sampled from the per-CPU `allocs`
  counters while the run is in its steady state;
- OOM kill latency: a 2-CPU scenario whose parents fork hogs again and again; per kill, the time from the
  victim's `signal_generate` (SIGKILL) to its `mmput` record that gave pages back, from trace.msgpack;
- select_bad_process over task tables of 1k, 10k and 100k tasks;
- boot and teardown of `oomemu run` on the default scenario;
- shared memory per emulated GiB (machines of 1, 16 and 64 GiB) and whether a 64 GiB machine boots;
- sweep throughput: runs per second of `oomemu sweep` on the local pool with -j 1 and -j 2, and the engine's
  overhead per run;
- controlled schedules: scheduling steps per second (PCT and random), controlled runs per second, and the
  controlled-mode hooks' cost to free mode's fast path.

Measurements that build machines run in forked children, so the bench process never holds a large segment and
every worker is gone when a measurement returns.

Layout: one module per figure family (`fastpath`, `scaling`, `oom`, `select`, `boot`, `shm`, `sweep`,
`controlled`),
and `core` with what they share (`in_child`, `figure`, the `Bench` runner, the table). A family module has

- `GROUP`: its name, as `--only` takes it;
- `FIGURES`: its figures in table order, id -> (title, unit, comparison ">=" / "<=" / None, target);
- `measure(bench)`: runs its measurements and fills `bench.figures[id] = figure(id, samples, ...)` for its ids
  and, if it likes, `bench.details[GROUP]`; `bench.quick`, `bench.repeats`, `bench.time_left()`,
  `bench._dir(name)` / `bench._done(dir)` (a run directory under the bench's work directory) are there for it.

A new family is one new module plus its name in `FAMILIES` (where its figures go in the table and the JSON) and
in `GROUPS` (when it runs). This module imports nothing heavy, so the CLI can list the groups cheaply.
"""

# Catalogue order: the table and the JSON document list the families' figures in this order.
FAMILIES = ("fastpath", "scaling", "oom", "select", "boot", "shm", "sweep", "controlled")
# Run order (shortest, least load-sensitive first; the scaling runs last, with the time left in the budget).
GROUPS = ("fastpath", "select", "shm", "boot", "oom", "sweep", "controlled", "scaling")

_EXPORTS = {"EmulatorLoop": "fastpath", "ReferenceAllocator": "fastpath", "FASTPATH_SCENARIO": "fastpath",
            "throughput_scenario": "scaling", "OOM_SCENARIO": "oom",
            "Bench": "core", "ChildFailed": "core", "in_child": "core", "figure": "core", "percentile": "core",
            "table_lines": "core", "run_bench": "core", "BUDGET_S": "core"}


def __getattr__(name):
    if name in _EXPORTS:
        from oomemu.bench.core import family
        return getattr(family(_EXPORTS[name]), name)
    if name in ("FIGURES", "FIGURE_IDS"):
        from oomemu.bench.core import catalogue
        return dict(catalogue()) if name == "FIGURES" else tuple(catalogue())
    raise AttributeError(f"module 'oomemu.bench' has no attribute {name!r}")
