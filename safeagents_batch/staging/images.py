"""Image specs (pure: Dockerfile text + context digest -> tag) and the build context on disk."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from safeagents_batch.core.names import safe_name
from safeagents_batch.jobs.check import is_file
from safeagents_batch.jobs.model import DEFAULT_CODE_LIMIT, ImageConfig
from safeagents_batch.staging.select import (
    check_size,
    chunks,
    open_regular,
    owner_executable,
    select_files,
)

CONTAINER_UID = 10001
CONTAINER_HOME = "/home/safeagents"
CODE_DIR = "/safeagents/code"
LOGS_DIR = "/safeagents/logs"
SEED_ROOT = "/SafeAgents"
SEED_LOGS_DIR = f"{SEED_ROOT}/logs"  # the seed's name of LOGS_DIR: a link to it
SOURCE_DIR = "/opt/safeagents/src"
DOCKERIGNORE = ".dockerignore"
AZURE_DIR = f"{CONTAINER_HOME}/.azure"  # the CLI's config dir (AZURE_CONFIG_DIR) in a run
# The Azure CLI lives in a venv of its own: its ~100 pinned dependencies and the framework's
# cannot break each other, and `pip freeze` of the image's Python stays the framework's.
AZURE_CLI_PACKAGE = "azure-cli"
AZURE_CLI_VENV = "/opt/az"
CONSTRAINTS = "/opt/safeagents/constraints.txt"
REQUIREMENTS = "/opt/safeagents/requirements.txt"
# uv does every Python install of an image: pinned, so the same Dockerfile builds the same way.
UV_VERSION = "0.13.9"
# With a framework's own `dockerfile`, its directory is the build context's root; the tool's
# files (its Dockerfile, requirements, source dirs) go in this dir of it, out of the way.
TOOL_CONTEXT = ".safeagents-batch"


@dataclass(frozen=True)
class ImageSpec:
    """What to build for one framework configuration and the tag that names exactly that."""

    config: ImageConfig
    dockerfile: str
    context_digest: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.dockerfile}\0{self.context_digest}".encode()).hexdigest()

    @property
    def dockerfile_path(self) -> str:
        """The generated Dockerfile's path in the build context."""
        return f"{_tool_dir(self.config)}Dockerfile"

    @property
    def tag(self) -> str:
        framework = safe_name(self.config.framework, 100)
        return f"{self.config.image_name}:{framework}-{self.digest[:12]}"


def image_spec(config: ImageConfig) -> ImageSpec:
    """The spec of `config`; reads the requirements file and source dirs to digest them."""
    return ImageSpec(config, dockerfile_text(config), _digest_files(context_files(config)))


