"""The vm sysctls the OOM path reads while the machine runs, kept in the shared segment: a write by any task
(the `sysctl` op, as `echo 1 > /proc/sys/vm/panic_on_oom`) is seen at once by every CPU process.

Follows kernel/sysctl.c vm_table of Linux 3.14 (proc_dointvec for panic_on_oom, oom_kill_allocating_task and
oom_dump_tasks; min_free_kbytes_sysctl_handler, which recomputes every zone's watermarks). The other sysctls
(lowmem_reserve_ratio, hung_task_*) stay as the scenario set them.
"""
from oomemu import sync
from oomemu.machine import (G_SYSCTL_MIN_FREE_KBYTES, G_SYSCTL_OOM_DUMP_TASKS, G_SYSCTL_OOM_KILL_ALLOCATING_TASK,
                            G_SYSCTL_PANIC_ON_OOM)

SLOTS = {"panic_on_oom": G_SYSCTL_PANIC_ON_OOM, "oom_kill_allocating_task": G_SYSCTL_OOM_KILL_ALLOCATING_TASK,
         "oom_dump_tasks": G_SYSCTL_OOM_DUMP_TASKS, "min_free_kbytes": G_SYSCTL_MIN_FREE_KBYTES}


def sysctl_init(m, sysctl, min_free_kbytes):
    """The boot values: the scenario's [sysctl] table and the min_free_kbytes boot computed."""
    g = m.glob
    g[G_SYSCTL_PANIC_ON_OOM] = sysctl.panic_on_oom
    g[G_SYSCTL_OOM_KILL_ALLOCATING_TASK] = sysctl.oom_kill_allocating_task
    g[G_SYSCTL_OOM_DUMP_TASKS] = sysctl.oom_dump_tasks
    g[G_SYSCTL_MIN_FREE_KBYTES] = min_free_kbytes


def sysctl_panic_on_oom(m):
    return m.v_glob[G_SYSCTL_PANIC_ON_OOM]


def sysctl_oom_kill_allocating_task(m):
    return m.v_glob[G_SYSCTL_OOM_KILL_ALLOCATING_TASK]


def sysctl_oom_dump_tasks(m):
    return m.v_glob[G_SYSCTL_OOM_DUMP_TASKS]


def proc_sys_write(cpu, name, value):
    """A write of `value` to /proc/sys/vm/NAME (validated at load). Follows: proc_dointvec(), and for
    min_free_kbytes min_free_kbytes_sysctl_handler() → setup_per_zone_wmarks(), 3.14."""
    m = cpu.m
    m.v_glob[SLOTS[name]] = value
    if name == "min_free_kbytes":
        setup_per_zone_wmarks(cpu, value)


def setup_per_zone_wmarks(cpu, min_free_kbytes):
    """Recompute every zone's watermarks (and restart its fair-allocation batch) from min_free_kbytes, each
    zone under its zone->lock. Follows: mm/page_alloc.c setup_per_zone_wmarks(), 3.14.

    Differs: totalreserve_pages (the overcommit heuristic's reserve) keeps its boot value.
    """
    from oomemu.mm import mm_init
    m = cpu.m
    for z in range(m.nr_zones):
        with sync.spinlock(cpu, m.zone_lock(z)):
            mm_init.__setup_per_zone_wmarks(m, min_free_kbytes, zones=(z,))

