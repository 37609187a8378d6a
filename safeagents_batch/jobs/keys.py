"""The keys of a job (and of `defaults:`): each one's rule and default, in `JOB_KEYS`.

The schema has checked types and forms; a rule checks what it cannot see (files exist, globs
match, frameworks are known, sizes written with a unit) and makes the `Job` field's value.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from safeagents_batch.jobs.check import Checker, Key, as_is, as_tuple, is_file
from safeagents_batch.jobs.model import (
    DEFAULT_ARTIFACT_FILES,
    DEFAULT_ARTIFACT_LIMIT,
    DEFAULT_CODE_LIMIT,
    DEFAULT_RETRY_ON,
    DEFAULT_TIMEOUT,
    Hardening,
    Job,
    Resources,
)
from safeagents_batch.jobs.models import model_key_problems
from safeagents_batch.jobs.placement import NO_SLURM, slurm_settings
from safeagents_batch.jobs.recorded import record_env_problems
from safeagents_batch.jobs.runtimes import runtime_problems
from safeagents_batch.jobs.secrets import is_secret_name
from safeagents_batch.jobs.yamlmarks import KeyPath

_GLOB_MAGIC = re.compile(r"[*?[]")
MAX_GLOB_WILDCARDS = 32
MAX_GLOB_MATCHES = 100_000
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY = 4 * 1024**2  # the schema's minimum for a byte count; Docker refuses much less
MIN_SIZE_LIMIT = 1024  # the schema's minimum for max_code_size and max_artifacts_size
MAX_BYTE_COUNT = 1024**5  # the schema's maximum for sizes: 1 PiB, far past any machine's
LITERAL_SECRET = (
    "literal value under a secret-looking name is committed "
    "with this file; use env_passthrough or env_file instead"
)


@dataclass(frozen=True)
class FileScope:
    """What every job of one file is checked against."""

    defaults: dict[str, Any]  # the keys of `defaults:` the schema passed
    written_defaults: frozenset[str]  # every key written under `defaults:`, faulty ones too
    known: frozenset[str]  # framework names: built in, or defined under `frameworks:`
    patterns: tuple[str, ...]  # secret_patterns
    pools: frozenset[str] = frozenset()  # names under `pools:`
    models: frozenset[str] = frozenset()  # names under `models:`


@dataclass(frozen=True)
class JobScope:
    """One job as its keys' rules see it."""

    checker: Checker
    file: FileScope
    index: int
    own: dict[str, Any]  # the job's own keys the schema passed

    def path(self, *keys: str) -> KeyPath:
        """Where a merged value is written: in the job if it has it, else under defaults."""
        node: Any = self.own
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return ("defaults", *keys)
            node = node[key]
        return ("jobs", self.index, *keys)


def job_record(checker: Checker, scope: FileScope, index: int, raw: dict[str, Any]) -> Job | None:
    """Checks every key the schema passed; a record only when the whole job is sound."""
    job = JobScope(checker, scope, index, checker.clean_part(raw, ("jobs", index)))
    merged = _merged(scope.defaults, job.own)
    written = set(raw) | scope.written_defaults
    problems_before = len(checker.problems)
    values = {key.name: _value(job, key, merged, written) for key in JOB_KEYS}
    for keys, message in [*model_key_problems(values), *runtime_problems(values)]:
        job.checker.add(job.path(*keys), message)
    for index, message in record_env_problems(values, job.file.patterns):
        job.checker.add((*job.path("record_env"), index), message)
    sound = (
        len(checker.problems) == problems_before
        and checker.is_clean(("jobs", index))
        and checker.is_clean(("defaults",))
    )
    if not sound:
        return None
    where = checker.location(checker.doc.position(("jobs", index)))
    return Job(name=raw["name"], location=where, index=index, **values)


def _merged(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A job's own value wins over the default; env maps merge (so `env` is always there)."""
    return {**defaults, **own, "env": {**defaults.get("env", {}), **own.get("env", {})}}


def _value(job: JobScope, key: Key[JobScope], merged: dict[str, Any], written: set[str]) -> Any:
    if key.name in merged:
        return key.rule(job, job.path(key.name), merged[key.name])
    # A key written with a fault is not missing: the schema has reported the fault.
    if key.missing and key.name not in written:
        job.checker.add(("jobs", job.index), key.missing)
    return key.default


def check_unique_names(checker: Checker, raw_jobs: list[Any]) -> None:
    """`name`: the schema requires it and checks its form; no two jobs may share one."""
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_jobs):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            checker.add(
                ("jobs", i, "name"), f"duplicate job name '{name}' (first at jobs[{seen[name]}])"
            )
        else:
            seen[name] = i


