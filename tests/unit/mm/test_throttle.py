"""Direct-reclaim throttling, 3.14 (issue 14 point 9; KERNEL §6.6 "Direct-reclaim throttling"): a direct
reclaimer waits on its node's pfmemalloc_wait while the free pages of the node's zones up to Normal are at or
below half the sum of their min watermarks; __GFP_FS callers wait killably until kswapd restores the reserve,
others at most HZ; kthreads and tasks with a fatal signal pending are never throttled; a fatal signal that
arrives while throttled makes try_to_free_pages return 1 (progress: no OOM kill).

The unit machine (DMA 16 MiB + Normal 48 MiB) has min watermarks 64 and 192 (worked out in test_fair_zone.py):
the reserve is 256 pages, so the node is throttled at 128 free pages or fewer and not at 129.
"""
import pytest

from machine_helpers import add_process, make_machine, run_to_completion
from oomemu.include.gfp import GFP_KERNEL, GFP_NOFS
from oomemu.include.mmzone import NR_FREE_PAGES
from oomemu.include.sched import (PF_KTHREAD, SIGKILL, TASK_INTERRUPTIBLE, TASK_KILLABLE, TASK_RUNNING,
                                  TIF_SIGPENDING)
from oomemu.machine import C_KSWAPD_SLEEPING, Z_STAT
from oomemu.mm import vmscan, vmstat
from oomemu.trace.events import WAIT_PFMEMALLOC

DMA, NORMAL = 0, 2
FREE = Z_STAT + NR_FREE_PAGES


@pytest.fixture
def mct():
    m, cpu = make_machine()
    row = add_process(m, cpu, "reclaimer", rss=10)
    cpu.current = row
    m.task_state[row] = TASK_RUNNING
    yield m, cpu, row
    m.close()


def set_free(m, dma, normal):
    m.zone[DMA, FREE] = dma
    m.zone[NORMAL, FREE] = normal


def throttle(cpu, m, gfp=GFP_KERNEL):
    return vmscan.throttle_direct_reclaim(cpu, gfp, m.zonelists[0], None)


def start_sleeping(coro):
    """Run the coroutine to its first sleep; fail if it finishes instead."""
    try:
        coro.send(None)
    except StopIteration:
        raise AssertionError("throttle_direct_reclaim returned without waiting")
    return coro


def resume(coro):
    """Resume a sleeping coroutine; its return value if it finishes, else the marker 'asleep'."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    return "asleep"


@pytest.mark.parametrize("dma,normal,throttled", [
    (0, 129, False), (64, 65, False), (0, 128, True), (64, 64, True), (10, 0, True)])
def test_threshold_is_half_the_min_watermarks(mct, dma, normal, throttled):
    m, cpu, _ = mct
    set_free(m, dma, normal)
    assert vmscan.pfmemalloc_watermark_ok(cpu, 0) is (not throttled)


def test_no_wait_above_the_threshold(mct):
    m, cpu, row = mct
    set_free(m, 0, 129)
    assert run_to_completion(throttle(cpu, m)) is False
    assert vmstat.counters_total(m)["direct_throttles"] == 0


def test_gfp_fs_waits_killably_until_kswapd_restores_the_reserve(mct):
    m, cpu, row = mct
    set_free(m, 0, 100)
    coro = start_sleeping(throttle(cpu, m))
    assert int(m.task_state[row]) == TASK_KILLABLE
    assert int(m.task_wait_kind[row]) == WAIT_PFMEMALLOC
    assert vmscan.pfmemalloc_waiters(m, 0)
    assert vmstat.counters_total(m)["direct_throttles"] == 1
    # kswapd's balance_pgdat: the reserve is back above half, the waiters are woken
    set_free(m, 0, 300)
    vmscan.wake_up_pfmemalloc(cpu, 0)
    assert int(m.task_state[row]) == TASK_RUNNING
    assert not vmscan.pfmemalloc_waiters(m, 0)
    assert resume(coro) is False


def test_a_wake_up_before_the_reserve_is_back_sleeps_again(mct):
    m, cpu, row = mct
    set_free(m, 0, 100)
    coro = start_sleeping(throttle(cpu, m))
    vmscan.wake_up_pfmemalloc(cpu, 0)       # prepare_kswapd_sleep wakes everyone before kswapd sleeps
    assert resume(coro) == "asleep"
    assert int(m.task_state[row]) == TASK_KILLABLE and vmscan.pfmemalloc_waiters(m, 0)


def test_fatal_signal_while_throttled_counts_as_progress(mct):
    m, cpu, row = mct
    set_free(m, 0, 100)
    coro = start_sleeping(vmscan.try_to_free_pages(cpu, m.zonelists[0], 0, GFP_KERNEL, None))
    m.task_pending[row] |= 1 << SIGKILL
    m.task_tif[row] |= TIF_SIGPENDING
    m.task_state[row] = TASK_RUNNING       # signal_wake_up's wake of the killable sleeper
    assert resume(coro) == 1                # reclaim is not even tried: no OOM kill from here
    assert not vmscan.pfmemalloc_waiters(m, 0)
    assert int(m.task_wait_kind[row]) == 0


def test_fatal_signal_pending_or_kthread_is_never_throttled(mct):
    m, cpu, row = mct
    set_free(m, 0, 0)
    m.task_flags[row] |= PF_KTHREAD
    assert run_to_completion(throttle(cpu, m)) is False
    m.task_flags[row] &= ~PF_KTHREAD
    m.task_pending[row] |= 1 << SIGKILL
    m.task_tif[row] |= TIF_SIGPENDING
    assert run_to_completion(throttle(cpu, m)) is False
    assert vmstat.counters_total(m)["direct_throttles"] == 0


def test_nofs_waits_interruptibly_for_at_most_a_second(mct):
    m, cpu, row = mct
    set_free(m, 0, 100)
    coro = start_sleeping(throttle(cpu, m, GFP_NOFS))
    assert int(m.task_state[row]) == TASK_INTERRUPTIBLE
    assert int(m.task_wait_kind[row]) == WAIT_PFMEMALLOC


def test_throttled_reclaimer_wakes_a_sleeping_kswapd(mct):
    m, cpu, row = mct
    krow = m.nr_cpus   # node 0's kswapd
    m.cpu[krow, C_KSWAPD_SLEEPING] = 1
    set_free(m, 0, 100)
    assert vmscan.pfmemalloc_watermark_ok(cpu, 0) is False
    assert int(m.cpu[krow, C_KSWAPD_SLEEPING]) == 0


def test_kswapd_does_not_sleep_while_someone_is_throttled(mct):
    m, cpu, row = mct
    set_free(m, 0, 100)
    start_sleeping(throttle(cpu, m))
    set_free(m, 4096, 12288)     # balanced: only the waiter keeps kswapd up
    assert vmscan.prepare_kswapd_sleep(cpu, 0, 0, 3) is False
    assert not vmscan.pfmemalloc_waiters(m, 0) and int(m.task_state[row]) == TASK_RUNNING
    assert vmscan.prepare_kswapd_sleep(cpu, 0, 0, 3) is True
