"""oomemu: a multi-process, genuinely concurrent emulator of the Linux kernel's out-of-memory path.

The public API (see README, "Python API"): `Scenario.load(path)` and `.replace(key_path, value)`,
`run(scenario) -> Report`, `sweep(sweep_file_or_dict, jobs=N, engine="local" | "ray")`, `load_sweep(path)`,
and `ScenarioError` for bad input. Names are imported on first use, so `import oomemu` stays light.
"""

__all__ = ["Check", "Kill", "Report", "Scenario", "ScenarioError", "TaskOutcome", "load_sweep", "run", "sweep"]


def __getattr__(name):
    if name == "ScenarioError":
        from oomemu.errors import ScenarioError
        return ScenarioError
    if name in __all__:
        from oomemu import api
        return getattr(api, name)
    raise AttributeError(f"module 'oomemu' has no attribute {name!r}")
