"""No allocation passed a watermark check it should have failed (KERNEL §6.4).

Every `mm_page_alloc` records the zone's free pages its check saw and its alloc_flags. Without ALLOC_HIGH,
ALLOC_HARDER or ALLOC_NO_WATERMARKS, the allocation must have left more than the watermark it was checked
against (the lowmem reserve only raises the bar, so it is not needed for this lower bound).
"""
import numpy as np

from oomemu.machine import Z_WMARK
from oomemu.mm.internal import ALLOC_HARDER, ALLOC_HIGH, ALLOC_NO_WATERMARKS, ALLOC_WMARK_MASK


def watermark_problems(recs, state, limit=50):
    """The violations among `recs`, mm_page_alloc records (at most `limit` worded)."""
    if not len(recs):
        return []
    pfn, order, free, flags = (recs["a"][:, i] for i in (0, 1, 3, 4))
    plain = (flags & (ALLOC_HARDER | ALLOC_HIGH | ALLOC_NO_WATERMARKS)) == 0
    zone = state.page_zone[pfn].astype(np.int64)
    mark = state.zone[zone, Z_WMARK + (flags & ALLOC_WMARK_MASK)]
    bad = plain & (free - ((1 << order) - 1) <= mark)
    return [f"{r['ts'] / 1e9:.6f}s cpu {int(r['cpu'])}: pfn {int(r['a'][0])} allocated with {int(r['a'][3])} free "
            f"pages against a watermark of {int(m)} (alloc_flags {int(r['a'][4]):#x})"
            for r, m in zip(recs[bad][:limit], mark[bad][:limit])]


class WatermarkCheck:
    """check_watermarks over a stream of chunks (each record is judged on its own)."""

    def __init__(self, state, alloc_id):
        self.state, self.alloc_id = state, alloc_id
        self.problems = []

    def feed(self, recs):
        if len(self.problems) < 50:
            self.problems += watermark_problems(recs[recs["event"] == self.alloc_id], self.state,
                                                50 - len(self.problems))

    def finish(self):
        return self.problems


def check_watermarks(trace, state):
    return watermark_problems(trace.of("mm_page_alloc"), state)
