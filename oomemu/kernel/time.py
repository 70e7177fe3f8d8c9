"""jiffies from CLOCK_MONOTONIC with the scenario's HZ.

Follows include/linux/jiffies.h (jiffies, msecs_to_jiffies) of Linux 3.14. Differs: jiffies are derived from
real monotonic time rather than a timer interrupt, so every process agrees on them without a shared tick.
"""
import time

from oomemu.machine import G_BOOT_NS, G_HZ

_monotonic_ns = time.monotonic_ns


def jiffies(m):
    """Jiffies since boot.

    Follows: the jiffies counter (include/linux/jiffies.h).
    """
    g = m.v_glob
    return (_monotonic_ns() - g[G_BOOT_NS]) * g[G_HZ] // 1_000_000_000


def jiffies_to_ns(m, j):
    """Jiffies to nanoseconds. Follows: jiffies_to_nsecs()."""
    return j * 1_000_000_000 // m.v_glob[G_HZ]


def msecs_to_jiffies(m, ms):
    """Milliseconds to jiffies, rounding up as the kernel does.

    Follows: kernel/time.c msecs_to_jiffies().
    """
    hz = m.v_glob[G_HZ]
    return max(1, -(-int(ms * hz) // 1000)) if ms > 0 else 0


def ns_since_boot(m):
    """Nanoseconds since the machine booted (emulator-only: the trace and printk clock)."""
    return _monotonic_ns() - m.v_glob[G_BOOT_NS]
