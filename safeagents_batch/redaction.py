"""Which env names are secret, and how their values are shown: never, anywhere we write."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

from safeagents_batch.model import DEFAULT_SECRET_PATTERNS

REDACTED = "<redacted>"


def is_secret_name(name: str, patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS) -> bool:
    """Case-insensitive glob match: OPENAI_API_KEY matches *KEY*."""
    return any(fnmatch.fnmatchcase(name.upper(), p.upper()) for p in patterns)


def redact_env(literal: Mapping[str, str], hidden_names: Iterable[str],
               patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS) -> dict[str, str]:
    """Env for reports: literal values unless secret-looking; `hidden_names` always redacted."""
    patterns = tuple(patterns)
    shown = {k: (REDACTED if is_secret_name(k, patterns) else v) for k, v in literal.items()}
    shown.update(dict.fromkeys(hidden_names, REDACTED))
    return dict(sorted(shown.items()))
