"""`record_env`: the variables of a job whose values are written down (manifest, results,
report) although they come from the host or an env file, such as the model deployment a run
was given. Never a secret-looking name: those stay unwritten, whatever a job asks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from safeagents_batch.jobs.secrets import is_secret_name

SECRET_RECORD = (
    "a secret-looking name cannot be recorded: record_env writes values to the manifest, the "
    "results and the report (adjust secret_patterns if it is no secret)"
)


def record_env_problems(values: dict[str, Any], patterns: Iterable[str]) -> list[tuple[int, str]]:
    """A job's `record_env` against its other keys, as (index in the list, message).
    A name the job's env file may hold is known only when the file is read, at run time."""
    patterns = tuple(patterns)
    given = {*values["env"], *values["env_passthrough"], *(name for name, _ in values["matrix"])}
    problems: list[tuple[int, str]] = []
    for index, name in enumerate(values["record_env"]):
        if is_secret_name(name, patterns):
            problems.append((index, SECRET_RECORD))
        elif name not in given and values["env_file"] is None:
            message = f"'{name}' is none of the job's variables (env, matrix, env_passthrough)"
            problems.append((index, message))
    return problems
