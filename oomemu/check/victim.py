"""Who the OOM killer chose and marked (KERNEL §2.1, §3.2, §5.1), judged from the trace."""
import numpy as np

from oomemu.include.oom import OOM_SCORE_ADJ_MIN
from oomemu.include.sched import CAP_SYS_ADMIN, PF_KTHREAD, SIGKILL
from oomemu.trace.events import CAND_SCAN

ULONG_MAX = (1 << 64) - 1


def _per_cpu(trace, names):
    ids = {trace.event_id[n]: n for n in names}
    recs = trace.records[np.isin(trace.records["event"], list(ids))]
    out = {}
    for r in recs:
        out.setdefault(int(r["cpu"]), []).append((ids[int(r["event"])], r))
    return out


def _tgid_of(state):
    return dict(zip(state.task_pid.tolist(), state.task_tgid.tolist()))


def _is_leader(state):
    return dict(zip(state.task_pid.tolist(), (state.task_pid == state.task_tgid).tolist()))


LONG_MIN = -(1 << 63)


def _expected_choice(cands, leader, signed=False):
    """select_bad_process's choice over (pid, points) in scan order: max points; a tie keeps a leader. With 5.9's
    signed badness (`signed_badness`) LONG_MIN is the ineligible score and chosen_points starts there."""
    never = LONG_MIN if signed else 0
    chosen, best = 0, never
    for pid, pts in cands:
        if pts == never or pts < best:
            continue
        if pts == best and chosen and leader.get(chosen, True):
            continue
        chosen, best = pid, pts
    return chosen, best


