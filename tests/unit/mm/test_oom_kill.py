"""mm/oom_kill.py: badness, the victim scan, the kill itself, the dmesg lines and the zonelist OOM lock.

Every expected number is worked out by hand from the formulas in KERNEL.md (the section is named in each
test's docstring); nothing here derives an expectation by calling the function under test.
"""
import os
import random
import re

import numpy as np
import pytest

from machine_helpers import SYS_ADMIN, add_process, make_machine
from oomemu.include.gfp import GFP_DMA, GFP_HIGHUSER_MOVABLE, GFP_KERNEL
from oomemu.include.mmzone import ZONE_OOM_LOCKED
from oomemu.include.oom import (OOM_FLAG_ORIGIN, OOM_SCAN_ABORT, OOM_SCAN_CONTINUE, OOM_SCAN_OK,
                                OOM_SCAN_SELECT)
from oomemu.include.sched import EXIT_ZOMBIE, PF_EXITING, PF_KTHREAD, TIF_MEMDIE, TIF_SIGPENDING
from oomemu.kernel import fork
from oomemu.machine import (G_NR_TASK_ROWS, G_TOTAL_SWAP, G_TOTALRAM, MM_ANONPAGES, MM_FILEPAGES, MM_NR_PTES,
                            MM_SWAPENTS, Z_FLAGS)
from oomemu.mm import oom_kill
from oomemu.percpu import CpuContext

THREAD = fork.CLONE_VM | fork.CLONE_THREAD | fork.CLONE_SIGHAND
SIGKILL_PENDING = 1 << 9
ULONG_MAX = (1 << 64) - 1
DMA, NORMAL = 0, 2          # global zone indexes on the one-node test machine
INIT, KTHREADD, KSWAPD = 0, 1, 2


@pytest.fixture
def mc():
    """The 64 MiB, 2-CPU unit machine (DMA 16 MiB + Normal 48 MiB, no swap)."""
    m, cpu = make_machine()
    yield m, cpu
    m.close()


def totalpages_of(m):
    return int(m.glob[G_TOTALRAM] + m.glob[G_TOTAL_SWAP])


def proc(m, cpu, comm, *, rss=0, file=0, swap=0, ptes=0, **kw):
    """A process with exactly these mm counters (nr_ptes explicit, not derived)."""
    return add_process(m, cpu, comm, rss=rss, file=file, swap=swap, ptes=ptes, **kw)


def thread(m, cpu, leader, comm=None, uid=1000):
    """One more thread in leader's group (shares its mm and signal_struct)."""
    return add_process(m, cpu, comm or m.task_comm[leader].decode(), parent=leader, clone_flags=THREAD, uid=uid)


def drop_mm(m, row):
    """The thread has passed exit_mm(): task->mm == NULL."""
    m.task_mm[row] = -1


_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")


class Dmesg:
    """Points cpu.printk_fd at a temp file; `lines` are the logged lines with the timestamp stripped."""

    def __init__(self, cpu, path):
        self.cpu, self.path = cpu, path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.cpu.printk_fd = self.fd
        self.lines = []
        return self

    def __exit__(self, *exc):
        self.cpu.printk_fd = -1
        os.close(self.fd)
        raw = self.path.read_text().splitlines()
        for line in raw:
            assert _PREFIX.match(line), f"dmesg line without the [    s.micros] prefix: {line!r}"
        self.lines = [_PREFIX.sub("", line) for line in raw]


def dmesg(cpu, tmp_path):
    return Dmesg(cpu, tmp_path / "dmesg.log")


# =============================================================================================================
# oom_badness (KERNEL §4.1)
# =============================================================================================================

BASE = dict(rss=1000, file=200, ptes=3, swap=50)          # rss + file + ptes + swapents = 1253

# (id, process kwargs, totalpages, expected points)
BADNESS_TABLE = [
    ("sum of rss file ptes swap", dict(BASE), 16384, 1253),
    ("anon only", dict(rss=700, ptes=2), 16384, 702),
    ("swap only", dict(swap=400, ptes=1), 16384, 401),
    ("uid 0 gets 3% off own usage", dict(BASE, uid=0), 16384, 1253 - 37),                 # 1253*3//100 = 37
    ("CAP_SYS_ADMIN gets 3% off", dict(BASE, caps=SYS_ADMIN), 16384, 1216),
    ("3% bonus rounds down (99)", dict(rss=99, uid=0), 16384, 97),                         # 99*3//100 = 2
    ("3% bonus rounds down (100)", dict(rss=100, uid=0), 16384, 97),                       # 100*3//100 = 3
    ("3% bonus is 0 below 34 pages", dict(rss=33, uid=0), 16384, 33),                       # 33*3//100 = 0
    ("adj +500 adds 500*(16384//1000)", dict(BASE, adj=500), 16384, 1253 + 500 * 16),      # 9253
    ("adj -50 subtracts 50*16", dict(BASE, adj=-50), 16384, 1253 - 800),                    # 453
    ("adj +1000, totalpages 999: 999//1000 = 0", dict(BASE, adj=1000), 999, 1253),
    ("adj -999, totalpages 999: unchanged", dict(BASE, adj=-999), 999, 1253),
    ("adj +300, totalpages 1999: x1 not x1.999", dict(BASE, adj=300), 1999, 1553),
    ("adj +7, totalpages 123456: 7*123", dict(BASE, adj=7), 123456, 1253 + 861),
    ("bonus applies before adj", dict(BASE, uid=0, adj=100), 16384, 1216 + 1600),           # 2816
    ("large negative adj floors at 1", dict(BASE, adj=-999), 16384, 1),                      # 1253-15984 < 0
    ("adj -79 lands exactly on -11 -> 1", dict(BASE, adj=-79), 16384, 1),                   # 1253-1264 = -11
    ("adj -78 stays positive", dict(BASE, adj=-78), 16384, 5),                               # 1253-1248 = 5
    ("root and negative adj floor at 1", dict(BASE, uid=0, adj=-100), 16384, 1),            # 1216-1600 < 0
    ("empty mm still scores 1", dict(), 16384, 1),
    ("adj -1000 is never eligible", dict(BASE, adj=-1000), 16384, 0),
    ("adj -1000 with totalpages < 1000", dict(BASE, adj=-1000), 999, 0),
    ("adj -1000 root", dict(BASE, adj=-1000, uid=0), 16384, 0),
]


