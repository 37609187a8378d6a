"""The docs say what the code does where a test can tell: every key of the jobs file's schema is
documented in docs/jobs-file.md, and README.md stays a short page whose links into docs/ lead
somewhere. Pure: no engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS_SCHEMA = ROOT / "safeagents_batch" / "schemas" / "jobs.schema.json"
JOBS_FILE_DOC = ROOT / "docs" / "jobs-file.md"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 200
DOCS_LINK = re.compile(r"\]\((docs/[^)#\s]+)(?:#[^)\s]*)?\)")


def property_names(node: object) -> set[str]:
    """Every name defined under a `properties` object anywhere in a JSON Schema (`$defs`
    included). The keys of `patternProperties` are patterns, not names: never collected."""
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names.update(str(name) for name in value)
            names |= property_names(value)
    elif isinstance(node, list):
        for item in node:
            names |= property_names(item)
    return names


def schema_keys() -> list[str]:
    return sorted(property_names(json.loads(JOBS_SCHEMA.read_text(encoding="utf-8"))))


def test_the_schema_walk_finds_keys_at_every_level() -> None:
    keys = set(schema_keys())
    # Top level, a framework's, a job's (in $defs), and nested objects of a job.
    assert {"version", "frameworks", "azure_cli", "timeout", "memory", "non_root"} <= keys


def test_pattern_properties_are_not_names() -> None:
    schema: dict[str, object] = {
        "properties": {"a": {"patternProperties": {"^x": {"properties": {"b": {}}}}}}
    }
    assert property_names(schema) == {"a", "b"}


@pytest.mark.parametrize("key", schema_keys())
def test_every_jobs_file_key_is_documented(key: str) -> None:
    assert f"`{key}`" in JOBS_FILE_DOC.read_text(encoding="utf-8"), (
        f"`{key}` is in {JOBS_SCHEMA.relative_to(ROOT)} but not in docs/jobs-file.md"
    )


def test_readme_is_a_short_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def readme_doc_links() -> list[str]:
    return DOCS_LINK.findall(README.read_text(encoding="utf-8"))


def test_readme_links_into_docs_lead_to_files() -> None:
    links = readme_doc_links()
    assert links, "README.md links to nothing under docs/"
    missing = sorted({link for link in links if not (ROOT / link).is_file()})
    assert missing == []


def test_readme_links_every_doc() -> None:
    linked = {Path(link).name for link in readme_doc_links()}
    unlinked = sorted(p.name for p in DOCS.glob("*.md") if p.name not in linked)
    assert unlinked == []
