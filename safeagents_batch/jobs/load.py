"""Jobs file: YAML (safe, with positions) -> JSON Schema -> semantic checks -> typed records.

Every problem is collected and reported at once, each located as FILE:LINE:COL: key.path.
The top-level keys are checked here; a job's keys in jobs/keys.py, a framework's in
jobs/framework_keys.py, each key's rule next to its default.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from safeagents_batch.core.errors import JobsFileError, Location, Problem
from safeagents_batch.core.files import read_regular
from safeagents_batch.core.names import safe_name
from safeagents_batch.jobs import frameworks as builtin
from safeagents_batch.jobs.check import Checker, printable
from safeagents_batch.jobs.framework_keys import image_configs
from safeagents_batch.jobs.keys import MIN_MEMORY as MIN_MEMORY
from safeagents_batch.jobs.keys import FileScope, check_unique_names, job_record
from safeagents_batch.jobs.keys import parse_memory as parse_memory
from safeagents_batch.jobs.model import (
    DEFAULT_MAX_RUNS,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_SECRET_PATTERNS,
    DEFAULT_WORKERS,
    Job,
    JobsFile,
    PoolRate,
)
from safeagents_batch.jobs.models import model_upstreams
from safeagents_batch.jobs.plan import RunSpec, check_runs, expand
from safeagents_batch.jobs.schema import jobs_schema_problems
from safeagents_batch.jobs.yamlmarks import MarkedDocument, YamlSyntaxError, load_marked

MAX_JOBS_FILE_BYTES = 16 * 1024**2  # a jobs file of a million runs is a few kB


def load_jobs_file(path: Path, label: str | None = None, data: bytes | None = None) -> JobsFile:
    """Read and validate one jobs file (`data`: its bytes, already read); raises JobsFileError
    listing every problem found."""
    label = label if label is not None else str(path)
    text = _decode(data, label) if data is not None else _read_text(path, label)
    doc = _parse(text, label)
    checker = Checker(doc, label, path.absolute().parent, problems=list(doc.problems))
    if doc.data is None:
        checker.add((), "the file is empty; it needs at least `version: 1` and `jobs:`")
    else:
        checker.problems.extend(jobs_schema_problems(doc))
    jobs_file = _build(checker, path, text)
    if checker.problems or jobs_file is None:
        raise JobsFileError(checker.located())
    return jobs_file


def load_and_expand(path: Path, data: bytes | None = None) -> tuple[JobsFile, list[RunSpec]]:
    """The jobs file at `path` and its runs: what every command that takes a jobs file needs."""
    jobs_file = load_jobs_file(path, data=data)
    return jobs_file, expand(jobs_file)


def load_and_count(path: Path) -> tuple[JobsFile, int]:
    """The jobs file at `path`, and how many runs it has (their ids checked, none kept)."""
    jobs_file = load_jobs_file(path)
    return jobs_file, check_runs(jobs_file)


def _read_text(path: Path, label: str) -> str:
    try:
        raw = read_regular(path, MAX_JOBS_FILE_BYTES)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise JobsFileError(
            [Problem(Location(label, 1, 1), "(file)", f"cannot read: {reason}")]
        ) from None
    return _decode(raw, label)


def _decode(raw: bytes, label: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobsFileError([_not_utf8(raw, exc, label)]) from None


def _not_utf8(raw: bytes, exc: UnicodeDecodeError, label: str) -> Problem:
    """Locate the first undecodable byte, so that a stray byte in a long file can be found."""
    line_start = raw.rfind(b"\n", 0, exc.start) + 1
    column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
    where = Location(label, raw.count(b"\n", 0, exc.start) + 1, column)
    return Problem(
        where, "(file)", f"cannot read: not UTF-8 text ({exc.reason}: byte 0x{raw[exc.start]:02x})"
    )


def _parse(text: str, label: str) -> MarkedDocument:
    try:
        return load_marked(text)
    except YamlSyntaxError as exc:
        where = Location(label, exc.position.line + 1, exc.position.column + 1)
        raise JobsFileError([Problem(where, "(syntax)", printable(str(exc)))]) from None


# -- the top-level keys ----------------------------------------------------------------------


def _build(checker: Checker, path: Path, text: str) -> JobsFile | None:
    """The records, or None if anything is wrong (the checker then holds every problem)."""
    data = checker.doc.data
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        return None
    patterns = _secret_patterns(checker, data)
    defined = _defined_frameworks(data)
    jobs = _jobs(checker, data, defined, patterns)
    images = image_configs(checker, data, {j.framework for j in jobs}, defined)
    models = model_upstreams(checker, data)
    if "cost_limit" in data and jobs and not any(job.models for job in jobs):
        checker.add(("cost_limit",), "cost_limit counts model calls: no job lists `models`")
    if checker.problems:
        return None
    return JobsFile(
        path=path.absolute(),
        label=checker.label,
        text=text,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        name=str(data.get("name") or _safe_stem(path)),
        output_dir=checker.base / str(data.get("output_dir", DEFAULT_OUTPUT_DIR)),
        workers=int(data.get("workers", DEFAULT_WORKERS)),
        secret_patterns=patterns,
        frameworks=images,
        jobs=tuple(jobs),
        warnings=tuple(str(p) for p in checker.located(checker.warnings)),
        pools=_pools(data),
        pool_rates=_pool_rates(data),
        models=models,
        cost_limit=float(data["cost_limit"]) if "cost_limit" in data else None,
        max_runs=int(data.get("max_runs", DEFAULT_MAX_RUNS)),
        azure_by_jobs=frozenset(images) - _saying_azure_cli(data),
    )


def _saying_azure_cli(data: dict[str, Any]) -> frozenset[str]:
    """Frameworks whose settings say `azure_cli` themselves, whatever their jobs bind."""
    settings = data.get("frameworks")
    if not isinstance(settings, dict):
        return frozenset()
    return frozenset(
        n for n, raw in settings.items() if isinstance(raw, dict) and "azure_cli" in raw
    )


def _pools(data: dict[str, Any]) -> dict[str, int]:
    """The pools' runs at once (a faulty one has been reported already); a pool of rates
    only has no such limit."""
    sizes = {name: v if isinstance(v, int) else v.get("runs") for name, v in _pool_items(data)}
    return {name: size for name, size in sizes.items() if isinstance(size, int)}


def _pool_rates(data: dict[str, Any]) -> dict[str, PoolRate]:
    """The pools' paces for model calls, those that set one."""
    return {
        name: PoolRate(value.get("requests_per_minute"), value.get("tokens_per_minute"))
        for name, value in _pool_items(data)
        if isinstance(value, dict) and value.keys() & {"requests_per_minute", "tokens_per_minute"}
    }


