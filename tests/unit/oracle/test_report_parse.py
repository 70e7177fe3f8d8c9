"""The report parser on the formats of KERNEL §3.4–3.5 and §8, with the prefixes and wraps people paste."""
import pytest

from oomemu.oracle.report import NoReport, oom_totalpages, parse_report, parse_reports, strip_prefix

R314 = """\
[ 1234.000001] memhog invoked oom-killer: gfp_mask=0x201da, order=0, oom_score_adj=0
[ 1234.000002] memhog cpuset=/ mems_allowed=0
[ 1234.000003] CPU: 1 PID: 812 Comm: memhog Not tainted 3.14.0-1-amd64 #1 Debian 3.14.4-1
[ 1234.000004] Call Trace:
[ 1234.000005]  [<ffffffff814a6b6c>] dump_stack+0x45/0x56
[ 1234.000006] Mem-Info:
[ 1234.000007] Node 0 DMA per-cpu:
[ 1234.000008] CPU    0: hi:    0, btch:   1 usd:   0
[ 1234.000009] active_anon:1000 inactive_anon:20 isolated_anon:0
[ 1234.000009]  free:300 slab_reclaimable:10 slab_unreclaimable:20
[ 1234.000010] Node 0 DMA free:1200kB min:100kB low:124kB high:148kB active_anon:0kB present:15992kB managed:15908kB all_unreclaimable? yes
[ 1234.000011] lowmem_reserve[]: 0 471 471 471
[ 1234.000012] Node 0 DMA32 free:2800kB min:2700kB low:3400kB high:4000kB active_anon:4000kB present:507896kB managed:485940kB all_unreclaimable? yes
[ 1234.000013] lowmem_reserve[]: 0 0 0 0
[ 1234.000014] Node 0 DMA: 1*4kB 1*8kB = 12kB
[ 1234.000015] Free swap  = 0kB
[ 1234.000016] Total swap = 1048572kB
[ 1234.000017] 130972 pages RAM
[ 1234.000018] [ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name
[ 1234.000019] [  343]     0   343     4902      100      13       80             0 udevd
[ 1234.000020] [  812]  1000   812   223086    90000     189     1500           500 memhog
[ 1234.000021] [  900]   102   900     9807      400      24      100          -1000 dbus daemon
[ 1234.000022] Out of memory: Kill process 812 (memhog) score 555 or sacrifice child
[ 1234.000023] Killed process 812 (memhog) total-vm:892344kB, anon-rss:360000kB, file-rss:0kB
"""


def test_strip_prefix_variants():
    msg = "memhog invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0"
    for line in (f"[ 1234.567890] {msg}", f"Jun 29 09:17:43 host kernel: [15847900.740029] {msg}",
                 f"Jun 29 09:17:43.123456 host kernel: {msg}", f"2024-01-02T03:04:05.678+0000 box kernel: {msg}",
                 f"6,422,493265846,-;{msg}", f"<4>[12345.342532] {msg}", f"> > [Mon Dec  8 17:51:31 2025] {msg}",
                 f"    kernel: {msg}", f"[2-3219.1870] {msg}", f"[ven. nov. 28 07:26:44 2025] {msg}",
                 f"[  134.427871] [  T812] {msg}"):
        assert strip_prefix(line) == msg, line


