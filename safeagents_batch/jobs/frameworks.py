"""Framework name -> pip packages. The table is data (data/frameworks.json), not code."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _table() -> dict[str, Any]:
    text = (
        resources.files("safeagents_batch.jobs").joinpath("data/frameworks.json").read_text("utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def builtin_frameworks() -> tuple[str, ...]:
    """Names of the frameworks that need no definition in the jobs file, in table order."""
    return tuple(_table()["frameworks"])


def common_packages() -> tuple[str, ...]:
    """Packages every built-in framework image gets (the OpenAI client, dotenv)."""
    return tuple(_table()["common"])


def framework_packages(name: str) -> tuple[str, ...]:
    """The built-in pip requirements of `name`; KeyError for an unknown framework."""
    return common_packages() + tuple(_table()["frameworks"][name])
