"""The process of one emulated CPU: attach to the inherited machine and run its scheduler."""
from workers._common import run_worker


def main(machine, scenario, row, printk_fd):
    """Entry point of CPU `row` (forked by the supervisor; never returns)."""
    def body():
        from oomemu import workload
        from oomemu.kernel.sched import Scheduler
        from oomemu.percpu import CpuContext
        from oomemu.trace.ring import RingWriter
        tracer = RingWriter(machine, row) if scenario.run.trace else None
        cpu = CpuContext(machine, row, scenario, tracer=tracer, printk_fd=printk_fd)
        if machine.controlled:
            from oomemu.control import Controller
            cpu.ctl = Controller(cpu)
        cpu.sched = Scheduler(cpu, workload.task_main)
        cpu.sched.run()
    run_worker(f"cpu{row}", body)
