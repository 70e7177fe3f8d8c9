"""Real kernels as the oracle: read a kernel OOM report (report.py), rebuild its machine as a scenario
(scenario.py), replay its victim selection under each kernel profile (explain.py), and check the emulator
against the host kernel itself in a child memory cgroup (host.py)."""