@pytest.mark.parametrize("kw,totalpages,expected", [c[1:] for c in BADNESS_TABLE],
                         ids=[c[0] for c in BADNESS_TABLE])
def test_oom_badness_table(mc, kw, totalpages, expected):
    """oom_badness = rss+file+ptes+swapents, minus points*3//100 for CAP_SYS_ADMIN/uid 0, plus
    adj*(totalpages//1000) (integer division first), at least 1; 0 for adj -1000 (KERNEL §4.1)."""
    m, cpu = mc
    p = proc(m, cpu, "victim", **kw)
    assert oom_kill.oom_badness(cpu, p, None, None, totalpages) == expected


def test_oom_badness_unkillable_rows_score_zero(mc):
    """init (pid 1) and kernel threads score 0 however much memory their mm holds (KERNEL §4.1 step 1, §2.3)."""
    m, cpu = mc
    init_mm = int(m.task_mm[INIT])
    m.mm[init_mm, MM_ANONPAGES] = 9000
    kt = proc(m, cpu, "aio-kthread", rss=9000, ptes=20)
    m.task_flags[kt] |= PF_KTHREAD          # a kernel thread that has adopted an mm (use_mm)
    for row in (INIT, KTHREADD, KSWAPD, kt):
        assert oom_kill.oom_badness(cpu, row, None, None, 16384) == 0, row


def test_oom_badness_no_mm_in_any_thread_scores_zero(mc):
    """A process whose every thread has passed exit_mm scores 0: find_lock_task_mm finds nothing
    (KERNEL §4.1 step 2, §2.4)."""
    m, cpu = mc
    p = proc(m, cpu, "gone", rss=500)
    t = thread(m, cpu, p)
    drop_mm(m, p)
    drop_mm(m, t)
    assert oom_kill.oom_badness(cpu, p, None, None, 16384) == 0
    assert oom_kill.oom_badness(cpu, t, None, None, 16384) == 0


def test_oom_badness_uses_a_live_threads_mm_when_the_leader_exited(mc):
    """A process whose leader dropped its mm is scored from the first thread that still has one (KERNEL §2.4)."""
    m, cpu = mc
    p = proc(m, cpu, "half", rss=600, file=40, ptes=2, adj=10)
    thread(m, cpu, p)
    drop_mm(m, p)
    assert oom_kill.oom_badness(cpu, p, None, None, 16384) == 642 + 10 * 16


def test_oom_badness_init_thread_is_not_global_init(mc):
    """is_global_init() tests the pid, not the tgid: a second thread of init is scored like any task
    (KERNEL §2.3 item 1). init is uid 0, so 501 - 501*3//100 = 486."""
    m, cpu = mc
    init_mm = int(m.task_mm[INIT])
    m.mm[init_mm, MM_ANONPAGES] = 500
    m.mm[init_mm, MM_NR_PTES] = 1
    t = thread(m, cpu, INIT, "init-thr", uid=0)
    assert m.task_pid[t] != 1 and m.task_tgid[t] == 1
    assert oom_kill.oom_badness(cpu, INIT, None, None, 16384) == 0
    assert oom_kill.oom_badness(cpu, t, None, None, 16384) == 486


