"""Text from elsewhere (a script, a node, a batch dir received from someone, a jobs file) as
one line a terminal or a report shows as text: every control character, the escape that
starts a terminal sequence included, written as Python escapes it; long text cut."""

from __future__ import annotations


def printable(text: str, limit: int | None = None) -> str:
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is None or len(shown) <= limit:
        return shown
    return shown[: max(0, limit - 3)] + "..."
