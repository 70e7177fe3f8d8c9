"""One run's timeline (`oomemu plot RUN_DIR`): free pages per zone against time with its min/low/high
watermarks, and below it kswapd awake (wake to sleep), direct reclaims, OOM invocations and kills, from the
run's trace.msgpack (the `zone_free_pages` sample written at each change of a zone's NR_FREE_PAGES) and its
final machine state (the watermarks)."""
from __future__ import annotations

from pathlib import Path

from oomemu.errors import ScenarioError


def plot_run(run_dir, out=None) -> Path:
    """Draw RUN_DIR's timeline to `out` (default RUN_DIR/timeline.png); returns the path."""
    run_dir = Path(run_dir)
    if not (run_dir / "trace.msgpack").is_file():
        raise ScenarioError(f"{run_dir}: not a run directory with a trace (no trace.msgpack; was run.trace off, "
                            f"or the sweep --lean?)")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from oomemu.check.state import load_state
    from oomemu.include.mmzone import MAX_NR_ZONES, WMARK_HIGH, WMARK_LOW, WMARK_MIN, ZONE_NAMES
    from oomemu.machine import Z_MANAGED, Z_WMARK
    from oomemu.trace.reader import load_trace
    try:
        tr = load_trace(run_dir)
    except (OSError, ValueError, KeyError) as error:
        raise ScenarioError(f"{run_dir}/trace.msgpack: unreadable trace ({error})") from None
    if "zone_free_pages" not in tr.event_id:
        raise ScenarioError(f"{run_dir}: the trace has no zone_free_pages samples (recorded by an older oomemu)")
    state = load_state(run_dir / "machine.npz") if (run_dir / "machine.npz").exists() else None

    def secs(recs):
        return recs["ts"] / 1e9

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6.4), dpi=80,
                                      gridspec_kw={"height_ratios": [3, 1.3]})
    samples = tr.of("zone_free_pages")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    zones = sorted({int(z) for z in samples["a"][:, 0]})
    if state is not None:
        zones = sorted(set(zones) | {z for z in range(state.zone.shape[0]) if state.zone[z, Z_MANAGED]})
    t_end = float(secs(tr.records[-1:])[0]) if len(tr.records) else 1.0
    for i, z in enumerate(zones):
        c = colours[i % len(colours)]
        name = f"{ZONE_NAMES[z % MAX_NR_ZONES]}" + (f" (node {z // MAX_NR_ZONES})" if z >= MAX_NR_ZONES else "")
        own = samples[samples["a"][:, 0] == z]
        if len(own):
            top.step(np.append(secs(own), t_end), np.append(own["a"][:, 1], own["a"][-1, 1]), where="post",
                     color=c, label=f"{name} free", linewidth=1.2)
        if state is not None:
            for w, style in ((WMARK_MIN, ":"), (WMARK_LOW, "--"), (WMARK_HIGH, "-.")):
                top.axhline(int(state.zone[z, Z_WMARK + w]), color=c, linestyle=style, linewidth=0.8, alpha=0.8)
    kills = tr.of("oom_kill")
    for k in kills:
        top.axvline(float(k["ts"]) / 1e9, color="red", linewidth=0.8, alpha=0.6)
    top.set_ylabel("free pages (NR_FREE_PAGES)")
    highs = [int(state.zone[z, Z_WMARK + WMARK_HIGH]) for z in zones] if state is not None else []
    if highs and max(highs) > 0:
        # linear up to a few times the high watermark (where the OOM path lives), logarithmic above
        top.set_yscale("symlog", linthresh=4 * max(highs), linscale=2.0)
    top.set_ylim(bottom=0)
    from matplotlib.lines import Line2D
    handles, _ = top.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", linestyle=s, label=lab) for s, lab in
                ((":", "min watermark"), ("--", "low watermark"), ("-.", "high watermark"))]
    handles.append(Line2D([], [], color="red", label=f"OOM kill ({len(kills)})"))
    top.legend(handles=handles, fontsize="small", loc="upper right", ncol=2)
    top.set_title(f"{run_dir.name}: free pages, watermarks, reclaim and OOM", fontsize="medium")
    top.grid(alpha=0.3)

    rows = ["kswapd awake", "direct reclaim", "OOM invocation", "OOM kill"]
    wake, sleep = tr.of("mm_vmscan_kswapd_wake"), tr.of("mm_vmscan_kswapd_sleep")
    spans = _awake_spans(secs(wake), secs(sleep), t_end)
    bottom.broken_barh([(a, b - a) for a, b in spans], (3 - 0.35, 0.7), color="tab:green", alpha=0.6)
    for y, name, colour, marker in ((2, "mm_vmscan_direct_reclaim_begin", "tab:orange", "|"),
                                    (1, "out_of_memory", "tab:purple", "|"), (0, "oom_kill", "red", "x")):
        ts = secs(tr.of(name))
        bottom.plot(ts, np.full(len(ts), y), linestyle="none", marker=marker, color=colour, markersize=9)
    bottom.set_yticks([3, 2, 1, 0], rows)
    bottom.set_ylim(-0.7, 3.7)
    bottom.set_xlabel("time since boot (s)")
    bottom.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "timeline.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def _awake_spans(wakes, sleeps, t_end):
    """(start, end) of each stretch kswapd was awake: a wake to the next sleep after it (or the run's end)."""
    spans, i, n = [], 0, len(sleeps)
    last_end = -1.0
    for w in sorted(wakes):
        if w < last_end:
            continue
        while i < n and sleeps[i] < w:
            i += 1
        end = float(sleeps[i]) if i < n else t_end
        spans.append((float(w), end))
        last_end = end
    return spans
