"""Replay a report's victim selection under each kernel profile, with the emulator's own selection code.

For each profile, a small machine of that profile is booted with the report's task table (one process per row,
its mm counters as printed, in the report's row order, which is the kernel's for_each_process order), and
mm/oom_kill.py select_bad_process() runs over it with the report's totalpages. The victim and its points come
from the emulator; nothing here scores a task itself. A disagreement shows both tasks' badness inputs (rss,
page tables, swap entries, the adj term's unit, root) next to the points the emulator gave them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from oomemu.oracle.report import oom_totalpages
from oomemu.oracle.scenario import implied_profile, kernel_profiles

DEFAULT_PROFILES = ("3.14", "6.1")


class ExplainError(ValueError):
    """A bad request: an unknown profile, or a report without a task table."""


@dataclass
class Choice:
    kernel: str
    implied: bool
    row: int | None            # index into report.tasks, None if nothing was eligible
    points: int
    score: int
    agrees: bool | None
    points_of: dict = field(default_factory=dict)   # row -> points under this profile


def profiles_for(report, requested=None):
    """The profiles to run: those asked for, else the implied one, 3.14 and 6.1 (those that exist)."""
    known = kernel_profiles()
    if requested:
        for p in requested:
            if p not in known:
                raise ExplainError(f"--kernel {p}: unknown profile; allowed: {', '.join(known)}")
        return list(dict.fromkeys(requested))
    wanted = [implied_profile(report, known)] + [p for p in DEFAULT_PROFILES if p in known]
    return list(dict.fromkeys(wanted))


def kernel_victim_row(report):
    """(row index of the kernel's victim in the table or None, note or None)."""
    v = report.victim
    if v is None:
        return None, "the report has no kill line, so the kernel's victim is unknown"
    for k, t in enumerate(report.tasks):
        if t.pid == v.pid:
            return k, None
    for k, t in enumerate(report.tasks):
        if t.tgid == v.pid:
            return k, None
    same = [k for k, t in enumerate(report.tasks) if t.comm == v.comm]
    if len(same) == 1:
        return same[0], (f"the kernel's victim pid {v.pid} is not a row; the only row named {v.comm} "
                         f"(pid {report.tasks[same[0]].pid}) is taken as it (a thread of that process)")
    return None, (f"the kernel's victim pid {v.pid} ({v.comm}) is not a row of the table "
                  "(a thread id, or the table was cut)")


def nr_ptes_for(task, features):
    """The emulator's MM_NR_PTES for a report row under a profile. The emulator keeps PTE pages only and, with
    `nr_pmds` / `pgtables_bytes` (4.0+), derives the PMD pages from them (mm_nr_pmds: one per 512); so for those
    profiles the row's page-table total (nr_ptes + nr_pmds, or pgtables_bytes / PAGE_SIZE) is split into the
    PTE count whose derived total gives it back. 3.14's profile counts nr_ptes as printed (or the whole
    page-table total where the table has only pgtables_bytes).

    Emulator-only: how a report's columns map onto the emulator's mm counters.
    """
    total = task.page_tables
    if features is not None and (features.nr_pmds or features.pgtables_bytes):
        ptes = total - -(-total // 513)
        while ptes + -(-ptes // 512) < total:
            ptes += 1
        return max(0, ptes)
    return task.nr_ptes if task.nr_ptes is not None else total


def select_on_table(report, kernel, totalpages):
    """The emulator's select_bad_process() over the report's table on a machine of profile `kernel`:
    (row or None, points, score, {row: points})."""
    from oomemu.boot import create_machine
    from oomemu.config import load_scenario_text
    from oomemu.kernel import fork
    from oomemu.machine import MM_ANONPAGES, MM_FILEPAGES, MM_NR_PTES, MM_SWAPENTS, MM_TOTAL_VM
    from oomemu.mm import oom_kill
    from oomemu.percpu import CpuContext

    rows = report.tasks
    text = (f'[machine]\nkernel = "{kernel}"\nmax_tasks = {max(64, len(rows) + 16)}\n'
            '[[machine.node]]\nzones = { DMA = "16MiB", Normal = "16MiB" }\n[run]\ntrace = false\n')
    sc = load_scenario_text(text, name="explain")
    m = create_machine(sc)
    try:
        cpu = CpuContext(m, 0, sc)
        first = None
        for t in rows:
            row = fork.copy_process(cpu, 0, 0, 0, t.comm.encode("ascii", "replace").decode()[:15] or "task", 0,
                                    uid=max(0, t.uid), caps=0, oom_score_adj=max(-1000, min(1000, t.oom_score_adj)))
            first = row if first is None else first
            mm = int(m.task_mm[row])
            anon, file = t.anon_file
            m.mm[mm, MM_ANONPAGES] = anon
            m.mm[mm, MM_FILEPAGES] = file
            m.mm[mm, MM_SWAPENTS] = t.swapents
            m.mm[mm, MM_NR_PTES] = nr_ptes_for(t, sc.features)
            m.mm[mm, MM_TOTAL_VM] = t.total_vm
            m.task_state[row] = 0  # never runs
        chosen, score = oom_kill.select_bad_process(cpu, totalpages, None, False)
        points_of = {}
        if first is not None:
            for k in range(len(rows)):
                points_of[k] = int(oom_kill.oom_badness(cpu, first + k, None, None, totalpages))
        if chosen < 0 or first is None:
            return None, 0, 0, points_of
        k = chosen - first
        return k, points_of.get(k, 0), int(score), points_of
    finally:
        m.close()


def explain(report, requested=None):
    """The per-profile replay of `report`: a dict shaped as `oomemu explain --json` prints it."""
    if not report.tasks:
        raise ExplainError("the report has no task table (vm.oom_dump_tasks = 0?): nothing to select from")
    notes = []
    profiles = profiles_for(report, requested)
    implied = implied_profile(report, kernel_profiles())
    totalpages, how = oom_totalpages(report)
    if totalpages is None:
        totalpages = max(1, sum(t.rss + t.page_tables + t.swapents for t in report.tasks))
        notes.append(f"{how}: totalpages estimated as the table's own total ({totalpages} pages); this changes "
                     "the oom_score_adj term and the score, and can change the victim where adj is not 0")
    vrow, vnote = kernel_victim_row(report)
    if vnote:
        notes.append(vnote)
    victim = report.victim
    if (report.selected and report.killed and report.selected.pid != report.killed.pid and vrow is not None
            and report.tasks[vrow].pid == report.killed.pid):
        notes.append(f"the kernel selected thread {report.selected.pid} of process {report.killed.pid} "
                     f"({report.killed.comm}) and killed that process")
    elif report.selected and report.killed and report.selected.pid != report.killed.pid:
        notes.append(f"the kernel selected pid {report.selected.pid} ({report.selected.comm}) and killed pid "
                     f"{report.killed.pid} ({report.killed.comm}): a child was sacrificed; the replay compares the "
                     "selection")
    old_format = "oom_adj" in report.columns or (report.version is not None and report.version < (3, 10))
    if victim and victim.score == 1000 and old_format:
        tied = [t.pid for t in report.tasks if t.oom_score_adj == report.tasks[vrow].oom_score_adj] if vrow is not None else []
        notes.append("the kernel's score is 1000 in a pre-3.10 format: those kernels scaled badness to 0..1000 of "
                     "totalpages and capped it there, so every task at the cap ties and the first one scanned is "
                     f"kept; the profiles compare pages ({len(tied)} rows share the victim's oom_score_adj)")
    out = {"kernel_victim": ({"pid": victim.pid, "comm": victim.comm, "score": victim.score} if victim else None),
           "totalpages": totalpages, "totalpages_from": how, "release": report.release,
           "constraint": report.constraint or "CONSTRAINT_NONE", "profiles": [], "notes": notes}
    for kernel in profiles:
        row, points, score, points_of = select_on_table(report, kernel, totalpages)
        agrees = None if vrow is None else row == vrow
        entry = {"kernel": kernel, "implied": kernel == implied,
                 "victim": (None if row is None else
                            {"pid": report.tasks[row].pid, "comm": report.tasks[row].comm, "points": points}),
                 "score": score, "agrees": agrees}
        if agrees is False and row is not None:
            entry["terms"] = [_terms(report, k, points_of[k], totalpages) for k in (row, vrow)]
        out["profiles"].append(entry)
    return out


def _terms(report, k, points, totalpages):
    t = report.tasks[k]
    return {"pid": t.pid, "comm": t.comm, "rss": t.rss, "page_tables": t.page_tables, "swapents": t.swapents,
            "oom_score_adj": t.oom_score_adj, "adj_term": t.oom_score_adj * (totalpages // 1000),
            "root": t.uid == 0, "points": points}


def format_text(result):
    """The side-by-side text `oomemu explain` prints."""
    lines = []
    kv = result["kernel_victim"]
    lines.append(f"kernel {result['release'] or '(release not printed)'}, {result['constraint']}, "
                 f"totalpages {result['totalpages']} ({result['totalpages_from']})")
    if kv:
        score = kv["score"] if kv["score"] is not None else "-"
        lines.append(f"kernel's victim: pid {kv['pid']} ({kv['comm']}), score {score}")
    else:
        lines.append("kernel's victim: unknown")
    lines.append("")
    lines.append(f"{'profile':<8} {'implied':<7} {'victim':<28} {'points':>10} {'score':>6}  agrees")
    for p in result["profiles"]:
        v = p["victim"]
        who = f"{v['pid']} ({v['comm']})" if v else "none"
        pts = v["points"] if v else 0
        agree = {True: "yes", False: "NO", None: "?"}[p["agrees"]]
        lines.append(f"{p['kernel']:<8} {'yes' if p['implied'] else '':<7} {who:<28} {pts:>10} {p['score']:>6}  "
                     f"{agree}")
    for p in result["profiles"]:
        if "terms" not in p:
            continue
        lines.append("")
        lines.append(f"why {p['kernel']} disagrees (pages):")
        lines.append(f"  {'task':<28} {'rss':>9} {'ptes':>6} {'swap':>8} {'adj':>6} {'adj term':>9} {'root':>5} "
                     f"{'points':>10}")
        for t, label in zip(p["terms"], ("emulator", "kernel")):
            lines.append(f"  {label + ': ' + str(t['pid']) + ' (' + t['comm'] + ')':<28} {t['rss']:>9} "
                         f"{t['page_tables']:>6} {t['swapents']:>8} {t['oom_score_adj']:>6} {t['adj_term']:>9} "
                         f"{'yes' if t['root'] else 'no':>5} {t['points']:>10}")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
