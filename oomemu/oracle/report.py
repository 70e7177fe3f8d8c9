"""Read a kernel OOM report as people paste it: dmesg, syslog, journalctl, /dev/kmsg, mail quotes, wrapped lines.

The report is what mm/oom_kill.c dump_header() and its callers print (KERNEL §3.4–3.5, §8): the "invoked
oom-killer" line, the CPU/Comm line that names the kernel release, show_mem()'s Mem-Info block with one line
per zone, the swap and RAM totals, the memcg lines of mem_cgroup_print_oom_info(), the 4.18+ "oom-kill:" summary,
dump_tasks()'s table in each version's columns, and the kill lines. `parse_reports` finds every report in a
text and returns them in order; every line of a report is either used, known and irrelevant (call traces,
buddy lists, per-CPU lists), or listed in `unusable`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

PAGE_KB = 4
CONTINUATION = "\u21aa"   # "↪", how some pages mark a wrapped line

# --- prefixes ------------------------------------------------------------------------------------------------

_PREFIXES = [re.compile(p) for p in (
    r"^(?:>\s?)+",                                             # mail quoting
    r"^<\d+>",                                                 # syslog priority
    r"^\d+,\d+,\d+,[^;]*;",                                    # /dev/kmsg record
    r"^(?:[A-Za-z][a-z]{2}\s+\d{1,2}\s+\d\d:\d\d:\d\d(?:\.\d+)?"  # syslog / journalctl: "Jun 29 09:17:43 host kernel:"
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s+\S+\s+kernel:",
    r"^[\w.-]+ kernel:",                                       # "host kernel:" after a stripped time stamp
    r"^kernel:",
    r"^\[\s*\d+\.\d+\]",                                       # dmesg
    r"^\[\d+-\s*\d+\.\d+\]",                                   # per-CPU stamped dmesg
    r"^\[[^\]\n]*\d\d:\d\d:\d\d[^\]\n]*\]",                    # dmesg -T, any locale
    r"^\[\s*[TC]\d+\]",                                        # CONFIG_PRINTK_CALLER
)]


def strip_prefix(line):
    """The message part of one log line, without time stamps, hosts, priorities or quote marks."""
    text = line.rstrip("\r\n")
    for _ in range(8):
        before = text
        text = text.lstrip()
        for prefix in _PREFIXES:
            text = prefix.sub("", text, count=1)
        if text == before:
            break
    return text.strip()


# --- the report ----------------------------------------------------------------------------------------------

@dataclass
class Task:
    """One dump_tasks() row; memory columns in pages (pgtables_bytes in bytes, as printed)."""

    pid: int
    uid: int
    tgid: int
    total_vm: int
    rss: int
    swapents: int
    oom_score_adj: int
    comm: str
    nr_ptes: int | None = None
    pgtables_bytes: int | None = None
    nr_pmds: int | None = None
    rss_anon: int | None = None
    rss_file: int | None = None
    rss_shmem: int | None = None
    line: int = 0

    @property
    def page_tables(self):
        """Page-table pages: nr_ptes (+ nr_pmds, 4.0–4.14) or pgtables_bytes / PAGE_SIZE (4.15+)."""
        if self.pgtables_bytes is not None:
            return self.pgtables_bytes // (PAGE_KB * 1024)
        return (self.nr_ptes or 0) + (self.nr_pmds or 0)

    @property
    def anon_file(self):
        """(anon, file) pages: the 6.x split when printed, else all of rss as anon."""
        if self.rss_anon is not None and self.rss_file is not None:
            return self.rss_anon + (self.rss_shmem or 0), self.rss_file
        return self.rss, 0


@dataclass
class Zone:
    node: int
    name: str
    free_kb: int
    min_kb: int
    low_kb: int
    high_kb: int
    present_kb: int | None = None
    managed_kb: int | None = None
    lowmem_reserve: tuple[int, ...] = ()


@dataclass
class Kill:
    """A kill line: `selected` (Kill process … score … or sacrifice child) or `killed` (Killed process …)."""

    pid: int
    comm: str
    score: int | None
    memcg: bool
    line: int
    anon_rss_kb: int | None = None
    file_rss_kb: int | None = None


@dataclass
class Report:
    start: int                               # first and last line numbers (1-based) of the report
    end: int = 0
    comm: str | None = None                  # the allocating task
    gfp_mask: int | None = None
    gfp_names: tuple[str, ...] | None = None  # the 4.x+ "(GFP_…|__GFP_…)" form
    order: int | None = None
    oom_score_adj: int | None = None
    nodemask: str | None = None
    current_pid: int | None = None
    cpu: int | None = None
    release: str | None = None               # kernel release from the CPU/Comm line
    meminfo: dict = field(default_factory=dict)
    zones: list = field(default_factory=list)
    swap_total_kb: int | None = None
    swap_free_kb: int | None = None
    pages_ram: int | None = None
    pages_reserved: int | None = None
    constraint: str | None = None
    memcg: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)   # the 4.18+ "oom-kill:" line
    columns: tuple[str, ...] = ()
    tasks_state: bool = False                # the 4.18+ "Tasks state (memory values in pages):" preamble
    tasks: list = field(default_factory=list)
    selected: Kill | None = None
    killed: Kill | None = None
    sharers: list = field(default_factory=list)
    oom_group: bool = False                  # 4.19+ memory.oom.group: the whole cgroup was killed after the victim
    group_kills: list = field(default_factory=list)   # the further "Killed process" lines of an oom.group kill
    panic: str | None = None
    ignored: dict = field(default_factory=dict)   # category -> count of known lines the report does not need
    unusable: list = field(default_factory=list)  # (line number, text) of lines nothing here understands

    @property
    def is_memcg(self):
        return self.constraint == "CONSTRAINT_MEMCG" or bool(self.memcg.get("limit_kb") is not None
                                                             and self.constraint is None and not self.zones)

    @property
    def version(self):
        """(major, minor) of the kernel release, or None."""
        if not self.release:
            return None
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return (int(m.group(1)), int(m.group(2))) if m else None

    @property
    def victim(self):
        """The kernel's own choice: the selected task where a "Kill process" line names it, else the killed one,
        else the task the 4.18+ "oom-kill:" summary names."""
        if self.selected or self.killed:
            return self.selected or self.killed
        if "pid" in self.summary:
            return Kill(self.summary["pid"], self.summary.get("task", ""), None,
                        self.constraint == "CONSTRAINT_MEMCG", 0)
        return None

    def format_version(self):
        """The oldest (major, minor) the report's formats imply, when the release is not printed."""
        if self.columns and "rss_anon" in self.columns:
            return (6, 8)
        if self.killed and not self.selected and self.killed.score is None:
            return (5, 1)
        if self.tasks_state or self.summary:
            return (4, 18)
        if "pgtables_bytes" in self.columns:
            return (4, 15)
        if "nr_pmds" in self.columns:
            return (4, 0)
        if self.gfp_names is not None:
            return (4, 8)
        return (3, 14)