# -- framework ---------------------------------------------------------------------------------


def _framework(job: JobScope, path: KeyPath, name: str) -> str | None:
    known = sorted(job.file.known)
    if name in job.file.known:
        return name
    hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    extra = f" (did you mean '{hint[0]}'?)" if hint else ""
    job.checker.add(
        path,
        f"unknown framework '{name}'{extra}; known: {', '.join(known)}"
        "; define others under `frameworks:`",
    )
    return None


# -- scripts -----------------------------------------------------------------------------------


def _scripts(job: JobScope, path: KeyPath, value: str | list[str]) -> tuple[Path, ...]:
    patterns = [value] if isinstance(value, str) else value  # one path or glob, or a list
    items = [(path if isinstance(value, str) else (*path, j), p) for j, p in enumerate(patterns)]
    found: dict[Path, None] = {}  # ordered set: overlapping globs do not duplicate a script
    for item_path, pattern in items:
        found.update(dict.fromkeys(_script_paths(job.checker, item_path, pattern)))
    return tuple(found)


def _script_paths(checker: Checker, path: KeyPath, pattern: str) -> list[Path]:
    if not _GLOB_MAGIC.search(pattern):
        return [checker.existing_file(pattern, path, "script")]
    problem = _glob_problem(pattern)
    if problem is not None:
        checker.add(path, problem)
        return []
    try:
        matches = _glob_files(checker.base, pattern)
    except (ValueError, OSError, RecursionError) as exc:  # 'a**.py': '**' is a whole component
        checker.add(path, f"invalid glob '{pattern}': {exc}")
        return []
    root = checker.base.resolve()
    outside = [m for m in matches if not m.resolve().is_relative_to(root)]
    if outside or Path(pattern).is_absolute():
        checker.add(
            path,
            f"glob '{pattern}' reaches outside the jobs file's directory; "
            "name such scripts explicitly, one path each",
        )
    elif not matches:
        checker.add(path, f"glob '{pattern}' matches no file under {checker.base}")
    return [] if outside else matches


def _glob_problem(pattern: str) -> str | None:
    """What no script glob needs and pathlib would choke on (its matcher recurses once per
    wildcard): hundreds of wildcard components."""
    wild = sum(1 for part in pattern.split("/") if _GLOB_MAGIC.search(part))
    if wild > MAX_GLOB_WILDCARDS:
        return f"glob with {wild} wildcard components (at most {MAX_GLOB_WILDCARDS})"
    return None


def _glob_files(base: Path, pattern: str) -> list[Path]:
    """The files a relative glob matches, sorted; none for an absolute one (refused). More
    than MAX_GLOB_MATCHES entries is an error: no batch has that many scripts."""
    if Path(pattern).is_absolute():
        return []
    entries = list(itertools.islice(base.glob(pattern), MAX_GLOB_MATCHES + 1))
    if len(entries) > MAX_GLOB_MATCHES:
        raise ValueError(f"it matches more than {MAX_GLOB_MATCHES} entries")
    return sorted(p for p in entries if is_file(p))


# -- env, env_file, matrix ---------------------------------------------------------------------


def _env(job: JobScope, path: KeyPath, env: dict[str, str]) -> dict[str, str]:
    """Literal values are committed with the file: one under a secret-looking name is warned."""
    for name, value in env.items():
        if value and is_secret_name(name, job.file.patterns):
            job.checker.warn(job.path("env", name), LITERAL_SECRET)
    return dict(env)


def _env_file(job: JobScope, path: KeyPath, value: str) -> Path:
    return job.checker.existing_file(value, path, "env file")


SECRET_MATRIX = (
    "a secret-looking name cannot be a matrix variable: matrix values become run ids and "
    "directory names; put secrets in env_file or env_passthrough (or adjust secret_patterns)"
)


