"""Per-CPU trace rings: fixed 64-byte records in the segment, one writer each, drained by the supervisor.

Record layout (little endian, 64 bytes):

    int64 ts_ns      CLOCK_MONOTONIC nanoseconds since boot (virtual nanoseconds in the controlled modes)
    int64 seq        an order exact inside a shared critical section (taken under the lock held), else 0
    int32 event      event id (oomemu/trace/events.py)
    int32 pid        pid of the task the event is about (current, unless the event says otherwise)
    int64 a0..a4     the event's arguments (names in the catalogue)

The writer never blocks and takes no lock: it writes the record, then publishes it by advancing `written`.
When the ring is full (the supervisor fell behind by a whole ring) the record is dropped and `lost` is
counted, so an overflow is never silent.
"""
import struct
import time

import msgpack
import numpy as np

from oomemu.machine import G_BOOT_NS

try:    # the compiled writer, built by `pip install .` where a C compiler is present
    from oomemu.trace._ring import Emitter, RingCore
except ImportError:    # the Python writer below (and events.py's emitters) record the same bytes
    Emitter = RingCore = None

RECORD = struct.Struct("<qqii5q")
RECORD_SIZE = 64
RECORD_SHIFT = 6      # log2(RECORD_SIZE): a record's offset in its ring is slot << RECORD_SHIFT
RECORD_DTYPE = np.dtype([("ts", "<i8"), ("seq", "<i8"), ("event", "<i4"), ("pid", "<i4"),
                         ("a", "<i8", (5,))])
assert RECORD.size == RECORD_DTYPE.itemsize == RECORD_SIZE == 1 << RECORD_SHIFT

H_WRITTEN = 0
H_DRAINED = 1
H_LOST = 2


class _PyRingCore:
    """The Python half that RingCore provides in C: the writer-local counters and the ring's geometry."""

    __slots__ = ("n", "mask", "boot", "written", "limit")

    def _attach(self, records, head, pid_of, n, boot):
        assert n & (n - 1) == 0, "ring sizes are powers of two"
        self.n, self.mask, self.boot = n, n - 1, boot
        self.written = int(head[H_WRITTEN])
        self.limit = 0


class RingWriter(RingCore or _PyRingCore):
    """The single writer of one CPU's (or kswapd's) ring.

    With the compiled RingCore, the per-event emitters (events.py) are C calls that write the record straight
    into the segment; otherwise they pack it with `struct` here in Python. Either way the bytes are the same.
    """

    __slots__ = ("buf", "base", "head", "hw", "pack", "clock", "pid_of", "row", "records", "controlled_clock")

    compiled = RingCore is not None

    def __init__(self, m, row):
        self.row = row
        self.buf = m.buf
        n = m.ring_records
        self.base = m.ring_offset + row * n * RECORD_SIZE
        self.head = m.v_ring_head
        self.hw = row * m.ring_head.shape[1]
        self.pack = RECORD.pack_into
        self.clock = time.monotonic_ns
        self.pid_of = m.v_task_pid
        self.records = np.frombuffer(m.buf, dtype=RECORD_DTYPE, count=n, offset=self.base)
        # The writer keeps its own copy of `written` (it is the only writer) and re-reads the consumer's
        # position only when it has used up the room it last saw: one shared read per ring's worth of records.
        self._attach(self.records, m.ring_head[row], m.task_pid, n, int(m.glob[G_BOOT_NS]))
        self.controlled_clock = m.controlled
        if m.controlled:    # timestamps from the virtual clock (oomemu/control.py)
            from oomemu.control import CT_VNOW
            boot, vclock = int(m.glob[G_BOOT_NS]), m.v_ctl
            self.clock = lambda: boot + vclock[CT_VNOW]
            if self.compiled:
                self._use_clock(m.ctl[CT_VNOW:CT_VNOW + 1])

    def room(self):
        """Refresh the room left from the consumer's position; True if a record fits. In a controlled mode a
        full ring waits (at most ~5 s) for the supervisor's drain instead of dropping records (see _ring.c)."""
        self.limit = self.head[self.hw + H_DRAINED] + self.n
        if self.written >= self.limit and self.controlled_clock:
            for _ in range(25000):
                time.sleep(0.0002)
                self.limit = self.head[self.hw + H_DRAINED] + self.n
                if self.written < self.limit:
                    break
        return self.written < self.limit

    def lose(self, count):
        self.head[self.hw + H_LOST] += count

    def emit_many(self, event, pid, a0, a1=0, a2=0, a3=0, a4=0, seq=0):
        """Append one record per element of the array `a0` (other fields broadcast), in one vectorised copy;
        what does not fit is counted lost."""
        args = tuple(np.ascontiguousarray(v, dtype=np.int64) if isinstance(v, np.ndarray) else int(v)
                     for v in (a0, a1, a2, a3, a4))
        if self.compiled:
            self._emit_many(int(event), int(pid), int(seq), len(a0), args)
            return
        self._emit_many_py(event, pid, seq, args)

    def _emit_many_py(self, event, pid, seq, args):
        a0 = args[0]
        self.room()
        written = self.written
        count = min(len(a0), self.limit - written)
        if count < len(a0):
            self.lose(len(a0) - count)
        if count <= 0:
            return
        ts = self.clock() - self.boot
        first = written & self.mask
        split = min(count, self.n - first)    # the ring wraps at most once
        # Fill the records in place, field by field, then publish them all by advancing `written`.
        spans = ((self.records[first:first + split], 0, split), (self.records[:count - split], split, count))
        for recs, lo, hi in spans:
            if lo == hi:
                continue
            recs["ts"] = ts
            recs["seq"] = seq
            recs["event"] = event
            recs["pid"] = pid
            fields = recs["a"]
            for i, value in enumerate(args):
                fields[:, i] = value[lo:hi] if isinstance(value, np.ndarray) else value
        self.written = written + count
        self.head[self.hw] = written + count