def _reference_badness(m, row, totalpages):
    """KERNEL §4.1 written out independently, for rows that have an mm."""
    if m.task_pid[row] == 1 or m.task_flags[row] & PF_KTHREAD:
        return 0
    leader = int(m.task_leader[row])
    adj = int(m.sig_oom_score_adj[leader])
    if adj == -1000:
        return 0
    mm = int(m.task_mm[row])
    c = [int(x) for x in m.mm[mm]]
    points = c[MM_ANONPAGES] + c[MM_FILEPAGES] + c[MM_NR_PTES] + c[MM_SWAPENTS]
    if m.task_uid[row] == 0 or m.task_caps[row] & SYS_ADMIN:
        points -= points * 3 // 100
    points += adj * (totalpages // 1000)
    return points if points > 0 else 1


def test_badness_vector_agrees_with_oom_badness_on_random_tasks(mc):
    """badness_vector (the vectorised twin) equals oom_badness and the §4.1 formula for 60 random tasks
    (processes and threads, root and not, all adj kinds) at several totalpages (KERNEL §4.1)."""
    m, cpu = mc
    rng = random.Random(20140331)
    adjs = [-1000, -999, -500, -17, -1, 0, 1, 17, 300, 999, 1000]
    leaders = []
    for i in range(50):
        uid = rng.choice([0, 1000, 1000, 33])
        caps = rng.choice([0, 0, SYS_ADMIN])
        adj = rng.choice(adjs) if rng.random() < 0.6 else rng.randint(-1000, 1000)
        leaders.append(proc(m, cpu, f"t{i}", rss=rng.randint(0, 20000), file=rng.randint(0, 3000),
                            swap=rng.randint(0, 5000), ptes=rng.randint(0, 60), adj=adj, uid=uid, caps=caps))
    for i in range(8):
        leader = rng.choice(leaders)
        thread(m, cpu, leader, uid=int(m.task_uid[leader]))
    kt = rng.choice(leaders)
    m.task_flags[kt] |= PF_KTHREAD
    n = int(m.glob[G_NR_TASK_ROWS])
    rows = np.array([r for r in range(n) if m.task_mm[r] != -1])
    assert len(rows) >= 55
    for totalpages in (16384, 999, 1000, 1999, 123456, 7, 1 << 22):
        vec = oom_kill.badness_vector(m, rows, totalpages).tolist()
        scalar = [oom_kill.oom_badness(cpu, int(r), None, None, totalpages) for r in rows]
        reference = [_reference_badness(m, int(r), totalpages) for r in rows]
        assert scalar == reference, totalpages
        assert vec == reference, totalpages


# =============================================================================================================
# oom_scan_process_thread / classify_all (KERNEL §2.2)
# =============================================================================================================

def _zombie(m, r):
    m.task_exit_state[r] = EXIT_ZOMBIE


def _memdie(m, r):
    m.task_tif[r] |= TIF_MEMDIE


def _exiting(m, r):
    m.task_flags[r] |= PF_EXITING


def _origin(m, r):
    m.sig_oom_flags[m.task_leader[r]] |= OOM_FLAG_ORIGIN


def _kthread(m, r):
    m.task_flags[r] |= PF_KTHREAD


def _nomm(m, r):
    drop_mm(m, r)


def _adjmin(m, r):
    m.sig_oom_score_adj[m.task_leader[r]] = -1000


# (id, state changes on a live user process, force_kill, expected verdict)
SCAN_TABLE = [
    ("plain task is OK", (), False, OOM_SCAN_OK),
    ("adj -1000 is still OK in the scan", (_adjmin,), False, OOM_SCAN_OK),
    ("zombie", (_zombie,), False, OOM_SCAN_CONTINUE),
    ("zombie with TIF_MEMDIE is CONTINUE, not ABORT", (_zombie, _memdie), False, OOM_SCAN_CONTINUE),
    ("zombie with PF_EXITING and mm", (_zombie, _exiting), False, OOM_SCAN_CONTINUE),
    ("kthread with TIF_MEMDIE is CONTINUE", (_kthread, _memdie), False, OOM_SCAN_CONTINUE),
    ("TIF_MEMDIE on a live task aborts", (_memdie,), False, OOM_SCAN_ABORT),
    ("TIF_MEMDIE with force_kill falls through to OK", (_memdie,), True, OOM_SCAN_OK),
    ("TIF_MEMDIE without mm still aborts", (_memdie, _nomm), False, OOM_SCAN_ABORT),
    ("TIF_MEMDIE without mm, force_kill: CONTINUE", (_memdie, _nomm), True, OOM_SCAN_CONTINUE),
    ("no mm", (_nomm,), False, OOM_SCAN_CONTINUE),
    ("PF_EXITING with mm aborts", (_exiting,), False, OOM_SCAN_ABORT),
    ("PF_EXITING with mm, force_kill: OK", (_exiting,), True, OOM_SCAN_OK),
    ("PF_EXITING without mm: mm test comes first", (_exiting, _nomm), False, OOM_SCAN_CONTINUE),
    ("OOM_FLAG_ORIGIN selects", (_origin,), False, OOM_SCAN_SELECT),
    ("OOM_FLAG_ORIGIN beats PF_EXITING", (_origin, _exiting), False, OOM_SCAN_SELECT),
    ("OOM_FLAG_ORIGIN without mm: CONTINUE", (_origin, _nomm), False, OOM_SCAN_CONTINUE),
    ("TIF_MEMDIE beats OOM_FLAG_ORIGIN", (_origin, _memdie), False, OOM_SCAN_ABORT),
    ("OOM_FLAG_ORIGIN with force_kill", (_origin, _memdie, _exiting), True, OOM_SCAN_SELECT),
    ("zombie beats OOM_FLAG_ORIGIN", (_origin, _zombie), False, OOM_SCAN_CONTINUE),
]


@pytest.mark.parametrize("changes,force_kill,expected", [c[1:] for c in SCAN_TABLE], ids=[c[0] for c in SCAN_TABLE])
def test_oom_scan_process_thread_order(mc, changes, force_kill, expected):
    """The scan classifies in 3.14's order: exit_state, unkillable, TIF_MEMDIE (ABORT unless force_kill),
    no mm, OOM_FLAG_ORIGIN (SELECT), PF_EXITING (ABORT unless force_kill), else OK; classify_all agrees
    (KERNEL §2.2)."""
    m, cpu = mc
    p = proc(m, cpu, "task", rss=100)
    for change in changes:
        change(m, p)
    assert oom_kill.oom_scan_process_thread(m, p, 16384, None, force_kill) == expected
    assert oom_kill.classify_all(m, np.array([p]), force_kill).tolist() == [expected]


@pytest.mark.parametrize("row", [INIT, KTHREADD, KSWAPD])
@pytest.mark.parametrize("force_kill", [False, True])
def test_oom_scan_unkillable_boot_tasks_continue_even_with_tif_memdie(mc, row, force_kill):
    """init and kernel threads are CONTINUE before the TIF_MEMDIE test is reached (KERNEL §2.2 step 2)."""
    m, cpu = mc
    m.task_tif[row] |= TIF_MEMDIE
    m.task_flags[row] |= PF_EXITING
    assert oom_kill.oom_scan_process_thread(m, row, 16384, None, force_kill) == OOM_SCAN_CONTINUE


def test_oom_scan_origin_flag_is_shared_by_threads(mc):
    """OOM_FLAG_ORIGIN lives in signal_struct, so every thread of the group is SELECT (KERNEL §2.2 step 5)."""
    m, cpu = mc
    p = proc(m, cpu, "swapoff", rss=3)
    t = thread(m, cpu, p)
    _origin(m, p)
    assert oom_kill.oom_scan_process_thread(m, t, 16384, None, False) == OOM_SCAN_SELECT


def _random_population(m, cpu, rng, nproc=40, nthreads=17):
    leaders = [proc(m, cpu, f"p{i}", rss=rng.randint(0, 5000), file=rng.randint(0, 500), ptes=rng.randint(0, 9),
                    swap=rng.randint(0, 500), adj=rng.choice([-1000, -500, 0, 0, 0, 200, 1000]),
                    uid=rng.choice([0, 1000])) for i in range(nproc)]
    for i in range(nthreads):
        leader = rng.choice(leaders)
        thread(m, cpu, leader, uid=int(m.task_uid[leader]))
    return leaders


def _randomise_flags(m, rng, rows, base_mm, base_flags):
    for r in rows:
        m.task_exit_state[r] = EXIT_ZOMBIE if rng.random() < 0.08 else 0
        m.task_tif[r] = TIF_MEMDIE if rng.random() < 0.06 else 0
        flags = int(base_flags[r])
        if rng.random() < 0.06:
            flags |= PF_EXITING
        if rng.random() < 0.05:
            flags |= PF_KTHREAD
        m.task_flags[r] = flags
        m.task_mm[r] = -1 if rng.random() < 0.1 else base_mm[r]
        if m.task_leader[r] == r:
            m.sig_oom_flags[r] = OOM_FLAG_ORIGIN if rng.random() < 0.03 else 0


def test_classify_all_matches_scalar_scan_on_random_flags(mc):
    """classify_all (vectorised) equals oom_scan_process_thread for every row over 300 random combinations of
    exit_state, TIF_MEMDIE, PF_EXITING, PF_KTHREAD, mm and OOM_FLAG_ORIGIN, with and without force_kill
    (KERNEL §2.2)."""
    m, cpu = mc
    rng = random.Random(314)
    _random_population(m, cpu, rng)
    n = int(m.glob[G_NR_TASK_ROWS])
    rows = np.arange(n)
    base_mm, base_flags = m.task_mm[:n].copy(), m.task_flags[:n].copy()
    seen = set()
    for _ in range(300):
        _randomise_flags(m, rng, range(n), base_mm, base_flags)
        for force_kill in (False, True):
            vec = oom_kill.classify_all(m, rows, force_kill).tolist()
            scalar = [oom_kill.oom_scan_process_thread(m, int(r), 16384, None, force_kill) for r in rows]
            assert vec == scalar
            seen.update(scalar)
    assert seen == {OOM_SCAN_OK, OOM_SCAN_CONTINUE, OOM_SCAN_ABORT, OOM_SCAN_SELECT}


# =============================================================================================================
# select_bad_process (KERNEL §2.1)
# =============================================================================================================

def test_select_picks_highest_badness_and_reports_score_per_mille(mc):
    """The thread with the highest badness wins; the score is points*1000//totalpages (KERNEL §2.1):
    1253*1000//16384 = 76."""
    m, cpu = mc
    proc(m, cpu, "small", rss=100)
    big = proc(m, cpu, "big", **BASE)
    proc(m, cpu, "mid", rss=900)
    assert oom_kill.select_bad_process(cpu, totalpages_of(m), None, False) == (big, 76)


def test_select_score_uses_adjusted_points(mc):
    """adj is folded in before the score: (1253 + 500*16)*1000//16384 = 9253000//16384 = 564 (KERNEL §2.1, §4.1)."""
    m, cpu = mc
    proc(m, cpu, "huge", rss=5000)
    liked = proc(m, cpu, "liked", **BASE, adj=500)
    assert oom_kill.select_bad_process(cpu, 16384, None, False) == (liked, 564)


def test_select_score_with_a_different_totalpages(mc):
    """With totalpages 20000 the adj unit is 20 and the score (1253+100*20)*1000//20000 = 162 (KERNEL §2.1)."""
    m, cpu = mc
    p = proc(m, cpu, "p", **BASE, adj=100)
    assert oom_kill.select_bad_process(cpu, 20000, None, False) == (p, 162)


def test_select_origin_wins_over_much_bigger_tasks(mc):
    """An OOM_FLAG_ORIGIN task is chosen however small; its score is ULONG_MAX*1000 (mod 2^64) // totalpages
    truncated to 32 bits: (2^64-1000)//2^14 = 2^50-1, low 32 bits 0xffffffff (KERNEL §2.1)."""
    m, cpu = mc
    proc(m, cpu, "hog", rss=10000)
    tiny = proc(m, cpu, "swapoff", rss=1)
    _origin(m, tiny)
    proc(m, cpu, "hog2", rss=11000)
    assert oom_kill.select_bad_process(cpu, 16384, None, False) == (tiny, 0xFFFFFFFF)


def test_select_later_origin_replaces_earlier(mc):
    """A later SELECT replaces an earlier one (KERNEL §2.1)."""
    m, cpu = mc
    a = proc(m, cpu, "ksm-a", rss=500)
    b = proc(m, cpu, "ksm-b", rss=5)
    _origin(m, a)
    _origin(m, b)
    assert oom_kill.select_bad_process(cpu, 16384, None, False)[0] == b


@pytest.mark.parametrize("where", ["before", "after"])
def test_select_abort_discards_a_select(mc, where):
    """A TIF_MEMDIE thread anywhere makes the scan return ABORT, discarding any SELECT (KERNEL §2.1)."""
    m, cpu = mc
    if where == "after":
        origin = proc(m, cpu, "swapoff", rss=1)
    dying = proc(m, cpu, "victim", rss=10)
    _memdie(m, dying)
    if where == "before":
        origin = proc(m, cpu, "swapoff", rss=1)
    _origin(m, origin)
    assert oom_kill.select_bad_process(cpu, 16384, None, False) == (oom_kill.ABORT, 0)


def test_select_exiting_thread_aborts_but_zombie_with_memdie_does_not(mc):
    """A zombie still carrying TIF_MEMDIE is skipped (exit_state test first) while one PF_EXITING thread with
    an mm aborts the whole scan (KERNEL §2.2 steps 1 and 6, §9 R6)."""
    m, cpu = mc
    z = proc(m, cpu, "zombie", rss=9000)
    _zombie(m, z)
    _memdie(m, z)
    big = proc(m, cpu, "big", rss=300)
    assert oom_kill.select_bad_process(cpu, 16384, None, False) == (big, 300 * 1000 // 16384)
    leaving = proc(m, cpu, "leaving", rss=2)
    t = thread(m, cpu, leaving)
    _exiting(m, t)
    assert oom_kill.select_bad_process(cpu, 16384, None, False) == (oom_kill.ABORT, 0)
    assert oom_kill.select_bad_process(cpu, 16384, None, True)[0] == big   # force_kill ignores PF_EXITING


def test_select_never_picks_init_kthreads_or_adj_min(mc):
    """init, kernel threads and adj -1000 tasks are never chosen, however large (KERNEL §2.3, §4.1)."""
    m, cpu = mc
    m.mm[int(m.task_mm[INIT]), MM_ANONPAGES] = 10000
    kt = proc(m, cpu, "kthread-mm", rss=10000)
    _kthread(m, kt)
    proc(m, cpu, "sshd", rss=10000, adj=-1000, uid=0)
    small = proc(m, cpu, "small", rss=10)
    assert oom_kill.select_bad_process(cpu, 16384, None, False) == (small, 0)   # 10*1000//16384 = 0


def test_select_returns_minus_one_when_nothing_is_eligible(mc):
    """No eligible thread: (-1, 0), the caller's panic case (KERNEL §2.1, §3.2 step 6)."""
    m, cpu = mc
    m.mm[int(m.task_mm[INIT]), MM_ANONPAGES] = 10000
    proc(m, cpu, "sshd", rss=10000, adj=-1000)
    z = proc(m, cpu, "zombie", rss=10)
    _zombie(m, z)
    nomm = proc(m, cpu, "exited", rss=10)
    drop_mm(m, nomm)
    assert oom_kill.select_bad_process(cpu, 16384, None, False) == (-1, 0)


def test_select_tie_keeps_a_chosen_leader(mc):
    """On a tie the chosen thread-group leader is kept: its own threads and later equal processes lose
    (KERNEL §2.1 "prefer thread group leaders")."""
    m, cpu = mc
    a = proc(m, cpu, "a", rss=100)
    thread(m, cpu, a)
    thread(m, cpu, a)
    proc(m, cpu, "b", rss=100)
    assert oom_kill.select_bad_process(cpu, 16384, None, False)[0] == a


def test_select_tie_replaces_a_chosen_non_leader_within_the_group(mc):
    """A leader that has exited (no mm) is skipped; its first thread is chosen, then the next equal thread
    replaces it because the choice is not a leader (KERNEL §2.1)."""
    m, cpu = mc
    b = proc(m, cpu, "b", rss=100)
    t1 = thread(m, cpu, b)
    t2 = thread(m, cpu, b)
    drop_mm(m, b)
    assert t1 < t2
    assert oom_kill.select_bad_process(cpu, 16384, None, False)[0] == t2


def test_select_tie_non_leader_replaced_by_later_equal_leader(mc):
    """A chosen non-leader thread is replaced by a later process's leader with equal points (KERNEL §2.1)."""
    m, cpu = mc
    b = proc(m, cpu, "b", rss=100)
    thread(m, cpu, b)
    drop_mm(m, b)
    c = proc(m, cpu, "c", rss=100)
    assert oom_kill.select_bad_process(cpu, 16384, None, False)[0] == c


def test_select_tie_threads_created_later_are_scanned_with_their_process(mc):
    """for_each_process_thread visits a process's threads right after it, even threads created after later
    processes: a thread of an earlier leaderless process ties with, and loses to, the later leader
    (KERNEL §2.1)."""
    m, cpu = mc
    b = proc(m, cpu, "b", rss=100)
    c = proc(m, cpu, "c", rss=100)
    t = thread(m, cpu, b)      # row after c, but scanned before c
    drop_mm(m, b)
    assert t > c
    assert oom_kill.select_bad_process(cpu, 16384, None, False)[0] == c


def _reference_scan(m, t, force_kill):
    """KERNEL §2.2's seven tests written out independently (no freezer, no ptrace)."""
    if m.task_exit_state[t]:
        return OOM_SCAN_CONTINUE
    if m.task_pid[t] == 1 or m.task_flags[t] & PF_KTHREAD:
        return OOM_SCAN_CONTINUE
    if m.task_tif[t] & TIF_MEMDIE and not force_kill:
        return OOM_SCAN_ABORT
    if m.task_mm[t] == -1:
        return OOM_SCAN_CONTINUE
    if m.sig_oom_flags[m.task_leader[t]] & OOM_FLAG_ORIGIN:
        return OOM_SCAN_SELECT
    if m.task_flags[t] & PF_EXITING and not force_kill:
        return OOM_SCAN_ABORT
    return OOM_SCAN_OK


def _reference_select(m, cpu, totalpages, force_kill):
    """KERNEL §2.1's loop written out sequentially over for_each_process_thread order, classifying with
    _reference_scan and scoring with _reference_badness (neither calls the code under test)."""
    n = int(m.glob[G_NR_TASK_ROWS])
    leaders = sorted((r for r in range(n) if m.task_leader[r] == r), key=lambda r: int(m.task_seq[r]))
    order = [t for lead in leaders for t in range(n) if m.task_leader[t] == lead]
    chosen, chosen_points = -1, 0
    for p in order:
        verdict = _reference_scan(m, p, force_kill)
        if verdict == OOM_SCAN_SELECT:
            chosen, chosen_points = p, ULONG_MAX
            continue
        if verdict == OOM_SCAN_CONTINUE:
            continue
        if verdict == OOM_SCAN_ABORT:
            return oom_kill.ABORT, 0
        points = _reference_badness(m, p, totalpages)
        if not points or points < chosen_points:
            continue
        if points == chosen_points and chosen != -1 and m.task_leader[chosen] == chosen:
            continue
        chosen, chosen_points = p, points
    if chosen == -1:
        return -1, 0
    return chosen, ((chosen_points * 1000) % (1 << 64)) // totalpages % (1 << 32)


def test_select_matches_sequential_reference_on_random_states(mc):
    """select_bad_process equals a sequential transcription of the 3.14 loop over 200 random task states,
    including many ties (KERNEL §2.1)."""
    m, cpu = mc
    rng = random.Random(1403)
    _random_population(m, cpu, rng)
    n = int(m.glob[G_NR_TASK_ROWS])
    base_mm, base_flags = m.task_mm[:n].copy(), m.task_flags[:n].copy()
    mms = sorted({int(x) for x in base_mm if x >= 0})
    outcomes = set()
    for _ in range(200):
        _randomise_flags(m, rng, range(3, n), base_mm, base_flags)
        for r in range(3, n):           # fewer aborts, so most rounds reach the tie logic
            if rng.random() < 0.7:
                m.task_tif[r] = 0
                m.task_flags[r] &= ~PF_EXITING
        for mm in mms[1:]:
            m.mm[mm, MM_ANONPAGES] = rng.choice([0, 10, 50, 50, 50, 400])
        for force_kill in (False, True):
            tp = rng.choice([16384, 999, 3000])
            got = oom_kill.select_bad_process(cpu, tp, None, force_kill)
            assert got == _reference_select(m, cpu, tp, force_kill)
            outcomes.add("abort" if got[0] == oom_kill.ABORT else "none" if got[0] == -1 else "pick")
    assert outcomes >= {"abort", "pick"}


# =============================================================================================================
# oom_kill_process (KERNEL §5.1)
# =============================================================================================================

def killed(m, r):
    return bool(m.task_pending[r] & SIGKILL_PENDING) and bool(m.task_tif[r] & TIF_SIGPENDING)


def memdie(m, r):
    return bool(m.task_tif[r] & TIF_MEMDIE)


def untouched(m, r):
    return not m.task_pending[r] and not m.task_tif[r]


def kill(cpu, p, points=0, totalpages=16384):
    oom_kill.oom_kill_process(cpu, p, GFP_KERNEL, 0, points, totalpages, None, None, "Out of memory")


def test_kill_sacrifices_the_worst_child_not_the_bigger_parent(mc):
    """With two children of its own mm, the child with the highest badness is killed (TIF_MEMDIE and SIGKILL)
    and the parent is untouched, although it is bigger (KERNEL §5.1 step 4)."""
    m, cpu = mc
    p = proc(m, cpu, "parent", rss=8000)
    c1 = proc(m, cpu, "child1", rss=100, parent=p)
    c2 = proc(m, cpu, "child2", rss=300, parent=p)
    kill(cpu, p)
    assert killed(m, c2) and memdie(m, c2)
    assert untouched(m, p)
    assert untouched(m, c1)


def test_kill_child_scores_include_adj(mc):
    """Children are compared by badness, so adj can make the smaller child the victim (KERNEL §5.1 step 4)."""
    m, cpu = mc
    p = proc(m, cpu, "parent", rss=8000)
    c1 = proc(m, cpu, "child1", rss=100, adj=100, parent=p)   # 100 + 1600
    c2 = proc(m, cpu, "child2", rss=300, parent=p)            # 300
    kill(cpu, p)
    assert killed(m, c1) and memdie(m, c1)
    assert untouched(m, c2) and untouched(m, p)


def test_kill_considers_children_of_every_thread(mc):
    """The child loop runs over the children of every thread of p (KERNEL §5.1 step 4)."""
    m, cpu = mc
    p = proc(m, cpu, "parent", rss=8000)
    t = thread(m, cpu, p)
    c = proc(m, cpu, "thr-child", rss=50, parent=t)
    kill(cpu, p)
    assert killed(m, c) and memdie(m, c)
    assert untouched(m, p) and untouched(m, t)


def test_kill_skips_children_that_share_the_parents_mm(mc):
    """A CLONE_VM child (vfork-like) shares p's mm and is skipped in the child scan; a small child with its
    own mm is the victim (KERNEL §5.1 step 4)."""
    m, cpu = mc
    p = proc(m, cpu, "parent", rss=8000)
    vf = add_process(m, cpu, "vfork-child", parent=p, clone_flags=fork.CLONE_VM)
    c = proc(m, cpu, "child", rss=5, parent=p)
    assert m.task_mm[vf] == m.task_mm[p]
    kill(cpu, p)
    assert killed(m, c) and memdie(m, c)
    assert untouched(m, vf) and untouched(m, p)


def test_kill_parent_when_no_child_is_eligible(mc):
    """Children scoring 0 (adj -1000, no mm, kernel thread) are never chosen, so the parent is killed
    (KERNEL §5.1 step 4: victim_points starts at 0)."""
    m, cpu = mc
    p = proc(m, cpu, "parent", rss=100)
    c1 = proc(m, cpu, "protected", rss=9000, adj=-1000, parent=p)
    c2 = proc(m, cpu, "exited", rss=9000, parent=p)
    drop_mm(m, c2)
    c3 = proc(m, cpu, "kworker", rss=9000, parent=p)
    _kthread(m, c3)
    kill(cpu, p)
    assert killed(m, p) and memdie(m, p)
    for c in (c1, c2, c3):
        assert untouched(m, c)


def test_kill_exiting_victim_gets_only_tif_memdie(mc, tmp_path):
    """A PF_EXITING p gets TIF_MEMDIE and nothing else: no SIGKILL, no child scan, no message
    (KERNEL §5.1 step 1)."""
    m, cpu = mc
    p = proc(m, cpu, "exiting", rss=100)
    c = proc(m, cpu, "child", rss=50, parent=p)
    _exiting(m, p)
    with dmesg(cpu, tmp_path) as log:
        kill(cpu, p)
    assert memdie(m, p)
    assert not m.task_pending[p] and not m.task_tif[p] & TIF_SIGPENDING
    assert untouched(m, c)
    assert log.lines == []


def test_kill_sharer_gets_sigkill_but_not_tif_memdie(mc):
    """A process in another thread group using the victim's mm gets SIGKILL but not TIF_MEMDIE
    (KERNEL §5.1 step 7)."""
    m, cpu = mc
    p = proc(m, cpu, "victim", rss=100)
    s = add_process(m, cpu, "sharer", parent=p, clone_flags=fork.CLONE_VM)
    m.task_parent[s] = INIT       # reparented: a pure sharer, not a child
    other = proc(m, cpu, "bystander", rss=100)
    kill(cpu, p)
    assert killed(m, p) and memdie(m, p)
    assert killed(m, s) and not memdie(m, s)
    assert untouched(m, other)


def test_kill_sharer_with_adj_min_is_skipped(mc):
    """A sharer at OOM_SCORE_ADJ_MIN is left alive (KERNEL §5.1 step 7, §9 R5)."""
    m, cpu = mc
    p = proc(m, cpu, "victim", rss=100)
    s = add_process(m, cpu, "sharer", parent=p, clone_flags=fork.CLONE_VM, adj=-1000)
    m.task_parent[s] = INIT
    kill(cpu, p)
    assert killed(m, p) and memdie(m, p)
    assert untouched(m, s)


def test_kill_kthread_sharer_is_skipped(mc):
    """A kernel thread using the victim's mm is not signalled (KERNEL §5.1 step 7)."""
    m, cpu = mc
    p = proc(m, cpu, "victim", rss=100)
    s = add_process(m, cpu, "kthread-user", parent=p, clone_flags=fork.CLONE_VM)
    m.task_parent[s] = INIT
    _kthread(m, s)
    kill(cpu, p)
    assert killed(m, p)
    assert untouched(m, s)


def test_kill_sigkills_every_thread_but_marks_one(mc):
    """SIGKILL goes to the whole thread group (bit 1<<9 pending and TIF_SIGPENDING on every thread) while
    TIF_MEMDIE is set on exactly one thread, the leader here (KERNEL §5.1 steps 8-9, §5.2)."""
    m, cpu = mc
    p = proc(m, cpu, "multi", rss=100)
    ts = [thread(m, cpu, p) for _ in range(3)]
    kill(cpu, p)
    for r in [p, *ts]:
        assert m.task_pending[r] & SIGKILL_PENDING, r
        assert m.task_tif[r] & TIF_SIGPENDING, r
    assert [memdie(m, r) for r in [p, *ts]] == [True, False, False, False]


def test_kill_marks_the_first_thread_with_an_mm(mc, tmp_path):
    """When the leader has dropped its mm, find_lock_task_mm moves the kill to the first thread still holding
    one: it alone gets TIF_MEMDIE and the "Killed process" line names it (KERNEL §5.1 steps 5-6, 8)."""
    m, cpu = mc
    p = proc(m, cpu, "multi", rss=100)
    t1 = thread(m, cpu, p)
    t2 = thread(m, cpu, p)
    drop_mm(m, p)
    with dmesg(cpu, tmp_path) as log:
        kill(cpu, p, points=6)
    assert [memdie(m, r) for r in (p, t1, t2)] == [False, True, False]
    assert all(killed(m, r) for r in (p, t1, t2))
    assert f"Killed process {m.task_pid[t1]} (multi) total-vm:400kB, anon-rss:400kB, file-rss:0kB" in log.lines


def test_kill_with_no_mm_anywhere_kills_nobody(mc):
    """If no thread of the victim has an mm any more, nothing is signalled or marked (KERNEL §5.1 step 5)."""
    m, cpu = mc
    p = proc(m, cpu, "ghost", rss=100)
    t = thread(m, cpu, p)
    drop_mm(m, p)
    drop_mm(m, t)
    kill(cpu, p)
    assert untouched(m, p) and untouched(m, t)


def _rows_after(lines, header):
    i = lines.index(header)
    return lines[i + 1:]


DUMP_HEADER = "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name"
DUMP_ROW = "[%5d] %5d %5d %8lu %8lu %7ld %8lu         %5hd %s"


def _c_row(pid, uid, tgid, total_vm, rss, ptes, swap, adj, comm):
    """The 3.14 dump_tasks row, through a C-style format (h/l length modifiers dropped for Python)."""
    return DUMP_ROW.replace("lu", "d").replace("ld", "d").replace("hd", "d") % (
        pid, uid, tgid, total_vm, rss, ptes, swap, adj, comm)


def test_kill_dmesg_lines_exact_format(mc, tmp_path):
    """The kill prints, in order: dump_header (ending with the dump_tasks table), "Out of memory: Kill process
    %d (%s) score %d or sacrifice child", "Killed process %d (%s) total-vm:%lukB, anon-rss:%lukB,
    file-rss:%lukB", then "Kill process %d (%s) sharing same memory" for each sharer (KERNEL §3.5, §5.1)."""
    m, cpu = mc
    assert cpu.scenario.sysctl.oom_dump_tasks == 1
    p = proc(m, cpu, "hog", rss=1000, file=200, ptes=3, swap=50, adj=250, uid=1000)
    s = add_process(m, cpu, "hog-sharer", parent=p, clone_flags=fork.CLONE_VM, uid=0)
    m.task_parent[s] = INIT
    d = proc(m, cpu, "sshd", rss=20, ptes=1, adj=-1000, uid=0)
    pp, sp, dp = (int(m.task_pid[r]) for r in (p, s, d))
    with dmesg(cpu, tmp_path) as log:
        kill(cpu, p, points=321)
    rows = _rows_after(log.lines, DUMP_HEADER)
    expected_tail = [
        # dump_tasks: init and the kernel threads are skipped; memory columns in pages
        _c_row(pp, 1000, pp, 1200, 1200, 3, 50, 250, "hog"),
        _c_row(sp, 0, sp, 1200, 1200, 3, 50, 0, "hog-sharer"),      # own signal_struct: adj 0
        _c_row(dp, 0, dp, 20, 20, 1, 0, -1000, "sshd"),
        f"Out of memory: Kill process {pp} (hog) score 321 or sacrifice child",
        f"Killed process {pp} (hog) total-vm:4800kB, anon-rss:4000kB, file-rss:800kB",
        f"Kill process {sp} (hog-sharer) sharing same memory",
    ]
    assert rows == expected_tail
    assert any(line.startswith("swapper invoked oom-killer: gfp_mask=0xd0, order=0,") for line in log.lines)


def test_dump_tasks_row_literal(mc, tmp_path):
    """dump_tasks prints the 3.14 header and one row per process with an mm, described by the thread
    find_lock_task_mm returns (pid of that thread, tgid of the group) (KERNEL §3.5)."""
    m, cpu = mc
    a = proc(m, cpu, "alpha", rss=123, file=7, ptes=1, swap=4, adj=-17, uid=1000)
    b = proc(m, cpu, "beta", rss=1, uid=0)
    tb = thread(m, cpu, b, uid=0)
    drop_mm(m, b)
    gone = proc(m, cpu, "gone", rss=1)
    drop_mm(m, gone)
    with dmesg(cpu, tmp_path) as log:
        oom_kill.dump_tasks(cpu, None, None)
    assert log.lines == [
        "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
        f"[{m.task_pid[a]:5d}]  1000 {m.task_pid[a]:5d}      130      130       1        4           -17 alpha",
        f"[{m.task_pid[tb]:5d}]     0 {m.task_pid[b]:5d}        1        1       0        0             0 beta",
    ]
    assert m.task_pid[a] == 4   # init 1, kthreadd 2, kswapd0 3: the literal widths above hold for pid 4
    assert log.lines[1] == "[    4]  1000     4      130      130       1        4           -17 alpha"


def test_kill_child_sacrifice_dmesg_names_parent_then_child(mc, tmp_path):
    """The "or sacrifice child" line names p; the "Killed process" line names the child actually killed
    (KERNEL §5.1 steps 3 and 6)."""
    m, cpu = mc
    p = proc(m, cpu, "parent", rss=8000)
    c = proc(m, cpu, "kid", rss=256, file=16, ptes=1, parent=p)
    with dmesg(cpu, tmp_path) as log:
        kill(cpu, p, points=488)
    tail = log.lines[-2:]
    assert tail == [f"Out of memory: Kill process {m.task_pid[p]} (parent) score 488 or sacrifice child",
                    f"Killed process {m.task_pid[c]} (kid) total-vm:1088kB, anon-rss:1024kB, file-rss:64kB"]


# =============================================================================================================
# try_set_zonelist_oom / clear_zonelist_oom (KERNEL §1.2-1.3)
# =============================================================================================================

def locked(m):
    return [bool(m.zone[z, Z_FLAGS] & ZONE_OOM_LOCKED) for z in (DMA, NORMAL)]


def test_zonelist_oom_lock_all_or_nothing(mc):
    """GFP_KERNEL walks Normal and DMA and locks both; a second try is busy (0) and changes nothing
    (KERNEL §1.2)."""
    m, cpu = mc
    zl = m.zonelists[0]
    assert tuple(zl) == (NORMAL, DMA)
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 1
    assert locked(m) == [True, True]
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 0
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_HIGHUSER_MOVABLE) == 0
    oom_kill.clear_zonelist_oom(cpu, zl, GFP_KERNEL)
    assert locked(m) == [False, False]
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_HIGHUSER_MOVABLE) == 1
    assert locked(m) == [True, True]


