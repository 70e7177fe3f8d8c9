"""Scenario values in and out: sizes and page counts parsed from TOML, and values printed back in one line.

A size is bytes as an integer, or a string "<number><unit>" with a 1024-based unit (B, K/KiB/KB, M/MiB/MB,
G/GiB/GB, any case, optional space): "64MiB", "1.5 G", "0". Every parse error is a ScenarioError naming the
key path it came from.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from oomemu.errors import ScenarioError

PAGE_SIZE = 4096
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# "KB" means KiB here, as in the kernel's own messages ("kB"): scenario sizes are memory, never disk.
_UNITS = MappingProxyType({
    "": 1, "b": 1,
    "k": KiB, "kb": KiB, "kib": KiB,
    "m": MiB, "mb": MiB, "mib": MiB,
    "g": GiB, "gb": GiB, "gib": GiB,
})
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_VALUE_WIDTH = 60  # longest rendering of a value in an error message, so the message stays one readable line

SIZE_ALLOWED = ('a size: bytes as an integer >= 0, or a string like "64MiB" '
                '(units B, K/KiB/KB, M/MiB/MB, G/GiB/GB; 1024-based)')
PAGES_ALLOWED = 'a page count (an integer >= 0) or a size string like "64MiB" (a multiple of 4KiB)'


def is_int(value: Any) -> bool:
    """True for a Python int that is not a bool (TOML `true` must never pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def invalid(path: str, value: Any, reason: str) -> ScenarioError:
    """The error for a bad value: `PATH = VALUE: REASON`, one line."""
    return ScenarioError(f"{path} = {format_value(value)}: {reason}", path=path)


def _size_of_string(text: str) -> Fraction | None:
    """Bytes denoted by a size string (possibly fractional), or None if it is not a size."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None or match.group(2).lower() not in _UNITS:
        return None
    return Fraction(match.group(1)) * _UNITS[match.group(2).lower()]


def is_size(text: str) -> bool:
    """True if `text` is a well-formed size string (whole bytes or not)."""
    return _size_of_string(text) is not None


def parse_size(value: Any, path: str) -> int:
    """Bytes for a size value (an int is bytes; a string carries a unit). Raises ScenarioError naming `path`."""
    if is_int(value) and value >= 0:
        return value
    if isinstance(value, str):
        amount = _size_of_string(value)
        if amount is not None:
            if amount.denominator != 1:
                raise invalid(path, value, "must be a whole number of bytes")
            return int(amount)
    raise invalid(path, value, "must be " + SIZE_ALLOWED)


def parse_pages(value: Any, path: str) -> int:
    """Pages for a page-count value (an int is a page count; a string is a size, a multiple of PAGE_SIZE)."""
    if is_int(value) and value >= 0:
        return value
    if isinstance(value, str):
        amount = _size_of_string(value)
        if amount is not None:
            if amount % PAGE_SIZE:
                raise invalid(path, value, "must be a multiple of 4KiB (one page)")
            return int(amount) // PAGE_SIZE
    raise invalid(path, value, "must be " + PAGES_ALLOWED)


def format_size(nbytes: int) -> str:
    """The shortest exact size string for `nbytes`: 16777216 → "16MiB", 4096 → "4KiB", 0 → "0"."""
    if nbytes == 0:
        return "0"
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if nbytes % unit == 0:
            return f"{nbytes // unit}{name}"
    return f"{nbytes}B"


def format_value(value: Any) -> str:
    """A value as it would be written in TOML, cut to one short line for error messages."""
    text = _toml_repr(value)
    if len(text) > _VALUE_WIDTH:
        return text[:_VALUE_WIDTH - 3] + "..."
    return text


def _toml_repr(value: Any) -> str:
    """TOML spelling of a parsed value (inline tables and arrays included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes; ensure_ascii keeps exotic line
        # separators (U+2028) from breaking the one-line message.
        return json.dumps(value)
    if isinstance(value, float):
        return _float_repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{format_key(k)} = {_toml_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_repr(v) for v in value) + "]"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return repr(value)


def _float_repr(value: float) -> str:
    """TOML spelling of a float: inf and nan without Python's capitalisation."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def format_key(key: Any) -> str:
    """A table key, quoted unless it is a TOML bare key."""
    text = str(key)
    return text if _BARE_KEY_RE.fullmatch(text) else json.dumps(text)
