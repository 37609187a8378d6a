"""Which versions an image resolved for the packages a framework asked for (pure: pip
requirement strings and `pip freeze` lines in, `name==version` out)."""

from __future__ import annotations

import re

from safeagents_batch.jobs.model import ImageConfig
from safeagents_batch.staging.images import AZURE_CLI_PACKAGE

# The project name at the start of a requirement: `autogen-ext[openai]>=0.4` -> autogen-ext.
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical_name(name: str) -> str:
    """PEP 503: `Autogen_Ext` and `autogen.ext` name the same project as `autogen-ext`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str | None:
    """The project a requirement names; None for what is not one (a URL, an option)."""
    found = _NAME.match(requirement)
    if found is None or "://" in requirement.split(";")[0].split("@")[0]:
        return None
    return canonical_name(found.group(1))


def freeze_versions(freeze: tuple[str, ...]) -> dict[str, str]:
    """`name==version` lines of `pip freeze` by canonical name; `name @ url` lines keep the url."""
    versions: dict[str, str] = {}
    for line in freeze:
        name, sep, _ = line.partition("==")
        if not sep:
            name, sep, _ = line.partition(" @ ")
        if sep:
            versions[canonical_name(name.strip())] = line.strip()
    return versions


def requested_versions(
    config: ImageConfig, freeze: tuple[str, ...], azure_cli: tuple[str, ...] = ()
) -> list[str]:
    """The resolved line of each package the config names (framework packages, additional
    packages, the Azure CLI), in that order; `name (not found)` for one pip did not list."""
    wanted = [*config.packages, *config.additional_packages]
    names = [n for n in dict.fromkeys(map(requirement_name, wanted)) if n is not None]
    versions = freeze_versions(freeze)
    lines = [versions.get(name, f"{name} (not found)") for name in names]
    if config.azure_cli:
        lines.append(freeze_versions(azure_cli).get(AZURE_CLI_PACKAGE, "azure-cli (not found)"))
    return lines
