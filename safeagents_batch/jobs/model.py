"""The typed, validated records a jobs file turns into. Pure data: no I/O, no Docker."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safeagents_batch.core.errors import Location

DEFAULT_MAX_RUNS = 1_000_000
DEFAULT_ARTIFACT_FILES = 10_000
DEFAULT_IMAGE_NAME = "safeagents-runtime"
DEFAULT_PYTHON_VERSION = "3.11"
DEFAULT_OUTPUT_DIR = "./logs"
DEFAULT_WORKERS = 4
DEFAULT_TIMEOUT = 3600
DEFAULT_SECRET_PATTERNS = ("*KEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*")
DEFAULT_RETRY_ON = ("error",)
DEFAULT_MEMORY = 4 * 1024**3
DEFAULT_CPUS = 2.0
DEFAULT_PIDS = 512
# What one script directory may ship to a container, and what one attempt may leave behind.
DEFAULT_CODE_LIMIT = 100 * 1024**2
DEFAULT_ARTIFACT_LIMIT = 1024**3


@dataclass(frozen=True)
class ImageConfig:
    """Everything that goes into one framework image; equal configs share one image."""

    framework: str
    packages: tuple[str, ...]
    python_version: str = DEFAULT_PYTHON_VERSION
    base_image: str = ""
    additional_packages: tuple[str, ...] = ()
    requirements: Path | None = None
    source_dirs: tuple[Path, ...] = ()
    image_name: str = DEFAULT_IMAGE_NAME
    # The Azure CLI, in its own layer: set when a job binds ~/.azure, unless the file says.
    azure_cli: bool = False
    constraints: Path | None = None  # pip -c for every install: pins the whole tree
    system_packages: tuple[str, ...] = ()  # Debian packages, one layer before Python's
    setup: tuple[str, ...] = ()  # shell commands run as root after the Python install
    dockerfile: Path | None = None  # the user's Dockerfile: the base, instead of base_image

    @property
    def effective_base_image(self) -> str:
        return self.base_image or f"python:{self.python_version}-slim"

    @property
    def base_label(self) -> str:
        """What the image starts from, as its label and record say it."""
        if self.dockerfile is not None:
            return f"dockerfile:{self.dockerfile.name}"
        return self.effective_base_image


@dataclass(frozen=True)
class Resources:
    """Container limits; None means no limit."""

    memory: int | None = DEFAULT_MEMORY
    cpus: float | None = DEFAULT_CPUS
    pids: int | None = DEFAULT_PIDS


@dataclass(frozen=True)
class SlurmSettings:
    """A job's `slurm:`: its attempts' partition, account and extra sbatch arguments."""

    partition: str | None = None
    account: str | None = None
    sbatch_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hardening:
    """Container hardening switches; all on by default, each can be relaxed per job."""

    non_root: bool = True
    no_new_privileges: bool = True
    drop_capabilities: bool = True
    init: bool = True


@dataclass(frozen=True)
class PoolRate:
    """A pool's pace for model calls through the gateway, over all the jobs in it."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, as a jobs file states them for one upstream."""

    input: float
    output: float
    cached_input: float | None = None  # None: the input price


@dataclass(frozen=True)
class ModelUpstream:
    """One entry of `models:`: where the batch's gateway forwards a model call, and the name of
    the host variable holding its key (the value is read at run time, by the gateway only)."""

    name: str
    kind: str  # "openai" (an OpenAI-compatible base URL) or "azure-openai" (an endpoint)
    url: str  # base_url for openai, endpoint for azure-openai; no trailing slash
    api_key_env: str | None = None  # None: no key (a local server), or Azure CLI login
    api_version: str | None = None  # azure-openai: the version the containers are told
    prices: Prices | None = None  # None: genai-prices' for the model that answered


@dataclass(frozen=True)
class Job:
    """One entry of `jobs:`, with defaults merged and paths resolved."""

    name: str
    framework: str
    scripts: tuple[Path, ...]
    location: Location
    index: int = 0
    env: dict[str, str] = field(default_factory=dict)
    env_passthrough: tuple[str, ...] = ()
    env_file: Path | None = None
    record_env: tuple[str, ...] = ()  # names whose values are written down (jobs/recorded.py)
    timeout: int = DEFAULT_TIMEOUT
    bind_azure_folder: bool = False
    azure_mount: str = "ro"
    matrix: tuple[tuple[str, tuple[str, ...]], ...] = ()
    repeat: int = 1
    retries: int = 0
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    resources: Resources = Resources()
    network: str = "bridge"
    runtime: str | None = None  # the engine's OCI runtime (runsc: gVisor); None: its default
    enforce_limits: bool = True  # an engine that drops a `resources` limit is refused
    read_only_rootfs: bool = False
    hardening: Hardening = Hardening()
    max_code_size: int = DEFAULT_CODE_LIMIT
    max_artifacts_size: int = DEFAULT_ARTIFACT_LIMIT
    max_artifacts_files: int = DEFAULT_ARTIFACT_FILES
    max_parallel: int | None = None  # at most this many of the job's runs at once
    pool: str | None = None  # a limit shared with other jobs (`pools:`)
    models: tuple[str, ...] = ()  # names under `models:` its runs may call, via the gateway
    cost_limit: float | None = None  # USD a run may spend on model calls
    model_env: dict[str, str] = field(default_factory=dict)  # VARIABLE -> model, its URL
    slurm: SlurmSettings = SlurmSettings()  # where its attempts go with --backend slurm


@dataclass(frozen=True)
class JobsFile:
    """A whole validated jobs file."""

    path: Path
    label: str
    text: str
    sha256: str
    name: str
    output_dir: Path
    workers: int
    secret_patterns: tuple[str, ...]
    frameworks: dict[str, ImageConfig]
    jobs: tuple[Job, ...]
    warnings: tuple[str, ...] = ()
    pools: dict[str, int] = field(default_factory=dict)  # name -> runs at once, shared
    pool_rates: dict[str, PoolRate] = field(default_factory=dict)  # name -> model call pace
    models: dict[str, ModelUpstream] = field(default_factory=dict)  # `models:` by name
    cost_limit: float | None = None  # USD the batch's model calls may cost in all
    max_runs: int = DEFAULT_MAX_RUNS  # runs the file may expand to (counted before any is made)
    # Frameworks that leave `azure_cli` to their jobs: the jobs that bind ~/.azure get an image
    # with the CLI, the others one without (its ~680 MB only where it is used).
    azure_by_jobs: frozenset[str] = frozenset()
