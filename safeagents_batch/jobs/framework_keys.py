"""The keys of one framework under `frameworks:` (its image settings): each one's rule and
default in `FRAMEWORK_KEYS`; `packages`, whose default depends on the framework, has its own."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from safeagents_batch.jobs import frameworks as builtin
from safeagents_batch.jobs.check import Checker, Key, as_is, as_tuple, is_dir, is_file
from safeagents_batch.jobs.model import DEFAULT_IMAGE_NAME, DEFAULT_PYTHON_VERSION, ImageConfig
from safeagents_batch.jobs.schema import format_key_path
from safeagents_batch.jobs.yamlmarks import KeyPath

MAX_CONSTRAINTS_BYTES = 4 * 1024 * 1024  # a constraints file is a pin list, not data
EXTRAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\s*\[")  # a name, then `[extra, ...]`


def image_configs(
    checker: Checker,
    data: dict[str, Any],
    used: set[str],
    defined: set[str],
) -> dict[str, ImageConfig]:
    """The image of every framework defined under `frameworks:` or used by a sound job; one
    that does not say `azure_cli` has none here (its jobs that bind ~/.azure get it:
    plan.job_image)."""
    settings = checker.clean_part(data.get("frameworks"), ("frameworks",))
    # A framework defined with a fault gets no image (the schema has reported the fault).
    names = sorted((used - (defined - set(settings))) | set(settings))
    image_name = str(data.get("image_name", DEFAULT_IMAGE_NAME))
    configs = {n: image_config(checker, n, settings.get(n, {}), image_name) for n in names}
    return {n: c for n, c in configs.items() if c is not None}


def image_config(
    checker: Checker, name: str, raw: dict[str, Any], image_name: str
) -> ImageConfig | None:
    path: KeyPath = ("frameworks", name)
    # A `requirements` file or a `dockerfile` says what the image holds without `packages`.
    says_contents = "requirements" in raw or "dockerfile" in raw
    packages = _packages(checker, path, raw.get("packages"), says_contents)
    if packages is None:
        return None
    values = {key.name: _value(checker, path, key, raw) for key in FRAMEWORK_KEYS}
    if "dockerfile" in raw and "base_image" in raw:
        message = "a framework starts from its `dockerfile` or its `base_image`, not both"
        checker.add((*path, "dockerfile"), message)
    return ImageConfig(framework=name, packages=packages, image_name=image_name, **values)


def _value(checker: Checker, path: KeyPath, key: Key[Checker], raw: dict[str, Any]) -> Any:
    if key.name not in raw:
        return key.default
    return key.rule(checker, (*path, key.name), raw[key.name])


def _packages(
    checker: Checker, path: KeyPath, packages: list[str] | None, says_contents: bool
) -> tuple[str, ...] | None:
    """Replace a built-in framework's list; a framework that is not built in needs them, or
    a `requirements` file or `dockerfile` that says what it holds."""
    name = str(path[-1])
    if packages is not None:
        return tuple(packages)
    if name in builtin.builtin_frameworks():
        return builtin.framework_packages(name)
    if says_contents:
        return ()
    message = (
        f"'{name}' is not a built-in framework: list its pip `packages` (`[]` for none), "
        "`requirements` or `dockerfile`"
    )
    checker.add(path, message, of_key=True)
    return None


def _requirements(checker: Checker, path: KeyPath, value: str) -> Path:
    return checker.existing_file(value, path, "requirements file")


def _constraints(checker: Checker, path: KeyPath, value: str) -> Path:
    file = checker.existing_file(value, path, "constraints file")
    problem = constraints_problem(file) if is_file(file) else None
    if problem is not None:
        checker.add(path, problem)
    return file


def _dockerfile(checker: Checker, path: KeyPath, value: str) -> Path:
    return checker.existing_file(value, path, "dockerfile")


def constraints_problem(file: Path) -> str | None:
    """What pip would refuse in a constraints file, known before any build: a requirement
    with extras (`pkg[extra]==1.0`, as a `pip freeze` or a requirements file may hold)."""
    try:
        with file.open(encoding="utf-8", errors="replace") as handle:
            lines = handle.read(MAX_CONSTRAINTS_BYTES).splitlines()
    except OSError as exc:
        return f"constraints file unreadable: {exc.strerror or exc}: {file}"
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if EXTRAS.match(text):
            return (
                f"{file.name}:{number}: `{text}`: a constraints file cannot have extras (pip "
                "refuses them); drop the `[...]` here, or list the package in `requirements`"
            )
    return None


def _source_dirs(checker: Checker, path: KeyPath, values: list[str]) -> tuple[Path, ...]:
    sources = tuple(_source_dir(checker, (*path, i), d) for i, d in enumerate(values))
    _check_source_names(checker, path, sources)
    return sources


def _source_dir(checker: Checker, path: KeyPath, value: str) -> Path:
    # Normalized: the image gets it as src/<its name>, and '..' or '.' is not a name.
    directory = Path(os.path.normpath(checker.base / value))
    if not is_dir(directory):
        checker.add(path, f"source directory not found: {directory}")
    return directory


def _check_source_names(checker: Checker, path: KeyPath, sources: tuple[Path, ...]) -> None:
    """Each source dir is copied to src/<name>: two with one name would overwrite each other."""
    seen: dict[str, int] = {}
    for i, directory in enumerate(sources):
        if not directory.name:
            checker.add(
                (*path, i),
                f"source directory {str(directory)!r} has no name to copy into the image",
            )
        elif directory.name in seen:
            checker.add(
                (*path, i),
                f"source directory name '{directory.name}' is used twice "
                f"(first at {format_key_path((*path, seen[directory.name]))})",
            )
        else:
            seen[directory.name] = i


# Every key of a framework but `packages`, with its rule and its default (the ImageConfig
# field's); `image_name` comes from the top level.
FRAMEWORK_KEYS: tuple[Key[Checker], ...] = (
    Key("python_version", as_is, DEFAULT_PYTHON_VERSION),
    Key("base_image", as_is, ""),
    Key("additional_packages", as_tuple, ()),
    Key("requirements", _requirements, None),
    Key("source_dirs", _source_dirs, ()),
    Key("constraints", _constraints, None),
    Key("azure_cli", as_is, False),  # when left out: per job, whether it binds ~/.azure
    Key("system_packages", as_tuple, ()),  # the schema checks each name
    Key("setup", as_tuple, ()),
    Key("dockerfile", _dockerfile, None),
)