def test_zonelist_oom_lock_dma_request_locks_only_dma(mc):
    """gfp_zone(GFP_DMA) = DMA, so the walk covers only DMA; a Normal-zone request then finds DMA locked and
    is busy without setting Normal (KERNEL §1.2)."""
    m, cpu = mc
    zl = m.zonelists[0]
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_DMA) == 1
    assert locked(m) == [True, False]
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 0
    assert locked(m) == [True, False]


def test_zonelist_oom_lock_normal_holder_blocks_dma_request(mc):
    """After a Normal (GFP_KERNEL) lock, a DMA request is busy too: DMA was locked by the Normal walk
    (KERNEL §1.2)."""
    m, cpu = mc
    zl = m.zonelists[0]
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 1
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_DMA) == 0


def test_clear_zonelist_oom_has_no_owner_check(mc):
    """clear_zonelist_oom clears whatever its walk covers, whoever set it: a DMA clear from another CPU
    releases DMA under a GFP_KERNEL holder, leaving Normal set (KERNEL §1.3)."""
    m, cpu = mc
    zl = m.zonelists[0]
    other = CpuContext(m, 1, cpu.scenario)
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 1
    oom_kill.clear_zonelist_oom(other, zl, GFP_DMA)
    assert locked(m) == [False, True]
    assert oom_kill.try_set_zonelist_oom(other, zl, GFP_DMA) == 1
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 0
    oom_kill.clear_zonelist_oom(other, zl, GFP_KERNEL)
    assert locked(m) == [False, False]


def test_clear_zonelist_oom_keeps_other_zone_flags(mc):
    """Clearing touches only the ZONE_OOM_LOCKED bit (KERNEL §1.3)."""
    m, cpu = mc
    zl = m.zonelists[0]
    m.zone[NORMAL, Z_FLAGS] |= 1 | 4
    oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL)
    oom_kill.clear_zonelist_oom(cpu, zl, GFP_KERNEL)
    assert int(m.zone[NORMAL, Z_FLAGS]) == 1 | 4
    assert int(m.zone[DMA, Z_FLAGS]) == 0
