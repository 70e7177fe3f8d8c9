"""out_of_memory() step by step (KERNEL §3.2): what it returns, what it prints, how long it sleeps, which kind
of kill it records, and the "no killable process" panic.

Expectations are worked out by hand on the unit machine (DMA 16 MiB + Normal 48 MiB, no swap): totalpages =
65536 kB / 4 kB = 16384. A task made with add_process(rss=R) has nr_ptes = ceil(R / 512), so a hog of rss 9000
scores 9000 + 18 = 9018 pages and 9018 * 1000 // 16384 = 550 per mille (§2.1, §4.1). GFP_KERNEL is
__GFP_WAIT | __GFP_IO | __GFP_FS = 0xd0 (§6.12).
"""
import os
import re
import textwrap

import pytest

from machine_helpers import add_process, make_machine
from oomemu.boot import create_machine
from oomemu.config import load_scenario_text
from oomemu.include.gfp import GFP_KERNEL
from oomemu.include.sched import PF_EXITING, SIGKILL, TASK_KILLABLE, TIF_MEMDIE, TIF_SIGPENDING
from oomemu.kernel import printk
from oomemu.kernel import sched as ksched
from oomemu.machine import G_NR_KILLS, G_OOM_SCORES_TAKEN, G_TOTALRAM, G_TOTAL_SWAP, K_KIND, K_POINTS
from oomemu.mm import oom_kill, page_alloc, vmstat
from oomemu.percpu import CpuContext

SIGKILL_BIT = 1 << SIGKILL
TOTALPAGES = 16384
HOG_RSS, HOG_POINTS, HOG_SCORE = 9000, 9018, 550
_PREFIX = re.compile(r"^\[\s*\d+\.\d{6}\] ")


def machine(sysctl="", kernel=None):
    if kernel is None:
        return make_machine(extra=f"[sysctl]\n{sysctl}\n" if sysctl else "")
    text = textwrap.dedent(f"""
        [machine]
        cpus = 2
        max_tasks = 64
        kernel = "{kernel}"
        [[machine.node]]
        zones = {{ DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }}
        """) + (f"[sysctl]\n{sysctl}\n" if sysctl else "")
    sc = load_scenario_text(text, name="unit")
    m = create_machine(sc, ring_records=64)
    return m, CpuContext(m, 0, sc)


@pytest.fixture
def mc():
    m, cpu = machine()
    assert int(m.glob[G_TOTALRAM] + m.glob[G_TOTAL_SWAP]) == TOTALPAGES
    yield m, cpu
    m.close()


class Dmesg:
    """Sends cpu's printk to a file; `lines` are the logged lines with the timestamp prefix stripped."""

    def __init__(self, cpu, path):
        self.cpu, self.path, self.lines = cpu, path, []

    def __enter__(self):
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.cpu.printk_fd = self.fd
        return self

    def __exit__(self, *exc):
        self.cpu.printk_fd = -1
        os.close(self.fd)
        self.lines = [_PREFIX.sub("", line) for line in self.path.read_text().splitlines()]


def record_timeouts(monkeypatch):
    """Records the timeout of every schedule_timeout_killable() call."""
    timeouts = []
    real = ksched.schedule_timeout_killable

    async def recording(c, timeout):
        timeouts.append(timeout)
        return await real(c, timeout)

    monkeypatch.setattr(ksched, "schedule_timeout_killable", recording)
    return timeouts


def drive(cpu, coro, max_traps=20):
    """Run a kernel coroutine, waking it at once after each sleep; returns its value."""
    try:
        coro.send(None)
        for _ in range(max_traps):
            if cpu.current >= 0:
                cpu.m.task_state[cpu.current] = 0
            coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("out_of_memory did not return")


def oom(cpu, current, gfp=GFP_KERNEL, order=0, force_kill=False, from_kworker=False):
    cpu.current = current
    zonelist = page_alloc.node_zonelist(cpu.m, 0)
    return drive(cpu, oom_kill.out_of_memory(cpu, zonelist, gfp, order, None, force_kill, from_kworker))


