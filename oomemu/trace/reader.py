"""Read a run's trace.msgpack: as a stream of time-ordered chunks (bounded memory), or whole.

The file holds a header, batches of one row's records each (in the row's own order), `{"floor": NS}` maps and
an end marker (supervisor.TraceFile). A floor promises that every record stamped before NS is already in the
file, so `TraceStream` keeps only the records at or after the latest floor and hands out everything before it
as one chunk sorted exactly as the whole file would sort (timestamp, then row, then ring order). Its memory is
the records between two floors (the supervisor writes one every poll), capped at `window` records: if the
floors stop moving (a worker that stopped), the oldest buffered records go out anyway and a record that then
arrives out of order is counted in `late`.

Batches written by the supervisor's vectorised encoder (ring.pack_batch: the same integer width per column in
a batch) are decoded with one numpy view per batch; anything else a msgpack writer may produce is decoded with
msgpack, field by field.
"""
from pathlib import Path

import msgpack
import numpy as np

from oomemu.trace.ring import FIELDS

TRACE_DTYPE = np.dtype([("ts", "<i8"), ("seq", "<i8"), ("event", "<i4"), ("pid", "<i4"), ("cpu", "<i4"),
                        ("a", "<i8", (5,))])
CHUNK_RECORDS = 1 << 18          # a chunk goes out once this many records are below the floor
WINDOW_RECORDS = 1 << 21         # at most this many records wait for a floor (136 MiB) before going out anyway
READ_SIZE = 4 << 20

# msgpack integer type bytes of the fixed-width forms, and their value's numpy type
_INT_FORMS = {0xD0: "i1", 0xD1: ">i2", 0xD2: ">i4", 0xD3: ">i8", 0xCC: "u1", 0xCD: ">u2", 0xCE: ">u4",
              0xCF: ">u8"}
_BATCH_PREFIX = b"\x82\xa3cpu"


class Trace:
    """A whole trace: `header` (the catalogue), `records` (sorted by timestamp, ties by cpu then ring order),
    `lost` (records dropped on overflow) and `complete` (the end marker was written)."""

    def __init__(self, header, records, lost, complete, late=0):
        self.header = header
        self.records = records
        self.lost = lost
        self.complete = complete
        self.late = late
        self.event_id = {e["name"]: e["id"] for e in header["events"]}
        self.event_name = {e["id"]: e["name"] for e in header["events"]}

    def of(self, name):
        """The records of event `name`, in order."""
        return self.records[self.records["event"] == self.event_id[name]]


class TraceError(ValueError):
    """The file is not a readable oomemu trace (the message says where it stopped making sense)."""


class _Truncated(TraceError):
    """The file ends inside an object: a run that was killed before it closed its trace."""


class _Input:
    """A file read in large blocks, with a cursor; keeps at most one block plus the object being read."""

    def __init__(self, f):
        self.f = f
        self.buf = b""
        self.pos = 0
        self.consumed = 0           # bytes of the file before buf[0]
        self.eof = False

    def have(self, n):
        """True once n bytes from the cursor are buffered (reading more if needed); False at end of file."""
        while len(self.buf) - self.pos < n and not self.eof:
            more = self.f.read(max(READ_SIZE, n - (len(self.buf) - self.pos)))
            if not more:
                self.eof = True
                break
            self.consumed += self.pos
            self.buf = self.buf[self.pos:] + more
            self.pos = 0
        return len(self.buf) - self.pos >= n

    @property
    def offset(self):
        return self.consumed + self.pos

    def at_end(self):
        return not self.have(1)


def _array_header(buf, i):
    """(count, header length) of a msgpack array header at buf[i], or None."""
    b = buf[i]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, 1
    if b == 0xDC:
        return int.from_bytes(buf[i + 1:i + 3], "big"), 3
    if b == 0xDD:
        return int.from_bytes(buf[i + 1:i + 5], "big"), 5
    return None


