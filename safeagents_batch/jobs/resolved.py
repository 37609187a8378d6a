"""The jobs file as resolved (defaults merged, globs expanded, paths absolute), written into the
batch dir. It is itself a valid jobs file: `rerun` loads it and gets the same run ids."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import yaml

from safeagents_batch.jobs.model import (
    DEFAULT_IMAGE_NAME,
    ImageConfig,
    Job,
    JobsFile,
    SlurmSettings,
)
from safeagents_batch.jobs.models import URL_KEY

HEADER = (
    "# Resolved by safeagents-batch from {source} (sha256 {sha}).\n"
    "# Defaults are merged, globs expanded and paths absolute; `rerun` reads this file.\n"
)


def resolved_yaml(jobs_file: JobsFile) -> str:
    header = HEADER.format(source=jobs_file.path, sha=jobs_file.sha256)
    return header + yaml.safe_dump(
        resolved_document(jobs_file), sort_keys=False, allow_unicode=True, width=100
    )


def resolved_document(jobs_file: JobsFile) -> dict[str, Any]:
    images = list(jobs_file.frameworks.values())
    return {
        "version": 1,
        "name": jobs_file.name,
        "output_dir": str(jobs_file.output_dir),
        "workers": jobs_file.workers,
        "max_runs": jobs_file.max_runs,
        "image_name": images[0].image_name if images else DEFAULT_IMAGE_NAME,
        "secret_patterns": list(jobs_file.secret_patterns),
        **({"pools": _pools(jobs_file)} if jobs_file.pools or jobs_file.pool_rates else {}),
        **({"models": _models(jobs_file)} if jobs_file.models else {}),
        **({"cost_limit": jobs_file.cost_limit} if jobs_file.cost_limit is not None else {}),
        "frameworks": {
            name: _image(config, name not in jobs_file.azure_by_jobs)
            for name, config in jobs_file.frameworks.items()
        },
        "jobs": [_job(job) for job in jobs_file.jobs],
    }


def _pools(jobs_file: JobsFile) -> dict[str, int | dict[str, int]]:
    """Each pool as written: its runs at once alone, or with its pace as a mapping."""
    written: dict[str, int | dict[str, int]] = {}
    for name in sorted(jobs_file.pools.keys() | jobs_file.pool_rates.keys()):
        rate = jobs_file.pool_rates.get(name)
        runs = jobs_file.pools.get(name)
        if rate is None and runs is not None:
            written[name] = runs
            continue
        entry = {"runs": runs} if runs is not None else {}
        if rate is not None and rate.requests_per_minute is not None:
            entry["requests_per_minute"] = rate.requests_per_minute
        if rate is not None and rate.tokens_per_minute is not None:
            entry["tokens_per_minute"] = rate.tokens_per_minute
        written[name] = entry
    return written


def _models(jobs_file: JobsFile) -> dict[str, dict[str, Any]]:
    """Each upstream as written: the key's variable name, never a value."""
    written = {}
    for name, model in jobs_file.models.items():
        entry: dict[str, Any] = {"kind": model.kind, URL_KEY[model.kind]: model.url}
        if model.api_version is not None:
            entry["api_version"] = model.api_version
        if model.api_key_env is not None:
            entry["api_key_env"] = model.api_key_env
        if model.prices is not None:
            entry["prices"] = {k: v for k, v in asdict(model.prices).items() if v is not None}
        written[name] = entry
    return written


def _image(config: ImageConfig, says_azure_cli: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "packages": list(config.packages),
        "python_version": config.python_version,
        "additional_packages": list(config.additional_packages),
        "source_dirs": [str(d) for d in config.source_dirs],
    }
    if config.base_image:
        data["base_image"] = config.base_image
    if config.requirements is not None:
        data["requirements"] = str(config.requirements)
    if config.constraints is not None:
        data["constraints"] = str(config.constraints)
    if config.system_packages:
        data["system_packages"] = list(config.system_packages)
    if config.setup:
        data["setup"] = list(config.setup)
    if config.dockerfile is not None:
        data["dockerfile"] = str(config.dockerfile)
    if says_azure_cli:  # left out, it follows each job's `bind_azure_folder`, as written
        data["azure_cli"] = config.azure_cli
    return data


def _job(job: Job) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": job.name,
        "framework": job.framework,
        "scripts": [str(s) for s in job.scripts],
        "env": dict(job.env),
        "env_passthrough": list(job.env_passthrough),
        "timeout": job.timeout,
        "bind_azure_folder": job.bind_azure_folder,
        "azure_mount": job.azure_mount,
        "repeat": job.repeat,
        "retries": job.retries,
        "retry_on": list(job.retry_on),
        "resources": asdict(job.resources),
        "network": job.network,
        "read_only_rootfs": job.read_only_rootfs,
        "hardening": asdict(job.hardening),
        "max_code_size": job.max_code_size,
        "max_artifacts_size": job.max_artifacts_size,
        "max_artifacts_files": job.max_artifacts_files,
    }
    if job.matrix:
        data["matrix"] = {name: list(values) for name, values in job.matrix}
    if job.env_file is not None:
        data["env_file"] = str(job.env_file)
    if job.record_env:
        data["record_env"] = list(job.record_env)
    if job.max_parallel is not None:
        data["max_parallel"] = job.max_parallel
    if job.runtime is not None:
        data["runtime"] = job.runtime
    if not job.enforce_limits:
        data["enforce_limits"] = False
    if job.pool is not None:
        data["pool"] = job.pool
    if job.models:
        data["models"] = list(job.models)
    if job.cost_limit is not None:
        data["cost_limit"] = job.cost_limit
    if job.model_env:
        data["model_env"] = dict(job.model_env)
    if job.slurm != SlurmSettings():
        data["slurm"] = _slurm(job.slurm)
    return data


def _slurm(settings: SlurmSettings) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if settings.partition is not None:
        data["partition"] = settings.partition
    if settings.account is not None:
        data["account"] = settings.account
    if settings.sbatch_args:
        data["sbatch_args"] = list(settings.sbatch_args)
    return data