def sigkill_pending(m, row):
    return bool(m.task_pending[row] & SIGKILL_BIT)


def kill_kinds(m):
    return [int(m.kill[i, K_KIND]) for i in range(int(m.glob[G_NR_KILLS]))]


def table_row(m, row, rss, ptes, adj):
    """dump_tasks' row for a process (KERNEL §3.5); total_vm = rss for add_process tasks, no swap."""
    return (f"[{int(m.task_pid[row]):5d}] {int(m.task_uid[row]):5d} {int(m.task_tgid[row]):5d} {rss:8d} {rss:8d} "
            f"{ptes:7d} {0:8d}         {adj:5d} {m.task_comm[row].decode()}")


# --- what out_of_memory returns, and its sleep -----------------------------------------------------------------

def test_a_kill_returns_true_and_sleeps_exactly_one_killable_jiffy(mc, monkeypatch):
    """§3.2 steps 7-8: after the kill, schedule_timeout_killable(1), one jiffy, not more."""
    m, cpu = mc
    timeouts = record_timeouts(monkeypatch)
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    cur = add_process(m, cpu, "alloc", rss=10)
    assert oom(cpu, cur) is True
    assert sigkill_pending(m, hog) and timeouts == [1]


def test_an_abort_kills_nobody_and_does_not_sleep(mc, monkeypatch):
    """§3.2 step 6: select_bad_process ABORTs on a TIF_MEMDIE thread: killed stays 0, so no sleep (step 8)."""
    m, cpu = mc
    timeouts = record_timeouts(monkeypatch)
    victim = add_process(m, cpu, "victim", rss=100)
    m.task_tif[victim] |= TIF_MEMDIE
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    cur = add_process(m, cpu, "alloc", rss=10)
    assert oom(cpu, cur) is True
    assert not sigkill_pending(m, hog) and int(m.glob[G_NR_KILLS]) == 0
    assert timeouts == []


def test_init_as_the_allocating_task_still_sleeps_after_the_kill(mc, monkeypatch):
    """Step 8 sleeps whenever a kill happened and there is a current; current may be init (row 0, pid 1),
    which is never the victim (§2.3) but may well allocate."""
    m, cpu = mc
    timeouts = record_timeouts(monkeypatch)
    assert int(m.task_pid[0]) == 1
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    assert oom(cpu, 0) is True
    assert sigkill_pending(m, hog) and timeouts == [1]


def test_dying_init_as_current_marks_itself(mc):
    """Step 2 applies to whatever current is: init with PF_EXITING gets TIF_MEMDIE and nobody is killed."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    m.task_flags[0] |= PF_EXITING
    assert oom(cpu, 0) is True
    assert m.task_tif[0] & TIF_MEMDIE and not sigkill_pending(m, hog)


def test_a_notifier_that_freed_one_page_ends_the_oom(mc, monkeypatch):
    """Step 1: any freed > 0, one page is enough, returns before anything else; the notifier gets the CPU."""
    m, cpu = mc
    timeouts = record_timeouts(monkeypatch)
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    cur = add_process(m, cpu, "alloc", rss=10)
    seen = []
    m.oom_notify_list = (lambda c: seen.append(c.id) or 1,)
    assert oom(cpu, cur) is True
    assert seen == [0]
    assert not sigkill_pending(m, hog) and int(m.glob[G_NR_KILLS]) == 0 and timeouts == []


def test_oom_kill_allocating_task_returns_true(monkeypatch):
    """Step 5 kills current and returns without the sleep; it did kill, so the result is True."""
    m, cpu = machine("oom_kill_allocating_task = 1")
    try:
        timeouts = record_timeouts(monkeypatch)
        cur = add_process(m, cpu, "alloc", rss=10)
        assert oom(cpu, cur) is True
        assert sigkill_pending(m, cur) and timeouts == []
    finally:
        m.close()


# --- the kill's kind, message and score ----------------------------------------------------------------------

def test_the_kill_line_names_the_message_and_score_and_the_header_the_request(mc, tmp_path):
    """§5.1 step 3 with message "Out of memory" and the per-mille score (550); the header (§3.4) prints the
    request's gfp mask and order."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    cur = add_process(m, cpu, "alloc", rss=10)
    with Dmesg(cpu, tmp_path / "dmesg") as d:
        oom(cpu, cur, order=2)
    assert d.lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0, order=2, oom_score_adj=0"
    assert f"Out of memory: Kill process {int(m.task_pid[hog])} (hog) score {HOG_SCORE} or sacrifice child" in d.lines
    assert kill_kinds(m) == [oom_kill.KILL_VICTIM]
    assert int(m.kill[0, K_POINTS]) == HOG_SCORE