def expected_badness(rss, nr_ptes, swapents, adj, root, totalpages, features=()):
    """oom_badness() recomputed from what it read (KERNEL §4.1, written out here independently of
    mm/oom_kill.py): rss + page tables + swap entries (4.0-4.16 add one PMD page per 512 page-table pages),
    3% off for root before 4.17, plus adj x totalpages/1000; at least 1 before 5.9's signed badness. An
    oom_score_adj of -1000 is not eligible (None)."""
    if adj == OOM_SCORE_ADJ_MIN:
        return None
    points = rss + nr_ptes + swapents
    if "nr_pmds" in features or "pgtables_bytes" in features:
        points += -(-nr_ptes // 512)
    if root and "no_root_bonus" not in features:
        points -= points * 3 // 100
    points += adj * (totalpages // 1000)
    if "signed_badness" in features:
        return points
    return points if points > 0 else 1


def _badness_problems(cpu, ts, cands, inputs, root, totalpages, features):
    """Each candidate's traced points against expected_badness() of its traced mm counters."""
    problems = []
    for (pid, pts), inp in zip(cands, inputs):
        if inp[0] != pid:
            return [f"cpu {cpu} at {ts / 1e9:.6f}s: badness inputs out of step with the candidates "
                    f"(pid {inp[0]} for candidate {pid})"]
        want = expected_badness(inp[1], inp[2], inp[3], inp[4], root.get(pid, False), totalpages, features)
        if want is None:
            continue     # ineligible: the scan's score for it is not_eligible()
        if "mmf_oom_skip" in features and pts in (0, LONG_MIN):
            continue     # 4.9+: an mm the reaper is done with scores as ineligible
        if pts != want:
            problems.append(f"cpu {cpu} at {ts / 1e9:.6f}s: pid {pid} scored {pts} points, but its mm gives "
                            f"{want} (rss {inp[1]}, page tables {inp[2]}, swap {inp[3]}, oom_score_adj {inp[4]}, "
                            f"root {root.get(pid, False)}, totalpages {totalpages})")
    return problems


def _root_of(state):
    """pid -> has CAP_SYS_ADMIN (uid 0 or the capability); None when the state does not say (an older run)."""
    if state is None or not hasattr(state, "task_uid"):
        return None
    return dict(zip(state.task_pid.tolist(),
                    ((state.task_uid == 0) | ((state.task_caps & CAP_SYS_ADMIN) != 0)).tolist()))


def check_victim_selection(trace, state=None):
    """Each scan chose the eligible thread with the highest badness (ties as §2.1), each candidate's badness
    being what its mm counters give (recomputed here, not taken from the scan); each kill then took that task,
    or its child with the highest badness above 0 (§5.1)."""
    problems = []
    leader = _is_leader(state) if state is not None else {}
    tgid = _tgid_of(state) if state is not None else {}
    root = _root_of(state)
    features = tuple(trace.header.get("features", ()))
    signed = "signed_badness" in features
    names = ("oom_scan_candidate", "oom_scan_result", "oom_kill", "out_of_memory", "oom_badness_mm")
    streams = _per_cpu(trace, tuple(n for n in names if n in trace.event_id))
    for cpu, events in streams.items():
        cands, children, chosen = [], [], None
        inputs, child_inputs, totalpages = [], [], None
        for name, r in events:
            a = [int(x) for x in r["a"]]
            if name == "out_of_memory":
                cands, children, chosen = [], [], None
                inputs, child_inputs, totalpages = [], [], a[1]
            elif name == "oom_badness_mm":
                # a child's comes right after its candidate record; the scan's after all of its candidates
                if children and children[-1][0] == a[0] and len(child_inputs) < len(children):
                    child_inputs.append((children[-1], a))
                else:
                    inputs.append(a)
            elif name == "oom_scan_candidate":
                (cands if a[2] == CAND_SCAN else children).append((a[0], a[1]))
            elif name == "oom_scan_result":
                chosen = None
                if a[2]:
                    continue  # ABORT: nothing chosen
                if a[1] == ULONG_MAX:
                    chosen = a[0]
                    continue
                if inputs and totalpages is not None and root is not None:
                    problems += _badness_problems(cpu, int(r["ts"]), cands, inputs, root, totalpages, features)
                want, best = _expected_choice(cands, leader, signed)
                if a[0] != want:
                    problems.append(f"cpu {cpu} at {r['ts'] / 1e9:.6f}s: the scan chose pid {a[0]} with {a[1]} points, "
                                    f"but pid {want} had {best} (candidates: {cands[:8]})")
                chosen = a[0]
                cands, inputs = [], []
            elif name == "oom_kill" and chosen is not None:
                if child_inputs and totalpages is not None and root is not None:
                    problems += _badness_problems(cpu, int(r["ts"]), [c for c, _ in child_inputs],
                                                  [i for _, i in child_inputs], root, totalpages, features)
                victim = a[0]
                want = chosen
                best_child = 0
                for pid, pts in children:
                    if pts > best_child:
                        want, best_child = pid, pts
                if victim != want and tgid.get(victim, victim) != tgid.get(want, want):
                    problems.append(f"cpu {cpu} at {r['ts'] / 1e9:.6f}s: killed pid {victim}, but the choice was "
                                    f"pid {chosen} and its worst child {want if want != chosen else 'none'}")
                chosen, children, child_inputs = None, [], []
    return problems


def check_never_killed(trace, state):
    """Never killed: pid 1, kernel threads, OOM_SCORE_ADJ_MIN tasks (victims and sharers alike; from 4.8,
    `kill_all_sharers`, an OOM_SCORE_ADJ_MIN sharer of the victim's mm is killed too)."""
    flags = dict(zip(state.task_pid.tolist(), state.task_flags.tolist()))
    min_sharers_die = "kill_all_sharers" in trace.header.get("features", ())
    problems = []
    for name in ("oom_kill", "oom_kill_sharer"):
        for r in trace.of(name):
            pid = int(r["a"][0])
            adj, kthread = int(r["a"][3 if name == "oom_kill" else 2]), int(r["a"][4 if name == "oom_kill" else 3])
            adj_min = adj == OOM_SCORE_ADJ_MIN and not (name == "oom_kill_sharer" and min_sharers_die)
            why = ("it is init (pid 1)" if pid == 1 else
                   "it is a kernel thread" if kthread or flags.get(pid, 0) & PF_KTHREAD else
                   "its oom_score_adj is -1000" if adj_min else None)
            if why:
                problems.append(f"{name} of pid {pid} at {r['ts'] / 1e9:.6f}s: {why}")
    return problems


def check_memdie_marking(trace, state=None):
    """TIF_MEMDIE only on a victim oom_kill_process chose, or on a dying task that marked itself (§3.2 step 2)."""
    tgid = _tgid_of(state) if state is not None else {}
    problems = []
    killed_groups, exiting = set(), set()
    ids = {trace.event_id[n]: n for n in ("signal_generate", "sched_process_exit", "mark_victim", "oom_kill",
                                          "oom_scan_result")}
    recs = trace.records[np.isin(trace.records["event"], list(ids))]
    last_choice = {}
    pending = {}   # cpu -> pid marked, waiting for its oom_kill record
    for r in recs:
        name, cpu, a = ids[int(r["event"])], int(r["cpu"]), [int(x) for x in r["a"]]
        if name == "signal_generate" and a[0] == SIGKILL:
            killed_groups.add(tgid.get(a[1], a[1]))
        elif name == "sched_process_exit":
            exiting.add(a[0])
        elif name == "oom_scan_result":
            last_choice[cpu] = a[0]
        elif name == "oom_kill":
            pending.pop(cpu, None)
        elif name == "mark_victim":
            pid, self_marked = a[0], a[1]
            if self_marked:
                if tgid.get(pid, pid) not in killed_groups and pid not in exiting:
                    problems.append(f"pid {pid} marked itself TIF_MEMDIE at {r['ts'] / 1e9:.6f}s without a fatal "
                                    "signal or PF_EXITING")
            elif last_choice.get(cpu) == pid or int(r["pid"]) == pid:
                continue  # the scan's choice (PF_EXITING shortcut) or the allocating task itself
            else:
                pending[cpu] = (pid, float(r["ts"]))
    for cpu, (pid, ts) in pending.items():
        problems.append(f"pid {pid} got TIF_MEMDIE on cpu {cpu} at {ts / 1e9:.6f}s without being chosen or killed")
    return problems