class NoReport(ValueError):
    """The text holds no OOM report."""


# --- line patterns -------------------------------------------------------------------------------------------

RE_INVOKED = re.compile(
    r"^(?P<comm>.+?) invoked oom-killer:\s*gfp_mask=(?P<gfp>0x[0-9a-fA-F]+)(?:\s*\((?P<names>[^)]*)\))?,"
    r"(?:\s*nodemask=(?P<nodemask>[^,]*),)?\s*order=(?P<order>-?\d+),(?:\s*oom_adj=-?\d+,)?"
    r"\s*oom_score_adj=(?P<adj>-?\d+)")
RE_INVOKED_HEAD = re.compile(r" invoked oom-killer:")
# What a cut or mangled "invoked" line still gives: the comm, the mask, perhaps the order.
RE_INVOKED_PART = re.compile(r"^(?P<comm>.+?) invoked oom-killer:\s*gfp_mask=(?P<gfp>0x[0-9a-fA-F]+)"
                             r"(?:\s*\((?P<names>[^)]*)\))?(?:.*?\border=(?P<order>-?\d+))?")
RE_CPU = re.compile(r"^CPU: (?P<cpu>\d+) (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.+?)\s+"
                    r"(?:Not tainted|Tainted: [A-Z \-]*?)\s*(?P<release>\d+\.\d+\S*)")
