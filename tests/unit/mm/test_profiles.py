"""Kernel profiles (oomemu/config/profiles.py) and each switch pinned to KERNEL's facts.

Expected numbers and lines are worked out by hand from KERNEL.md (§4.1, §4.2, §5.1, §8) and the kernel trees
the switches' docstrings cite; nothing here derives an expectation by calling the code under test.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from machine_helpers import add_process, run_to_completion
from oomemu.boot import create_machine
from oomemu.config import ScenarioError, load_scenario_text
from oomemu.config.profiles import KERNELS, PROFILES, SWITCHES, features_for
from oomemu.fs.proc import base as proc_base
from oomemu.include.oom import OOM_SCAN_ABORT, OOM_SCAN_CONTINUE, OOM_SCAN_OK
from oomemu.include.sched import EXIT_ZOMBIE, MMF_OOM_SKIP, PF_EXITING, TIF_MEMDIE
from oomemu.kernel import exit as kexit
from oomemu.kernel import fork, rwsem
from oomemu.machine import G_OOM_LOCK, G_TOTAL_SWAP, G_TOTALRAM, MM_ANONPAGES, MM_FLAGS, MM_SEM_WRITER
from oomemu.mm import oom_kill, page_alloc
from oomemu.percpu import CpuContext

THREAD = fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND
LONG_MIN = -(1 << 63)
_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")


def machine(kernel="3.14", features=""):
    """The 64 MiB, 2-CPU unit machine (DMA 16 MiB + Normal 48 MiB, no swap) with profile `kernel`."""
    text = textwrap.dedent(f"""
        [machine]
        cpus = 2
        max_tasks = 64
        kernel = "{kernel}"
        [[machine.node]]
        zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }}
        """) + (f"[kernel]\nfeatures = {{ {features} }}\n" if features else "")
    sc = load_scenario_text(text, name="unit")
    m = create_machine(sc, ring_records=64)
    return m, CpuContext(m, 0, sc)


@pytest.fixture
def mk():
    made = []

    def make(kernel="3.14", features=""):
        m, cpu = machine(kernel, features)
        made.append(m)
        return m, cpu
    yield make
    for m in made:
        m.close()


def totalpages(m):
    return int(m.glob[G_TOTALRAM] + m.glob[G_TOTAL_SWAP])


def proc(m, cpu, comm, **kw):
    kw.setdefault("ptes", 0)
    return add_process(m, cpu, comm, **kw)


class Dmesg:
    def __init__(self, cpu, path):
        self.cpu, self.path = cpu, path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.cpu.printk_fd = self.fd
        return self

    def __exit__(self, *exc):
        self.cpu.printk_fd = -1
        os.close(self.fd)
        self.lines = [_PREFIX.sub("", line) for line in self.path.read_text().splitlines()]


# =============================================================================================================
# The profile table and the [kernel] features overrides (DESIGN §9)
# =============================================================================================================

def test_profiles_are_the_issues_kernels_and_3_14_is_plain():
    assert KERNELS == ("3.14", "3.16", "3.19", "4.2", "4.6", "4.7", "4.9", "4.17", "5.1", "6.1")
    assert PROFILES["3.14"] == frozenset()
    # 3.16.0's shrink_lruvec sets scan_adjusted for global direct reclaim at DEF_PRIORITY; 3.14.1's starts false
    assert PROFILES["3.16"] == frozenset({"full_scan_at_def_priority"})
    assert load_scenario_text("", name="x").machine.kernel == "3.14"


@pytest.mark.parametrize("kernel,on,off", [
    ("3.19", {"drop_exit_state_test", "task_will_free_mem", "unmark_oom_victim"}, {"oom_lock_mutex"}),
    ("4.2", {"unmark_oom_victim", "oom_lock_mutex"}, {"oom_reaper", "no_exiting_abort"}),
    ("4.6", {"oom_reaper", "oom_reaper_hides_victim", "no_exiting_abort"},
     {"kill_all_sharers", "mmf_oom_skip", "bounded_reclaim_retries"}),
    ("4.7", {"oom_reaper", "bounded_reclaim_retries"}, {"kill_all_sharers", "mmf_oom_skip"}),
    ("4.9", {"kill_all_sharers", "tsk_is_oom_victim", "mmf_oom_skip", "oom_reaper", "bounded_reclaim_retries"},
     {"oom_reaper_hides_victim", "no_root_bonus"}),
    ("4.17", {"no_root_bonus", "pgtables_bytes"}, {"nr_pmds", "no_sacrifice_child"}),
    ("5.1", {"no_sacrifice_child", "oom_kill_summary", "deadlocked_on_memory"}, {"signed_badness"}),
    ("6.1", {"signed_badness", "kill_message_uid", "oom_lock_mutex", "oom_reaper"}, {"oom_reaper_hides_victim"}),
])
def test_profile_switches_follow_kernel_history(kernel, on, off):
    """Each switch arrives with the version KERNEL §8 gives it; 4.9's MMF_OOM_SKIP retires 4.6's adj edit."""
    f = features_for(kernel)
    assert all(getattr(f, name) for name in on)
    assert not any(getattr(f, name) for name in off)


def test_every_switch_is_in_some_profile_and_the_profiles_satisfy_their_own_dependencies():
    names = {s.name for s in SWITCHES}
    assert set().union(*PROFILES.values()) == names
    for kernel in KERNELS:
        f = features_for(kernel)
        for s in SWITCHES:
            if getattr(f, s.name):
                assert all(getattr(f, need) for need in s.needs), (kernel, s.name)


def _error(text):
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(textwrap.dedent(text), name="x")
    return str(info.value)


def test_a_single_switch_can_be_turned_off_or_on():
    sc = load_scenario_text('[machine]\nkernel = "4.2"\n[kernel]\nfeatures = { oom_lock_mutex = false, '
                            'no_root_bonus = true }\n', name="x")
    assert not sc.features.oom_lock_mutex and sc.features.unmark_oom_victim and sc.features.no_root_bonus


def test_unknown_switch_is_an_error_naming_it():
    msg = _error('[kernel]\nfeatures = { oom_reapr = false }\n')
    assert msg.startswith("kernel.features.oom_reapr: unknown key for a kernel switch; allowed: ")
    assert '(did you mean "oom_reaper"?)' in msg


def test_turning_off_a_needed_switch_names_both():
    msg = _error('[machine]\nkernel = "4.6"\n[kernel]\nfeatures = { oom_reaper = false }\n')
    assert msg == ('kernel.features.oom_reaper = false: oom_reaper_hides_victim (on in machine.kernel = "4.6") '
                   'needs oom_reaper; also set kernel.features.oom_reaper_hides_victim = false')


def test_turning_on_a_switch_without_what_it_needs_names_both():
    msg = _error('[machine]\nkernel = "4.2"\n[kernel]\nfeatures = { oom_reaper_hides_victim = true }\n')
    assert msg == ('kernel.features.oom_reaper_hides_victim = true: needs oom_reaper, which machine.kernel = '
                   '"4.2" does not have; also set kernel.features.oom_reaper = true')


def test_bad_features_exit_2_before_anything_starts(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[machine]\nkernel = "4.6"\n[kernel]\nfeatures = { oom_reaper = false }\n')
    proc = subprocess.run([sys.executable, "-m", "oomemu", "run", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "oom_reaper_hides_victim" in proc.stderr
    assert not (tmp_path / "run" / "trace.msgpack").exists()


def test_features_round_trip_through_scenario_json():
    from oomemu.config import scenario_to_dict
    from oomemu.config.load import scenario_from_dict
    sc = load_scenario_text('[machine]\nkernel = "4.9"\n[kernel]\nfeatures = { kill_all_sharers = false }\n',
                            name="x")
    again = scenario_from_dict(scenario_to_dict(sc), name="x", source="x")
    assert again.features == sc.features and not again.features.kill_all_sharers


# =============================================================================================================
# Badness: the root bonus (4.17), signed badness (5.9), the /proc oom_score formulas (KERNEL §4.1, §4.2)
# =============================================================================================================

BASE = dict(rss=1000, file=200, ptes=3, swap=50)     # rss + file + ptes + swapents = 1253; nr_pmds = ceil(3/512) = 1


@pytest.mark.parametrize("kernel,kw,expected", [
    ("3.14", dict(BASE, uid=0), 1253 - 37),               # 3%: 1253*3//100 = 37
    ("4.9", dict(BASE, uid=0), 1254 - 37),                # + nr_pmds (4.0-4.15): 1254*3//100 = 37
    ("4.17", dict(BASE, uid=0), 1254),                    # no root bonus; pgtables = ptes + pmds
    ("4.17", dict(BASE, caps=oom_kill.CAP_SYS_ADMIN), 1254),
    ("3.14", dict(BASE, adj=-999), 1),                    # 1253 - 999*16 < 0: floors at 1
    ("6.1", dict(BASE, adj=-999), 1254 - 999 * 16),       # signed: -14730, no floor
    ("6.1", dict(BASE, adj=-79), 1254 - 1264),            # -10
    ("6.1", dict(), 0),                                   # an empty mm scores 0, not 1
    ("6.1", dict(BASE, adj=-1000), LONG_MIN),
])
def test_badness_per_profile(mk, kernel, kw, expected):
    m, cpu = mk(kernel)
    p = proc(m, cpu, "t", **kw)
    assert totalpages(m) // 1000 == 16
    assert oom_kill.oom_badness(cpu, p, None, None, totalpages(m)) == expected


def test_signed_badness_is_long_min_for_init_kthreads_and_no_mm(mk):
    m, cpu = mk("6.1")
    gone = proc(m, cpu, "gone", rss=10)
    m.task_mm[gone] = -1
    for row in (0, 1, 2, gone):    # init, kthreadd, kswapd0, a task past exit_mm
        assert oom_kill.oom_badness(cpu, row, None, None, totalpages(m)) == LONG_MIN


def test_badness_vector_agrees_per_profile(mk):
    for kernel in ("3.14", "4.9", "4.17", "6.1"):
        m, cpu = mk(kernel)
        rows = [proc(m, cpu, f"t{i}", rss=37 * i, ptes=i % 3, adj=(-1000, -999, -79, 0, 500)[i % 5],
                     uid=(0, 1000)[i % 2]) for i in range(10)]
        vec = oom_kill.badness_vector(m, rows, totalpages(m), features=cpu.features).tolist()
        assert vec == [oom_kill.oom_badness(cpu, r, None, None, totalpages(m)) for r in rows], kernel


@pytest.mark.parametrize("kernel,kw,expected", [
    # 3.14: badness * 1000 / totalpages, unsigned
    ("3.14", dict(rss=8192, ptes=16), (8192 + 16) * 1000 // 16384),            # 500
    ("3.14", dict(rss=8192, ptes=16, uid=0), (8208 - 246) * 1000 // 16384),     # 3% off: 485
    ("3.14", dict(rss=10), 0),                                                  # 10*1000/16384 = 0
    ("3.14", dict(rss=10, adj=-1000), 0),
    # 5.9: (1000 + badness*1000/totalpages) * 2 / 3, badness with pmds (ceil(16/512) = 1), no root bonus
    ("6.1", dict(rss=8192, ptes=16), (1000 + 8209 * 1000 // 16384) * 2 // 3),   # (1000+501)*2/3 = 1000
    ("6.1", dict(rss=8192, ptes=16, uid=0), 1000),
    ("6.1", dict(rss=10), 666),                                                 # a tiny task reads 666
    ("6.1", dict(rss=10, adj=1000), (1000 + (10 + 16000) * 1000 // 16384) * 2 // 3),   # 1317
    ("6.1", dict(rss=10, adj=-500), 342),      # badness 10-8000 = -7990; -7990000/16384 = -487 (C truncates
                                               # toward 0; flooring would give -488 and 341): 513*2/3 = 342
    ("6.1", dict(rss=10, adj=-1000), 0),
])
def test_proc_oom_score_formulas(mk, kernel, kw, expected):
    m, cpu = mk(kernel)
    p = proc(m, cpu, "t", **kw)
    assert totalpages(m) == 16384
    assert proc_base.proc_oom_score(cpu, p) == expected


# =============================================================================================================
# The scan (KERNEL §2.2 and its later changes, §8)
# =============================================================================================================

def test_exit_state_test_dropped_in_3_19_zombie_victim_aborts(mk):
    """3.14 skips a zombie first; from 3.18 a zombie that still has TIF_MEMDIE ABORTs (exit_mm now clears it,
    so only a zombie whose flag survived, e.g. set after its exit_mm, shows this)."""
    for kernel, expected in (("3.14", OOM_SCAN_CONTINUE), ("3.19", OOM_SCAN_ABORT), ("4.2", OOM_SCAN_ABORT)):
        m, cpu = mk(kernel)
        z = proc(m, cpu, "z", rss=10)
        m.task_exit_state[z] = EXIT_ZOMBIE
        m.task_tif[z] |= TIF_MEMDIE
        m.task_mm[z] = -1
        assert oom_kill.oom_scan_process_thread(m, z, 16384, None, False, cpu.features) == expected, kernel


def test_exiting_task_aborts_until_4_6(mk):
    for kernel, expected in (("3.14", OOM_SCAN_ABORT), ("3.19", OOM_SCAN_ABORT), ("4.6", OOM_SCAN_OK)):
        m, cpu = mk(kernel)
        e = proc(m, cpu, "e", rss=10)
        m.task_flags[e] |= PF_EXITING
        assert oom_kill.oom_scan_process_thread(m, e, 16384, None, False, cpu.features) == expected, kernel
        assert oom_kill.classify_all(m, [e], False, cpu.features).tolist() == [expected]


def test_4_9_victim_process_aborts_from_any_thread_until_mmf_oom_skip(mk):
    """tsk_is_oom_victim() is per process: a thread without TIF_MEMDIE ABORTs too; MMF_OOM_SKIP passes over it."""
    m, cpu = mk("4.9")
    p = proc(m, cpu, "v", rss=100)
    t = add_process(m, cpu, "v", parent=p, clone_flags=THREAD)
    oom_kill.mark_oom_victim(cpu, p)
    assert oom_kill.oom_scan_process_thread(m, t, 16384, None, False, cpu.features) == OOM_SCAN_ABORT
    m.mm[m.task_mm[p], MM_FLAGS] |= MMF_OOM_SKIP
    assert oom_kill.oom_scan_process_thread(m, t, 16384, None, False, cpu.features) == OOM_SCAN_CONTINUE
    assert oom_kill.classify_all(m, [p, t], False, cpu.features).tolist() == [OOM_SCAN_CONTINUE] * 2
    assert oom_kill.oom_badness(cpu, p, None, None, 16384) == 0      # an MMF_OOM_SKIP mm is not eligible


# =============================================================================================================
# Killing: child sacrifice (5.1), sharers (4.8), the kill lines of 3.14 and 6.1 byte for byte (KERNEL §5.1)
# =============================================================================================================

def _kill(cpu, p, points=0):
    oom_kill.oom_kill_process(cpu, p, 0xd0, 0, points, 16384, None, None, "Out of memory")


@pytest.mark.parametrize("kernel,child_dies", [("3.14", True), ("5.1", False)])
def test_sacrifice_child_on_and_off(mk, kernel, child_dies):
    m, cpu = mk(kernel)
    p = proc(m, cpu, "parent", rss=8000)
    c = proc(m, cpu, "kid", rss=256, parent=p)
    _kill(cpu, p)
    killed = [r for r in (p, c) if m.task_tif[r] & TIF_MEMDIE]
    assert killed == ([c] if child_dies else [p])


@pytest.mark.parametrize("kernel,sharer_killed", [("3.14", False), ("4.6", False), ("4.9", True)])
def test_adj_min_sharer_killed_from_4_8(mk, kernel, sharer_killed):
    m, cpu = mk(kernel)
    p = proc(m, cpu, "v", rss=100)
    s = add_process(m, cpu, "s", parent=p, clone_flags=fork.CLONE_VM, adj=-1000)
    m.task_parent[s] = 0
    _kill(cpu, p)
    assert bool(m.task_pending[s] & (1 << 9)) == sharer_killed


def test_dmesg_3_14_and_6_1_byte_for_byte(mk, tmp_path):
    """The same kill in both profiles (victim pid 5 in 6.1: the oom_reaper kthread is pid 4). 3.14: KERNEL §3.4,
    §3.5, §5.1; 6.1: the 5.9.1 formats (dump_header, dump_tasks, dump_oom_summary, __oom_kill_process)."""
    out = {}
    for kernel in ("3.14", "6.1"):
        m, cpu = mk(kernel)
        p = proc(m, cpu, "hog", rss=1000, file=200, ptes=3, swap=50, adj=250, uid=1000)
        with Dmesg(cpu, tmp_path / f"{kernel}.log") as log:
            _kill(cpu, p, points=321)
        out[kernel] = [line for line in log.lines if not line.startswith(("Node ", "lowmem_reserve", "Mem-Info"))
                      and "pagecache" not in line and "pages RAM" not in line]
    assert out["3.14"] == [
        "swapper invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0",
        "swapper cpuset=/ mems_allowed=0",
        "CPU: 0 PID: 0 Comm: swapper Not tainted 3.14.0-oomemu #1",
        "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
        "[    4]  1000     4     1200     1200       3       50           250 hog",
        "Out of memory: Kill process 4 (hog) score 321 or sacrifice child",
        "Killed process 4 (hog) total-vm:4800kB, anon-rss:4000kB, file-rss:800kB",
    ]
    assert out["6.1"] == [
        "swapper invoked oom-killer: gfp_mask=0xd0(GFP_KERNEL), order=0, oom_score_adj=0",
        "CPU: 0 PID: 0 Comm: swapper Not tainted 6.1.0-oomemu #1",
        "Tasks state (memory values in pages):",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        # pgtables_bytes = (3 PTE pages + 1 PMD page) * 4096
        "[      5]  1000     5     1200     1200    16384       50           250 hog",
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,"
        "task=hog,pid=5,uid=1000",
        "Out of memory: Killed process 5 (hog) total-vm:4800kB, anon-rss:4000kB, file-rss:800kB, shmem-rss:0kB, "
        "UID:1000 pgtables:16kB oom_score_adj:250",
    ]


def test_6_1_no_killable_task_is_deadlocked_on_memory(mk, tmp_path):
    from oomemu.kernel import printk
    m, cpu = mk("6.1")
    with Dmesg(cpu, tmp_path / "d.log") as log:
        with pytest.raises(printk.Panic):
            run_to_completion(oom_kill.out_of_memory(cpu, m.zonelists[0], 0xd0, 0, None, False, from_kworker=True))
    assert "Out of memory and no killable processes..." in log.lines
    assert log.lines[-1] == "Kernel panic - not syncing: System is deadlocked on memory"


# =============================================================================================================
# exit_mm clears TIF_MEMDIE (4.0); the oom_lock mutex (4.2)
# =============================================================================================================

@pytest.mark.parametrize("kernel,cleared", [("3.14", False), ("3.19", True), ("4.2", True)])
def test_tif_memdie_cleared_in_exit_mm_from_3_18(mk, kernel, cleared):
    m, cpu = mk(kernel)
    p = proc(m, cpu, "v", rss=10)
    oom_kill.mark_oom_victim(cpu, p)
    cpu.current = p
    run_to_completion(kexit.exit_mm(cpu, p))
    assert bool(m.task_tif[p] & TIF_MEMDIE) == (not cleared)


def test_oom_lock_busy_is_progress_after_one_jiffy(mk):
    """4.2: a busy mutex_trylock sleeps one jiffy uninterruptibly and reports progress (KERNEL §8)."""
    m, cpu = mk("4.2")
    p = proc(m, cpu, "a", rss=10)
    cpu.current = p
    assert oom_kill.mutex_trylock_oom_lock(cpu)
    assert not oom_kill.mutex_trylock_oom_lock(cpu)
    coro = page_alloc.__alloc_pages_may_oom_oom_lock(cpu, 0xd0, 0, m.zonelists[0], 2, None, 2, 0)
    kind, _ = coro.send(None)           # it sleeps (schedule_timeout_uninterruptible(1))
    assert m.task_state[p] == 2         # TASK_UNINTERRUPTIBLE
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    assert done.value.value == (None, 1)
    oom_kill.mutex_unlock_oom_lock(cpu)
    assert m.glob[G_OOM_LOCK] == 0


# =============================================================================================================
# The oom_reaper (4.6): its retry budget and its messages
# =============================================================================================================

def _reaper_cpu(m, sc):
    cpu = CpuContext(m, m.oom_reaper_row, sc)
    cpu.current = m.oom_reaper_task
    return cpu


def test_reaper_row_and_task_exist_only_with_the_switch(mk):
    m, _ = mk("3.14")
    assert m.oom_reaper_row == -1 and m.nr_rows_cpu == 3
    m, _ = mk("4.6")
    assert (m.oom_reaper_row, m.nr_rows_cpu, m.row_name(3)) == (3, 4, "oom_reaper")
    assert m.task_comm[m.oom_reaper_task] == b"oom_reaper" and m.task_pid[m.oom_reaper_task] == 4


@pytest.mark.parametrize("kernel", ["4.6", "4.9"])
def test_reaper_reaps_anon_memory_and_hides_the_victim(mk, tmp_path, kernel):
    """4.6: unmap, log "reaped process", adj -> OOM_SCORE_ADJ_MIN, TIF_MEMDIE cleared. 4.9: MMF_OOM_SKIP instead."""
    m, cpu = mk(kernel)
    p = proc(m, cpu, "victim", rss=0)
    cpu.current = p
    from oomemu.mm import memory
    for _ in range(64):
        assert run_to_completion(memory.handle_mm_fault(cpu, int(m.task_mm[p]), 0x200da)) == 0
    free_before = int(m.zone[:, page_alloc._FREE].sum())
    assert m.mm[m.task_mm[p], MM_ANONPAGES] == 64
    oom_kill.mark_oom_victim(cpu, p)
    rc = _reaper_cpu(m, cpu.scenario)
    with Dmesg(rc, tmp_path / "r.log") as log:
        oom_kill.oom_reap_task(rc, p)
    pid = int(m.task_pid[p])
    assert log.lines == [f"oom_reaper: reaped process {pid} (victim), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB"]
    assert m.mm[m.task_mm[p], MM_ANONPAGES] == 0
    assert int(m.zone[:, page_alloc._FREE].sum()) == free_before + 64      # given back to the buddy allocator
    hides = kernel == "4.6"
    assert (m.sig_oom_score_adj[p] == -1000) == hides
    assert bool(m.task_tif[p] & TIF_MEMDIE) == (not hides)
    assert bool(m.mm[m.task_mm[p], MM_FLAGS] & MMF_OOM_SKIP) == (not hides)


@pytest.mark.parametrize("kernel", ["4.6", "4.9"])
def test_reaper_gives_up_after_ten_tries_hz_over_10_apart(mk, tmp_path, kernel):
    """mmap_sem held for write: 10 read trylocks (MAX_OOM_REAP_RETRIES), HZ/10 apart (9 sleeps of 25 jiffies at
    HZ=250, 0.9 s), then "oom_reaper: unable to reap pid:N (comm)"; 4.9 hides the mm anyway (MMF_OOM_SKIP)."""
    import time
    m, cpu = mk(kernel)
    p = proc(m, cpu, "victim", rss=100)
    mm = int(m.task_mm[p])
    m.mm[mm, MM_SEM_WRITER] = p          # someone holds it for write
    oom_kill.mark_oom_victim(cpu, p)
    rc = _reaper_cpu(m, cpu.scenario)
    tries = []
    real = rwsem.down_read_trylock
    rwsem.down_read_trylock = lambda c, x: tries.append(x) or real(c, x)
    try:
        t0 = time.monotonic()
        with Dmesg(rc, tmp_path / "r.log") as log:
            oom_kill.oom_reap_task(rc, p)
        took = time.monotonic() - t0
    finally:
        rwsem.down_read_trylock = real
    assert tries == [mm] * 10
    assert 0.85 <= took < 3.0
    assert log.lines == [f"oom_reaper: unable to reap pid:{int(m.task_pid[p])} (victim)"]
    assert bool(m.mm[mm, MM_FLAGS] & MMF_OOM_SKIP) == (kernel == "4.9")
    assert m.task_tif[p] & TIF_MEMDIE          # 4.6.2 keeps TIF_MEMDIE on a failed reap


def test_wake_oom_reaper_queues_a_task_once(mk):
    m, cpu = mk("4.6")
    p = proc(m, cpu, "v", rss=1)
    q = proc(m, cpu, "w", rss=1)
    oom_kill.wake_oom_reaper(cpu, p)
    oom_kill.wake_oom_reaper(cpu, p)
    oom_kill.wake_oom_reaper(cpu, q)
    assert [oom_kill._oom_reaper_dequeue(cpu) for _ in range(3)] == [q, p, -1]   # pushed at the head (4.6.2)


@pytest.mark.parametrize("kernel", ["3.19", "4.6", "4.9", "6.1"])
def test_classify_all_matches_the_scalar_scan_per_profile(mk, kernel):
    """The vectorised scan equals oom_scan_process_thread under each profile's switches, over random exit
    states, TIF_MEMDIE, PF_EXITING, mms, signal->oom_mm and MMF_OOM_SKIP, with and without force_kill."""
    import random

    import numpy as np
    from oomemu.include.oom import OOM_FLAG_ORIGIN
    from oomemu.include.sched import EXIT_DEAD
    m, cpu = mk(kernel)
    rng = random.Random(419)
    leaders = [proc(m, cpu, f"p{i}", rss=rng.randint(0, 500), adj=rng.choice([-1000, 0, 0, 300])) for i in range(20)]
    for _ in range(8):
        add_process(m, cpu, "t", parent=rng.choice(leaders), clone_flags=THREAD)
    n = int(m.glob[oom_kill.G_NR_TASK_ROWS])
    base_mm = m.task_mm[:n].copy()
    rows = np.arange(n)
    seen = set()
    for _ in range(150):
        for r in range(3, n):
            m.task_exit_state[r] = rng.choice([0, 0, 0, 0, EXIT_ZOMBIE, EXIT_DEAD])
            m.task_tif[r] = TIF_MEMDIE if rng.random() < 0.1 else 0
            m.task_flags[r] = PF_EXITING if rng.random() < 0.1 else 0
            m.task_mm[r] = -1 if rng.random() < 0.1 else base_mm[r]
            if m.task_leader[r] == r:
                m.sig_oom_mm[r] = base_mm[r] if rng.random() < 0.1 else -1
                m.sig_oom_flags[r] = OOM_FLAG_ORIGIN if rng.random() < 0.03 else 0
        for mm in set(base_mm.tolist()) - {-1}:
            m.mm[mm, MM_FLAGS] = MMF_OOM_SKIP if rng.random() < 0.3 else 0
        for force_kill in (False, True):
            vec = oom_kill.classify_all(m, rows, force_kill, cpu.features).tolist()
            scalar = [oom_kill.oom_scan_process_thread(m, int(r), 16384, None, force_kill, cpu.features)
                      for r in rows]
            assert vec == scalar
            seen.update(scalar)
    assert {OOM_SCAN_OK, OOM_SCAN_CONTINUE, OOM_SCAN_ABORT} <= seen
