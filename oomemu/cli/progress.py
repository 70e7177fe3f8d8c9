"""The live progress display of `oomemu run`: a rich status table on a terminal, a line a second otherwise."""
import sys
import time


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
            for name in ("allocs", "slowpath_entries", "direct_reclaims", "oom_invocations", "kills"):
                table.add_column(name.replace("_entries", "").replace("_", " "), justify="right")
            for row in range(m.nr_rows_cpu):
                cc = vmstat.counters_of(m, row)
                label = m.row_name(row)
                table.add_row(label, *(str(cc[k]) for k in ("allocs", "slowpath_entries", "direct_reclaims",
                                                             "oom_invocations", "kills")))
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
