"""Turn a parsed OOM report into a scenario that rebuilds its machine and task table at the report's moment.

Each dump_tasks() row becomes a [[task]] whose `mm` key presets the row's memory (rss split into anon and file
where the 6.x columns give it, page tables, swap entries), with its uid and oom_score_adj; the allocating task
makes the report's request (same gfp and order) after a kernel thread has taken the memory the report shows as
used but not mapped by any task, up to the high watermarks. What cannot be carried over is said in `notes`.
"""
from __future__ import annotations

import json

from oomemu.boot import MAX_PRESET_RING
from oomemu.config.schema import MACHINE, MAX_ORDER_BLOCK, MAX_ZONE
from oomemu.include.gfp import GFP_NAMES, __GFP_HIGHMEM, __GFP_MOVABLE
from oomemu.config.profiles import features_for
from oomemu.oracle.report import PAGE_KB, oom_totalpages, total_swap_pages

MiB_KB = 1024
BLOCK_KB = MAX_ORDER_BLOCK // 1024          # zones are whole 4 MiB blocks
MAX_ZONE_KB = MAX_ZONE // 1024
SLEEP_MS = 3_600_000
ZONE_KEYS = {"DMA": "DMA", "DMA32": "DMA32", "Normal": "Normal", "HighMem": "Normal", "Movable": "Normal"}

# 3.14 composites that a 3.x hex gfp_mask is read back into (the bits are 3.14's, include/gfp.py)
_COMPOSITES = ("GFP_HIGHUSER_MOVABLE", "GFP_TRANSHUGE", "GFP_HIGHUSER", "GFP_USER", "GFP_TEMPORARY", "GFP_KERNEL",
               "GFP_NOFS", "GFP_NOIO", "GFP_ATOMIC")


def kernel_profiles():
    """The kernel behaviour profiles the scenario schema accepts (machine.kernel)."""
    for key in MACHINE.keys:
        if key.name == "kernel":
            return tuple(key.check.values)
    return ("3.14",)


def implied_profile(report, profiles=None):
    """The profile the report's kernel release (or, without one, its formats) implies: the newest profile not
    newer than that version, else the oldest."""
    profiles = profiles or kernel_profiles()
    version = report.version or report.format_version()

    def key(p):
        return tuple(int(x) for x in p.split(".")[:2])
    older = [p for p in profiles if key(p) <= version]
    return max(older, key=key) if older else min(profiles, key=key)


def gfp_text(report, notes):
    """The report's gfp_mask as emulator flag names: the printed names (4.8+) where the emulator knows them,
    else the 3.14 bits of a hex mask."""
    if report.gfp_mask is None:
        notes.append("the report has no \"invoked oom-killer\" line: the request is taken as a user page fault "
                     "(GFP_HIGHUSER_MOVABLE, order 0)")
        return "GFP_HIGHUSER_MOVABLE"
    if report.gfp_names is not None:
        known = [n for n in report.gfp_names if n in GFP_NAMES]
        dropped = [n for n in report.gfp_names if n not in GFP_NAMES]
        if dropped:
            notes.append(f"gfp flags the emulator does not have were dropped: {'|'.join(dropped)}")
        return "|".join(known) or "GFP_KERNEL"
    mask = report.gfp_mask or 0
    if report.version and report.version >= (4, 0):
        notes.append(f"gfp_mask=0x{mask:x} of a {report.release} kernel has no names and its bits are not 3.14's: "
                     "taken as GFP_HIGHUSER_MOVABLE")
        return "GFP_HIGHUSER_MOVABLE"
    names, rest = [], mask
    for name in _COMPOSITES:
        value = GFP_NAMES[name]
        if value and rest & value == value:
            names.append(name)
            rest &= ~value
            break
    for name, value in sorted(GFP_NAMES.items(), key=lambda kv: kv[1]):
        if name.startswith("__GFP_") and value and rest & value:
            names.append(name)
            rest &= ~value
    if rest:
        notes.append(f"gfp_mask bits 0x{rest:x} are not 3.14 flags and were dropped")
    return "|".join(names) or "GFP_NOWAIT"


