"""A small dotenv reader (KEY=VALUE, `export`, quotes, comments), like the original's .env."""

from __future__ import annotations

import re
from pathlib import Path

from safeagents_batch.errors import UsageError

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_dotenv(path: Path) -> dict[str, str]:
    """Values are returned, never printed; a bad line is named by number, not by content."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read env file: {exc}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise UsageError(f"{path}:{number}: not a KEY=VALUE line")
        values[match.group(1)] = _unquote(match.group(2))
    return values


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        inner = raw[1:-1]
        return inner.replace("\\n", "\n").replace('\\"', '"') if raw[0] == '"' else inner
    return re.sub(r"\s+#.*$", "", raw)  # an unquoted value ends at an inline comment
