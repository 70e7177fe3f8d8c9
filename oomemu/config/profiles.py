"""Kernel profiles: later kernels' OOM changes as named behaviour switches (DESIGN §9, KERNEL §8).

A profile (`[machine] kernel = "4.6"`) is the set of switches that kernel has; `[kernel] features = { ... }`
turns single switches on or off on top of it. The kernel code tests them where the kernel changed
(`if cpu.features.oom_reaper:`), so 3.14's functions still read top to bottom with the later changes marked
at their spot. Each switch is named after the change it stands for, with the version that brought it.

Standard library only: the CLI validates a scenario (and its features) before anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, make_dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Switch:
    """One documented behaviour change: its name, the version that brought it, what it does, and the
    switches it cannot work without."""

    name: str
    version: str
    what: str
    needs: tuple[str, ...] = ()


SWITCHES = (
    Switch("full_scan_at_def_priority", "3.16",
           "direct reclaim at DEF_PRIORITY scans its whole get_scan_count() target instead of stopping once "
           "the zone has reclaimed nr_to_reclaim pages (1a501907bbea)"),
    Switch("drop_exit_state_test", "3.18",
           "oom_scan_process_thread no longer skips zombies first (its exit_state test is gone)"),
    Switch("task_will_free_mem", "3.19",
           "task_will_free_mem() (PF_EXITING and not SIGNAL_GROUP_COREDUMP) replaces the bare PF_EXITING "
           "tests; the PT_TRACE_EXIT exception is gone"),
    Switch("unmark_oom_victim", "3.18",
           "TIF_MEMDIE is cleared at the end of exit_mm (4.0 names it unmark_oom_victim, 4.2 exit_oom_victim)"),
    Switch("nr_pmds", "4.0", "oom_badness() adds the PMD pages; dump_tasks gets an nr_pmds column"),
    Switch("oom_lock_mutex", "4.2",
           "one global oom_lock (mutex_trylock in __alloc_pages_may_oom, busy = progress + one-jiffy "
           "uninterruptible sleep; SysRq-F and the page-fault path take it too) replaces the zonelist OOM lock"),
    Switch("oom_reaper", "4.6",
           "the oom_reaper kthread: woken with the victim, unmaps its anonymous memory under a read trylock "
           "of mmap_sem (10 tries, HZ/10 apart)"),
    Switch("symbolic_gfp", "4.5", "the 'invoked oom-killer' line prints gfp_mask as %#x(%pGg)"),
    Switch("shmem_rss", "4.5", "the 'Killed process' line adds shmem-rss"),
    Switch("oom_reaper_hides_victim", "4.6",
           "after reaping, the victim's oom_score_adj becomes OOM_SCORE_ADJ_MIN and its TIF_MEMDIE is cleared",
           needs=("oom_reaper",)),
    Switch("no_exiting_abort", "4.6", "the OOM scan no longer ABORTs on a PF_EXITING task"),
    Switch("bounded_reclaim_retries", "4.7",
           "should_reclaim_retry (at most MAX_RECLAIM_RETRIES = 16 rounds without progress, then OOM) replaces "
           "should_alloc_retry, and do_try_to_free_pages no longer reports progress for a reclaimable zone",
           needs=("oom_lock_mutex",)),
    Switch("kill_all_sharers", "4.8",
           "every process sharing the victim's mm is killed, OOM_SCORE_ADJ_MIN ones too (only init and kernel "
           "threads are spared; init pins the mm: MMF_OOM_SKIP)"),
    Switch("tsk_is_oom_victim", "4.9",
           "the scan asks tsk_is_oom_victim() (signal->oom_mm, the whole process) instead of the thread's "
           "TIF_MEMDIE"),
    Switch("mmf_oom_skip", "4.9",
           "the reaper sets MMF_OOM_SKIP on the victim's mm whether or not it could reap; the scan passes over "
           "such victims and oom_badness() scores them 0", needs=("oom_reaper",)),
    Switch("header_nodemask", "4.9", "the 'invoked oom-killer' line prints nodemask=", needs=("symbolic_gfp",)),
    Switch("pgtables_bytes", "4.16",
           "oom_badness() and dump_tasks() count page tables as mm_pgtables_bytes (the table's column is "
           "pgtables_bytes, in bytes)"),
    Switch("no_root_bonus", "4.17", "the 3% CAP_SYS_ADMIN bonus in oom_badness() is gone"),
    Switch("dump_tasks_state", "4.19",
           "dump_tasks prints a 'Tasks state (memory values in pages):' preamble and a wider pid column",
           needs=("pgtables_bytes",)),
    Switch("oom_kill_summary", "5.0",
           "dump_header ends with one oom-kill:constraint=...,task=...,pid=...,uid=... line, which also takes "
           "the cpuset and the nodemask", needs=("symbolic_gfp",)),
    Switch("deadlocked_on_memory", "4.19",
           "no killable task outside SysRq: warn 'Out of memory and no killable processes...' and panic "
           "'System is deadlocked on memory'"),
    Switch("memcg_oom_group", "4.19",
           "memory.oom.group: a memcg OOM kill takes every task of the victim's highest oom_group cgroup "
           "(mem_cgroup_get_oom_group)"),
    Switch("no_sacrifice_child", "5.1",
           "oom_kill_process kills the chosen task itself, not its worst child; no 'Kill process ... or "
           "sacrifice child' line, and the 'Killed process' line starts with the message"),
    Switch("kill_message_uid", "5.3-5.9",
           "the 'Killed process' line adds UID, pgtables (kB) and oom_score_adj (in 5.9.1, not in 5.2.1)",
           needs=("no_sacrifice_child",)),
    Switch("signed_badness", "5.9",
           "oom_badness() is signed (LONG_MIN = ineligible, may be negative); /proc oom_score is "
           "(1000 + badness*1000/totalpages)*2/3"),
)

SWITCH = {s.name: s for s in SWITCHES}

# The profile table: each kernel and the switches it adds (and, rarely, retires) over the previous row.
PROFILE_STEPS = (
    ("3.14", (), ()),
    ("3.16", ("full_scan_at_def_priority",), ()),
    # 3.18.30 and 3.19.0 both clear TIF_MEMDIE in exit_mm along with the dropped exit_state test.
    ("3.19", ("drop_exit_state_test", "unmark_oom_victim", "task_will_free_mem"), ()),
    ("4.2", ("nr_pmds", "oom_lock_mutex"), ()),
    ("4.6", ("symbolic_gfp", "shmem_rss", "oom_reaper", "oom_reaper_hides_victim", "no_exiting_abort"), ()),
    ("4.7", ("bounded_reclaim_retries",), ()),
    # 4.8's MMF_OOM_REAPED became 4.9's MMF_OOM_SKIP: the reaper no longer edits the victim's adj.
    ("4.9", ("header_nodemask", "kill_all_sharers", "tsk_is_oom_victim", "mmf_oom_skip"),
     ("oom_reaper_hides_victim",)),
    ("4.17", ("pgtables_bytes", "no_root_bonus"), ("nr_pmds",)),
    ("5.1", ("dump_tasks_state", "deadlocked_on_memory", "oom_kill_summary", "no_sacrifice_child",
             "memcg_oom_group"),
     ("header_nodemask",)),
    ("6.1", ("kill_message_uid", "signed_badness"), ()),
)


def _cumulative():
    out, current = {}, set()
    for name, adds, retires in PROFILE_STEPS:
        current = (current | set(adds)) - set(retires)
        out[name] = frozenset(current)
    return out


PROFILES = _cumulative()
KERNELS = tuple(PROFILES)
DEFAULT_KERNEL = "3.14"

Features = make_dataclass("Features", [(s.name, bool, False) for s in SWITCHES], frozen=True, slots=True)
Features.__module__ = __name__   # picklable, as a Scenario must be
Features.__doc__ = ("The switches one run's kernel has (one bool attribute per SWITCHES entry), as "
                    "`cpu.features`.")


def features_for(kernel: str, overrides: Mapping[str, bool] | None = None) -> Any:
    """The Features of profile `kernel` with `overrides` applied (names already checked)."""
    on = set(PROFILES[kernel])
    for name, value in (overrides or {}).items():
        (on.add if value else on.discard)(name)
    return Features(**{s.name: s.name in on for s in SWITCHES})


def missing_dependency(features: Any) -> tuple[str, str] | None:
    """(switch, the switch it needs) for the first switch that is on without what it needs, else None."""
    for s in SWITCHES:
        if getattr(features, s.name):
            for need in s.needs:
                if not getattr(features, need):
                    return s.name, need
    return None


def enabled(features: Any) -> list[str]:
    """The names of the switches that are on, in table order."""
    return [f.name for f in fields(features) if getattr(features, f.name)]


def profile_table() -> str:
    """The profile table as Markdown: one row per switch, one column per profile (README prints it)."""
    head = "| switch | since | " + " | ".join(KERNELS) + " | what it changes |"
    rule = "|---|---|" + "---|" * len(KERNELS) + "---|"
    rows = [head, rule]
    for s in SWITCHES:
        cells = " | ".join("on" if s.name in PROFILES[k] else "" for k in KERNELS)
        rows.append(f"| `{s.name}` | {s.version} | {cells} | {s.what} |")
    return "\n".join(rows)
