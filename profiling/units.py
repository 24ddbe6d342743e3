"""Byte units for every profiling figure: sizes are computed in MiB (2**20 bytes) and printed as MiB."""

from __future__ import annotations

import math

MiB = 1024 * 1024


def mib(nbytes: float | None, fmt: str = "{:.1f}") -> str:
    """``nbytes`` as a MiB figure (no unit), ``n/a`` for a missing value."""
    if nbytes is None or (isinstance(nbytes, float) and math.isnan(nbytes)):
        return "n/a"
    return fmt.format(nbytes / MiB)