RE_PID_OLD = re.compile(r"^Pid: (?P<pid>\d+), comm: (?P<comm>.+?) (?:Not tainted|Tainted: [A-Z \-]*?)\s*"
                        r"(?P<release>\d+\.\d+\S*)")
RE_CPUSET = re.compile(r"^.+ cpuset=\S* mems_allowed=\S+$")
RE_SUMMARY = re.compile(r"^oom-kill:(?P<body>constraint=.*)$")
RE_KV = re.compile(r"([A-Za-z_()]+):\s?(-?\d+)(kB|KB)?")
RE_ZONE = re.compile(r"^(?:Node (?P<node>\d+) )?(?P<zone>DMA32|DMA|Normal|HighMem|Movable|Device) free:(?P<free>\d+)kB")
RE_RESERVE = re.compile(r"^lowmem_reserve\[\]:(?P<vals>(?:\s+\d+)+)\s*$")
RE_BUDDY = re.compile(r"^(?:Node \d+ )?(?:DMA32|DMA|Normal|HighMem|Movable|Device): (?:\d+\*\d+kB.*|.*= \d+kB)$")
RE_TABLE_HEAD = re.compile(r"^\[\s*pid\s*\]\s+(?P<cols>uid\s+tgid\s+total_vm\s+rss\b.*\bname)\s*$")
RE_TABLE_HEAD_START = re.compile(r"^\[\s*pid\s*\]\s+uid\b")
RE_ROW = re.compile(r"^\[\s*(?P<pid>\d+)\]\s+(?P<rest>.*)$")
RE_SELECT = re.compile(r"^(?P<who>Memory cgroup out of memory|Out of memory(?: \(oom_kill_allocating_task\))?|"
                       r"[\w ]*out of memory[\w ()]*): Kill process (?P<pid>\d+) \((?P<comm>.*)\) score (?P<score>\d+)"
                       r" or sacrifice child")
RE_KILLED = re.compile(r"^(?:(?P<who>[\w ]*[Oo]ut of memory[\w ()]*): )?Killed process (?P<pid>\d+)(?:, UID \d+,)? "
                       r"\((?P<comm>.*?)\)"
                       r",?(?: UID:? ?\d+,)? total-vm:(?P<vm>\d+)kB, anon-rss:(?P<anon>\d+)kB, file-rss:(?P<file>\d+)kB")
RE_KILLED_HEAD = re.compile(r"Killed process \d+(?:, UID \d+,)? \(")
RE_SHARER = re.compile(r"^Kill process \d+ \(.*\) sharing same memory$")
RE_TASK_IN = re.compile(r"^Task in (?P<task>\S+)(?: killed(?: as a result of limit of (?P<limit>\S+))?)?$")
RE_LIMIT_OF = re.compile(r"^(?:killed )?as a result of limit of\s*(?P<limit>\S+)?$")
RE_CGROUP_PATH = re.compile(r"^/\S*$")
RE_MEMCG_USAGE = re.compile(r"^(?P<what>memory|memory\+swap|swap|kmem|kmem\.tcp):? usage (?P<usage>\d+)kB, limit "
                            r"(?P<limit>\d+)kB, failcnt (?P<failcnt>\d+)$")