def test_a_3_14_report():
    r = parse_report(R314)
    assert (r.comm, r.gfp_mask, r.gfp_names, r.order, r.oom_score_adj) == ("memhog", 0x201da, None, 0, 0)
    assert (r.current_pid, r.cpu, r.release, r.version) == (812, 1, "3.14.0-1-amd64", (3, 14))
    assert [(z.name, z.free_kb, z.min_kb, z.low_kb, z.high_kb, z.present_kb, z.managed_kb) for z in r.zones] == [
        ("DMA", 1200, 100, 124, 148, 15992, 15908), ("DMA32", 2800, 2700, 3400, 4000, 507896, 485940)]
    assert r.zones[0].lowmem_reserve == (0, 471, 471, 471)
    assert r.meminfo["active_anon"] == 1000 and r.meminfo["free"] == 300
    assert (r.swap_total_kb, r.swap_free_kb, r.pages_ram) == (1048572, 0, 130972)
    assert [(t.pid, t.uid, t.rss, t.nr_ptes, t.swapents, t.oom_score_adj, t.comm) for t in r.tasks] == [
        (343, 0, 100, 13, 80, 0, "udevd"), (812, 1000, 90000, 189, 1500, 500, "memhog"),
        (900, 102, 400, 24, 100, -1000, "dbus daemon")]
    assert (r.selected.pid, r.selected.score, r.killed.pid, r.killed.anon_rss_kb) == (812, 555, 812, 360000)
    assert r.unusable == []
    assert r.ignored == {"stack": 2, "per-cpu lists": 2, "buddy lists": 1, "node and vm counters": 1}
    # totalram = managed pages of both zones; plus swap pages (KERNEL §3.1)
    assert oom_totalpages(r)[0] == (15908 + 485940) // 4 + 1048572 // 4


R66 = """\
Dec  8 17:51:31 web kernel: [  139.1] bash invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=1000
Dec  8 17:51:31 web kernel: [  139.2] CPU: 0 PID: 7788 Comm: bash Not tainted 6.6.0-1087-azure #96-Ubuntu
Dec  8 17:51:31 web kernel: [  139.3] memory: usage 524288kB, limit 524288kB, failcnt 77
Dec  8 17:51:31 web kernel: [  139.4] swap: usage 0kB, limit 0kB, failcnt 0
Dec  8 17:51:31 web kernel: [  139.5] Memory cgroup stats for /kubepods/pod1:
Dec  8 17:51:31 web kernel: [  139.6] anon 536870912
Dec  8 17:51:31 web kernel: [  139.7] file 0
Dec  8 17:51:31 web kernel: [  139.8] Tasks state (memory values in pages):
Dec  8 17:51:31 web kernel: [  139.9] [  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
Dec  8 17:51:31 web kernel: [  139.9] [   7700]     0  7700    10566     9788     8128     1660         0   126976        0          -997 pause
Dec  8 17:51:31 web kernel: [  139.9] [   7788]  1001  7788   150000   120000   119000     1000         0  1048576        0          1000 bash
Dec  8 17:51:31 web kernel: [  139.9] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=pod1,mems_allowed=0,oom_memcg=/kubepods/pod1,task_memcg=/kubepods/pod1,task=bash,pid=7788,uid=1001
Dec  8 17:51:31 web kernel: [  139.9] Memory cgroup out of memory: Killed process 7788 (bash) total-vm:600000kB, anon-rss:476000kB, file-rss:4000kB, shmem-rss:0kB, UID:1001 pgtables:1024kB oom_score_adj:1000
"""


def test_a_6_x_memcg_report():
    r = parse_report(R66)
    assert (r.gfp_mask, r.gfp_names, r.release) == (0xcc0, ("GFP_KERNEL",), "6.6.0-1087-azure")
    assert r.tasks_state and r.columns[4:7] == ("rss_anon", "rss_file", "rss_shmem")
    bash = r.tasks[1]
    assert (bash.rss, bash.anon_file, bash.pgtables_bytes, bash.page_tables) == (120000, (119000, 1000), 1048576, 256)
    assert r.constraint == "CONSTRAINT_MEMCG" and r.summary["oom_memcg"] == "/kubepods/pod1"
    assert r.summary["task"] == "bash" and r.summary["pid"] == 7788
    assert r.memcg["limit_kb"] == 524288 and r.memcg["swap_limit_kb"] == 0
    assert r.selected is None and (r.killed.pid, r.killed.memcg, r.victim.pid) == (7788, True, 7788)
    assert r.ignored["memcg stats"] == 2 and r.unusable == []
    # memcg totalpages: the limit, plus no swap (swap.max 0) — mem_cgroup_get_max()
    assert oom_totalpages(r)[0] == 524288 // 4


