"""The per-process CPU context passed explicitly to every emulated kernel function.

In the kernel, `current` and `smp_processor_id()` are implicit; here each CPU (or kswapd) process builds one
`CpuContext` at attach and hands it down as the first argument, so no module-level state differs between
processes.
"""
import os

from oomemu.config.profiles import DEFAULT_KERNEL, features_for


class CpuContext:
    """What one CPU (or kswapd) process knows about itself.

    `id` is its row in the machine's per-CPU table (CPUs first, then one kswapd per node); `current` is the task
    row executing now (-1 when idle).
    """

    def __init__(self, machine, row, scenario, *, tracer=None, printk_fd=-1):
        self.m = machine
        self.id = row
        self.os_pid = os.getpid()
        self.current = -1
        self.scenario = scenario
        self.trace = tracer
        self.printk_fd = printk_fd
        self.is_kswapd = machine.nr_cpus <= row < machine.nr_cpus + machine.nr_nodes
        self.nid = row - machine.nr_cpus if self.is_kswapd else 0
        self.features = scenario.features if scenario is not None else features_for(DEFAULT_KERNEL)
        self.ctl = None            # the schedule controller (oomemu/control.py) in controlled modes, else None
        self.sched = None          # the CPU's scheduler (kernel/sched.py), None in kswapd and unit tests
        self.debug_break = frozenset(scenario.debug_break) if scenario is not None else frozenset()
        ncols = machine.cpu.shape[1]
        self.vm_events = machine.v_cpu[row * ncols:(row + 1) * ncols]  # this CPU's row: counters it alone writes
        self.oom_constraint = 0    # oc->constraint of the OOM in progress (CONSTRAINT_*), for dump_header
        self.alloc_cache = {}      # (gfp_mask, zonelist id) -> (high_zoneidx, migratetype, preferred_zone)