RE_MEMCG_V2 = re.compile(r"^(?P<what>memory|swap) (?P<usage>\d+)(?: \(max (?P<max>\d+)\))?$")  # 4.19-era cgroup2
RE_MEMCG_STATS = re.compile(r"^Memory cgroup stats for \S+?:?(?:\s|$)")
RE_STAT_LINE = re.compile(r"^[a-z_]+ \d+$")
RE_SWAP_TOTAL = re.compile(r"^Total swap = (\d+)kB$")
RE_SWAP_FREE = re.compile(r"^Free swap\s+= (\d+)kB$")
RE_PAGES_RAM = re.compile(r"^(\d+) pages (?:of )?RAM$")
RE_PAGES_RESERVED = re.compile(r"^(\d+) (?:pages reserved|reserved pages)$")
RE_OOM_GROUP = re.compile(r"^Tasks in \S+ are going to be killed due to memory\.oom\.group set$")
RE_PANIC = re.compile(r"^Kernel panic - not syncing: (?P<why>.*)$")

_IGNORED = (
    ("stack", re.compile(r"^(?:Call Trace:|Backtrace:|Hardware name:|<TASK>|</TASK>|<IRQ>|</IRQ>|Code:|"
                         r"Stack:|Exception stack|---\[ end|RIP:|RSP:|RAX:|RDX:|RBP:|R10:|R13:|FS:|CS:|CR2:|"
                         r"DR0:|DR3:|Modules linked in:|Workqueue:|Task dump for|Mem abort|pc :|lr :|sp :|"
                         r"x\d+ *:|Unwind|Function entered|dump_backtrace|\? |\S+\+0x[0-9a-f]+/0x[0-9a-f]+)")),
    ("stack", re.compile(r"^(?:\[<[0-9a-f]+>\]|\(\S+\) from|[0-9a-f]{8,16}(?: [0-9a-f]{8,16})+$|"
                         r"(?:r\d+|fp|ip|sp|lr|pc|cpsr):[0-9a-f]{8})")),
    ("per-cpu lists", re.compile(r"^(?:(?:Node \d+ )?\w+ per-cpu:|CPU\s+\d+: hi:)")),
    ("node and vm counters", re.compile(r"^(?:Node \d+ active_anon:|Node \d+ hugepages_|\d+ total pagecache pages|"
                                        r"\d+ pages in swap cache|Swap cache stats:|\d+ pages HighMem|"
                                        r"\d+ pages cma reserved|\d+ pages hwpoisoned|\d+ pages shared|"
                                        r"\d+ pages non-shared|Memory cgroup min protection|Mem-Info:|"
                                        r"\d+ pages (?:swap )?cached|\d+ free pages|\d+ slab pages|"
                                        r"\d+ pages pagetables|Free swap|Unreclaimable slab info:|"
                                        r"Name\s+Used\s+Total|Show Memory|Mem-info:)")),
    ("buddy lists", RE_BUDDY),
    ("oom_reaper", re.compile(r"^oom_reaper: ")),
    ("wrapped counters", re.compile(r"^(?:(?:[\w()\-]+:\s?-?\d+(?:kB|KB)?,?|all_unreclaimable\? (?:yes|no)|"
                                    r"[\w]+=\d+(?:kB)?)\s*)+$")),
    ("buddy lists", re.compile(r"^(?:(?:\d+\*\d+kB|\([A-Z]+\)|=|\d+kB)\s*)+$")),
    ("stack", re.compile(r"^(?:<?[0-9a-f]{2}>?\s)+<?[0-9a-f]{2}>?$")),
    ("stack", re.compile(r"^(?:Exception stack\(|[0-9a-f]{4}:(?:\s+[0-9a-f]{8})+$)")),
    ("memcg stats", RE_MEMCG_STATS),
)