def dockerfile_text(config: ImageConfig) -> str:
    """The generated Dockerfile. Every Python install goes through uv (a pinned version, one
    small layer shared by every image of the base; pip stays available inside). The
    framework's packages, `additional_packages`, `requirements` and `constraints` are one
    resolution in one layer, so the image is consistent, and the build runs the resolver's
    check: an inconsistent environment fails the build with its message. What changes least
    comes first, so a change rebuilds only the layers after it."""
    lines = [
        *_base(config),
        "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 "
        "PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "
        # No cache in a layer, no Python downloaded (the base image's Python is the one), files
        # linked from uv's temporary unpacking, not copied (measured: 14 s against 21 s for
        # 143 packages), and the system's CA store, as pip uses it (a TLS-intercepting
        # proxy's CA among them).
        "UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=hardlink UV_SYSTEM_CERTS=1",
        # Before any Python install: a package may need a system library or compiler to build.
        *_system_packages_layer(config.system_packages),
        _run_json(["python", "-m", "pip", "install", f"uv=={UV_VERSION}"]),
        # First after uv, right on the base: the ~680 MB layer is then one on disk for every
        # image of that base, and a change to the packages below does not reinstall it.
        *(_azure_cli_layer() if config.azure_cli else []),
        *_install_layer(config),
        # Each its own layer, so a failing one is named by its step and the ones before stay
        # cached; a JSON form keeps a command of several lines whole.
        *(_run_json(["/bin/sh", "-ec", command]) for command in config.setup),
    ]
    if config.source_dirs:
        lines += [f"COPY {_tool_dir(config)}src/ {SOURCE_DIR}/", f"ENV PYTHONPATH={SOURCE_DIR}"]
    lines += [
        # A fixed non-root account; runs may use another uid, so home and work dirs are open.
        f"RUN grep -q '^safeagents:' /etc/passwd || "
        f"(echo 'safeagents:x:{CONTAINER_UID}:{CONTAINER_UID}::{CONTAINER_HOME}:/bin/sh' "
        f">> /etc/passwd && echo 'safeagents:x:{CONTAINER_UID}:' >> /etc/group) && "
        f"mkdir -p {CONTAINER_HOME} {CODE_DIR} {LOGS_DIR} {SEED_ROOT} && "
        # The seed's scripts (SafeAgents' Docker examples) write to /SafeAgents/logs: a second
        # name of the logs dir, so what they leave is collected like the rest.
        f"ln -sfn {LOGS_DIR} {SEED_LOGS_DIR} && "
        # The logs dir is a fresh volume per container, which starts as a copy of this dir:
        # open to whatever uid the run gets, sticky so no one deletes another's files.
        f"chmod 1777 {CONTAINER_HOME} {LOGS_DIR}",
        f"ENV HOME={CONTAINER_HOME}",
        f"WORKDIR {CODE_DIR}",
        f"USER {CONTAINER_UID}:{CONTAINER_UID}",
    ]
    return "\n".join(lines) + "\n"


def _base(config: ImageConfig) -> list[str]:
    """`FROM` the base image, or the framework's own Dockerfile as written (its last stage
    goes on with the tool's layers), back to root and without its entrypoint: the tool runs
    `python SCRIPT` itself, and installs as root."""
    header = "# Generated by safeagents-batch; the image tag carries a digest of this file."
    if config.dockerfile is None:
        return [header, f"FROM {config.effective_base_image}"]
    text = config.dockerfile.read_text(encoding="utf-8", errors="replace").rstrip("\n")
    return [
        text,
        f"# {header[2:]} Above: {config.dockerfile.name}, the framework's `dockerfile`.",
        "USER root",
        "ENTRYPOINT []",
    ]


def _system_packages_layer(packages: tuple[str, ...]) -> list[str]:
    if not packages:
        return []
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    # The package lists are fetched and removed in the same layer: no stale lists kept.
    return [
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive "
        f"{_shell_words(install)} && rm -rf /var/lib/apt/lists/*"
    ]


def _tool_dir(config: ImageConfig) -> str:
    return f"{TOOL_CONTEXT}/" if config.dockerfile is not None else ""


def _install_layer(config: ImageConfig) -> list[str]:
    """The files it reads, then one `uv pip install` of everything, then `uv pip check`."""
    copies, args, tool_dir = [], [], _tool_dir(config)
    if config.constraints is not None:
        copies.append(f"COPY {tool_dir}constraints.txt {CONSTRAINTS}")
        args += ["-c", CONSTRAINTS]
    if config.requirements is not None:
        copies.append(f"COPY {tool_dir}requirements.txt {REQUIREMENTS}")
        args += ["-r", REQUIREMENTS]
    packages = [*config.packages, *config.additional_packages]
    if not packages and config.requirements is None:
        return copies
    install = ["uv", "pip", "install", "--system", *packages, *args]
    # Each word quoted for the shell (`autogen-ext[openai]` reaches uv as written); the check
    # runs in the same layer, so a failed check fails the build and leaves no image.
    return [*copies, f"RUN {_shell_words(install)} && uv pip check --system"]


def _shell_words(argv: list[str]) -> str:
    return " ".join(shlex.quote(word) for word in argv)


