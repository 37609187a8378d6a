"""Sizes as people read them, in one place: messages about code and artifact limits."""

from __future__ import annotations

import math


def format_size(size: int) -> str:
    """Bytes in binary units with one decimal: 512 B, 1.5 KiB, 5.0 GiB."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if round(value, 1) < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} PiB"


def format_number(value: float | None) -> str:
    """For people: three significant digits, thousands separators, never an exponent
    (1,410 not 1.41e+03; 0.62; 0.000123)."""
    if value is None:
        return ""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    rounded = float(f"{value:.3g}")
    decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
    text = f"{rounded:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