def _is_report_line(text):
    """True for a line that belongs to an OOM report (used or known), for finding where a headless one starts."""
    return any(p.match(text) for p in (RE_CPU, RE_CPUSET, RE_SUMMARY, RE_ZONE, RE_RESERVE, RE_SWAP_TOTAL, RE_SWAP_FREE,
                                       RE_PAGES_RAM, RE_PAGES_RESERVED, RE_TASK_IN, RE_LIMIT_OF, RE_MEMCG_USAGE,
                                       RE_MEMCG_V2, RE_STAT_LINE)) \
        or _is_meminfo_counters(text) or _classify_ignored(text) is not None or text.startswith("Tasks state")


def _classify_ignored(text):
    for category, pattern in _IGNORED:
        if pattern.match(text):
            return category
    return None


# --- parsing -------------------------------------------------------------------------------------------------

def parse_reports(text):
    """Every OOM report in `text`, in order; raises NoReport if there is none."""
    lines = []
    last = -1
    for raw in text.splitlines():
        line = strip_prefix(raw)
        if line.startswith(CONTINUATION) and last >= 0:
            # a wrap marked by the page it was pasted from: it belongs at the end of the line before
            lines[last] = lines[last] + " " + line[len(CONTINUATION):].lstrip()
            lines.append("")
            continue
        if line:
            last = len(lines)
        lines.append(line)
    starts = [i for i, line in enumerate(lines) if RE_INVOKED_HEAD.search(line)]
    if not starts:
        # A paste without the "invoked" line still counts if it has a task table and the kernel's kill line;
        # it begins at the first report line before the table.
        heads = [i for i, line in enumerate(lines) if RE_TABLE_HEAD.match(line)]
        if heads and any(RE_SELECT.match(line) or RE_KILLED.match(line) or RE_SUMMARY.match(line) for line in lines):
            start = heads[0]
            while start > 0 and (not lines[start - 1] or _is_report_line(lines[start - 1])):
                start -= 1
            starts = [start]
    if not starts:
        raise NoReport("no OOM report found (no \"invoked oom-killer\" line, nor a task table with a kill or "
                       "oom-kill: line)")
    reports = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        reports.append(_parse_one(lines, start, end))
    return reports


def parse_report(text, index=0):
    """The `index`-th report of `text` (default the first)."""
    reports = parse_reports(text)
    if not -len(reports) <= index < len(reports):
        raise NoReport(f"report {index} asked for, but the text holds {len(reports)}")
    return reports[index]


def _join(lines, i, end, pattern, limit=3):
    """Line i joined with up to `limit` following lines until `pattern` matches; (match, last line used)."""
    text = lines[i]
    for j in range(i, min(end, i + limit + 1)):
        if j > i:
            text = text + ("" if text.endswith(("(", "=")) else " ") + lines[j]
        match = pattern.match(text)
        if match:
            return match, j
    return None, i