def _record_layout(buf, i):
    """The numpy dtype of one fixed-width record starting at buf[i] (a fixarray of len(FIELDS) ints), or None."""
    if buf[i] != 0x90 | len(FIELDS):
        return None
    layout = [("array", "u1")]
    j = i + 1
    for k in range(len(FIELDS)):
        if j >= len(buf):
            return None
        b = buf[j]
        if b < 0x80:
            layout.append((f"v{k}", "u1"))
            j += 1
        elif b in _INT_FORMS:
            dt = np.dtype(_INT_FORMS[b])
            layout += [(f"t{k}", "u1"), (f"v{k}", dt)]
            j += 1 + dt.itemsize
        else:
            return None
    return np.dtype(layout)


def _fast_batch(inp):
    """Decode a batch written by ring.pack_batch at the cursor with numpy; None if it is not one."""
    if not inp.have(24):
        return None
    buf, i = inp.buf, inp.pos
    if buf[i:i + 5] != _BATCH_PREFIX:
        return None
    j = i + 5
    b = buf[j]
    if b < 0x80:
        row, j = b, j + 1
    elif b == 0xCC:
        row, j = buf[j + 1], j + 2
    else:
        return None
    if buf[j:j + 8] != b"\xa7records":
        return None
    hdr = _array_header(buf, j + 8)
    if hdr is None:
        return None
    count, hlen = hdr
    start = j + 8 + hlen - i
    if count == 0:
        inp.pos += start
        return row, np.empty(0, dtype=TRACE_DTYPE)
    if not inp.have(start + 1 + 9 * 9):
        inp.have(start + 1)
    buf, i = inp.buf, inp.pos
    layout = _record_layout(buf, i + start)
    if layout is None:
        return None
    size = start + count * layout.itemsize
    if not inp.have(size):
        raise _Truncated(f"a batch of {count} records is cut short at byte {inp.offset}")
    buf, i = inp.buf, inp.pos
    raw = np.frombuffer(buf, dtype=layout, count=count, offset=i + start)
    tag_bytes = [layout.fields[name][1] for name in layout.names if name == "array" or name.startswith("t")]
    as_bytes = np.frombuffer(buf, dtype=np.uint8, count=count * layout.itemsize,
                             offset=i + start).reshape(count, layout.itemsize)[:, tag_bytes]
    if (as_bytes != as_bytes[0]).any():
        return None          # not one width per column: decode it the general way
    out = np.empty(count, dtype=TRACE_DTYPE)
    cols = [raw[f"v{k}"] for k in range(len(FIELDS))]
    out["ts"], out["seq"], out["event"], out["pid"] = cols[0], cols[1], cols[2], cols[3]
    out["cpu"] = row
    for k in range(5):
        out["a"][:, k] = cols[4 + k]
    inp.pos += size
    return row, out


def _next_object(inp):
    """The next msgpack object at the cursor (decoded generally), advancing past it."""
    need = 1 << 16
    while True:
        inp.have(need)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        unpacker.feed(inp.buf[inp.pos:inp.pos + need] if not inp.eof else inp.buf[inp.pos:])
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            if inp.eof:
                raise _Truncated(f"the file ends inside an object at byte {inp.offset}") from None
            need *= 4
            continue
        inp.pos += unpacker.tell()
        return obj


def _slow_batch(obj):
    flat = np.array(obj["records"], dtype=np.int64).reshape(-1, len(FIELDS))
    batch = np.empty(len(flat), dtype=TRACE_DTYPE)
    batch["ts"], batch["seq"], batch["event"], batch["pid"] = flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3]
    batch["cpu"] = obj["cpu"]
    batch["a"] = flat[:, 4:9]
    return int(obj["cpu"]), batch