def _matrix(
    job: JobScope, path: KeyPath, raw: dict[str, list[Any]]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    for name in raw:
        if is_secret_name(name, job.file.patterns):
            job.checker.add(job.path("matrix", name), SECRET_MATRIX, of_key=True)
    return tuple((name, tuple(_env_text(v) for v in values)) for name, values in raw.items())


def _env_text(value: Any) -> str:
    """Matrix values become env values: YAML's true/false stay lowercase."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- limits of runs at once ------------------------------------------------------------------


def _pool(job: JobScope, path: KeyPath, name: str) -> str:
    _known_name(job.checker, path, name, job.file.pools, "pool")
    return name


def _models(job: JobScope, path: KeyPath, names: list[str]) -> tuple[str, ...]:
    for i, name in enumerate(names):
        _known_name(job.checker, (*path, i), name, job.file.models, "model")
    return tuple(names)


def _known_name(
    checker: Checker, path: KeyPath, name: str, known: frozenset[str], what: str
) -> None:
    """A name under top-level `<what>s:`, or a problem with the closest one."""
    if name in known:
        return
    listed = ", ".join(sorted(known)) or "none defined"
    hint = difflib.get_close_matches(name, sorted(known), n=1)
    guess = f" (did you mean '{hint[0]}'?)" if hint else ""
    checker.add(path, f"unknown {what} '{name}'{guess}; {what}s: {listed}")


def _cost_limit(job: JobScope, path: KeyPath, value: float) -> float:
    return float(value)


# -- resources, hardening, size limits ---------------------------------------------------------


def _resources(job: JobScope, path: KeyPath, raw: dict[str, Any]) -> Resources:
    """A job's `resources` replace the default ones whole; a limit left out keeps its default."""
    defaults = Resources()
    memory = raw.get("memory", defaults.memory)
    if memory is not None:  # null: no limit
        memory = byte_count(job.checker, (*path, "memory"), memory, MIN_MEMORY)
    return Resources(
        memory=memory, cpus=raw.get("cpus", defaults.cpus), pids=raw.get("pids", defaults.pids)
    )


def _hardening(job: JobScope, path: KeyPath, raw: dict[str, bool]) -> Hardening:
    return Hardening(**raw)


def _size_limit(job: JobScope, path: KeyPath, value: str | int) -> int:
    return byte_count(job.checker, path, value, MIN_SIZE_LIMIT)


def byte_count(checker: Checker, path: KeyPath, value: str | int, minimum: int) -> int:
    """`value` in bytes. The schema bounds a byte count; '1k' is a string, so its size is
    checked here."""
    size = parse_memory(value)
    if isinstance(value, str) and size < minimum:
        checker.add(path, f"{path[-1]} {value!r} is below the minimum of {size_text(minimum)}")
    if isinstance(value, str) and size > MAX_BYTE_COUNT:
        shown = size_text(MAX_BYTE_COUNT)
        checker.add(path, f"{path[-1]} {value!r} is above the maximum of {shown}")
    return size


def parse_memory(value: str | int) -> int:
    """'2g' -> bytes; an int is already bytes (the schema has checked the form)."""
    if isinstance(value, int):
        return value
    number, unit = re.fullmatch(r"([0-9.]+)([bkmgBKMG]?)", value).groups()  # type: ignore[union-attr]
    # Exact: a float turns a long run of digits into infinity, which is no int.
    return int(Fraction(number) * _MEMORY_UNITS[unit.lower()])


def size_text(size: int) -> str:
    """4194304 -> '4m': the largest unit that divides the size, as a jobs file writes it."""
    unit = next(u for u in "gmkb" if size % _MEMORY_UNITS[u] == 0)
    return f"{size // _MEMORY_UNITS[unit]}{unit if unit != 'b' else ''}"


# Every key of a job and of `defaults:`, with its rule and its default (the `Job` field's).
JOB_KEYS: tuple[Key[JobScope], ...] = (
    Key("framework", _framework, missing="no framework: set `framework` here or under defaults"),
    Key("scripts", _scripts, missing="no scripts: set `scripts` here or under defaults"),
    Key("env", _env, {}),  # never used: _merged always gives `env`
    Key("env_passthrough", as_tuple, ()),
    Key("env_file", _env_file, None),
    Key("record_env", as_tuple, ()),
    Key("timeout", as_is, DEFAULT_TIMEOUT),
    Key("bind_azure_folder", as_is, False),
    Key("azure_mount", as_is, "ro"),
    Key("matrix", _matrix, ()),
    Key("repeat", as_is, 1),
    Key("retries", as_is, 0),
    Key("retry_on", as_tuple, DEFAULT_RETRY_ON),
    Key("resources", _resources, Resources()),
    Key("network", as_is, "bridge"),
    Key("runtime", as_is, None),
    Key("enforce_limits", as_is, True),
    Key("read_only_rootfs", as_is, False),
    Key("hardening", _hardening, Hardening()),
    Key("max_code_size", _size_limit, DEFAULT_CODE_LIMIT),
    Key("max_artifacts_size", _size_limit, DEFAULT_ARTIFACT_LIMIT),
    Key("max_artifacts_files", as_is, DEFAULT_ARTIFACT_FILES),
    Key("max_parallel", as_is, None),
    Key("pool", _pool, None),
    Key("model_env", as_is, {}),
    Key("cost_limit", _cost_limit, None),
    Key("models", _models, ()),
    Key("slurm", slurm_settings, NO_SLURM),
)