def drain_ring(m, row):
    """Copy out the records of `row` written since the last drain (supervisor side). Returns a numpy array."""
    hw = m.ring_head[row]
    written, drained = int(hw[H_WRITTEN]), int(hw[H_DRAINED])
    if written == drained:
        return np.empty(0, dtype=RECORD_DTYPE)
    n = m.ring_records
    base = m.ring_offset + row * n * RECORD_SIZE
    ring = np.frombuffer(m.buf, dtype=RECORD_DTYPE, count=n, offset=base)
    first, count = drained % n, written - drained
    split = min(count, n - first)                 # the new records wrap at most once
    out = np.concatenate((ring[first:first + split], ring[:count - split]))
    m.ring_head[row, H_DRAINED] = written
    return out


# msgpack integer encodings, smallest first: (type byte or None for a positive fixint, numpy type, lo, hi)
_MSGPACK_INTS = ((None, "u1", 0, 127), (0xD0, "i1", -128, 127), (0xD1, ">i2", -(1 << 15), (1 << 15) - 1),
                 (0xD2, ">i4", -(1 << 31), (1 << 31) - 1), (0xD3, ">i8", -(1 << 63), (1 << 63) - 1))
FIELDS = ("ts_ns", "seq", "event", "pid", "a0", "a1", "a2", "a3", "a4")   # one record in trace.msgpack


def _columns(recs):
    return (recs["ts"], recs["seq"], recs["event"], recs["pid"]) + tuple(recs["a"][:, i] for i in range(5))


def pack_batch(row, recs):
    """msgpack bytes of the map {"cpu": row, "records": [[ts, seq, event, pid, a0..a4], ...]} for drained
    records, encoded in one vectorised pass instead of one Python list per record.

    Each column takes the smallest msgpack integer form that holds all its values in this batch, so every
    record has the same layout: a fixarray byte, then per field an optional type byte and a big-endian value.
    Plain `msgpack.unpackb` reads it back as lists of ints, exactly as if each record had been packed alone
    (only the choice among equivalent integer encodings differs)."""
    packer = msgpack.Packer()
    head = packer.pack_map_header(2) + packer.pack("cpu") + packer.pack(row) + packer.pack("records")
    head += packer.pack_array_header(len(recs))
    if not len(recs):
        return head
    layout, values = [("array", "u1")], []
    for i, col in enumerate(_columns(recs)):
        lo, hi = int(col.min()), int(col.max())
        tag, dtype = next((t, d) for t, d, a, b in _MSGPACK_INTS if a <= lo and hi <= b)
        if tag is not None:
            layout.append((f"t{i}", "u1"))
            values.append((f"t{i}", tag))
        layout.append((f"v{i}", dtype))
        values.append((f"v{i}", col))
    out = np.empty(len(recs), dtype=np.dtype(layout))
    out["array"] = 0x90 | len(FIELDS)      # fixarray of 9
    for name, value in values:
        out[name] = value
    return head + out.tobytes()