def _sorted(parts):
    """The records of `parts` (each one row's, in that row's file order) in the trace's order: timestamp, then
    row, then file order. The parts are laid out row by row, so one stable sort on the timestamp gives exactly
    that (and each row's records are nearly sorted already, which the stable sort's merging likes)."""
    if len(parts) > 1:
        rows = np.array([int(p["cpu"][0]) for p in parts])
        parts = [parts[k] for k in np.argsort(rows, kind="stable")]
        records = np.concatenate(parts)
    else:
        records = parts[0]
    return records[np.argsort(records["ts"], kind="stable")]


class TraceStream:
    """Iterate a trace.msgpack as time-ordered chunks of TRACE_DTYPE records.

    After (or during) iteration: `header`, `lost`, `complete`, `records` (read so far), `late` (records that
    arrived after later ones had gone out: only when the window overflowed), `bytes_read`, `total_bytes`.
    `window=None` never lets records out before their floor (exact order whatever the memory)."""

    def __init__(self, run_dir, chunk=CHUNK_RECORDS, window=WINDOW_RECORDS):
        self.path = Path(run_dir) / "trace.msgpack"
        self.chunk, self.window = chunk, window
        self.header = None
        self.lost, self.complete, self.late, self.records = 0, False, 0, 0
        self.truncated = False
        self.total_bytes = self.path.stat().st_size
        self.bytes_read = 0
        self._f = open(self.path, "rb")
        self._inp = _Input(self._f)
        self.header = _next_object(self._inp)
        if not isinstance(self.header, dict) or self.header.get("format") != "oomemu-trace":
            self._f.close()
            raise TraceError("not an oomemu trace header")
        self.event_id = {e["name"]: e["id"] for e in self.header["events"]}
        self.event_name = {e["id"]: e["name"] for e in self.header["events"]}

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        pending = []          # arrays of records not yet given out (each in its row's order)
        npending = 0
        floor = None
        out_until = None      # the latest timestamp given out early (window overflow)
        inp = self._inp
        while not inp.at_end():
            try:
                got = _fast_batch(inp)
                obj = _next_object(inp) if got is None else None
            except _Truncated:
                self.truncated = True
                break
            if got is None:
                if not isinstance(obj, dict):
                    raise TraceError(f"unexpected {type(obj).__name__} at byte {inp.offset}")
                if "floor" in obj:
                    floor = int(obj["floor"])
                    if npending >= self.chunk:
                        ready, pending, npending = _split(pending, floor)
                        if ready is not None:
                            yield ready
                    continue
                if obj.get("end"):
                    self.lost, self.complete = int(obj.get("lost", 0)), True
                    continue
                if "records" not in obj:
                    continue      # a map a later version added: not records
                got = _slow_batch(obj)
            self.bytes_read = inp.offset
            _, batch = got
            if not len(batch):
                continue
            self.records += len(batch)
            if out_until is not None:
                self.late += int((batch["ts"] < out_until).sum())
            pending.append(batch)
            npending += len(batch)
            if self.window is not None and npending > self.window:
                records = _sorted(pending)
                keep = len(records) // 4             # keep the newest quarter waiting for a floor
                yield records[:len(records) - keep]
                out_until = int(records["ts"][len(records) - keep - 1])
                pending, npending = [records[len(records) - keep:]], keep
        self.bytes_read = self.total_bytes
        if pending and npending:
            yield _sorted(pending)


def _split(pending, floor):
    """(sorted records stamped before `floor`, the rest as the new pending list, its length)."""
    ready, rest = [], []
    for part in pending:
        below = part["ts"] < floor
        if below.all():
            ready.append(part)
        elif below.any():
            ready.append(part[below])
            rest.append(part[~below])
        else:
            rest.append(part)
    n = sum(len(p) for p in rest)
    return (_sorted(ready) if ready else None), rest, n


def load_trace(run_dir):
    """Read RUN_DIR/trace.msgpack whole (exact order, no window): for tools and tests on small runs."""
    with TraceStream(run_dir, window=None) as stream:
        parts = list(stream)
        records = np.concatenate(parts) if parts else np.empty(0, dtype=TRACE_DTYPE)
        return Trace(stream.header, records, stream.lost, stream.complete, stream.late)
