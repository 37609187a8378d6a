"""How the package reaches a node (backends/ray_boot.py), without a cluster: its zip, its
digest and the node's cache of it. The cluster tests run it for real (the isolated node has
no other copy of the package). Marked `ray`: it imports Ray."""

from __future__ import annotations

import ast
import importlib
import stat
import sys
import traceback
import zipfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import ray

from safeagents_batch.backends.ray import boot as ray_boot
from safeagents_batch.backends.ray.boot import PACKAGE, Shipment

pytestmark = pytest.mark.ray

PACKAGE_DIR = Path(ray_boot.__file__).resolve().parents[2]


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


@dataclass
class Node:
    """A node's view for install(): its cache, and the zip's fetches from the object store.
    This process stands in for the node's fresh worker: the package is not imported in it
    (restored after the test), and its import path is a copy."""

    cache: Path
    digest: str
    data: bytes
    fetched: list[Any] = field(default_factory=list)

    @property
    def target(self) -> Path:
        return self.cache / "package" / self.digest

    def install(self) -> None:
        ray_boot.install(Shipment(self.digest, [f"ref-{len(self.fetched)}"]))


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    digest, data = ray_boot.pack(tiny_package(tmp_path / "driver", "shipped"))
    node = Node(tmp_path / "node", digest, data)

    def fetch(ref: Any) -> bytes:
        node.fetched.append(ref)
        return data

    monkeypatch.setenv(ray_boot.NODE_CACHE_ENV, str(node.cache))
    monkeypatch.setattr(ray, "get", fetch)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, PACKAGE)
    return node


def test_a_node_unpacks_a_digest_once_and_imports_from_it(node: Node) -> None:
    node.install()
    node.install()  # the next worker of the node
    assert node.fetched == ["ref-0"]  # the second found it cached
    assert sys.path[0] == str(node.target) and sys.path.count(str(node.target)) == 1
    assert importlib.import_module(PACKAGE).WORD == "shipped"  # not this checkout's


def test_a_copy_left_incomplete_is_unpacked_again(node: Node) -> None:
    (node.target / PACKAGE).mkdir(parents=True)  # a crash, or a temp-dir cleaner, left this
    (node.target / PACKAGE / "stale.py").write_text("", encoding="utf-8")
    node.install()
    assert node.fetched == ["ref-0"]
    assert sorted(p.name for p in (node.target / PACKAGE).iterdir()) == ["__init__.py"]
    assert not [p for p in node.target.parent.iterdir() if p.name.startswith(".")]  # no staging


def test_a_worker_that_has_another_copy_imported_refuses(node: Node) -> None:
    sys.modules[PACKAGE] = ModuleType(PACKAGE)
    sys.modules[PACKAGE].__file__ = "/elsewhere/safeagents_batch/__init__.py"
    with pytest.raises(RuntimeError, match="already imported here from /elsewhere"):
        node.install()


def test_a_cache_others_may_write_to_or_a_link_is_refused(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.cache.mkdir()
    node.cache.chmod(0o777)
    with pytest.raises(RuntimeError, match="not this user's own"):
        node.install()
    node.cache.chmod(0o700)
    node.install()  # its own again: fine

    elsewhere = tmp_path / "planted"
    elsewhere.mkdir(mode=0o700)
    monkeypatch.setenv(ray_boot.NODE_CACHE_ENV, str(tmp_path / "link"))
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(RuntimeError, match="link is a link or not a directory"):
        node.install()
    assert node.fetched == ["ref-0"]


def test_the_cache_is_made_0700_an_older_0755_one_closed_and_unsafe_parents_refused(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.install()
    assert stat.S_IMODE(node.cache.stat().st_mode) == 0o700
    node.cache.chmod(0o755)  # as an earlier release made it
    node.install()
    assert stat.S_IMODE(node.cache.stat().st_mode) == 0o700

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may swap what is below it (not sticky)
    monkeypatch.setenv(ray_boot.NODE_CACHE_ENV, str(shared / "cache"))
    with pytest.raises(RuntimeError, match=r"shared \(owner uid \d+, mode 777\) is not safe"):
        node.install()
    shared.chmod(0o1777)  # sticky, as /tmp: fine
    node.install()


def test_the_real_package_goes_whole_data_files_included() -> None:
    _, data = ray_boot.pack(PACKAGE_DIR)
    names = set(zipfile.ZipFile(BytesIO(data)).namelist())
    assert f"{PACKAGE}/backends/ray/node.py" in names
    assert f"{PACKAGE}/schemas/jobs.schema.json" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_an_agent_that_cannot_install_says_why_when_asked_if_ready(node: Node) -> None:
    node.cache.mkdir()
    node.cache.chmod(0o777)  # planted by someone else, say
    agent = ray_boot.BootedAgent(Shipment(node.digest, ["ref"]))  # no raise: Ray would bury it
    with pytest.raises(RuntimeError, match="not this user's own") as raised:
        agent.ready()
    # Raised as itself, with where it was raised: the driver reads that from Ray's text.
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert frames[1] == "ready" and "node_cache" in frames


def test_a_node_below_the_floor_refuses_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import safeagents_batch

    assert ray_boot.MIN_PYTHON == safeagents_batch.MIN_PYTHON  # its own copy: it ships alone
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    with pytest.raises(RuntimeError, match=r"^safeagents_batch needs Python >= 3\.11; this node"):
        ray_boot.install(Shipment("digest", []))
