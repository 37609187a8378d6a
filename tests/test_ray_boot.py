"""How the package reaches a node (backends/ray_boot.py), without a cluster: its zip, its
digest and the node's cache of it. The cluster tests run it for real (the isolated node has
no other copy of the package). Marked `ray`: it imports Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import ray

from safeagents_batch.backends import ray_boot
from safeagents_batch.backends.ray_boot import PACKAGE, Shipment

pytestmark = pytest.mark.ray

PACKAGE_DIR = Path(ray_boot.__file__).resolve().parents[1]


def tiny_package(root: Path, text: str) -> Path:
    package = root / PACKAGE
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text(f"WORD = {text!r}\n", encoding="utf-8")
    (package / "__pycache__" / "stale.pyc").write_bytes(b"not shipped")
    return package


def test_the_module_needs_nothing_of_the_package_a_node_lacks_before_it_is_installed() -> None:
    # It is pickled by value: an import of the package at its top would fail on a node
    # without it. Imports inside functions run after install() and are allowed.
    tree = ast.parse(Path(ray_boot.__file__).read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n.split(".")[0] == PACKAGE}, names


def test_the_zip_holds_the_sources_without_bytecode_and_its_digest_follows_them(
    tmp_path: Path,
) -> None:
    package = tiny_package(tmp_path, "one")
    digest, data = ray_boot.pack(package)
    assert ray_boot.pack(package) == (digest, data)  # the same files, the same digest
    (package / "__init__.py").write_text("WORD = 'two'\n", encoding="utf-8")
    assert ray_boot.pack(package)[0] != digest
    assert zipfile.ZipFile(BytesIO(data)).namelist() == [f"{PACKAGE}/__init__.py"]


def test_a_node_unpacks_a_digest_once_and_imports_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, data = ray_boot.pack(tiny_package(tmp_path / "driver", "shipped"))
    cache = tmp_path / "node"
    fetched: list[Any] = []

    def fetch(ref: Any) -> bytes:
        fetched.append(ref)
        return data

    monkeypatch.setenv(ray_boot.NODE_CACHE_ENV, str(cache))
    monkeypatch.setattr(ray, "get", fetch)
    monkeypatch.setattr(sys, "path", list(sys.path))
    shipment = Shipment(digest, ["the zip's ref"])
    ray_boot.install(shipment)
    ray_boot.install(shipment)
    assert fetched == ["the zip's ref"]  # the second worker found it cached
    target = cache / "package" / digest
    assert sys.path[0] == str(target) and sys.path.count(str(target)) == 1
    assert (target / PACKAGE / "__init__.py").read_text(encoding="utf-8") == "WORD = 'shipped'\n"
    # A fresh worker with only that path imports the shipped copy, not this checkout.
    seen = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(target)!r}); "
            f"import {PACKAGE}; print({PACKAGE}.WORD)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert seen.stdout.strip() == "shipped"


def test_the_real_package_goes_whole_data_files_included() -> None:
    _, data = ray_boot.pack(PACKAGE_DIR)
    names = set(zipfile.ZipFile(BytesIO(data)).namelist())
    assert f"{PACKAGE}/backends/ray_node.py" in names
    assert f"{PACKAGE}/schemas/jobs.schema.json" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
