"""vm.overcommit_memory: when mmap's accounting says ENOMEM (mm/mmap.c __vm_enough_memory, 3.14).

Worked out by hand on the unit machine (DMA 16 MiB = 4096 pages, Normal 48 MiB = 12288 pages, no swap, no
page cache), all 16384 pages free at boot:
- admin_reserve_kbytes = user_reserve_kbytes = min(65536 kB / 32, 8 MiB or 128 MiB) = 2048 kB = 512 pages;
- totalreserve_pages: DMA max(lowmem_reserve) 12288 / 256 = 48 plus its high watermark 96 = 144; Normal 0 + 288
  (KERNEL §6.5 for the watermarks): 432 pages;
- OVERCOMMIT_GUESS: a non-root request passes while 16384 - 432 - 512 = 15440 > pages; root: 15952 > pages;
- OVERCOMMIT_NEVER, ratio 50: CommitLimit 8192; non-root allowed = 8192 - 512 - min(total_vm / 32, 512); a
  request passes while Committed_AS (with the request) < allowed; overcommit_kbytes = 4096 makes it 1024.
"""
import pytest

from machine_helpers import add_process, make_machine
from oomemu.include.mmzone import NR_FREE_PAGES
from oomemu.machine import MM_ANONPAGES, MM_TOTAL_VM, Z_STAT
from oomemu.mm import mmap

ENOMEM = -12


def machine(sysctl):
    return make_machine(extra=f"[sysctl]\n{sysctl}\n")


def enough(m, cpu, row, pages):
    cpu.current = row
    return mmap.security_vm_enough_memory_mm(cpu, int(m.task_mm[row]), pages)


def test_the_unit_machines_reserves_are_the_ones_worked_out_by_hand():
    m, cpu = machine("overcommit_memory = 0")
    try:
        assert int(m.zone[:, Z_STAT + NR_FREE_PAGES].sum()) == 16384
        assert m.totalreserve_pages == 432
        assert m.admin_reserve_kbytes == 2048 and m.user_reserve_kbytes == 2048
        assert mmap.vm_commit_limit(m, cpu.scenario.sysctl) == 8192
    finally:
        m.close()


@pytest.mark.parametrize("uid,ok_up_to", [(1000, 15439), (0, 15951)])
def test_guess_mode_refuses_more_than_free_memory_less_the_reserves(uid, ok_up_to):
    m, cpu = machine("overcommit_memory = 0")
    try:
        row = add_process(m, cpu, "t", uid=uid)
        assert enough(m, cpu, row, ok_up_to) == 0
        assert enough(m, cpu, row, ok_up_to + 1) == ENOMEM
        assert int(m.mm_reserved[m.task_mm[row]]) == ok_up_to   # the refused request left nothing accounted
    finally:
        m.close()


def test_always_mode_never_refuses():
    m, cpu = machine("overcommit_memory = 1")
    try:
        row = add_process(m, cpu, "t")
        assert enough(m, cpu, row, 10 ** 9) == 0
    finally:
        m.close()


@pytest.mark.parametrize("sysctl,uid,limit", [
    ("overcommit_memory = 2", 1000, 8192 - 512),
    ("overcommit_memory = 2", 0, 8192),
    ("overcommit_memory = 2\novercommit_ratio = 100", 1000, 16384 - 512),
    ("overcommit_memory = 2\novercommit_kbytes = 4096", 1000, 1024 - 512),
])
def test_never_mode_keeps_committed_memory_below_the_commit_limit(sysctl, uid, limit):
    """Committed_AS including the request must stay below the limit: limit - 1 pages pass, limit do not."""
    m, cpu = machine(sysctl)
    try:
        row = add_process(m, cpu, "t", uid=uid)
        assert enough(m, cpu, row, limit) == ENOMEM
        assert enough(m, cpu, row, limit - 1) == 0
        assert enough(m, cpu, row, 1) == ENOMEM
    finally:
        m.close()


def test_never_mode_counts_every_live_mms_pages_and_the_big_process_reserve():
    """Another process's anonymous pages are committed too; and a process with total_vm 3200 pages keeps
    min(3200 / 32, 512) = 100 pages back from itself (the user reserve)."""
    m, cpu = machine("overcommit_memory = 2")
    try:
        other = add_process(m, cpu, "other", rss=1000)
        assert int(m.mm[m.task_mm[other], MM_ANONPAGES]) == 1000
        row = add_process(m, cpu, "t")
        assert enough(m, cpu, row, 7680 - 1000) == ENOMEM
        assert enough(m, cpu, row, 7680 - 1000 - 1) == 0
        m.mm_reserved[m.task_mm[row]] = 0
        m.mm[m.task_mm[row], MM_TOTAL_VM] = 3200
        m.mm[m.task_mm[row], MM_ANONPAGES] = 3200
        assert enough(m, cpu, row, 7680 - 100 - 1000 - 3200) == ENOMEM
        assert enough(m, cpu, row, 7680 - 100 - 1000 - 3200 - 1) == 0
    finally:
        m.close()