def _parse_one(lines, start, end):
    r = Report(start=start + 1)
    i = start
    in_table = False
    in_stats = False
    while i < end:
        text = lines[i]
        lineno = i + 1
        if not text:
            i += 1
            continue
        if RE_INVOKED_HEAD.search(text):
            first = i
            match, i = _join(lines, i, end, RE_INVOKED)
            part = match or RE_INVOKED_PART.match(text)
            if part:
                r.comm = part["comm"]
                r.gfp_mask = int(part["gfp"], 16)
                if part["names"] is not None:
                    r.gfp_names = tuple(n.strip() for n in part["names"].split("|") if n.strip())
                r.order = int(part["order"]) if part["order"] is not None else None
            if match:
                r.oom_score_adj = int(match["adj"])
                r.nodemask = match["nodemask"]
            else:
                r.unusable.append((first + 1, text))
            i += 1
            continue
        match = RE_CPU.match(text) or RE_PID_OLD.match(text)
        if match is None and text.startswith(("CPU: ", "Pid: ")):
            match, j = _join(lines, i, end, RE_CPU, limit=1)
            if match:
                i = j
        if match:
            r.current_pid = int(match["pid"])
            r.cpu = int(match["cpu"]) if "cpu" in match.groupdict() else None
            r.release = match["release"]
            i += 1
            continue
        if RE_CPUSET.match(text):
            i += 1
            continue
        match = RE_SUMMARY.match(text)
        if match:
            r.summary = _parse_summary(match["body"])
            r.constraint = r.summary.get("constraint", r.constraint)
            if r.summary.get("oom_memcg") and r.constraint == "CONSTRAINT_NONE":
                # 5.0-5.2 printed CONSTRAINT_NONE for memcg OOMs (the constraint was set after the summary)
                r.constraint = "CONSTRAINT_MEMCG"
            i += 1
            continue
        match = RE_ZONE.match(text)
        if match:
            i = _parse_zone(r, lines, i, end, match)
            continue
        match = RE_RESERVE.match(text)
        if match and r.zones:
            r.zones[-1].lowmem_reserve = tuple(int(v) for v in match["vals"].split())
            i += 1
            continue
        if _is_meminfo_counters(text):
            for key, value, _ in RE_KV.findall(text):
                r.meminfo[key] = int(value)
            i += 1
            continue
        for pattern, attr in ((RE_SWAP_TOTAL, "swap_total_kb"), (RE_SWAP_FREE, "swap_free_kb"),
                              (RE_PAGES_RAM, "pages_ram"), (RE_PAGES_RESERVED, "pages_reserved")):
            match = pattern.match(text)
            if match:
                setattr(r, attr, int(match.group(1)))
                break
        if match:
            i += 1
            continue
        if text.startswith("Tasks state"):
            r.tasks_state = True
            i += 1
            continue
        match = RE_TABLE_HEAD.match(text)
        if match is None and RE_TABLE_HEAD_START.match(text):
            match, i = _join(lines, i, end, RE_TABLE_HEAD, limit=2)
        if match:
            r.columns = tuple(match["cols"].split())
            in_table, in_stats = True, False
            i += 1
            continue
        if in_table and RE_ROW.match(text):
            task, j = _parse_row(r.columns, lines, i, end)
            if task is not None:
                task.line = lineno
                r.tasks.append(task)
                i = j + 1
                continue
        match = RE_SELECT.match(text)
        if match:
            r.selected = Kill(int(match["pid"]), match["comm"], int(match["score"]),
                              match["who"].startswith("Memory cgroup"), lineno)
            in_table = False
            i += 1
            continue
        if RE_KILLED_HEAD.search(text):
            match, j = _join(lines, i, end, RE_KILLED)
            if match:
                kill = Kill(int(match["pid"]), match["comm"], None,
                            bool(match["who"]) and match["who"].startswith("Memory cgroup"), lineno,
                            int(match["anon"]), int(match["file"]))
                if r.killed is None:
                    r.killed = kill
                else:
                    r.group_kills.append(kill)
                in_table = False
                i = j + 1
                continue
        if RE_OOM_GROUP.match(text):
            r.oom_group = True
            i += 1
            continue
        if RE_SHARER.match(text):
            r.sharers.append(text)
            i += 1
            continue
        if _parse_memcg(r, lines, i, end):
            in_stats = RE_MEMCG_STATS.match(text) is not None or RE_MEMCG_V2.match(text) is not None
            i += 1
            continue
        if in_stats and RE_STAT_LINE.match(text):
            r.ignored["memcg stats"] = r.ignored.get("memcg stats", 0) + 1
            i += 1
            continue
        match = RE_PANIC.match(text)
        if match:
            r.panic = match["why"]
            i += 1
            continue
        category = _classify_ignored(text)
        if category:
            r.ignored[category] = r.ignored.get(category, 0) + 1
        else:
            r.unusable.append((lineno, text))
        i += 1
    r.end = end
    if r.constraint is None and (r.memcg.get("limit_kb") is not None or (r.selected and r.selected.memcg)
                                 or (r.killed and r.killed.memcg)):
        r.constraint = "CONSTRAINT_MEMCG"
    return r