def _is_user_fault(gfp):
    value = 0
    for name in gfp.split("|"):
        value |= GFP_NAMES.get(name, 0)
    return bool(value & __GFP_MOVABLE) or bool(value & __GFP_HIGHMEM)


def _round_up(kb, to=BLOCK_KB):
    return -(-kb // to) * to


def _zones(report, notes):
    """{node: {zone key: kB}} from the zone lines (managed size, else present), or None without them; a report
    whose zone lines lost their sizes (cut by a mailer) but prints "pages RAM" gets one Normal zone of that
    RAM (and a DMA zone where it had one)."""
    from oomemu.oracle.report import totalram_pages
    if not report.zones:
        return None
    if any(z.managed_kb is None and z.present_kb is None for z in report.zones) and report.pages_ram:
        ram_kb = totalram_pages(report) * PAGE_KB
        dma = 16 * MiB_KB if any(z.name == "DMA" for z in report.zones) else 0
        notes.append(f"the zone lines lost their sizes: the machine is one Normal zone of the report's RAM "
                     f"({ram_kb} kB, \"pages RAM\" less \"pages reserved\")" + (" and a 16 MiB DMA zone" if dma else ""))
        return {0: {"DMA": dma, "DMA32": 0, "Normal": max(BLOCK_KB, ram_kb - dma)}}
    nodes = {}
    for z in report.zones:
        size = z.managed_kb if z.managed_kb is not None else z.present_kb
        if size is None:
            notes.append(f"zone {z.name} of node {z.node} prints neither managed nor present: sized by its free pages")
            size = z.free_kb
        key = ZONE_KEYS.get(z.name)
        if key != z.name:
            notes.append(f"zone {z.name} of node {z.node} ({size} kB) is emulated as part of Normal")
        zones = nodes.setdefault(z.node, {"DMA": 0, "DMA32": 0, "Normal": 0})
        zones[key] += size
    for node, zones in nodes.items():
        if not zones["Normal"]:
            zones["Normal"], zones["DMA32"] = zones["DMA32"], 0
            if zones["Normal"]:
                notes.append(f"node {node} has no Normal zone: its DMA32 zone is emulated as Normal")
    return nodes


def build_scenario(report, source="report"):
    """(TOML text, notes) of a scenario that rebuilds `report`'s machine and task table."""
    notes = []
    profiles = kernel_profiles()
    kernel = implied_profile(report, profiles)
    totalpages, how = oom_totalpages(report)
    nodes = _zones(report, notes)
    rows = list(report.tasks)
    preset_kb = sum(sum(t.anon_file) for t in rows) * PAGE_KB
    cgroup = None
    if nodes is None:
        limit = report.memcg.get("limit_kb")
        oom_memcg = report.memcg.get("oom_memcg") or report.memcg.get("task_memcg")
        if limit and report.constraint == "CONSTRAINT_MEMCG" and _cgroup_path(oom_memcg):
            # A memcg OOM: the machine has room (the limit twice over), the tasks run in the cgroup, and its limit
            # gives the kill the kernel's totalpages.
            cgroup = (_cgroup_path(oom_memcg), _round_up(limit))
            nodes = {0: {"DMA": 16 * MiB_KB, "DMA32": 0, "Normal": max(2 * limit, preset_kb + 64 * MiB_KB)}}
            notes.append(f"no zone lines: the tasks run in memory cgroup {cgroup[0]} with the report's limit "
                         f"({limit} kB) on a machine twice that size")
        else:
            normal = limit if limit else preset_kb + 64 * MiB_KB
            nodes = {0: {"DMA": 16 * MiB_KB, "DMA32": 0, "Normal": normal}}
            notes.append("no zone lines" + (f": the memcg's limit ({limit} kB) is emulated as the machine's Normal "
                                            "zone" if limit else ": machine sized by the table"))
    elif report.constraint == "CONSTRAINT_MEMCG":
        notes.append("memcgs are not emulated: the machine is the host's, the memcg limit "
                     f"({report.memcg.get('limit_kb')} kB) is only in this header")
    node0 = nodes[min(nodes)]
    capacity = sum(sum(z.values()) for z in nodes.values())
    if preset_kb > capacity:
        notes.append(f"the rows' rss ({preset_kb} kB, pages shared between processes counted in each) exceeds RAM "
                     f"({capacity} kB): node {min(nodes)}'s Normal zone is enlarged to hold it")
        node0["Normal"] += preset_kb - capacity + 64 * MiB_KB
    for node, zones in nodes.items():
        for key, kb in zones.items():
            size = _round_up(kb) if kb else 0
            if size > MAX_ZONE_KB:
                notes.append(f"node {node} {key} ({kb} kB) is capped at the emulator's 64 GiB per zone")
                size = MAX_ZONE_KB
            zones[key] = size
    if len(nodes) > 8:
        notes.append(f"{len(nodes)} nodes: only the first 8 are emulated")
    swap_pages = total_swap_pages(report) or 0
    need_swap = sum(t.swapents for t in rows)
    if need_swap > swap_pages:
        notes.append(f"the rows hold {need_swap} swap entries but total swap is {swap_pages} pages: swap raised to fit")
        swap_pages = need_swap
    min_free = sum(z.min_kb for z in report.zones if z.name != "HighMem")
    min_free = min(65536, max(128, min_free)) if min_free else 0

    gfp = gfp_text(report, notes)
    order = report.order or 0
    total_pages = (cgroup[1] if cgroup else sum(sum(z.values()) for z in nodes.values())) // PAGE_KB
    if order == 0 and _is_user_fault(gfp):
        request = {"op": "fault", "pages": total_pages, "gfp": gfp}
    else:
        request = {"op": "kmalloc", "pages": max(1, total_pages >> order) << order, "order": min(order, 10),
                   "gfp": gfp}
    alloc = _allocating_row(report, rows)
    used_kb = sum(sum(z.values()) for z in nodes.values()) - sum(z.free_kb for z in report.zones)
    high_kb = sum(z.high_kb for z in report.zones)
    filler = (sum(sum(z.values()) for z in nodes.values()) - high_kb - preset_kb) // PAGE_KB if report.zones else 0
    filler = max(0, min(filler, (used_kb - preset_kb) // PAGE_KB)) if report.zones else 0

    out = [f"# Rebuilt by `oomemu import` from {source}, lines {report.start}-{report.end}.",
           f"# Kernel: {report.release or 'not printed'} (profile {kernel}); constraint: "
           f"{report.constraint or 'CONSTRAINT_NONE'}.",
           f"# totalpages at the report: {totalpages if totalpages is not None else 'unknown'} ({how}).",
           f"# The kernel's victim: {_victim_text(report)}."]
    if report.memcg:
        out.append("# memcg: " + ", ".join(f"{k}={v}" for k, v in report.memcg.items()))
    if alloc is None and report.comm:
        notes.append(f"the allocating task {report.comm} (pid {report.current_pid}) is not a row of the table: "
                     "it is added without memory of its own")
    if filler:
        out.append(f"# A kernel thread first takes {filler} pages the report shows in use but mapped by no row "
                   "(slab, page cache, kernel), stopping at the high watermarks; then the allocating task asks.")
    for note in notes:
        out.append(f"# note: {note}")
    out.append("")
    out.append("[machine]")
    out.append(f"cpus = {min(64, max(2, (report.cpu or 0) + 1))}")
    out.append(f"kernel = {json.dumps(kernel)}")
    out.append(f"swap = \"{swap_pages * PAGE_KB}KiB\"" if swap_pages else 'swap = "0"')
    out.append(f"max_tasks = {max(512, len(rows) + 64)}")
    for node in sorted(nodes)[:8]:
        z = nodes[node]
        out.append("[[machine.node]]")
        out.append(f'zones = {{ DMA = "{z["DMA"]}KiB", DMA32 = "{z["DMA32"]}KiB", Normal = "{z["Normal"]}KiB" }}')
    out.append("")
    out.append("[sysctl]")
    out.append(f"min_free_kbytes = {min_free}")
    out.append("")
    if cgroup:
        out.append("[[cgroup]]")
        out.append(f"name = {json.dumps(cgroup[0])}")
        out.append(f'limit = "{cgroup[1]}KiB"')
        out.append("")
    in_cgroup = [f"cgroup = {json.dumps(cgroup[0])}"] if cgroup else []
    if filler:
        out.append("[[task]]")
        out.append('comm = "kmem"')
        out.append("kthread = true")
        out.append(f'program = [{{ op = "kmalloc", pages = {filler}, gfp = "GFP_KERNEL" }}, '
                   f'{{ op = "sleep", ms = {SLEEP_MS} }}]')
        out.append("")
    for k, t in enumerate(rows):
        anon, file = t.anon_file
        ptes = _nr_ptes_for(t, features_for(kernel))
        total_vm = max(t.total_vm, anon + file + t.swapents)
        out.append(f"# report row {k}: pid {t.pid} tgid {t.tgid} (line {t.line})")
        out.append("[[task]]")
        out.append(f"comm = {json.dumps(_comm(t.comm))}")
        out.append(f"uid = {min(65535, max(0, t.uid))}")
        out.append(f"oom_score_adj = {min(1000, max(-1000, t.oom_score_adj))}")
        out.append(f"mm = {{ anon = {anon}, file = {file}, swapents = {t.swapents}, nr_ptes = {ptes}, "
                   f"total_vm = {total_vm} }}")
        out.extend(in_cgroup)
        out.append(f"program = {_program(request if t is alloc else None)}")
        out.append("")
    if alloc is None:
        out.append(f"# the allocating task (pid {report.current_pid}), not in the table")
        out.append("[[task]]")
        out.append(f"comm = {json.dumps(_comm(report.comm or 'allocator'))}")
        out.append(f"oom_score_adj = {min(1000, max(-1000, report.oom_score_adj or 0))}")
        out.extend(in_cgroup)
        out.append(f"program = {_program(request)}")
        out.append("")
    out.append("[run]")
    out.append("seconds = 10")
    if max((sum(t.anon_file) for t in rows), default=0) > MAX_PRESET_RING - 4096:
        out.append("trace = false  # a row larger than the trace rings: its exit would overflow them")
        notes.append("a row holds more pages than a trace ring (2^20 records): the scenario runs untraced")
    return "\n".join(out) + "\n", notes


def _cgroup_path(name):
    """A memcg path the scenario accepts (`/a/b`), or None for the root or an unusable name."""
    if not name or name == "/" or not name.startswith("/"):
        return None
    parts = name.strip("/").split("/")
    return name.rstrip("/") if all(p and all(c.isalnum() or c in "-_." for c in p) for p in parts) else None


def _nr_ptes_for(task, features):
    from oomemu.oracle.explain import nr_ptes_for
    return nr_ptes_for(task, features)


def _victim_text(report):
    v = report.victim
    if v is None:
        return "none (no kill line)"
    score = f", score {v.score}" if v.score is not None else ""
    return f"pid {v.pid} ({v.comm}){score}"


def _allocating_row(report, rows):
    if report.current_pid is not None:
        for t in rows:
            if t.pid == report.current_pid:
                return t
    same = [t for t in rows if report.comm and t.comm == report.comm]
    return same[-1] if same else None


def _comm(name):
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in name)[:15]
    return text if text.strip() else "task"


def _program(request):
    if request is None:
        return f'[{{ op = "sleep", ms = {SLEEP_MS} }}]'
    args = ", ".join(f"{k} = {json.dumps(v)}" for k, v in request.items())
    return f'[{{ op = "sleep", ms = 50 }}, {{ {args} }}, {{ op = "sleep", ms = {SLEEP_MS} }}]'
