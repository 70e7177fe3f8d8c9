"""The live progress display of `oomemu run`: a rich status table on a terminal, a line a second otherwise."""
import sys
import time


# The live table's columns; kswapd rows show "-" where a counter only ever counts on a CPU.
COLUMNS = ("allocs", "slowpath_entries", "direct_reclaims", "oom_invocations", "kills", "kswapd_runs",
           "pages_reclaimed")
CPU_ONLY = ("allocs", "slowpath_entries", "direct_reclaims", "oom_invocations", "kills")


class Progress:
    """Called by the supervisor's watch loop with the machine; draws at most a few times a second."""

    def __init__(self, scenario, stream=None):
        self.scenario = scenario
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0
        self.live = None
        if self.tty:
            from rich.console import Console
            from rich.live import Live
            self.live = Live(console=Console(file=self.stream), refresh_per_second=8, transient=True)
            self.live.start()

    def __call__(self, m, outcome):
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 1.0):
            return
        self.last = now
        from oomemu.mm import vmstat
        c = vmstat.counters_total(m)
        free = _free_pages(m)
        fields = (f"{outcome.elapsed:5.1f}s/{self.scenario.run.seconds:g}s", f"free {free} pages",
                  f"allocs {c['allocs']}", f"slowpath {c['slowpath_entries']}", f"OOM {c['oom_invocations']}",
                  f"busy {c['oom_lock_busy']}", f"aborts {c['scan_aborts']}", f"kills {c['kills']}")
        if self.live is not None:
            from rich.table import Table
            table = Table(title=f"oomemu run {self.scenario.name}", show_header=True)
            table.add_column("cpu")
            for name in COLUMNS:
                table.add_column(name.replace("_entries", "").replace("_", " "), justify="right")
            for row in range(m.nr_rows_cpu):
                cc = vmstat.counters_of(m, row)
                kswapd = row >= m.nr_cpus
                label = m.row_name(row)
                table.add_row(label, *("-" if kswapd and k in CPU_ONLY else str(cc[k]) for k in COLUMNS))
            table.caption = "  ".join(fields)
            self.live.update(table)
        else:
            print("oomemu: " + "  ".join(fields), file=self.stream, flush=True)

    def close(self):
        if self.live is not None:
            self.live.stop()


def _free_pages(m):
    from oomemu.include.mmzone import NR_FREE_PAGES
    from oomemu.machine import Z_STAT
    return int(m.zone[:, Z_STAT + NR_FREE_PAGES].sum())


class CheckProgress:
    """The end-of-run check's progress line: how much of the trace is read, records, seconds. Silent for the
    first second (a short run's check ends before anyone would read it), then at most once a second."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = None
        self.shown = False

    def __call__(self, done, total, records, elapsed):
        now = time.monotonic()
        if elapsed < 1.0 or (self.last is not None and now - self.last < 1.0):
            return
        self.last = now
        share = f"{100 * done / total:3.0f}% of {total / (1 << 20):.0f} MiB" if total else f"{done >> 20} MiB"
        line = f"oomemu: checking the trace: {share}, {records:,} records, {elapsed:.0f} s"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)
        self.shown = True

    def close(self):
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
