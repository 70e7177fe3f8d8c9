"""Processes that share the victim's mm, by profile (KERNEL §5.1 step 7 and its later forms, §8), and the
dying-current and exiting-task tests of 4.6-4.9 (KERNEL §3.2 step 2, §8).

A "sharer" is a process made with CLONE_VM and no CLONE_THREAD, reparented to init so that it is not the
victim's child. init sharing the mm is set by hand (as a vfork child of init would).
"""
import os
import re

import pytest

from machine_helpers import add_process, mk  # noqa: F401 (mk: the machine fixture)
from oomemu.include.gfp import GFP_KERNEL
from oomemu.include.sched import (MMF_OOM_SKIP, PF_EXITING, PF_KTHREAD, SIGKILL, SIGNAL_GROUP_EXIT, TIF_MEMDIE,
                                  TIF_SIGPENDING)
from oomemu.kernel import fork
from oomemu.machine import G_OOM_REAPER_LIST, MM_FLAGS, MM_USERS
from oomemu.mm import oom_kill, page_alloc

TOTALPAGES = 16384
SIGKILL_BIT = 1 << SIGKILL
THREAD = fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND
_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")


def sharer(m, cpu, victim, comm, **kw):
    s = add_process(m, cpu, comm, parent=victim, clone_flags=fork.CLONE_VM, **kw)
    m.task_parent[s] = 0
    return s


def init_shares(m, victim):
    mm = int(m.task_mm[victim])
    m.task_mm[0] = mm
    m.mm[mm, MM_USERS] += 1


def killed(m, row):
    return bool(m.task_pending[row] & SIGKILL_BIT)


def kill(cpu, p, tmp_path):
    path = tmp_path / "dmesg"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    cpu.printk_fd = fd
    try:
        oom_kill.oom_kill_process(cpu, p, GFP_KERNEL, 0, 1, TOTALPAGES, None, None, "Out of memory")
    finally:
        cpu.printk_fd = -1
        os.close(fd)
    return [_PREFIX.sub("", line) for line in path.read_text().splitlines()]


def queued(m):
    return int(m.glob[G_OOM_REAPER_LIST])


# --- 3.14 ----------------------------------------------------------------------------------------------------

def test_3_14_kills_an_init_sharer_too_and_each_sharer_as_a_group(mk, tmp_path):
    """3.14's loop skips only kernel threads and OOM_SCORE_ADJ_MIN sharers (§5.1 step 7), not init: init gets
    the "sharing same memory" line. A sharer's SIGKILL goes to its whole group (group = true)."""
    m, cpu = mk("3.14")
    v = add_process(m, cpu, "victim", rss=100)
    s = sharer(m, cpu, v, "sharer")
    t = add_process(m, cpu, "sharer", parent=s, clone_flags=THREAD)
    init_shares(m, v)
    lines = kill(cpu, v, tmp_path)
    init_comm = m.task_comm[0].decode()
    assert f"Kill process 1 ({init_comm}) sharing same memory" in lines
    assert f"Kill process {int(m.task_pid[s])} (sharer) sharing same memory" in lines
    assert killed(m, s) and killed(m, t)


# --- 4.6: the reaper, and who keeps it from the mm -----------------------------------------------------------------

@pytest.mark.parametrize("spared", [None, "init", "adj_min"])
def test_4_6_a_spared_sharer_keeps_the_reaper_away(mk, tmp_path, spared):
    """4.6 (KERNEL §8): sharers are killed without a line; init, kernel threads and OOM_SCORE_ADJ_MIN sharers are
    left alive, and then the reaper may not touch the mm (the victim is not queued). With no spared sharer the
    victim is queued. A spared sharer before another does not end the loop: the later sharer is killed."""
    m, cpu = mk("4.6")
    v = add_process(m, cpu, "victim", rss=100)
    if spared == "init":
        init_shares(m, v)
    elif spared == "adj_min":
        sharer(m, cpu, v, "pinned", adj=-1000)
    s = sharer(m, cpu, v, "sharer")
    lines = kill(cpu, v, tmp_path)
    assert killed(m, s)
    assert not any("sharing same memory" in line for line in lines)
    assert (queued(m) == v) == (spared is None)
    if spared == "init":
        assert not killed(m, 0)


# --- 4.9: every sharer but init and kernel threads ------------------------------------------------------------------

def test_4_9_init_pins_the_mm_which_gets_mmf_oom_skip(mk, tmp_path):
    """4.8/4.9 (KERNEL §5.1 step order note, §8): OOM_SCORE_ADJ_MIN sharers are killed too; init is spared, the mm
    gets MMF_OOM_SKIP, "oom killer V (victim) has mm pinned by 1 (init)" is printed and the reaper is not
    woken; a kernel thread using the mm is passed over without ending the loop."""
    m, cpu = mk("4.9")
    v = add_process(m, cpu, "victim", rss=100)
    init_shares(m, v)
    kt = sharer(m, cpu, v, "kthread-user")
    m.task_flags[kt] |= PF_KTHREAD
    pinned = sharer(m, cpu, v, "adjmin", adj=-1000)
    s = sharer(m, cpu, v, "sharer")
    lines = kill(cpu, v, tmp_path)
    init_comm = m.task_comm[0].decode()
    assert f"oom killer {int(m.task_pid[v])} (victim) has mm pinned by 1 ({init_comm})" in lines
    assert int(m.mm[int(m.task_mm[v]), MM_FLAGS]) & MMF_OOM_SKIP
    assert killed(m, pinned) and killed(m, s)
    assert not killed(m, kt) and not killed(m, 0)
    assert queued(m) == -1


