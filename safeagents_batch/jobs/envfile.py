"""Env files (`env_file:`), read with python-dotenv's parser: KEY=VALUE, `export`, quotes,
escapes, comments, as docker compose and the original's .env understand them. No `${VAR}`
expansion: a value is what the file says."""

from __future__ import annotations

import io
from pathlib import Path

from dotenv.parser import parse_stream

from safeagents_batch.core.errors import UsageError


def read_dotenv(path: Path) -> dict[str, str]:
    """Values are returned, never printed; a bad line is named by number, not by content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read env file: {exc}") from None
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error or (binding.key is not None and binding.value is None):
            raise UsageError(f"{path}:{binding.original.line}: not a KEY=VALUE line")
        if binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    return values
