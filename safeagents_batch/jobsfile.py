"""Jobs file: YAML (safe, with positions) -> JSON Schema -> semantic checks -> typed records.

Every problem is collected and reported at once, each located as FILE:LINE:COL: key.path.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safeagents_batch import frameworks as builtin
from safeagents_batch.errors import JobsFileError, Location, Problem
from safeagents_batch.model import (
    DEFAULT_IMAGE_NAME,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_PYTHON_VERSION,
    DEFAULT_RETRY_ON,
    DEFAULT_SECRET_PATTERNS,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKERS,
    Hardening,
    ImageConfig,
    Job,
    JobsFile,
    Resources,
)
from safeagents_batch.plan import RunSpec, expand
from safeagents_batch.redaction import is_secret_name
from safeagents_batch.schema import format_key_path, jobs_schema_problems
from safeagents_batch.yamlmarks import (
    KeyPath,
    MarkedDocument,
    Position,
    YamlSyntaxError,
    load_marked,
)

_GLOB_MAGIC = re.compile(r"[*?[]")
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY = 4 * 1024**2  # the schema's minimum for a byte count; Docker refuses much less


def load_jobs_file(path: Path, label: str | None = None) -> JobsFile:
    """Read and validate one jobs file; raises JobsFileError listing every problem found."""
    label = label if label is not None else str(path)
    text = _read_text(path, label)
    try:
        doc = load_marked(text)
    except YamlSyntaxError as exc:
        where = Location(label, exc.position.line + 1, exc.position.column + 1)
        raise JobsFileError([Problem(where, "(syntax)", _printable(str(exc)))]) from None
    checker = _Checker(doc, label, path.absolute().parent)
    checker.problems.extend(doc.problems)
    if doc.data is None:
        checker.add((), "the file is empty; it needs at least `version: 1` and `jobs:`")
    else:
        checker.problems.extend(jobs_schema_problems(doc))
    jobs_file = checker.build(path, text)
    if checker.problems or jobs_file is None:
        raise JobsFileError(checker.located())
    return jobs_file


def load_and_expand(path: Path) -> tuple[JobsFile, list[RunSpec]]:
    """The jobs file at `path` and its runs: what every command that takes a jobs file needs."""
    jobs_file = load_jobs_file(path)
    return jobs_file, expand(jobs_file)


def _read_text(path: Path, label: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise JobsFileError(
            [Problem(Location(label, 1, 1), "(file)", f"cannot read: {reason}")]
        ) from None
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


@dataclass
class _Checker:
    """Semantic checks on top of the schema; builds records only for parts the schema passed."""

    doc: MarkedDocument
    label: str
    base: Path
    problems: list[tuple[Position, KeyPath, str]] = field(default_factory=list)
    warnings: list[tuple[Position, KeyPath, str]] = field(default_factory=list)

    def add(self, path: KeyPath, message: str, *, of_key: bool = False) -> None:
        self.problems.append((self.doc.position(path, of_key=of_key), path, message))

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append((self.doc.position(path), path, message))

    def located(self, entries: list[tuple[Position, KeyPath, str]] | None = None) -> list[Problem]:
        entries = self.problems if entries is None else entries
        ordered = sorted(entries, key=lambda e: (e[0].line, e[0].column, e[2]))
        # A faulty default is met once per job that inherits it: report it once.
        unique = dict.fromkeys(
            (self.location(pos), format_key_path(path), _printable(msg))
            for pos, path, msg in ordered
        )
        return [Problem(*entry) for entry in unique]

    def location(self, pos: Position) -> Location:
        return Location(self.label, pos.line + 1, pos.column + 1)

    def is_clean(self, prefix: KeyPath) -> bool:
        """No schema problem at or below `prefix`: its data has the types the schema promises."""
        return not any(path[: len(prefix)] == prefix for _, path, _ in self.problems)

    # -- building ---------------------------------------------------------------------------

    def build(self, path: Path, text: str) -> JobsFile | None:
        data = self.doc.data
        if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
            return None
        defaults = self._clean_part(data.get("defaults"), ("defaults",))
        settings = self._clean_part(data.get("frameworks"), ("frameworks",))
        patterns = (
            tuple(data["secret_patterns"])
            if "secret_patterns" in data and self.is_clean(("secret_patterns",))
            else DEFAULT_SECRET_PATTERNS
        )
        self._check_duplicate_names(data["jobs"])
        # A framework defined with a fault is still defined: its jobs get no "unknown" error,
        # and its image no second one; the schema has reported the fault.
        defined = set(data["frameworks"]) if isinstance(data.get("frameworks"), dict) else set()
        jobs = [
            self._job(i, raw, defaults, defined, patterns)
            for i, raw in enumerate(data["jobs"])
            if isinstance(raw, dict)
        ]
        used = {j.framework for j in jobs if j is not None} - (defined - set(settings))
        images = self._images(settings, used, str(data.get("image_name", DEFAULT_IMAGE_NAME)))
        if self.problems:
            return None
        return JobsFile(
            path=path.absolute(),
            label=self.label,
            text=text,
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            name=str(data.get("name") or _safe_stem(path)),
            output_dir=self.base / str(data.get("output_dir", DEFAULT_OUTPUT_DIR)),
            workers=int(data.get("workers", DEFAULT_WORKERS)),
            secret_patterns=patterns,
            frameworks=images,
            jobs=tuple(j for j in jobs if j is not None),
            warnings=tuple(str(p) for p in self.located(self.warnings)),
        )

    def _clean_part(self, raw: Any, prefix: KeyPath) -> dict[str, Any]:
        """The keys of a mapping the schema found no fault in (all of them in a valid file)."""
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in raw.items() if self.is_clean((*prefix, k))}

    def _check_duplicate_names(self, raw_jobs: list[Any]) -> None:
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_jobs):
            name = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen:
                self.add(
                    ("jobs", i, "name"),
                    f"duplicate job name '{name}' (first at jobs[{seen[name]}])",
                )
            else:
                seen[name] = i

    def _job(
        self,
        index: int,
        raw: dict[str, Any],
        defaults: dict[str, Any],
        defined: set[str],
        patterns: tuple[str, ...],
    ) -> Job | None:
        """Checks every key the schema passed; a record only when the whole job is sound."""
        own = self._clean_part(raw, ("jobs", index))

        def source(key: str) -> KeyPath:
            return ("jobs", index, key) if key in own else ("defaults", key)

        merged = {**defaults, **own, "env": {**defaults.get("env", {}), **own.get("env", {})}}
        problems_before = len(self.problems)
        raw_defaults = self.doc.data.get("defaults")
        given = set(raw) | (set(raw_defaults) if isinstance(raw_defaults, dict) else set())
        known = set(builtin.builtin_frameworks()) | defined
        framework = self._framework(
            merged.get("framework"),
            source("framework"),
            index,
            known,
            missing="framework" not in given,
        )
        scripts = self._scripts(
            merged.get("scripts"), source("scripts"), index, missing="scripts" not in given
        )
        env_file = self._existing_file(merged.get("env_file"), source("env_file"), "env file")
        self._check_memory(merged.get("resources", {}), source("resources"))
        self._warn_literal_secrets(
            merged["env"],
            lambda name: (
                ("jobs", index, "env", name)
                if name in own.get("env", {})
                else ("defaults", "env", name)
            ),
            patterns,
        )
        sound = (
            len(self.problems) == problems_before
            and self.is_clean(("jobs", index))
            and self.is_clean(("defaults",))
        )
        if not sound or framework is None:
            return None
        return Job(
            name=raw["name"],
            framework=framework,
            scripts=scripts,
            location=self.location(self.doc.position(("jobs", index))),
            index=index,
            env=dict(merged["env"]),
            env_passthrough=tuple(merged.get("env_passthrough", ())),
            env_file=env_file,
            timeout=merged.get("timeout", DEFAULT_TIMEOUT),
            bind_azure_folder=merged.get("bind_azure_folder", False),
            azure_mount=merged.get("azure_mount", "ro"),
            matrix=_matrix(merged.get("matrix", {})),
            repeat=merged.get("repeat", 1),
            retries=merged.get("retries", 0),
            retry_on=tuple(merged.get("retry_on", DEFAULT_RETRY_ON)),
            resources=_resources(merged.get("resources", {})),
            network=merged.get("network", "bridge"),
            read_only_rootfs=merged.get("read_only_rootfs", False),
            hardening=Hardening(**merged.get("hardening", {})),
        )

    def _check_memory(self, resources: dict[str, Any], path: KeyPath) -> None:
        """The schema bounds a byte count; '1k' is a string, so its size is checked here."""
        memory = resources.get("memory")
        if isinstance(memory, str) and parse_memory(memory) < MIN_MEMORY:
            self.add((*path, "memory"), f"memory {memory!r} is below the minimum of 4m")

    def _warn_literal_secrets(
        self, env: dict[str, str], path_of: Callable[[str], KeyPath], patterns: tuple[str, ...]
    ) -> None:
        for name, value in env.items():
            if value and is_secret_name(name, patterns):
                self.warn(
                    path_of(name),
                    "literal value under a secret-looking name is committed "
                    "with this file; use env_passthrough or env_file instead",
                )

    def _framework(
        self, name: Any, path: KeyPath, index: int, known: set[str], *, missing: bool
    ) -> str | None:
        if name is None:
            if missing:
                self.add(("jobs", index), "no framework: set `framework` here or under defaults")
            return None
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            self.add(
                path,
                f"unknown framework '{name}'{extra}; known: {', '.join(sorted(known))}"
                "; define others under `frameworks:`",
            )
            return None
        return str(name)

    def _scripts(self, value: Any, path: KeyPath, index: int, *, missing: bool) -> tuple[Path, ...]:
        if value is None:
            if missing:
                self.add(("jobs", index), "no scripts: set `scripts` here or under defaults")
            return ()
        items = (
            [(path, value)]
            if isinstance(value, str)
            else [((*path, j), v) for j, v in enumerate(value)]
        )
        found: dict[Path, None] = {}  # ordered set: overlapping globs do not duplicate a script
        for item_path, pattern in items:
            found.update(dict.fromkeys(self._expand(pattern, item_path)))
        return tuple(found)

    def _expand(self, pattern: str, path: KeyPath) -> list[Path]:
        if not _GLOB_MAGIC.search(pattern):
            script = self.base / pattern
            if not _is_file(script):
                self.add(path, f"script not found: {script}")
            return [script]
        try:
            matches = (
                sorted(p for p in self.base.glob(pattern) if _is_file(p))
                if not Path(pattern).is_absolute()
                else []
            )
        except (ValueError, OSError) as exc:  # e.g. 'a**.py': '**' must be a whole component
            self.add(path, f"invalid glob '{pattern}': {exc}")
            return []
        root = self.base.resolve()
        outside = [m for m in matches if not m.resolve().is_relative_to(root)]
        if outside or Path(pattern).is_absolute():
            self.add(
                path,
                f"glob '{pattern}' reaches outside the jobs file's directory; "
                "name such scripts explicitly, one path each",
            )
        elif not matches:
            self.add(path, f"glob '{pattern}' matches no file under {self.base}")
        return [] if outside else matches

    def _existing_file(self, value: Any, path: KeyPath, what: str) -> Path | None:
        if value is None:
            return None
        file = self.base / str(value)
        if not _is_file(file):
            self.add(path, f"{what} not found: {file}")
        return file

    def _images(
        self, settings: dict[str, Any], used: set[str], image_name: str
    ) -> dict[str, ImageConfig]:
        names = sorted(used | set(settings))
        return {n: c for n in names if (c := self._image(n, settings.get(n, {}), image_name))}

    def _image(self, name: str, raw: dict[str, Any], image_name: str) -> ImageConfig | None:
        path: KeyPath = ("frameworks", name)
        packages = raw.get("packages")
        if packages is None and name not in builtin.builtin_frameworks():
            self.add(
                path, f"'{name}' is not a built-in framework: list its pip `packages`", of_key=True
            )
            return None
        requirements = self._existing_file(
            raw.get("requirements"), (*path, "requirements"), "requirements file"
        )
        sources = tuple(
            self._source_dir(d, (*path, "source_dirs", i))
            for i, d in enumerate(raw.get("source_dirs", ()))
        )
        self._check_source_names(sources, (*path, "source_dirs"))
        return ImageConfig(
            framework=name,
            packages=tuple(packages) if packages is not None else builtin.framework_packages(name),
            python_version=raw.get("python_version", DEFAULT_PYTHON_VERSION),
            base_image=raw.get("base_image", ""),
            additional_packages=tuple(raw.get("additional_packages", ())),
            requirements=requirements,
            source_dirs=sources,
            image_name=image_name,
        )

    def _source_dir(self, value: str, path: KeyPath) -> Path:
        # Normalized: the image gets it as src/<its name>, and '..' or '.' is not a name.
        directory = Path(os.path.normpath(self.base / value))
        if not _is_dir(directory):
            self.add(path, f"source directory not found: {directory}")
        return directory

    def _check_source_names(self, sources: tuple[Path, ...], path: KeyPath) -> None:
        """Each source dir is copied to src/<name>: two with one name would overwrite each other."""
        seen: dict[str, int] = {}
        for i, directory in enumerate(sources):
            if not directory.name:
                self.add(
                    (*path, i),
                    f"source directory {str(directory)!r} has no name to copy into the image",
                )
            elif directory.name in seen:
                self.add(
                    (*path, i),
                    f"source directory name '{directory.name}' is used twice "
                    f"(first at {format_key_path((*path, seen[directory.name]))})",
                )
            else:
                seen[directory.name] = i


def _is_file(path: Path) -> bool:
    """Path.is_file, but a name the OS refuses (too long, ...) is simply not a file."""
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _printable(text: str) -> str:
    """Problems print one per line: a newline (or another control character) taken from the
    file, a key or a path is shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _matrix(raw: dict[str, list[Any]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((name, tuple(_env_text(v) for v in values)) for name, values in raw.items())


def _env_text(value: Any) -> str:
    """Matrix values become env values: YAML's true/false stay lowercase."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resources(raw: dict[str, Any]) -> Resources:
    defaults = Resources()
    memory = raw.get("memory", defaults.memory)
    return Resources(
        memory=parse_memory(memory) if memory is not None else None,
        cpus=raw.get("cpus", defaults.cpus),
        pids=raw.get("pids", defaults.pids),
    )


def parse_memory(value: str | int) -> int:
    """'2g' -> bytes; an int is already bytes (the schema has checked the form)."""
    if isinstance(value, int):
        return value
    number, unit = re.fullmatch(r"([0-9.]+)([bkmgBKMG]?)", value).groups()  # type: ignore[union-attr]
    return int(float(number) * _MEMORY_UNITS[unit.lower()])


def _safe_stem(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.") or "batch"
    return stem[:64]