def test_a_force_kill_is_recorded_as_sysrq(mc):
    """force_kill comes only from SysRq-F (§2.2); the emulator records such a kill with kind "sysrq"."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    cur = add_process(m, cpu, "writer", rss=10)
    oom(cpu, cur, force_kill=True)
    assert sigkill_pending(m, hog) and kill_kinds(m) == [oom_kill.KILL_SYSRQ]


def test_the_sysrq_work_item_ignores_a_dying_writer(mc):
    """§1.8: the work item runs in a kworker, so the "current is dying" shortcut cannot apply: the hog is
    killed although the task that wrote the SysRq key has SIGKILL pending."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    writer = add_process(m, cpu, "writer", rss=10)
    m.task_pending[writer] |= SIGKILL_BIT
    m.task_tif[writer] |= TIF_SIGPENDING
    oom(cpu, writer, force_kill=True, from_kworker=True)
    assert sigkill_pending(m, hog) and m.task_tif[hog] & TIF_MEMDIE
    assert not m.task_tif[writer] & TIF_MEMDIE


def test_oom_kill_allocating_task_line_header_and_kind(tmp_path):
    """Step 5: oom_kill_process(current, points = 0, message "Out of memory (oom_kill_allocating_task)"); the
    header prints the request (§3.4); the kill is recorded as an allocating-task kill."""
    m, cpu = machine("oom_kill_allocating_task = 1")
    try:
        cur = add_process(m, cpu, "alloc", rss=10)
        with Dmesg(cpu, tmp_path / "dmesg") as d:
            oom(cpu, cur, order=1)
        assert d.lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0, order=1, oom_score_adj=0"
        assert (f"Out of memory (oom_kill_allocating_task): Kill process {int(m.task_pid[cur])} (alloc) score 0 "
                "or sacrifice child") in d.lines
        assert kill_kinds(m) == [oom_kill.KILL_ALLOCATING]
    finally:
        m.close()


def test_oom_kill_allocating_task_sacrifices_a_child_scored_against_totalpages():
    """Step 5 passes totalpages to oom_kill_process, whose child loop (§5.1 step 4) scores current's child
    with it: rss 10 + 1 pte + adj 500 × (16384 // 1000 = 16) = 8011 > 0, so the child dies, not current."""
    m, cpu = machine("oom_kill_allocating_task = 1")
    try:
        cur = add_process(m, cpu, "alloc", rss=10)
        child = add_process(m, cpu, "child", rss=10, adj=500, parent=cur)
        oom(cpu, cur)
        assert sigkill_pending(m, child) and m.task_tif[child] & TIF_MEMDIE
        assert not sigkill_pending(m, cur)
    finally:
        m.close()


# --- nobody to kill ------------------------------------------------------------------------------------------

