"""The R8 detector on hand-made traces: it must see the pages freed in a stretch whether it reads the whole
trace (mm_page_free records) or the end-of-run check's trace, which keeps no page events and carries a
PagesFreed summary instead (before that summary the check's detector counted 0 frees and R8 could never be
the verdict of a run, only of a re-judged one)."""
import numpy as np

from oomemu.check.races import PagesFreed, detect_thrashing
from oomemu.trace.reader import TRACE_DTYPE, Trace

EVENTS = ("mm_page_free", "mm_vmscan_direct_reclaim_begin", "mm_vmscan_direct_reclaim_end",
          "mm_vmscan_lru_shrink_inactive")
ID = {n: i for i, n in enumerate(EVENTS)}
HOG, NETRX, KSWAPD = 10, 11, 3
MS = 1_000_000


def _rec(ts, event, pid, *a):
    r = np.zeros(1, dtype=TRACE_DTYPE)
    r["ts"], r["event"], r["pid"] = ts, ID[event], pid
    r["a"][0, :len(a)] = a
    return r


def _trace(recs):
    recs = np.concatenate(recs)
    recs = recs[np.argsort(recs["ts"], kind="stable")]
    return Trace({"events": [{"name": n, "id": i} for n, i in ID.items()]}, recs, 0, True)


class _Run:
    kills = []

    def __init__(self, trace):
        self.trace = trace

    @staticmethod
    def name(pid):
        return f"pid {pid}"


def _stretch(frees_by, nr_free_blocks, order):
    """10 direct reclaims by HOG, one every 300 ms from 100 ms (2.7 s from first to last), each scanning 32
    pages and reclaiming none but reporting progress 1; meanwhile `frees_by` frees `nr_free_blocks` blocks of
    `order`, spread evenly from 110 ms to 2.71 s (inside the stretch: 102 ms to 2.802 s). Returns the records."""
    recs = []
    for i in range(10):
        t = 100 * MS + i * 300 * MS
        recs += [_rec(t, "mm_vmscan_direct_reclaim_begin", HOG, 0, 1, 0x200d0),
                 _rec(t + 1 * MS, "mm_vmscan_lru_shrink_inactive", HOG, 2, 32, 0, 12, 1),
                 _rec(t + 2 * MS, "mm_vmscan_direct_reclaim_end", HOG, 0, 1)]
    for j in range(nr_free_blocks):
        recs.append(_rec(110 * MS + j * 2600 * MS // nr_free_blocks, "mm_page_free", frees_by, 1000 + 4 * j, order))
    return recs


def _as_the_check_sees_it(trace):
    """The end-of-run check's view: page events summed by PagesFreed as they stream past, then dropped."""
    summary = PagesFreed(ID["mm_page_free"])
    for lo in range(0, len(trace.records), 7):          # fed in chunks, as the stream hands them out
        summary.feed(trace.records[lo:lo + 7])
    kept = trace.records[trace.records["event"] != ID["mm_page_free"]]
    sparse = Trace(trace.header, kept, 0, True)
    sparse.pages_freed = summary
    return sparse


def test_pages_freed_sums_pages_per_millisecond_both_ends_included():
    s = PagesFreed(ID["mm_page_free"])
    s.feed(_trace([_rec(5 * MS + 10, "mm_page_free", 1, 0, 2), _rec(5 * MS + 900_000, "mm_page_free", 1, 8, 0),
                   _rec(7 * MS, "mm_page_free", 1, 9, 3), _rec(9 * MS, "mm_vmscan_direct_reclaim_end", 1, 0, 1)]).records)
    assert s.between(5 * MS, 5 * MS) == 4 + 1          # both frees of the 5th millisecond, 1 << 2 and 1 << 0
    assert s.between(6 * MS, 7 * MS) == 8
    assert s.between(0, 9 * MS) == 13
    assert s.between(8 * MS, 100 * MS) == 0


def test_frees_elsewhere_make_thrashing_in_the_whole_trace_and_in_the_checks_view():
    # NETRX frees 540 order-2 blocks (2160 pages) during the stretch; reclaim freed 0: 2160 - 0 > 0
    trace = _trace(_stretch(NETRX, 540, 2))
    whole = detect_thrashing(_Run(trace), "deadline")
    checked = detect_thrashing(_Run(_as_the_check_sees_it(trace)), "deadline")
    assert len(whole) == 1 and "10 direct reclaims by pid 10" in whole[0] and "2160 pages freed" in whole[0]
    assert checked == whole


def test_no_frees_in_the_stretch_is_no_thrashing_in_either_view():
    trace = _trace(_stretch(NETRX, 0, 2))
    assert detect_thrashing(_Run(trace), "deadline") == []
    assert detect_thrashing(_Run(_as_the_check_sees_it(trace)), "deadline") == []


def test_frees_that_are_only_what_reclaim_freed_are_slow_reclaim_not_thrashing():
    # kswapd reclaims 64 pages in the stretch and they are its frees: freed - reclaimed = 0 <= 64
    recs = _stretch(KSWAPD, 64, 0)
    recs.append(_rec(1000 * MS, "mm_vmscan_lru_shrink_inactive", KSWAPD, 2, 64, 64, 12, 1))
    trace = _trace(recs)
    assert detect_thrashing(_Run(trace), "deadline") == []
    assert detect_thrashing(_Run(_as_the_check_sees_it(trace)), "deadline") == []