def _pool_items(data: dict[str, Any]) -> list[tuple[str, Any]]:
    pools = data.get("pools")
    return [(str(k), v) for k, v in pools.items()] if isinstance(pools, dict) else []


def _defined_models(data: dict[str, Any]) -> frozenset[str]:
    """Names under `models:`; one written with a fault is still defined (reported there)."""
    models = data.get("models")
    return frozenset(str(k) for k in models) if isinstance(models, dict) else frozenset()


def _secret_patterns(checker: Checker, data: dict[str, Any]) -> tuple[str, ...]:
    if "secret_patterns" in data and checker.is_clean(("secret_patterns",)):
        return tuple(data["secret_patterns"])
    return DEFAULT_SECRET_PATTERNS


def _defined_frameworks(data: dict[str, Any]) -> set[str]:
    """Names under `frameworks:`. One defined with a fault is still defined: its jobs get no
    "unknown framework" problem; the schema has reported the fault."""
    frameworks = data.get("frameworks")
    return set(frameworks) if isinstance(frameworks, dict) else set()


def _jobs(
    checker: Checker, data: dict[str, Any], defined: set[str], patterns: tuple[str, ...]
) -> list[Job]:
    """The sound jobs; every job is checked, so that each of its problems is reported."""
    check_unique_names(checker, data["jobs"])
    raw_defaults = data.get("defaults")
    scope = FileScope(
        defaults=checker.clean_part(raw_defaults, ("defaults",)),
        written_defaults=frozenset(raw_defaults if isinstance(raw_defaults, dict) else ()),
        known=frozenset(builtin.builtin_frameworks()) | defined,
        patterns=patterns,
        pools=frozenset(name for name, _ in _pool_items(data)),
        models=_defined_models(data),
    )
    records = [
        job_record(checker, scope, i, raw)
        for i, raw in enumerate(data["jobs"])
        if isinstance(raw, dict)
    ]
    return [job for job in records if job is not None]


def _safe_stem(path: Path) -> str:
    """The file's stem as a batch name the schema accepts (a resolved copy states it)."""
    return safe_name(path.stem, 64, fallback="batch", replacement="-")