def _azure_cli_layer() -> list[str]:
    # `az` is a Python script whose shebang names the venv's interpreter: a link on PATH works.
    return [
        f"RUN uv venv --seed {AZURE_CLI_VENV} && "
        f"uv pip install --python {AZURE_CLI_VENV}/bin/python {AZURE_CLI_PACKAGE} && "
        f"ln -s {AZURE_CLI_VENV}/bin/az /usr/local/bin/az"
    ]


def _run_json(argv: list[str]) -> str:
    """Exec-form RUN: package specs like `autogen-ext[openai]` reach pip untouched by a shell."""
    return "RUN " + json.dumps(argv)


def context_files(config: ImageConfig) -> list[tuple[str, Path]]:
    """(path inside the build context, host file) for every file the build copies, sorted:
    the constraints and requirements files, and each source dir as the file selector picks
    it (the same ignores and cap as a code snapshot: no .git, caches, venvs, dotenv files or
    what its .gitignore ignores). With a `dockerfile`, its directory is the context's root,
    as that selector picks it with its `.dockerignore` too, and the tool's files are in
    TOOL_CONTEXT."""
    tool_dir = _tool_dir(config)
    files: list[tuple[str, Path]] = []
    if config.constraints is not None:
        files.append((f"{tool_dir}constraints.txt", config.constraints))
    if config.requirements is not None:
        files.append((f"{tool_dir}requirements.txt", config.requirements))
    for directory in config.source_dirs:
        selected = select_files(directory)
        check_size(directory, selected, DEFAULT_CODE_LIMIT)
        files += [(f"{tool_dir}src/{directory.name}/{f.relative}", f.source) for f in selected]
    if config.dockerfile is not None:
        files += _dockerfile_context(config.dockerfile.parent)
    return sorted(files)


def _dockerfile_context(directory: Path) -> list[tuple[str, Path]]:
    """The Dockerfile's directory as its build would see it: what the file selector keeps of
    it and its .dockerignore does not leave out (that file itself stays out: the engine would
    apply it again to the whole context, the tool's files included)."""
    selected = select_files(directory, ignore=dockerignore_lines(directory / DOCKERIGNORE))
    check_size(directory, selected, DEFAULT_CODE_LIMIT)
    return [
        (f.relative, f.source)
        for f in selected
        if f.relative != DOCKERIGNORE and f.relative.split("/")[0] != TOOL_CONTEXT
    ]


def dockerignore_lines(file: Path) -> list[str]:
    """A .dockerignore's patterns as .gitignore lines: Docker's are paths from the context's
    root (`foo` is only ./foo, where .gitignore's `foo` is any foo), so each gets a leading
    `/`; `**`, `*`, `?` and `!` mean the same in both."""
    if not is_file(file):
        return []
    lines = []
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        negated = text.startswith("!")
        path = text[1:].strip() if negated else text
        lines.append(f"{'!' if negated else ''}/{path.lstrip('/')}")
    return lines


def _digest_files(files: list[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for rel, path in files:
        executable = os.access(path, os.X_OK)
        digest.update(f"{rel}\0{int(executable)}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as (reader, _):
        for block in chunks(reader, path):
            digest.update(block)
    return digest.hexdigest()


def write_build_context(spec: ImageSpec, directory: Path) -> None:
    """Lay out Dockerfile, requirements and source dirs in `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    copy_files(context_files(spec.config), directory)
    dockerfile = directory / spec.dockerfile_path
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    dockerfile.write_text(spec.dockerfile, encoding="utf-8")


def copy_selected(source: Path, target: Path) -> None:
    """What the file selector picks of `source`, copied into `target` (emptied first)."""
    shutil.rmtree(target, ignore_errors=True)
    copy_files([(f.relative, f.source) for f in select_files(source)], target)


def copy_files(files: list[tuple[str, Path]], directory: Path) -> None:
    """Each (relative path, host file) into `directory`, 0644 or 0755 by its owner's x bit."""
    for rel, source in files:
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_regular(source) as (reader, mode), target.open("wb") as writer:
            for block in chunks(reader, source):
                writer.write(block)
        os.chmod(target, 0o755 if owner_executable(mode) else 0o644)