def _is_meminfo_counters(text):
    """show_free_areas()' global counter lines: only `name:number` pairs ("active_anon:46557 …")."""
    tokens = text.split()
    return bool(tokens) and all(re.fullmatch(r"[a-z_()]+:\d+", t) for t in tokens) and not RE_ZONE.match(text)


def _parse_summary(body):
    """constraint=…,nodemask=…,cpuset=…,mems_allowed=…,[global_oom|oom_memcg=…],task_memcg=…,task=…,pid=…,uid=…"""
    out = {}
    match = re.search(r",task=(?P<task>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)$", body)
    if match:
        out.update(task=match["task"], pid=int(match["pid"]), uid=int(match["uid"]))
        body = body[:match.start()]
    for part in body.split(","):
        key, _, value = part.partition("=")
        out[key] = value if _ else True
    return out


def _parse_zone(r, lines, i, end, match):
    """One zone line of show_free_areas(), joined with its wrapped continuations; returns the next line."""
    text = lines[i]
    j = i
    while "present:" not in text and j + 1 < end and lines[j + 1] and re.match(r"^[a-z_()]+[:?]", lines[j + 1]) \
            and not RE_RESERVE.match(lines[j + 1]):
        j += 1
        text += " " + lines[j]
    kv = {k: int(v) for k, v, unit in RE_KV.findall(text)}
    if not all(k in kv for k in ("min", "low", "high")):
        r.unusable.append((i + 1, lines[i]))
        return j + 1
    r.zones.append(Zone(int(match["node"] or 0), match["zone"], int(match["free"]), kv["min"], kv["low"], kv["high"],
                        kv.get("present"), kv.get("managed")))
    return j + 1


def _parse_row(columns, lines, i, end):
    """One task row under the header's columns (the name may hold spaces); wrapped rows join the next line."""
    want = len(columns) - 1  # every column but the name is an integer
    text = lines[i]
    for j in range(i, min(end, i + 2)):
        if j > i:
            text += " " + lines[j]
        match = RE_ROW.match(text)
        parts = match["rest"].split(None, want) if match else []
        if len(parts) == want + 1 and all(re.fullmatch(r"-?\d+", p) for p in parts[:want]):
            values = dict(zip(columns[:want], (int(p) for p in parts[:want])))
            comm = parts[want]
            task = Task(pid=int(match["pid"]), uid=values.get("uid", 0), tgid=values.get("tgid", 0),
                        total_vm=values.get("total_vm", 0), rss=values.get("rss", 0),
                        swapents=values.get("swapents", 0), oom_score_adj=values.get("oom_score_adj", 0), comm=comm,
                        nr_ptes=values.get("nr_ptes"), pgtables_bytes=values.get("pgtables_bytes"),
                        nr_pmds=values.get("nr_pmds"), rss_anon=values.get("rss_anon"),
                        rss_file=values.get("rss_file"), rss_shmem=values.get("rss_shmem"))
            if "oom_score_adj" not in values and "oom_adj" in values:
                task.oom_score_adj = _oom_adj_to_score_adj(values["oom_adj"])
            return task, j
    return None, i


def _oom_adj_to_score_adj(adj):
    """Legacy oom_adj to oom_score_adj (KERNEL §4.3): 15 is +1000, otherwise adj × 1000 / 17."""
    if adj == 15:
        return 1000
    return int(adj * 1000 / 17)