R310 = """\
kernel: java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0
kernel: java cpuset=8efb22f5 mems_allowed=0
kernel: CPU: 1 PID: 9949 Comm: java Tainted: P           OE  ------------   3.10.0-327.13.1.el7.x86_64 #1
kernel: Task in /docker/8efb22f5 killed as a result of limit of /docker/8efb22f5
kernel: memory: usage 2097152kB, limit 2097152kB, failcnt 5120
kernel: memory+swap: usage 2097152kB, limit 4194304kB, failcnt 0
kernel: kmem: usage 0kB, limit 9007199254740988kB, failcnt 0
kernel: Memory cgroup stats for /docker/8efb22f5: cache:0KB rss:2097152KB rss_huge:0KB
kernel: [ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name
kernel: [ 9901]     0  9901     1000      100       5        0             0 sh
kernel: [ 9949]     0  9949  1500000   520000    1100        0             0 java
kernel: Memory cgroup out of memory: Kill process 9949 (java) score 992 or sacrifice child
kernel: Killed process 9949 (java) total-vm:6000000kB, anon-rss:2080000kB, file-rss:0kB
"""


def test_a_3_10_memcg_report_with_memsw():
    r = parse_report(R310)
    assert r.release.startswith("3.10.0") and r.memcg["task_memcg"] == "/docker/8efb22f5"
    assert r.memcg["oom_memcg"] == "/docker/8efb22f5" and r.memcg["memsw_limit_kb"] == 4194304
    assert r.constraint == "CONSTRAINT_MEMCG" and r.selected.memcg and r.selected.score == 992
    # no total swap in a memcg report: the swap allowance (memsw - limit) cannot be bounded, taken as 0
    pages, how = oom_totalpages(r)
    assert pages == 2097152 // 4 and "taken as 0" in how
    r.swap_total_kb = 1 << 20
    assert oom_totalpages(r)[0] == 2097152 // 4 + (1 << 20) // 4


def test_wrapped_lines_are_joined():
    text = ("> anaconda invoked oom-killer: gfp_mask=0x14200ca(GFP_HIGHUSER_MOVABLE),\n"
            "> nodemask=(null), order=0, oom_score_adj=0\n"
            "> Node 0 DMA32 free:2732kB min:2732kB low:3412kB high:4096kB active_anon:183052kB\n"
            "> present:507896kB managed:485940kB\n"
            "> [ pid ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name\n"
            "> [  928]     0   928    20000     5000   163840        0             0\n"
            "> anaconda\n"
            "> Out of memory: Kill process 928 (anaconda) score 40 or sacrifice child\n"
            "> Killed process 928 (anaconda) total-vm:80000kB,\n"
            "> anon-rss:20000kB, file-rss:0kB, shmem-rss:0kB\n")
    r = parse_report(text)
    assert (r.gfp_names, r.nodemask, r.oom_score_adj) == (("GFP_HIGHUSER_MOVABLE",), "(null)", 0)
    assert r.zones[0].managed_kb == 485940
    assert [(t.pid, t.comm, t.page_tables) for t in r.tasks] == [(928, "anaconda", 40)]
    assert r.killed.anon_rss_kb == 20000 and r.unusable == []


def test_unknown_lines_are_listed_and_several_reports_found():
    text = R314 + "this is not a kernel line\n" + R314.replace("812", "813")
    reports = parse_reports(text)
    assert len(reports) == 2 and reports[1].selected.pid == 813
    assert reports[0].unusable == [(R314.count("\n") + 1, "this is not a kernel line")]


def test_no_report_is_an_error():
    with pytest.raises(NoReport, match="no OOM report"):
        parse_report("hello\nworld\n")
