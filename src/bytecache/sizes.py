"""Byte sizes as operators write them: ``512MiB``, ``2GB``, ``1.5 GiB``, ``800kB``, ``4096``."""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["parse_size", "format_size"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000, "kb": 1000,
    "m": 1000**2, "mb": 1000**2,
    "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024,
    "mi": 1024**2, "mib": 1024**2,
    "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}

_SIZE = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[a-z]*)\s*$", re.IGNORECASE)


def parse_size(value: int | str, *, name: str = "maxsize", allow_zero: bool = False) -> int:
    """Return ``value`` as a whole number of bytes.

    Accepts a positive ``int`` or a string of a number and an optional unit (SI: kB, MB, GB, TB;
    binary: KiB, MiB, GiB, TiB; case-insensitive). ``name`` is the setting reported in errors.
    ``allow_zero`` lets callers that give 0 a meaning (such as "no cap") pass it through.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a size in bytes, not a bool: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be a whole number of bytes, got {value!r}")
        number = int(value)
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(
                f"{name} must be a size such as '512MiB', '2GB' or '4096', got {value!r}"
            )
        unit = match["unit"].lower()
        if unit not in _UNITS:
            raise ValueError(f"{name} has an unknown unit {match['unit']!r} in {value!r}")
        # Scaled exactly so '1.5 GiB' is 1610612736, not a float rounding of it.
        exact = Fraction(match["number"]) * _UNITS[unit]
        if exact.denominator != 1:
            raise ValueError(f"{name} must be a whole number of bytes, got {value!r}")
        number = int(exact)
    else:
        raise TypeError(f"{name} must be an int or a size string, got {type(value).__name__}: {value!r}")
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} bytes, got {value!r}")
    return number


def format_size(nbytes: int | float) -> str:
    """Render bytes with a binary unit, e.g. ``format_size(536870912) == '512.0 MiB'``."""
    if nbytes < 1024:
        return f"{int(nbytes)} B"
    value = float(nbytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
