"""The process of one node's kswapd: attach to the inherited machine and run the kswapd loop."""
from workers._common import run_worker


def main(machine, scenario, row, printk_fd):
    """Entry point of the kswapd of node row - nr_cpus (forked by the supervisor; never returns)."""
    def body():
        import time

        from oomemu.machine import C_PID, G_GO, G_STOP
        from oomemu.mm import vmscan
        from oomemu.percpu import CpuContext
        from oomemu.trace.ring import RingWriter
        tracer = RingWriter(machine, row) if scenario.run.trace else None
        cpu = CpuContext(machine, row, scenario, tracer=tracer, printk_fd=printk_fd)
        cpu.current = 2 + cpu.nid  # kswapd's task row (after init and kthreadd)
        machine.cpu[row, C_PID] = cpu.os_pid
        while not machine.glob[G_GO] and not machine.glob[G_STOP]:
            time.sleep(0.002)
        if machine.controlled:
            from oomemu.control import Controller
            cpu.ctl = Controller(cpu)
            cpu.ctl.enter()
        vmscan.kswapd(cpu)
    run_worker(f"kswapd{row - machine.nr_cpus}", body)