def test_no_killable_process_prints_the_header_and_table_then_panics(mc, tmp_path):
    """Step 6, p == NULL: dump_header(NULL, gfp, order, …) with the task table (oom_dump_tasks = 1), then
    panic("Out of memory and no killable processes...\\n"). Only current, at adj -1000, has an mm: it is
    listed (the table does not filter by adj, §3.5) but not eligible (§4.1 step 3)."""
    m, cpu = mc
    cur = add_process(m, cpu, "alloc", rss=10, adj=-1000)
    with Dmesg(cpu, tmp_path / "dmesg") as d:
        with pytest.raises(printk.Panic) as panic:
            oom(cpu, cur, order=3)
    assert str(panic.value) == "Out of memory and no killable processes...\n"
    assert d.lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0, order=3, oom_score_adj=-1000"
    assert table_row(m, cur, 10, 1, -1000) in d.lines
    assert d.lines[-1] == "Kernel panic - not syncing: Out of memory and no killable processes..."
    assert int(m.glob[G_NR_KILLS]) == 0


def test_5_1_no_killable_process_warns_then_panics_deadlocked(tmp_path):
    """KERNEL §8 (5.9 state; the 5.1 profile has it): with no killable process outside SysRq, the
    header, then the warning "Out of memory and no killable processes...", then panic("System is deadlocked
    on memory")."""
    m, cpu = machine(kernel="5.1")
    try:
        cur = add_process(m, cpu, "alloc", rss=10, adj=-1000)
        with Dmesg(cpu, tmp_path / "dmesg") as d:
            with pytest.raises(printk.Panic) as panic:
                oom(cpu, cur, order=3)
        assert str(panic.value) == "System is deadlocked on memory\n"
        # 5.x prints the mask by name (%pGg) and, from 5.0, the nodemask only in the summary line
        assert d.lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0(GFP_KERNEL), order=3, oom_score_adj=-1000"
        assert d.lines[-2:] == ["Out of memory and no killable processes...",
                                "Kernel panic - not syncing: System is deadlocked on memory"]
        assert not any(line.startswith("oom-kill:") for line in d.lines)  # no victim, no summary line
    finally:
        m.close()


@pytest.mark.parametrize("kernel", ["4.6", "5.1"])
def test_sysrq_with_no_killable_process_returns_false_without_panic(kernel):
    """From 4.6 a SysRq-F (force_kill) OOM with nobody to kill does not panic (the oom_reaper-era
    out_of_memory: "no killable process" panics only outside SysRq); the result is False: no progress."""
    m, cpu = machine(kernel=kernel)
    try:
        cur = add_process(m, cpu, "writer", rss=10, adj=-1000)
        assert oom(cpu, cur, force_kill=True) is False
        assert int(m.glob[G_NR_KILLS]) == 0
    finally:
        m.close()


def test_the_first_oom_records_every_tasks_proc_oom_score(mc):
    """Emulator-only (report.json's oom_scores): the first out_of_memory keeps each task's /proc oom_score of
    that moment, 9018 * 1000 // 16384 = 550 for the hog (§4.2), taken before the kill."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    cur = add_process(m, cpu, "alloc", rss=10)
    oom(cpu, cur)
    assert int(m.glob[G_OOM_SCORES_TAKEN]) == 1
    assert int(m.task_first_oom_score[hog]) == HOG_SCORE


# --- the kill log and the child loop (oom_kill_process, §5.1) --------------------------------------------------

def kill(cpu, p, points=0):
    oom_kill.oom_kill_process(cpu, p, GFP_KERNEL, 0, points, TOTALPAGES, None, None, "Out of memory")


def test_each_kill_is_logged_with_its_killer_victim_and_no_memcg(mc):
    """Emulator-only kill log (report.json): one row per kill in order, the victim's comm, the killing task's
    pid (0 when no task is current, as for the kworker), memcg -1 for a global OOM."""
    from oomemu.machine import K_KILLER_PID, K_MEMCG, K_PID
    m, cpu = mc
    a = add_process(m, cpu, "first", rss=100)
    b = add_process(m, cpu, "second", rss=100)
    cur = add_process(m, cpu, "alloc", rss=10)
    cpu.current = cur
    kill(cpu, a, 7)
    cpu.current = -1
    kill(cpu, b, 8)
    assert int(m.glob[G_NR_KILLS]) == 2
    assert [bytes(m.kill_comm[i]) for i in range(2)] == [b"first", b"second"]
    assert [int(m.kill[i, K_PID]) for i in range(2)] == [int(m.task_pid[a]), int(m.task_pid[b])]
    assert [int(m.kill[i, K_KILLER_PID]) for i in range(2)] == [int(m.task_pid[cur]), 0]
    assert [int(m.kill[i, K_MEMCG]) for i in range(2)] == [-1, -1]
    assert [int(m.kill[i, K_POINTS]) for i in range(2)] == [7, 8]


def test_init_as_the_killer_is_logged_by_its_pid(mc):
    """The killer column holds current's pid whenever there is a current, init (row 0, pid 1) included."""
    from oomemu.machine import K_KILLER_PID
    m, cpu = mc
    a = add_process(m, cpu, "victim", rss=100)
    cpu.current = 0
    kill(cpu, a)
    assert int(m.kill[0, K_KILLER_PID]) == 1


