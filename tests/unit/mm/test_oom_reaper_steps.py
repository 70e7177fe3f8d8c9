"""The oom_reaper's steps (4.6 and 4.9 profiles; KERNEL §8): its retries, the mm_users reference it takes, and
what it leaves behind. The HZ/10 sleeps between tries are recorded instead of slept.
"""
import os
import re
import textwrap

import pytest

from machine_helpers import add_process
from oomemu.boot import create_machine
from oomemu.config import load_scenario_text
from oomemu.include.sched import MMF_OOM_SKIP
from oomemu.kernel import rwsem
from oomemu.machine import G_HZ, MM_ANONPAGES, MM_FLAGS, MM_SEM_WRITER, MM_USERS
from oomemu.mm import oom_kill
from oomemu.percpu import CpuContext

_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")


@pytest.fixture
def mk():
    made = []

    def make(kernel):
        text = textwrap.dedent(f"""
            [machine]
            cpus = 2
            max_tasks = 64
            kernel = "{kernel}"
            [[machine.node]]
            zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }}
            """)
        sc = load_scenario_text(text, name="unit")
        m = create_machine(sc, ring_records=64)
        made.append(m)
        cpu = CpuContext(m, 0, sc)
        rc = CpuContext(m, m.oom_reaper_row, sc)
        rc.current = m.oom_reaper_task
        return m, cpu, rc
    yield make
    for m in made:
        m.close()


@pytest.fixture
def sleeps(monkeypatch):
    out = []
    monkeypatch.setattr(oom_kill, "schedule_timeout_idle", lambda c, t: out.append(t))
    return out


def reap(rc, p, tmp_path):
    path = tmp_path / "dmesg"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    rc.printk_fd = fd
    try:
        oom_kill.oom_reap_task(rc, p)
    finally:
        rc.printk_fd = -1
        os.close(fd)
    return [_PREFIX.sub("", line) for line in path.read_text().splitlines()]


def test_a_reap_that_succeeds_on_the_tenth_try_is_not_reported_as_failed(mk, sleeps, tmp_path, monkeypatch):
    """oom_reap_task tries MAX_OOM_REAP_RETRIES = 10 times, HZ/10 apart: mmap_sem busy for 9 tries, free on the
    10th: 9 sleeps of HZ/10, the "reaped process" line and no "unable to reap" line."""
    m, cpu, rc = mk("4.6")
    p = add_process(m, cpu, "victim", rss=100)
    mm = int(m.task_mm[p])
    tries = []
    real = rwsem.down_read_trylock

    def trylock(c, x):
        tries.append(x)
        return len(tries) >= 10 and real(c, x)
    monkeypatch.setattr(rwsem, "down_read_trylock", trylock)
    lines = reap(rc, p, tmp_path)
    assert tries == [mm] * 10
    assert sleeps == [int(m.glob[G_HZ]) // 10] * 9
    assert len(lines) == 1 and lines[0].startswith(f"oom_reaper: reaped process {int(m.task_pid[p])} (victim)")


def test_a_reap_that_never_gets_the_lock_sleeps_after_each_of_ten_tries(mk, sleeps, tmp_path):
    """mmap_sem held for write throughout: 10 tries with a HZ/10 sleep after each, then the failure line."""
    m, cpu, rc = mk("4.6")
    p = add_process(m, cpu, "victim", rss=100)
    m.mm[int(m.task_mm[p]), MM_SEM_WRITER] = p
    lines = reap(rc, p, tmp_path)
    assert sleeps == [int(m.glob[G_HZ]) // 10] * 10
    assert lines == [f"oom_reaper: unable to reap pid:{int(m.task_pid[p])} (victim)"]


def test_a_victim_past_exit_mm_is_done_at_once_and_can_be_queued_again(mk, sleeps, tmp_path):
    """No thread with an mm (find_lock_task_mm NULL): nothing to reap, no retry, no line; the task's
    oom_reaper_list link is cleared, so wake_oom_reaper may queue it again."""
    m, cpu, rc = mk("4.6")
    p = add_process(m, cpu, "victim", rss=100)
    m.task_mm[p] = -1
    assert reap(rc, p, tmp_path) == [] and sleeps == []
    assert int(m.task_oom_reaper_list[p]) == -1
    oom_kill.wake_oom_reaper(cpu, p)
    assert oom_kill._oom_reaper_dequeue(cpu) == p


def test_an_mm_with_no_users_left_is_not_touched(mk, sleeps, tmp_path):
    """mm_users already 0 (the last mmput is under way): no reference is taken (it stays 0), nothing is
    unmapped, no retry and no line."""
    m, cpu, rc = mk("4.6")
    p = add_process(m, cpu, "victim", rss=100)
    mm = int(m.task_mm[p])
    m.mm[mm, MM_USERS] = 0
    assert reap(rc, p, tmp_path) == [] and sleeps == []
    assert int(m.mm[mm, MM_USERS]) == 0 and int(m.mm[mm, MM_ANONPAGES]) == 100


def test_the_reapers_mm_reference_is_dropped_again(mk, sleeps, tmp_path):
    """The reaper takes one mm_users reference and its mmput drops it: a victim sharing its mm with one other
    process (mm_users 2) ends with mm_users 2."""
    from oomemu.kernel import fork
    m, cpu, rc = mk("4.6")
    p = add_process(m, cpu, "victim", rss=0)
    add_process(m, cpu, "sharer", parent=p, clone_flags=fork.CLONE_VM)
    mm = int(m.task_mm[p])
    assert int(m.mm[mm, MM_USERS]) == 2
    lines = reap(rc, p, tmp_path)
    assert lines[0].startswith("oom_reaper: reaped process")
    assert int(m.mm[mm, MM_USERS]) == 2


@pytest.mark.parametrize("marked", [True, False])
def test_4_9_the_reaped_mm_is_skipped_whether_or_not_signal_oom_mm_is_set(mk, sleeps, tmp_path, marked):
    """4.9: after the reap the mm gets MMF_OOM_SKIP: signal->oom_mm when the victim was marked, else the task's
    own mm."""
    m, cpu, rc = mk("4.9")
    p = add_process(m, cpu, "victim", rss=10)
    mm = int(m.task_mm[p])
    if marked:
        oom_kill.mark_oom_victim(cpu, p)
        assert int(m.sig_oom_mm[p]) == mm
    reap(rc, p, tmp_path)
    assert int(m.mm[mm, MM_FLAGS]) & MMF_OOM_SKIP
