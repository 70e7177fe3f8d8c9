"""The process of one node's kswapd: attach to the inherited machine and run the kswapd loop."""
from workers._common import run_worker, start_kthread


def main(machine, scenario, row, printk_fd):
    """Entry point of the kswapd of node row - nr_cpus (forked by the supervisor; never returns)."""
    def body():
        from oomemu.mm import vmscan
        nid = row - machine.nr_cpus
        cpu = start_kthread(machine, scenario, row, printk_fd, 2 + nid)  # kswapd's task row (after init, kthreadd)
        vmscan.kswapd(cpu)
    run_worker(f"kswapd{row - machine.nr_cpus}", body)
