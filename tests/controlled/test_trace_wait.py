"""In a controlled mode a full trace ring waits for the supervisor's drain instead of dropping records, so the
trace of one schedule is the same however fast the host drains it; the timestamps are the virtual clock."""
import os
import threading
import time

import pytest
from machine_helpers import make_machine

from oomemu.control import CT_VNOW
from oomemu.trace import events as tp
from oomemu.trace.ring import H_LOST, RingWriter, drain_ring


@pytest.mark.parametrize("kind", ["python", "compiled"])
def test_a_full_ring_waits_for_the_drain_in_a_controlled_mode(kind):
    if kind == "compiled" and not RingWriter.compiled:
        pytest.skip("the compiled writer is not built here")
    m, cpu = make_machine('[run]\nschedule = "pct"\n')   # 64-record rings
    assert m.controlled
    m.ctl[CT_VNOW] = 12345
    cpu.trace = RingWriter(m, 0)
    cpu.current = -1
    emit = tp._python_emitter(tp.EVENT_ID["mm_page_free"], "trace_mm_page_free", "") if kind == "python" \
        else tp.trace_mm_page_free
    got = []
    done = threading.Event()

    def slow_drain():      # the supervisor, far slower than the writer
        while not done.is_set() or len(got) < 200:
            time.sleep(0.01)
            got.extend(drain_ring(m, 0)["a"][:, 0].tolist())
            if len(got) >= 200:
                break

    t = threading.Thread(target=slow_drain)
    t.start()
    for pfn in range(200):
        emit(cpu, pfn, 0)
    done.set()
    t.join(10)
    assert m.ring_head[0, H_LOST] == 0
    assert got == list(range(200))


def test_timestamps_are_the_virtual_clock():
    m, cpu = make_machine('[run]\nschedule = "random"\n')
    cpu.trace = RingWriter(m, 0)
    cpu.current = -1
    for vnow in (5000, 7000):
        m.ctl[CT_VNOW] = vnow
        tp.trace_mm_page_free(cpu, 1, 0)
    assert drain_ring(m, 0)["ts"].tolist() == [5000, 7000]
