"""jiffies and the clock every emulated kernel decision reads, with the scenario's HZ.

Follows include/linux/jiffies.h (jiffies, msecs_to_jiffies) of Linux 3.14. Differs: in free mode jiffies are
derived from real monotonic time rather than a timer interrupt, so every process agrees on them without a
shared tick; in the controlled modes (oomemu/control.py) they derive from the virtual clock in the segment,
and no decision reads the host clock.
"""
import time

from oomemu.control import CT_VNOW
from oomemu.machine import G_BOOT_NS, G_HZ

_monotonic_ns = time.monotonic_ns


def now_ns(m):
    """The clock timers are set against (absolute ns: CLOCK_MONOTONIC, or boot + virtual ns). Emulator-only."""
    if m.controlled:
        return m.v_glob[G_BOOT_NS] + m.v_ctl[CT_VNOW]
    return _monotonic_ns()


def ns_since_boot(m):
    """Nanoseconds since the machine booted (emulator-only: the trace and printk clock)."""
    if m.controlled:
        return m.v_ctl[CT_VNOW]
    return _monotonic_ns() - m.v_glob[G_BOOT_NS]


def jiffies(m):
    """Jiffies since boot.

    Follows: the jiffies counter (include/linux/jiffies.h).
    """
    g = m.v_glob
    return ns_since_boot(m) * g[G_HZ] // 1_000_000_000


def jiffies_to_ns(m, j):
    """Jiffies to nanoseconds. Follows: jiffies_to_nsecs()."""
    return j * 1_000_000_000 // m.v_glob[G_HZ]


def timer_deadline_ns(m, timeout):
    """The absolute clock time (as now_ns) at which a timer armed now for `timeout` jiffies fires.

    Follows: kernel/timer.c schedule_timeout() → __mod_timer(jiffies + timeout), 3.14: a timer fires on the
    tick at which jiffies reaches its expiry, so a one-jiffy timeout ends at the next tick boundary (after 0
    to 1 jiffy, half a jiffy on average), not a whole 1/HZ from now.
    """
    expires = jiffies(m) + timeout
    return m.v_glob[G_BOOT_NS] + -(-expires * 1_000_000_000 // m.v_glob[G_HZ])


def msecs_to_jiffies(m, ms):
    """Milliseconds to jiffies, rounding up as the kernel does.

    Follows: kernel/time.c msecs_to_jiffies().
    """
    hz = m.v_glob[G_HZ]
    return max(1, -(-int(ms * hz) // 1000)) if ms > 0 else 0