def test_4_9_without_init_the_mm_is_reaped_and_not_skipped(mk, tmp_path):
    """The control: the same sharers without init: no MMF_OOM_SKIP, no "pinned" line, the victim is queued."""
    m, cpu = mk("4.9")
    v = add_process(m, cpu, "victim", rss=100)
    s = sharer(m, cpu, v, "sharer", adj=-1000)
    lines = kill(cpu, v, tmp_path)
    assert killed(m, s)
    assert not int(m.mm[int(m.task_mm[v]), MM_FLAGS]) & MMF_OOM_SKIP
    assert not any("has mm pinned" in line for line in lines)
    assert queued(m) == v


# --- the dying current: 4.6's mm test, 4.9's task_will_free_mem ------------------------------------------------------

def oom(cpu, current):
    cpu.current = current
    coro = oom_kill.out_of_memory(cpu, page_alloc.node_zonelist(cpu.m, 0), GFP_KERNEL, 0, None, False)
    try:
        coro.send(None)
        cpu.m.task_state[current] = 0
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("out_of_memory slept twice")


def fatal(m, row):
    m.task_pending[row] |= SIGKILL_BIT
    m.task_tif[row] |= TIF_SIGPENDING


def test_4_6_a_current_with_a_fatal_signal_but_no_mm_does_not_mark_itself(mk):
    """4.6: the "current is dying" shortcut needs current->mm; without one the scan kills the hog. With its mm,
    a fatal signal alone is enough (fatal_signal_pending, as in 3.14)."""
    m, cpu = mk("4.6")
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    fatal(m, cur)
    m.task_mm[cur] = -1
    oom(cpu, cur)
    assert not m.task_tif[cur] & TIF_MEMDIE and killed(m, hog)
    m2, cpu2 = mk("4.6")
    hog2 = add_process(m2, cpu2, "hog", rss=9000)
    cur2 = add_process(m2, cpu2, "alloc", rss=10)
    fatal(m2, cur2)
    oom(cpu2, cur2)
    assert m2.task_tif[cur2] & TIF_MEMDIE and not killed(m2, hog2)


@pytest.mark.parametrize("state,marks", [
    ("group_exit", True),             # SIGNAL_GROUP_EXIT, its own mm
    ("last_thread_exiting", True),    # PF_EXITING, no other live thread
    ("fatal_signal_only", False),     # 4.9 dropped fatal_signal_pending from this test
    ("group_exit_no_mm", False),      # no mm: nothing to free
    ("group_exit_oom_skip", False),   # the mm is MMF_OOM_SKIP already
    ("group_exit_live_sharer", False),  # another process uses the mm and is not dying
    ("group_exit_dying_sharer", True),  # ... or is dying too
])
def test_4_9_a_dying_current_marks_itself_only_if_its_memory_will_be_freed(mk, state, marks):
    """4.9's out_of_memory uses task_will_free_mem(current) (4.8's fortified form, KERNEL §8): current has an mm,
    not MMF_OOM_SKIP, the process is exiting (SIGNAL_GROUP_EXIT, or PF_EXITING on its last thread), and every
    other process sharing the mm is exiting too. Otherwise the scan kills the hog."""
    m, cpu = mk("4.9")
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    if state == "last_thread_exiting":
        m.task_flags[cur] |= PF_EXITING
    elif state == "fatal_signal_only":
        fatal(m, cur)
    else:
        m.sig_flags[cur] |= SIGNAL_GROUP_EXIT
    if state == "group_exit_no_mm":
        m.task_mm[cur] = -1
    if state == "group_exit_oom_skip":
        m.mm[int(m.task_mm[cur]), MM_FLAGS] |= MMF_OOM_SKIP
    if state in ("group_exit_live_sharer", "group_exit_dying_sharer"):
        s = sharer(m, cpu, cur, "sharer")
        assert int(m.mm[int(m.task_mm[cur]), MM_USERS]) == 2
        if state == "group_exit_dying_sharer":
            m.sig_flags[s] |= SIGNAL_GROUP_EXIT
    oom(cpu, cur)
    assert bool(m.task_tif[cur] & TIF_MEMDIE) == marks
    assert killed(m, hog) != marks


def test_4_9_an_exiting_thread_with_a_live_sibling_is_not_dying(mk):
    """PF_EXITING counts only on the process's last live thread (4.8's __task_will_free_mem): with a second live
    thread the process is not about to free its memory, so current does not mark itself."""
    m, cpu = mk("4.9")
    hog = add_process(m, cpu, "hog", rss=9000)
    cur = add_process(m, cpu, "alloc", rss=10)
    add_process(m, cpu, "alloc", parent=cur, clone_flags=THREAD)
    m.task_flags[cur] |= PF_EXITING
    oom(cpu, cur)
    assert not m.task_tif[cur] & TIF_MEMDIE and killed(m, hog)
