"""Sizes as people read them, in one place: messages about code and artifact limits."""

from __future__ import annotations


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
