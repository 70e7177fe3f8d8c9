"""printk into the run's dmesg.log, with the kernel's "[    5.123456] " prefix, and panic().

Follows kernel/printk/printk.c and kernel/panic.c of Linux 3.14 in output format. Each line is one
O_APPEND write, so lines from different CPUs never interleave within a line.
"""
import os

from oomemu.kernel import time as ktime
from oomemu.machine import G_PANIC, G_PANIC_CPU, G_STOP

KERN_EMERG = 0
KERN_ALERT = 1
KERN_CRIT = 2
KERN_ERR = 3
KERN_WARNING = 4
KERN_NOTICE = 5
KERN_INFO = 6
KERN_DEBUG = 7


def task_comm(m, task):
    """The comm of task row `task` as text ("swapper" for no task).

    Emulator-only.
    """
    if task < 0:
        return "swapper"
    return m.task_comm[task].decode("ascii", "replace")


def printk(cpu, level, text):
    """Log one or more lines at `level`. Follows: printk()."""
    fd = cpu.printk_fd
    if fd < 0:
        return
    ns = ktime.ns_since_boot(cpu.m)
    prefix = f"[{ns // 1_000_000_000:5d}.{(ns // 1000) % 1_000_000:06d}] "
    os.write(fd, "".join(prefix + line + "\n" for line in text.split("\n")).encode())


class Panic(BaseException):
    """Unwinds the panicking CPU's task: panic() never returns (the CPU loop catches it and halts)."""


def panic(cpu, message):
    """Halt the machine: log "Kernel panic - not syncing: …", stop every CPU, never return. Follows: panic()."""
    from oomemu.mm import vmstat
    from oomemu.trace import events as tp
    m = cpu.m
    vmstat.count_vm_event(cpu, vmstat.NR_PANICS)
    tp.trace_panic(cpu, 0)
    printk(cpu, KERN_EMERG, f"Kernel panic - not syncing: {message.rstrip()}")
    m.v_glob[G_PANIC_CPU] = cpu.id
    m.v_glob[G_PANIC] = 1
    m.v_glob[G_STOP] = 1
    raise Panic(message)
