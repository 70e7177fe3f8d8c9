"""Load a run's trace.msgpack into one time-ordered numpy array (shared by check/, export and `trace show`)."""
from pathlib import Path

import msgpack
import numpy as np

from oomemu.trace.ring import FIELDS

TRACE_DTYPE = np.dtype([("ts", "<i8"), ("seq", "<i8"), ("event", "<i4"), ("pid", "<i4"), ("cpu", "<i4"),
                        ("a", "<i8", (5,))])


class Trace:
    """A whole trace: `header` (the catalogue), `records` (sorted by timestamp, ties by cpu then ring order),
    `lost` (records dropped on overflow) and `complete` (the end marker was written)."""

    def __init__(self, header, records, lost, complete):
        self.header = header
        self.records = records
        self.lost = lost
        self.complete = complete
        self.event_id = {e["name"]: e["id"] for e in header["events"]}
        self.event_name = {e["id"]: e["name"] for e in header["events"]}

    def of(self, name):
        """The records of event `name`, in order."""
        return self.records[self.records["event"] == self.event_id[name]]


def load_trace(run_dir):
    """Read RUN_DIR/trace.msgpack."""
    path = Path(run_dir) / "trace.msgpack"
    batches, header, lost, complete = [], None, 0, False
    with open(path, "rb") as f:
        for obj in msgpack.Unpacker(f, raw=False, strict_map_key=False):
            if header is None:
                header = obj
            elif obj.get("end"):
                lost, complete = obj["lost"], True
            elif obj["records"]:
                flat = np.array(obj["records"], dtype=np.int64).reshape(-1, len(FIELDS))
                batch = np.empty(len(flat), dtype=TRACE_DTYPE)
                batch["ts"], batch["seq"], batch["event"], batch["pid"] = flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3]
                batch["cpu"] = obj["cpu"]
                batch["a"] = flat[:, 4:9]
                batches.append(batch)
    records = np.concatenate(batches) if batches else np.empty(0, dtype=TRACE_DTYPE)
    order = np.lexsort((np.arange(len(records)), records["cpu"], records["ts"]))
    return Trace(header, records[order], lost, complete)