def test_a_full_kill_log_still_counts_the_kill(mc):
    """The log holds MAX_KILLS rows; a kill beyond them is counted but not written."""
    from oomemu.machine import MAX_KILLS
    m, cpu = mc
    a = add_process(m, cpu, "victim", rss=100)
    m.glob[G_NR_KILLS] = MAX_KILLS
    kill(cpu, a)
    assert int(m.glob[G_NR_KILLS]) == MAX_KILLS + 1
    assert sigkill_pending(m, a)


def test_a_child_with_an_empty_mm_is_still_sacrificed(mc):
    """§5.1 step 4: victim_points starts at 0 and an eligible task scores at least 1 (§4.1 step 7), so a
    child whose mm holds nothing (0 + 0 + 0, clamped to 1) is killed instead of its much bigger parent."""
    m, cpu = mc
    parent = add_process(m, cpu, "parent", rss=HOG_RSS)
    child = add_process(m, cpu, "child", rss=0, parent=parent)
    assert int(m.task_mm[child]) != int(m.task_mm[parent])
    kill(cpu, parent)
    assert sigkill_pending(m, child) and m.task_tif[child] & TIF_MEMDIE
    assert not sigkill_pending(m, parent)


def test_5_1_panic_on_oom_header_has_no_victim_summary(tmp_path):
    """check_panic_on_oom calls dump_header(NULL, …) (§3.3): in 5.x the header's last line, the oom-kill:
    summary, is about the victim, and there is none here."""
    m, cpu = machine("panic_on_oom = 2", kernel="5.1")
    try:
        cur = add_process(m, cpu, "alloc", rss=10)
        with Dmesg(cpu, tmp_path / "dmesg") as d:
            with pytest.raises(printk.Panic):
                oom(cpu, cur, order=1)
        assert d.lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0(GFP_KERNEL), order=1, oom_score_adj=0"
        assert not any(line.startswith("oom-kill:") for line in d.lines)
        assert d.lines[-1] == "Kernel panic - not syncing: Out of memory: compulsory panic_on_oom is enabled"
    finally:
        m.close()


@pytest.mark.parametrize("mode,constraint,panics", [
    (1, "CONSTRAINT_CPUSET", False), (1, "CONSTRAINT_MEMORY_POLICY", False), (1, "CONSTRAINT_MEMCG", False),
    (1, "CONSTRAINT_NONE", True), (2, "CONSTRAINT_CPUSET", True), (2, "CONSTRAINT_MEMCG", True)])
