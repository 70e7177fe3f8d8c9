"""The process of the oom_reaper kthread (profiles with the 4.6 oom_reaper): attach to the inherited machine and
run its loop (oomemu.mm.oom_kill.oom_reaper)."""
from workers._common import run_worker, start_kthread


def main(machine, scenario, row, printk_fd):
    """Entry point of the oom_reaper row (forked by the supervisor after the kswapd rows; never returns)."""
    def body():
        from oomemu.mm import oom_kill
        cpu = start_kthread(machine, scenario, row, printk_fd, machine.oom_reaper_task)
        oom_kill.oom_reaper(cpu)
    run_worker("oom_reaper", body)
