"""The one name sanitizer: text from users or scripts made safe as a file, tag or container name."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")


def safe_name(
    text: str, limit: int | None = None, fallback: str = "_", replacement: str = "_"
) -> str:
    """Runs of unsafe characters become `replacement`, dot runs collapse (no `..`), no leading
    or trailing `.`, `_` or `replacement`; at most `limit` characters."""
    cleaned = _DOTS.sub(".", _UNSAFE.sub(replacement, text)).strip("._" + replacement)
    return cleaned[:limit] or fallback
