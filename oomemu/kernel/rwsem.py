"""mmap_sem: a fair, sleeping reader/writer semaphore shared across CPUs.

Follows kernel/locking/rwsem-spinlock.c of Linux 3.14 (__down_read, __down_write, __rwsem_do_wake): a new
reader queues behind any waiter, waiters sleep in TASK_UNINTERRUPTIBLE (SIGKILL does not wake them, KERNEL
§5.2), and a release hands the semaphore to the head of the queue (a writer, or every reader up to the next
writer). The semaphore's state lives in the mm row; its wait_lock is the mm's lock stripe.
"""
from oomemu import sync
from oomemu.include.sched import TASK_NORMAL, TASK_RUNNING, TASK_UNINTERRUPTIBLE
from oomemu.kernel import sched as ksched
from oomemu.machine import MM_NCOLS, MM_SEM_READERS, MM_SEM_WRITER
from oomemu.trace import events as tp
from oomemu.trace.events import WAIT_MMAP_SEM_READ, WAIT_MMAP_SEM_WRITE, WAIT_NONE


async def down_read(cpu, mm):
    """Take mm's mmap_sem for read, sleeping uninterruptibly behind a writer or queued waiters.

    Follows: kernel/locking/rwsem-spinlock.c __down_read(), 3.14.
    """
    await _down(cpu, mm, WAIT_MMAP_SEM_READ)


async def down_write(cpu, mm):
    """Take mm's mmap_sem for write, sleeping uninterruptibly until every holder has left.

    Follows: kernel/locking/rwsem-spinlock.c __down_write(), 3.14.
    """
    await _down(cpu, mm, WAIT_MMAP_SEM_WRITE)


async def _down(cpu, mm, kind):
    m = cpu.m
    cur = cpu.current
    lk = m.mm_lock_index(mm)
    base = mm * MM_NCOLS
    vmm = m.v_mm
    sync.spin_lock(cpu, lk)
    free = vmm[base + MM_SEM_WRITER] == -1 and sync.wq_peek(m, m.wq_mmap_sem(mm)) == -1
    if kind == WAIT_MMAP_SEM_READ and free:
        vmm[base + MM_SEM_READERS] += 1
        sync.spin_unlock(cpu, lk)
        return
    if kind == WAIT_MMAP_SEM_WRITE and free and vmm[base + MM_SEM_READERS] == 0:
        vmm[base + MM_SEM_WRITER] = cur
        sync.spin_unlock(cpu, lk)
        return
    m.v_task_wait_kind[cur] = kind
    m.v_task_wait_obj[cur] = mm
    sync.wq_add_tail(cpu, m.wq_mmap_sem(mm), cur)
    sync.spin_unlock(cpu, lk)
    tp.trace_sleep(cpu, TASK_UNINTERRUPTIBLE, kind, mm)
    while True:
        ksched.set_current_state(cpu, TASK_UNINTERRUPTIBLE)
        if m.v_task_wait_kind[cur] == WAIT_NONE:
            break  # __rwsem_do_wake granted it to us
        await ksched.schedule(cpu)
    ksched.__set_current_state(cpu, TASK_RUNNING)


def down_read_trylock(cpu, mm):
    """Take mm's mmap_sem for read only if that needs no wait (no writer, nobody queued); True if taken.

    Follows: kernel/locking/rwsem-spinlock.c __down_read_trylock(), 3.14 (the oom_reaper's, 4.6).
    """
    m = cpu.m
    lk = m.mm_lock_index(mm)
    base = mm * MM_NCOLS
    with sync.spinlock(cpu, lk):
        if m.v_mm[base + MM_SEM_WRITER] != -1 or sync.wq_peek(m, m.wq_mmap_sem(mm)) != -1:
            return False
        m.v_mm[base + MM_SEM_READERS] += 1
        return True


def up_read(cpu, mm):
    """Release a read hold; the last reader wakes a queued writer.

    Follows: kernel/locking/rwsem-spinlock.c __up_read(), 3.14.
    """
    m = cpu.m
    lk = m.mm_lock_index(mm)
    sync.spin_lock(cpu, lk)
    m.v_mm[mm * MM_NCOLS + MM_SEM_READERS] -= 1
    if m.v_mm[mm * MM_NCOLS + MM_SEM_READERS] == 0:
        _rwsem_do_wake(cpu, mm)
    sync.spin_unlock(cpu, lk)


def up_write(cpu, mm):
    """Release the write hold and wake the head of the queue.

    Follows: kernel/locking/rwsem-spinlock.c __up_write(), 3.14.
    """
    m = cpu.m
    lk = m.mm_lock_index(mm)
    sync.spin_lock(cpu, lk)
    m.v_mm[mm * MM_NCOLS + MM_SEM_WRITER] = -1
    _rwsem_do_wake(cpu, mm)
    sync.spin_unlock(cpu, lk)


def _rwsem_do_wake(cpu, mm):
    """Hand the semaphore to the queue's head: one writer, or all readers up to the next writer (wait_lock held)."""
    m = cpu.m
    wq = m.wq_mmap_sem(mm)
    base = mm * MM_NCOLS
    head = sync.wq_peek(m, wq)
    if head == -1:
        return
    if m.v_task_wait_kind[head] == WAIT_MMAP_SEM_WRITE:
        if m.v_mm[base + MM_SEM_READERS] == 0 and m.v_mm[base + MM_SEM_WRITER] == -1:
            sync.wq_pop_head(cpu, wq)
            m.v_mm[base + MM_SEM_WRITER] = head
            _grant(cpu, head)
        return
    while head != -1 and m.v_task_wait_kind[head] == WAIT_MMAP_SEM_READ:
        sync.wq_pop_head(cpu, wq)
        m.v_mm[base + MM_SEM_READERS] += 1
        _grant(cpu, head)
        head = sync.wq_peek(m, wq)


def _grant(cpu, t):
    m = cpu.m
    m.v_task_wait_kind[t] = WAIT_NONE
    m.v_task_wait_obj[t] = -1
    old_state = sync.try_to_wake_up(cpu, t, TASK_NORMAL)
    tp.trace_wakeup(cpu, m.v_task_pid[t], old_state, tp.WAKE_LOCK)


def rwsem_is_contended(m, mm):
    """True if a task waits for mm's mmap_sem. Follows: include/linux/rwsem.h rwsem_is_contended() (a plain read
    of the wait list, no lock)."""
    return sync.wq_peek(m, m.wq_mmap_sem(mm)) != -1


def mmap_sem_holders(m, mm):
    """(writer row or -1, number of readers) of mm's mmap_sem, in a machine or a saved state: for wait chains.

    Emulator-only.
    """
    return int(m.mm[mm, MM_SEM_WRITER]), int(m.mm[mm, MM_SEM_READERS])
