"""The one name sanitizer: text from users or scripts made safe as a file, tag or container name."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")


def safe_name(text: str, limit: int | None = None, fallback: str = "_") -> str:
    """Unsafe characters become `_`, dot runs collapse (no `..`), no leading or trailing `.`/`_`;
    at most `limit` characters."""
    return _DOTS.sub(".", _UNSAFE.sub("_", text)).strip("._")[:limit] or fallback
