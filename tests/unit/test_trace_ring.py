"""The trace ring's record writers: the compiled emitter (when built) and the Python one write the same records,
count overflow the same way, and refuse the same bad arguments; the supervisor-side drain reads them back."""
import shutil
import struct
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from machine_helpers import add_process, make_machine

from oomemu.trace import events as tp
from oomemu.trace.ring import H_DRAINED, H_LOST, H_WRITTEN, RingWriter, drain_ring

compiled_only = pytest.mark.skipif(not RingWriter.compiled, reason="the compiled writer is not built here")


def _emitters(kind, event):
    name = tp.EVENT_NAME[event]
    if kind == "python":
        return tp._python_emitter(event, "trace_" + name, "")
    if not RingWriter.compiled:
        pytest.skip("the compiled writer is not built here")
    return getattr(tp, "trace_" + name)


def _script(m, cpu, kind, row):
    """A fixed sequence of emits on ring `row`: defaults, every argument, numpy integers, pid= and seq=,
    an idle CPU (current = -1) and a task's own pid."""
    task = add_process(m, cpu, "tracee")
    cpu.trace = RingWriter(m, row)
    free = _emitters(kind, tp.EVENT_ID["mm_page_free"])
    alloc = _emitters(kind, tp.EVENT_ID["mm_page_alloc"])
    lock = _emitters(kind, tp.EVENT_ID["oom_lock_try"])
    cpu.current = -1
    free(cpu)
    free(cpu, 7, 0)
    cpu.current = task
    alloc(cpu, 123, 2, 0x201DA, np.int64(4096), np.int32(-3))
    lock(cpu, True, 0b101, seq=41)
    free(cpu, 2 ** 62, -(2 ** 62), pid=9)
    free(cpu, 5, pid=np.int32(77), seq=np.int64(3))
    cpu.current = np.int64(task)
    free(cpu, 1)
    return int(m.task_pid[task])