def test_check_panic_on_oom_by_mode_and_constraint(tmp_path, mode, constraint, panics):
    """§3.3: panic_on_oom = 1 panics only for CONSTRAINT_NONE, = 2 for every constraint; before the panic, the
    header names the request's order."""
    from oomemu.include import oom as oom_h
    m, cpu = machine(f"panic_on_oom = {mode}")
    try:
        cpu.current = add_process(m, cpu, "alloc", rss=10)
        with Dmesg(cpu, tmp_path / "dmesg") as d:
            if panics:
                with pytest.raises(printk.Panic):
                    oom_kill.check_panic_on_oom(cpu, getattr(oom_h, constraint), GFP_KERNEL, 2, None)
            else:
                oom_kill.check_panic_on_oom(cpu, getattr(oom_h, constraint), GFP_KERNEL, 2, None)
        if panics:
            assert d.lines[0] == "alloc invoked oom-killer: gfp_mask=0xd0, order=2, oom_score_adj=0"
        else:
            assert d.lines == []
    finally:
        m.close()


def test_constrained_alloc_totalpages_counts_swap():
    """§3.1: the default totalpages is totalram_pages + total_swap_pages: 16384 + 8 MiB / 4 kB = 18432."""
    text = textwrap.dedent("""
        [machine]
        cpus = 2
        max_tasks = 64
        swap = "8MiB"
        [[machine.node]]
        zones = { DMA = "16MiB", DMA32 = "0", Normal = "48MiB" }
        """)
    sc = load_scenario_text(text, name="unit")
    m = create_machine(sc, ring_records=64)
    try:
        cpu = CpuContext(m, 0, sc)
        cpu.current = add_process(m, cpu, "alloc", rss=10)
        assert oom_kill.constrained_alloc(cpu, None, 0, None) == (0, TOTALPAGES + 2048)
        zl = page_alloc.node_zonelist(m, 0)
        assert oom_kill.constrained_alloc(cpu, zl, GFP_KERNEL, None) == (0, TOTALPAGES + 2048)
    finally:
        m.close()


# --- what the trace says (read by the race detectors and the lock-exclusion invariant) ----------------------------

def traced(m, cpu):
    """Give cpu a trace ring; returns a function that drains it into (event name, seq, args) tuples."""
    from oomemu.trace.events import CATALOGUE
    from oomemu.trace.ring import RingWriter, drain_ring
    cpu.trace = RingWriter(m, cpu.id)
    names = [c[0] for c in CATALOGUE]

    def records():
        return [(names[int(r["event"])], int(r["seq"]), [int(x) for x in r["a"]]) for r in drain_ring(m, cpu.id)]
    return records


