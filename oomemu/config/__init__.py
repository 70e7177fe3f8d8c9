"""Scenario configuration: the TOML schema, its units, and the loader that validates a whole file.

Importing this package is cheap (standard library only, no numpy): the CLI reads and checks a scenario
before anything heavy is imported.
"""

from oomemu.config.load import DEFAULT_SCENARIO_PATH, load_scenario, load_scenario_text
from oomemu.config.schema import Scenario, scenario_to_dict
from oomemu.config.units import parse_size
from oomemu.errors import ScenarioError

__all__ = [
    "DEFAULT_SCENARIO_PATH",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "load_scenario_text",
    "parse_size",
    "scenario_to_dict",
]