@pytest.mark.parametrize("kind", ["python", "compiled"])
def test_records_carry_every_field(kind):
    m, cpu = make_machine()
    pid = _script(m, cpu, kind, 1)
    recs = drain_ring(m, 1)
    assert recs["event"].tolist() == [tp.EVENT_ID[e] for e in ("mm_page_free", "mm_page_free", "mm_page_alloc",
                                                              "oom_lock_try", "mm_page_free", "mm_page_free",
                                                              "mm_page_free")]
    assert recs["pid"].tolist() == [0, 0, pid, pid, 9, 77, pid]
    assert recs["seq"].tolist() == [0, 0, 0, 41, 0, 3, 0]
    assert recs["a"].tolist() == [[0] * 5, [7, 0, 0, 0, 0], [123, 2, 0x201DA, 4096, -3], [1, 5, 0, 0, 0],
                                  [2 ** 62, -(2 ** 62), 0, 0, 0], [5, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
    ts = recs["ts"]
    assert (np.diff(ts) >= 0).all() and ts[0] >= 0, "timestamps are monotonic and count from boot"
    assert m.ring_head[1, H_LOST] == 0 and m.ring_head[1, H_WRITTEN] == len(recs)


@compiled_only
def test_compiled_and_python_writers_agree():
    out = {}
    for kind, row in (("python", 0), ("compiled", 1)):
        m, cpu = make_machine()
        _script(m, cpu, kind, row)
        out[kind] = drain_ring(m, row)
    a, b = out["python"], out["compiled"]
    for field in ("seq", "event", "pid", "a"):
        assert a[field].tolist() == b[field].tolist(), field


@pytest.mark.parametrize("kind", ["python", "compiled"])
def test_overflow_is_counted_never_silent(kind):
    m, cpu = make_machine()                      # 64-record rings
    cpu.trace = RingWriter(m, 0)
    cpu.current = -1
    emit = _emitters(kind, tp.EVENT_ID["mm_page_free"])
    for pfn in range(100):
        emit(cpu, pfn, 0)
    assert m.ring_head[0, H_WRITTEN] == 64 and m.ring_head[0, H_LOST] == 36
    assert drain_ring(m, 0)["a"][:, 0].tolist() == list(range(64)), "the oldest records are kept, in order"
    for pfn in range(100, 110):                  # room again once the consumer has moved on
        emit(cpu, pfn, 0)
    recs = drain_ring(m, 0)
    assert recs["a"][:, 0].tolist() == list(range(100, 110))
    assert m.ring_head[0, H_WRITTEN] == m.ring_head[0, H_DRAINED] == 74 and m.ring_head[0, H_LOST] == 36


@pytest.mark.parametrize("kind", ["python", "compiled"])
def test_wraps_around_the_ring(kind):
    m, cpu = make_machine()
    cpu.trace = RingWriter(m, 0)
    cpu.current = -1
    emit = _emitters(kind, tp.EVENT_ID["mm_page_free"])
    seen = []
    for chunk in range(5):                       # 5 x 40 records through a 64-record ring
        for pfn in range(chunk * 40, chunk * 40 + 40):
            emit(cpu, pfn, 0)
        seen += drain_ring(m, 0)["a"][:, 0].tolist()
    assert seen == list(range(200)) and m.ring_head[0, H_LOST] == 0


@pytest.mark.parametrize("kind", ["python", "compiled"])
def test_tracing_off_writes_nothing(kind):
    m, cpu = make_machine()
    cpu.trace = RingWriter(m, 0)
    emit = _emitters(kind, tp.EVENT_ID["mm_page_free"])
    cpu.trace = None
    emit(cpu, 1, 0)
    assert m.ring_head[0, H_WRITTEN] == 0


@pytest.mark.parametrize("kind", ["python", "compiled"])
@pytest.mark.parametrize("bad", [1.5, "7", None])
def test_bad_arguments_are_refused(kind, bad):
    m, cpu = make_machine()
    cpu.trace = RingWriter(m, 0)
    cpu.current = -1
    emit = _emitters(kind, tp.EVENT_ID["mm_page_free"])
    with pytest.raises(Exception) as err:
        emit(cpu, bad, 0)
    assert err.type in (TypeError, struct.error)
    assert m.ring_head[0, H_WRITTEN] == 0, "a refused event writes nothing"


@compiled_only
def test_compiled_emitter_signature_errors():
    m, cpu = make_machine()
    cpu.trace = RingWriter(m, 0)
    emit = tp.trace_mm_page_free
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        emit(cpu, 1, bogus=2)
    with pytest.raises(TypeError, match="positional"):
        emit(cpu, 1, 2, 3, 4, 5, 6)
    with pytest.raises(TypeError, match="positional"):
        emit()
    assert emit.__name__ == "trace_mm_page_free" and "pfn" in emit.__doc__
    cpu.trace = object()
    with pytest.raises(TypeError, match="compiled ring writer"):
        emit(cpu, 1)


def test_compiled_writer_is_built_where_a_compiler_is():
    """`pip install .` builds the writer wherever a C compiler and the Python headers are present."""
    headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    if not (shutil.which("cc") or shutil.which("gcc")) or not headers:
        pytest.skip("no C compiler or Python headers: the Python writer is used")
    assert RingWriter.compiled, ("oomemu.trace._ring is missing although a C compiler is present: "
                                 "reinstall with `pip install .` (or `pip install -e .`)")


# --- the supervisor's batch encoding (trace.msgpack) -------------------------------------------------------------

def _records(columns):
    from oomemu.trace.ring import RECORD_DTYPE
    n = len(columns[0])
    recs = np.zeros(n, dtype=RECORD_DTYPE)
    recs["ts"], recs["seq"], recs["event"], recs["pid"] = columns[:4]
    for i in range(5):
        recs["a"][:, i] = columns[4 + i]
    return recs


EDGES = [0, 1, 127, 128, -1, -32, -33, -128, -129, 255, 256, 32767, 32768, -32768, -32769, 2 ** 31 - 1, 2 ** 31,
         -(2 ** 31), -(2 ** 31) - 1, 2 ** 63 - 1, -(2 ** 63)]


@pytest.mark.parametrize("seed", range(6))
def test_pack_batch_reads_back_with_plain_msgpack(seed):
    """Every column width the encoder can pick (fixint, int8..int64, at each boundary) decodes with plain
    msgpack to exactly the records, as lists of ints."""
    import msgpack

    from oomemu.trace.ring import pack_batch
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    cols = []
    for _ in range(9):
        span = EDGES[int(rng.integers(len(EDGES)))]
        col = rng.integers(min(0, span), max(0, span), n, endpoint=True, dtype=np.int64)
        col[int(rng.integers(n))] = span              # the extreme itself appears
        cols.append(col)
    cols[2] = rng.integers(-(2 ** 31), 2 ** 31, n, dtype=np.int64)  # event and pid are int32 in the ring
    cols[3] = np.full(n, EDGES[seed] if abs(EDGES[seed]) < 2 ** 31 else 7)
    recs = _records(cols)
    expected = np.column_stack((recs["ts"], recs["seq"], recs["event"], recs["pid"], recs["a"])).tolist()
    assert msgpack.unpackb(pack_batch(5, recs)) == {"cpu": 5, "records": expected}


def test_pack_batch_of_nothing():
    import msgpack

    from oomemu.trace.ring import RECORD_DTYPE, pack_batch
    assert msgpack.unpackb(pack_batch(0, np.empty(0, dtype=RECORD_DTYPE))) == {"cpu": 0, "records": []}


# --- bulk records (trace_many) ------------------------------------------------------------------------------------

def _emit_many(kind, writer, *args, **kw):
    if kind == "compiled":
        if not RingWriter.compiled:
            pytest.skip("the compiled writer is not built here")
        return writer.emit_many(*args, **kw)
    args = list(args) + [0] * (7 - len(args))
    event, pid, *vals = args
    return writer._emit_many_py(event, pid, kw.get("seq", 0), tuple(
        np.ascontiguousarray(v, dtype=np.int64) if isinstance(v, np.ndarray) else int(v) for v in vals))


@pytest.mark.parametrize("kind", ["python", "compiled"])
def test_emit_many_broadcasts_scalars_and_wraps(kind):
    m, cpu = make_machine()                      # 64-record rings
    w = RingWriter(m, 1)
    pfns = np.arange(1000, 1040, dtype=np.int32)
    points = np.arange(40, dtype=np.int64) * -3
    for round_ in range(3):                      # 3 x 40 records through a 64-record ring
        _emit_many(kind, w, 20, 7 + round_, pfns, points, np.int64(5), 2 ** 40, seq=9)
        recs = drain_ring(m, 1)
        assert recs["event"].tolist() == [20] * 40 and recs["pid"].tolist() == [7 + round_] * 40
        assert recs["seq"].tolist() == [9] * 40
        assert recs["a"].tolist() == [[1000 + i, -3 * i, 5, 2 ** 40, 0] for i in range(40)]
        assert len(set(recs["ts"].tolist())) == 1, "one timestamp for the batch"
    assert m.ring_head[1, H_WRITTEN] == 120 and m.ring_head[1, H_LOST] == 0


@pytest.mark.parametrize("kind", ["python", "compiled"])
def test_emit_many_counts_what_does_not_fit(kind):
    m, cpu = make_machine()
    w = RingWriter(m, 0)
    _emit_many(kind, w, 1, 3, np.arange(50))
    _emit_many(kind, w, 1, 3, np.arange(50, 100))
    assert m.ring_head[0, H_WRITTEN] == 64 and m.ring_head[0, H_LOST] == 36
    assert drain_ring(m, 0)["a"][:, 0].tolist() == list(range(64))
    _emit_many(kind, w, 1, 3, np.arange(0))      # nothing to write
    assert m.ring_head[0, H_WRITTEN] == 64


@compiled_only
def test_compiled_emit_many_refuses_bad_arrays():
    m, cpu = make_machine()
    w = RingWriter(m, 0)
    with pytest.raises(TypeError, match="int64 array"):
        w._emit_many(1, 3, 0, 10, (np.arange(5, dtype=np.int64), 0, 0, 0, 0))    # shorter than count
    with pytest.raises(TypeError, match="int64 array"):
        w._emit_many(1, 3, 0, 2, (np.arange(2, dtype=np.float64), 0, 0, 0, 0))
    with pytest.raises(TypeError, match="int64 array"):
        w._emit_many(1, 3, 0, 2, (np.arange(2, dtype=">i8"), 0, 0, 0, 0))     # not in the machine's byte order
    with pytest.raises(ValueError):
        w._emit_many(1, 3, 0, 2, (0, 0, 0))
    assert m.ring_head[0, H_WRITTEN] == 0
