"""Congestion waits. Follows mm/backing-dev.c of Linux 3.14 (KERNEL §6.7)."""
from oomemu.kernel import sched as ksched


async def wait_iff_congested(cpu, zone, sync, timeout):
    """Sleep up to `timeout` jiffies only if a backing device is congested and the zone is flagged congested.

    Follows: mm/backing-dev.c wait_iff_congested(), 3.14. Differs: no block devices are modelled, so nothing
    is ever congested and this is always cond_resched(); returns the whole timeout.
    """
    await ksched.cond_resched(cpu)
    return timeout

