"""Rate limiting of log output. Follows lib/ratelimit.c and include/linux/ratelimit.h of Linux 3.14 (KERNEL §3.6).

A state is three slots of the segment's glob table (begin jiffy + 1, printed, missed), shared by all CPUs as
the kernel's static states are. Each state has its own lock (a trylock: a contended caller is suppressed), so
one state's traffic never suppresses another's (a page allocation failure warning never hides an OOM dump).
"""
from oomemu import sync
from oomemu.kernel import time as ktime
from oomemu.machine import G_HZ, G_NOPAGE_RS, G_OOM_RS, L_RATELIMIT, L_RATELIMIT_NOPAGE

DEFAULT_RATELIMIT_BURST = 10
_LOCK_OF = {G_OOM_RS: L_RATELIMIT, G_NOPAGE_RS: L_RATELIMIT_NOPAGE}   # ratelimit_state.lock, one per state


def DEFAULT_RATELIMIT_INTERVAL(m):
    """5 * HZ jiffies. Follows: include/linux/ratelimit.h."""
    return 5 * m.v_glob[G_HZ]


def __ratelimit(cpu, slot, func):
    """True if this call may print. Follows: lib/ratelimit.c ___ratelimit(), 3.14."""
    m = cpu.m
    g = m.v_glob
    lock = _LOCK_OF[slot]
    if not sync.spin_trylock(cpu, lock):
        return False
    try:
        now = ktime.jiffies(m)
        if not g[slot]:
            g[slot] = now + 1  # the window starts at the first call
        if now + 1 > g[slot] + DEFAULT_RATELIMIT_INTERVAL(m):
            if g[slot + 2]:
                from oomemu.kernel import printk
                printk.printk(cpu, printk.KERN_WARNING, f"{func}: {g[slot + 2]} callbacks suppressed")
            g[slot] = now + 1
            g[slot + 1] = 0
            g[slot + 2] = 0
        if g[slot + 1] < DEFAULT_RATELIMIT_BURST:
            g[slot + 1] += 1
            return True
        g[slot + 2] += 1
        return False
    finally:
        sync.spin_unlock(cpu, lock)
