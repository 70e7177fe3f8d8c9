"""The process of the oom_reaper kthread (profiles with the 4.6 oom_reaper): attach to the inherited machine and
run its loop (oomemu.mm.oom_kill.oom_reaper)."""
from workers._common import run_worker


def main(machine, scenario, row, printk_fd):
    """Entry point of the oom_reaper row (forked by the supervisor after the kswapd rows; never returns)."""
    def body():
        import time

        from oomemu.machine import C_PID, G_GO, G_STOP
        from oomemu.mm import oom_kill
        from oomemu.percpu import CpuContext
        from oomemu.trace.ring import RingWriter
        tracer = RingWriter(machine, row) if scenario.run.trace else None
        cpu = CpuContext(machine, row, scenario, tracer=tracer, printk_fd=printk_fd)
        cpu.current = machine.oom_reaper_task  # the oom_reaper kthread's task row
        machine.cpu[row, C_PID] = cpu.os_pid
        while not machine.glob[G_GO] and not machine.glob[G_STOP]:
            time.sleep(0.002)
        if machine.controlled:
            from oomemu.control import Controller
            cpu.ctl = Controller(cpu)
            cpu.ctl.enter()
        oom_kill.oom_reaper(cpu)
    run_worker("oom_reaper", body)