def test_out_of_memory_and_the_marks_are_traced_with_their_arguments(mc):
    """out_of_memory(constraint NONE = 0, totalpages 16384, gfp 0xd0, order 2, force_kill 0); the victim's
    mark is not self-made (0), a dying current's is (1)."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    cur = add_process(m, cpu, "alloc", rss=10)
    records = traced(m, cpu)
    oom(cpu, cur, order=2)
    recs = records()
    assert [a[:5] for name, _, a in recs if name == "out_of_memory"] == [[0, TOTALPAGES, 0xd0, 2, 0]]
    assert [a[:2] for name, _, a in recs if name == "mark_victim"] == [[int(m.task_pid[hog]), 0]]
    dying = add_process(m, cpu, "dying", rss=10)
    m.task_flags[dying] |= PF_EXITING
    oom(cpu, dying, force_kill=True)
    assert [a[:2] for name, _, a in records() if name == "mark_victim"] == [[int(m.task_pid[dying]), 1]]
    oom(cpu, cur, order=0, force_kill=True)   # SysRq-F: force_kill 1
    assert [a[:5] for name, _, a in records() if name == "out_of_memory"] == [[0, TOTALPAGES, 0xd0, 0, 1]]


def test_the_zonelist_oom_lock_is_traced_with_its_zones_and_free_pages(mc):
    """try_set_zonelist_oom for GFP_KERNEL walks DMA (zone 0) and Normal (zone 2): zone_mask 0b101. With 1000
    pages free in DMA and 5000 in Normal, free above min + lowmem_reserve against the classzone (Normal, the
    first zone walked) is (1000 - 64 - 12288 // 256) + (5000 - 192 - 0) = 888 + 4808 = 5696 (§6.5: DMA min 64,
    Normal min 192 on this machine). A busy try records 0, 0; the release records the same mask. Each event
    takes the next OOM sequence number."""
    from oomemu.include.mmzone import NR_FREE_PAGES
    from oomemu.machine import G_OOM_SEQ, Z_STAT
    m, cpu = mc
    m.zone[0, Z_STAT + NR_FREE_PAGES] = 1000
    m.zone[2, Z_STAT + NR_FREE_PAGES] = 5000
    zl = page_alloc.node_zonelist(m, 0)
    seq = int(m.glob[G_OOM_SEQ])
    records = traced(m, cpu)
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 1
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 0
    oom_kill.clear_zonelist_oom(cpu, zl, GFP_KERNEL)
    recs = [(name, s, a) for name, s, a in records() if name.startswith("oom_lock")]
    assert [(name, a[:4] if name == "oom_lock_try" else a[:1]) for name, _, a in recs] == [
        ("oom_lock_try", [1, 0b101, 5696, 6000]), ("oom_lock_try", [0, 0b101, 0, 0]),
        ("oom_lock_release", [0b101])]
    assert [s for _, s, _ in recs] == [seq + 1, seq + 2, seq + 3]
    assert int(m.glob[G_OOM_SEQ]) == seq + 3
    assert int(cpu.vm_events[vmstat.NR_OOM_LOCK_BUSY]) == 1   # the busy try only
    # DMA at 50 free is below its min + reserve (64 + 48): it adds nothing, not a page
    m.zone[0, Z_STAT + NR_FREE_PAGES] = 50
    assert oom_kill.try_set_zonelist_oom(cpu, zl, GFP_KERNEL) == 1
    assert [a[:4] for name, _, a in records() if name == "oom_lock_try"] == [[1, 0b101, 4808, 5050]]
    assert int(cpu.vm_events[vmstat.NR_OOM_LOCK_BUSY]) == 1


def test_the_child_loop_traces_each_child_and_the_sacrifice(mc):
    """Every child scored is an oom_scan_candidate(pid, points, CAND_CHILD, parent pid); the one chosen is an
    oom_sacrifice_child(parent, child, points). Points by hand (§4.1): 300 + 1 pte = 301 and 40 + 1 = 41. A
    parent without children traces no sacrifice."""
    from oomemu.trace import events as tp
    m, cpu = mc
    parent = add_process(m, cpu, "parent", rss=HOG_RSS)
    big = add_process(m, cpu, "big", rss=300, parent=parent)
    small = add_process(m, cpu, "small", rss=40, parent=parent)
    lone = add_process(m, cpu, "lone", rss=100)
    records = traced(m, cpu)
    kill(cpu, parent)
    recs = records()
    pid = {r: int(m.task_pid[r]) for r in (parent, big, small, lone)}
    assert [a[:4] for name, _, a in recs if name == "oom_scan_candidate"] == [
        [pid[big], 301, tp.CAND_CHILD, pid[parent]], [pid[small], 41, tp.CAND_CHILD, pid[parent]]]
    assert [a[:3] for name, _, a in recs if name == "oom_sacrifice_child"] == [[pid[parent], pid[big], 301]]
    kill(cpu, lone)
    assert [name for name, _, _ in records() if name == "oom_sacrifice_child"] == []


# --- more of the steps -------------------------------------------------------------------------------------------

def test_3_14_sysrq_with_no_killable_process_still_panics(mc):
    """§3.2 step 6 in 3.14 panics whenever select_bad_process finds nobody, force_kill or not."""
    m, cpu = mc
    cur = add_process(m, cpu, "writer", rss=10, adj=-1000)
    with pytest.raises(printk.Panic) as panic:
        oom(cpu, cur, force_kill=True)
    assert str(panic.value) == "Out of memory and no killable processes...\n"


def test_sysrq_force_kill_passes_over_a_tif_memdie_victim(mc):
    """force_kill turns off the TIF_MEMDIE ABORT (§2.2 step 3): SysRq-F kills the hog although an earlier
    victim still holds TIF_MEMDIE."""
    m, cpu = mc
    old = add_process(m, cpu, "old-victim", rss=100)
    m.task_tif[old] |= TIF_MEMDIE
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    cur = add_process(m, cpu, "writer", rss=10)
    oom(cpu, cur, force_kill=True)
    assert sigkill_pending(m, hog)


def test_oom_kill_allocating_task_needs_current_to_have_an_mm(monkeypatch):
    """§3.2 step 5 applies only if current has an mm; a current past exit_mm (without PF_EXITING here, so
    step 2 does not apply) leaves the kill to the scan, which kills the hog and sleeps."""
    m, cpu = machine("oom_kill_allocating_task = 1")
    try:
        timeouts = record_timeouts(monkeypatch)
        hog = add_process(m, cpu, "hog", rss=HOG_RSS)
        cur = add_process(m, cpu, "alloc", rss=10)
        m.task_mm[cur] = -1
        assert oom(cpu, cur) is True
        assert sigkill_pending(m, hog) and kill_kinds(m) == [oom_kill.KILL_VICTIM] and timeouts == [1]
    finally:
        m.close()


def test_the_scans_victim_sacrifices_its_child_scored_against_totalpages(mc):
    """Step 7 hands totalpages to oom_kill_process: the hog's child (rss 10 + 1 pte + 500 × 16 = 8011) dies."""
    m, cpu = mc
    hog = add_process(m, cpu, "hog", rss=HOG_RSS)
    child = add_process(m, cpu, "child", rss=10, adj=500, parent=hog)
    cur = add_process(m, cpu, "alloc", rss=10)
    oom(cpu, cur)
    assert sigkill_pending(m, child) and not sigkill_pending(m, hog)