def _parse_memcg(r, lines, i, end):
    """mem_cgroup_print_oom_info()'s lines (3.x–6.x); True if line i was one."""
    text = lines[i]
    match = RE_TASK_IN.match(text)
    if match:
        r.memcg["task_memcg"] = match["task"]
        if match["limit"]:
            r.memcg["oom_memcg"] = match["limit"]
        return True
    match = RE_LIMIT_OF.match(text)
    if match:
        if match["limit"]:
            r.memcg["oom_memcg"] = match["limit"]
        else:
            r.memcg["oom_memcg"] = None  # the path follows on a line of its own (pr_cont split)
        return True
    if RE_CGROUP_PATH.match(text) and "oom_memcg" in r.memcg and r.memcg["oom_memcg"] is None:
        r.memcg["oom_memcg"] = text
        return True
    match = RE_MEMCG_USAGE.match(text)
    if match:
        prefix = {"memory": "", "memory+swap": "memsw_", "swap": "swap_", "kmem": "kmem_",
                  "kmem.tcp": "tcp_"}[match["what"]]
        r.memcg[prefix + "usage_kb"] = int(match["usage"])
        r.memcg[prefix + "limit_kb"] = int(match["limit"])
        r.memcg[prefix + "failcnt"] = int(match["failcnt"])
        return True
    match = RE_MEMCG_V2.match(text)
    if match and (r.memcg or r.constraint == "CONSTRAINT_MEMCG"):
        prefix = "" if match["what"] == "memory" else "swap_"
        r.memcg[prefix + "usage_kb"] = int(match["usage"]) // 1024
        if match["max"] is not None:
            r.memcg[prefix + "limit_kb"] = int(match["max"]) // 1024
        return True
    return bool(RE_MEMCG_STATS.match(text))


# --- what the report implies ---------------------------------------------------------------------------------

def totalram_pages(r):
    """RAM the kernel manages, in pages: the zones' managed sizes (3.8+), else their present sizes, else
    "pages RAM" less "pages reserved"; None if the report has none of them."""
    if r.zones and all(z.managed_kb is not None for z in r.zones):
        return sum(z.managed_kb for z in r.zones) // PAGE_KB
    if r.zones and all(z.present_kb is not None for z in r.zones):
        return sum(z.present_kb for z in r.zones) // PAGE_KB
    if r.pages_ram is not None:
        return r.pages_ram - (r.pages_reserved or 0)
    return None


def total_swap_pages(r):
    return None if r.swap_total_kb is None else r.swap_total_kb // PAGE_KB


def oom_totalpages(r):
    """The `totalpages` the kernel scaled badness with, and how it was derived: (pages or None, sentence).

    Global (KERNEL §3.1): totalram_pages + total_swap_pages. Memcg (mem_cgroup_get_limit, 3.x; mem_cgroup_get_max,
    4.19+): the memory limit plus the swap it may use (memory+swap limit less the memory limit, or the v2 swap
    limit), at most all of swap.
    """
    swap = total_swap_pages(r)
    if r.constraint == "CONSTRAINT_MEMCG":
        limit = r.memcg.get("limit_kb")
        if limit is None:
            return None, "memcg OOM without a \"memory: usage …, limit …\" line"
        limit //= PAGE_KB
        allowance = None
        if r.memcg.get("memsw_limit_kb") is not None:
            allowance = r.memcg["memsw_limit_kb"] // PAGE_KB - limit
        elif r.memcg.get("swap_limit_kb") is not None:
            allowance = r.memcg["swap_limit_kb"] // PAGE_KB
        if allowance is not None and allowance <= 0:
            return limit, f"memcg limit {limit} pages, no swap allowance (memory+swap limit = memory limit)"
        if swap is None:
            return limit, f"memcg limit {limit} pages (total swap not in the report: taken as 0)"
        extra = swap if allowance is None else max(0, min(allowance, swap))
        return limit + extra, f"memcg limit {limit} + swap {extra} pages"
    ram = totalram_pages(r)
    if ram is None:
        return None, "the report has no zone lines nor \"pages RAM\" total, so totalram_pages is unknown"
    if swap is None:
        return ram, f"totalram {ram} pages (no swap totals in the report: taken as 0)"
    return ram + swap, f"totalram {ram} + swap {swap} pages"