def test_5_1_kill_summary_names_the_constraint(tmp_path):
    """5.0's oom-kill: summary line (KERNEL §8, 4.18 row) starts with the OOM's constraint: CONSTRAINT_NONE for
    a global OOM, and no nodemask."""
    m, cpu = machine(kernel="5.1")
    try:
        hog = add_process(m, cpu, "hog", rss=HOG_RSS)
        cur = add_process(m, cpu, "alloc", rss=10)
        with Dmesg(cpu, tmp_path / "dmesg") as d:
            oom(cpu, cur)
        summary = [line for line in d.lines if line.startswith("oom-kill:")]
        assert len(summary) == 1
        assert summary[0].startswith("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),")
        assert summary[0].endswith(f",task=hog,pid={int(m.task_pid[hog])},uid=1000")
    finally:
        m.close()


def reaper_queue(m):
    from oomemu.machine import G_OOM_REAPER_LIST
    head, out = int(m.glob[G_OOM_REAPER_LIST]), []
    while head >= 0:
        out.append(head)
        head = int(m.task_oom_reaper_list[head])
    return out


@pytest.mark.parametrize("kernel,queued", [("4.6", False), ("4.9", True)])
def test_a_dying_current_goes_to_the_reaper_only_from_4_9(kernel, queued):
    """5.9 state (KERNEL §8): an exiting current gets mark_oom_victim plus wake_oom_reaper; the profile dates the
    wake to 4.9 (with MMF_OOM_SKIP). 4.6 has the reaper but marks a dying current without queueing it."""
    m, cpu = machine(kernel=kernel)
    try:
        assert m.oom_reaper_row >= 0
        cur = add_process(m, cpu, "dying", rss=10)
        m.task_pending[cur] |= SIGKILL_BIT
        m.task_tif[cur] |= TIF_SIGPENDING
        from oomemu.include.sched import SIGNAL_GROUP_EXIT
        m.sig_flags[cur] |= SIGNAL_GROUP_EXIT
        assert oom(cpu, cur) is True
        assert m.task_tif[cur] & TIF_MEMDIE
        assert reaper_queue(m) == ([cur] if queued else [])
    finally:
        m.close()
