"""code: what ships from a script directory, its digest, and the snapshot; real temp dirs."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from safeagents_batch.core.errors import UsageError
from safeagents_batch.staging import code
from safeagents_batch.staging.code import code_digest, stage_code
from safeagents_batch.staging.select import CodeFile, CodeTooLarge
from safeagents_batch.staging.select import select_files as code_files

MiB = 1024**2


def write(root: Path, relative: str, text: str = "x\n", mode: int | None = None) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if mode is not None:
        path.chmod(mode)
    return path


def sparse(root: Path, relative: str, size: int) -> Path:
    """A file of `size` bytes that takes no disk space: the cap is checked on sizes alone."""
    path = write(root, relative, "")
    os.truncate(path, size)
    return path


def shipped(directory: Path, **options: Any) -> list[str]:
    return [file.relative for file in code_files(directory, **options)]


def tree(root: Path) -> dict[str, int]:
    """Every entry under `root` (dirs end in /) with its permission bits."""
    entries: dict[str, int] = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix() + ("/" if path.is_dir() else "")
        entries[name] = stat.S_IMODE(path.lstat().st_mode)
    return entries


def in_thread(call: Callable[[], object], seconds: float = 10) -> None:
    """Runs `call` and fails (instead of hanging the suite) if it has not returned in time."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked (on a FIFO?)"
    if errors:
        raise errors[0]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# --- what is left out ------------------------------------------------------------------------


def test_repository_and_cache_dirs_and_pyc_files_are_left_out(tmp_path: Path) -> None:
    for name in (".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"):
        write(tmp_path, f"{name}/inner.py")
        write(tmp_path, f"pkg/{name}/inner.py")
    write(tmp_path, "main.py")
    write(tmp_path, "pkg/mod.py")
    write(tmp_path, "pkg/mod.pyc")

    assert shipped(tmp_path) == ["main.py", "pkg/mod.py"]


def test_virtualenvs_and_conda_envs_are_left_out_by_their_marker_not_their_name(
    tmp_path: Path,
) -> None:
    write(tmp_path, "env/pyvenv.cfg", "home = /usr/bin\n")
    write(tmp_path, "env/lib/site.py")
    write(tmp_path, "tools/conda/conda-meta/history")
    write(tmp_path, "tools/conda/lib/pkg.py")
    write(tmp_path, "venv/helpers.py")  # named like one, but no marker: it is code
    write(tmp_path, "main.py")

    assert shipped(tmp_path) == ["main.py", "venv/helpers.py"]


def test_top_level_gitignore_with_negation_anchors_dir_patterns_and_double_star(
    tmp_path: Path,
) -> None:
    write(tmp_path, ".gitignore", "*.log\n!keep.log\n/top.txt\ndata/\ndocs/**/*.tmp\n")
    for name in (
        "a.log",
        "keep.log",
        "sub/b.log",
        "top.txt",
        "sub/top.txt",
        "data/big.csv",
        "sub/data/big.csv",
        "lib/data",  # a file: `data/` only matches directories
        "docs/x/y/z.tmp",
        "docs/x/y/z.md",
        "main.py",
    ):
        write(tmp_path, name)

    assert shipped(tmp_path) == [
        ".gitignore",
        "docs/x/y/z.md",
        "keep.log",
        "lib/data",
        "main.py",
        "sub/top.txt",
    ]


def test_nested_gitignore_is_relative_to_its_directory_and_overrides_the_parent(
    tmp_path: Path,
) -> None:
    write(tmp_path, ".gitignore", "*.log\n")
    write(tmp_path, "sub/.gitignore", "/local.txt\n!*.log\n")
    for name in ("local.txt", "sub/local.txt", "sub/deeper/local.txt", "x.log", "sub/y.log"):
        write(tmp_path, name)

    assert shipped(tmp_path) == [
        ".gitignore",
        "local.txt",
        "sub/.gitignore",
        "sub/deeper/local.txt",
        "sub/y.log",
    ]


def test_files_under_an_ignored_directory_cannot_be_reincluded_like_in_git(
    tmp_path: Path,
) -> None:
    # `build/` ignores the directory itself: git never looks inside, so neither the negation
    # nor a .gitignore in there has any effect. `out/*` ignores only what is in out/.
    write(tmp_path, ".gitignore", "build/\n!build/keep.txt\nout/*\n!out/keep.txt\n")
    write(tmp_path, "build/.gitignore", "!*\n")
    for name in ("build/keep.txt", "build/x.o", "out/keep.txt", "out/x.o"):
        write(tmp_path, name)

    assert shipped(tmp_path) == [".gitignore", "out/keep.txt"]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        # Checked against git 2.39 (`git ls-files -o --exclude-standard`); pathspec's own
        # whole-path matching gets the first two wrong.
        ("c/\n!x/\n", ["a/f", "x/f"]),
        ("a/**/\n", ["a/f", "x/c/f", "x/f"]),
        ("a/**\n!a/f\n", ["a/f", "x/c/f", "x/f"]),
        ("*\n!*/\n!*.txt\n", []),
        ("x/*\n!x/c/\n", ["a/c/f", "a/f", "x/c/f"]),
    ],
)
def test_gitignore_matches_what_git_ignores(
    tmp_path: Path, rules: str, expected: list[str]
) -> None:
    write(tmp_path, ".gitignore", rules)
    for name in ("a/f", "a/c/f", "x/f", "x/c/f"):
        write(tmp_path, name)

    assert [name for name in shipped(tmp_path) if name != ".gitignore"] == expected


def test_a_gitignore_that_is_a_symlink_is_not_read(tmp_path: Path) -> None:
    rules = write(tmp_path / "elsewhere", "rules", "*.py\n")
    source = tmp_path / "src"
    write(source, "main.py")
    (source / ".gitignore").symlink_to(rules)

    assert "main.py" in shipped(source)


def test_an_excluded_path_inside_the_directory_is_left_out_compared_resolved(
    tmp_path: Path,
) -> None:
    source = tmp_path / "scripts"
    write(source, "main.py")
    write(source, "logs/batch-1/runs/r/console.log")
    write(source, "logs-old/kept.txt")  # a sibling with a common prefix is not under it
    (tmp_path / "alias").symlink_to(source)

    # The output dir named through a symlink and a `..`: it is the same directory.
    exclude = [tmp_path / "alias" / "sub" / ".." / "logs"]
    assert shipped(source, exclude=exclude) == ["logs-old/kept.txt", "main.py"]


# --- keep ---------------------------------------------------------------------------------------


def test_keep_ships_a_script_that_gitignore_or_exclude_would_leave_out(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "run.py\ngen/\n")
    run = write(tmp_path, "run.py")
    generated = write(tmp_path, "gen/script.py")
    excluded = write(tmp_path, "out/job.py")
    write(tmp_path, "gen/other.py")

    files = shipped(tmp_path, exclude=[tmp_path / "out"], keep=[run, generated, excluded])
    assert files == [".gitignore", "gen/script.py", "out/job.py", "run.py"]


def test_keep_never_brings_in_content_from_outside_the_directory(tmp_path: Path) -> None:
    outside = write(tmp_path, "secret.py")
    source = tmp_path / "src"
    write(source, "main.py")

    assert shipped(source, keep=[outside, source / ".." / "secret.py"]) == ["main.py"]


# --- symlinks and special files ------------------------------------------------------------


def test_symlink_to_a_file_ships_as_a_regular_file_with_the_targets_content(
    tmp_path: Path,
) -> None:
    target = write(tmp_path / "shared", "helpers.py", "VALUE = 42\n")
    source = tmp_path / "src"
    write(source, "main.py")
    (source / "helpers.py").symlink_to(target)

    staged = stage_code(source, tmp_path / "store")

    copy = staged.path / "helpers.py"
    assert not copy.is_symlink() and copy.is_file()
    assert copy.read_text() == "VALUE = 42\n"


def test_symlinked_dirs_fifos_sockets_and_dangling_links_are_left_out_without_blocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    write(source, "main.py")
    monkeypatch.chdir(source)  # a socket's path must be short: bind it by a relative name
    server = socket.socket(socket.AF_UNIX)
    server.bind("socket")
    write(tmp_path / "other", "big/file.py")
    (source / "linked_dir").symlink_to(tmp_path / "other" / "big")
    os.mkfifo(source / "pipe")
    (source / "pipe_link").symlink_to(source / "pipe")
    (source / "dangling").symlink_to(source / "missing")
    (source / "loop").symlink_to(source / "loop")

    in_thread(lambda: code_files(source))
    assert shipped(source) == ["main.py"]
    in_thread(lambda: stage_code(source, tmp_path / "store"))
    server.close()


# --- the snapshot -------------------------------------------------------------------------------


def test_private_source_gives_a_snapshot_any_uid_can_read(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write(source, "main.py", mode=0o600)
    write(source, "pkg/mod.py", mode=0o600)
    write(source, "pkg/deep/data.json", mode=0o400)
    for directory in (source / "pkg" / "deep", source / "pkg", source):
        directory.chmod(0o700)
    store = tmp_path / "batch" / "code"

    with umask(0o077):  # the user's umask must not leak into the snapshot either
        staged = stage_code(source, store)

    assert tree(staged.path) == {
        "main.py": 0o644,
        "pkg/": 0o755,
        "pkg/deep/": 0o755,
        "pkg/deep/data.json": 0o644,
        "pkg/mod.py": 0o644,
    }
    assert stat.S_IMODE(staged.path.stat().st_mode) == 0o755
    assert stat.S_IMODE(store.stat().st_mode) == 0o755


def test_owner_executable_files_stay_executable(tmp_path: Path) -> None:
    write(tmp_path / "src", "run.sh", "#!/bin/sh\n", mode=0o700)
    write(tmp_path / "src", "lib.sh", "", mode=0o655)  # executable by others only: not

    staged = stage_code(tmp_path / "src", tmp_path / "store")

    assert tree(staged.path) == {"lib.sh": 0o644, "run.sh": 0o755}
    assert [f.executable for f in code_files(tmp_path / "src")] == [False, True]


def test_snapshot_holds_exactly_the_listed_files_and_empty_dirs_do_not_ship(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, "main.py", "print(1)\n")
    write(source, "pkg/mod.py", "X = 2\n")
    write(source, "pkg/__pycache__/mod.pyc")
    (source / "empty" / "deeper").mkdir(parents=True)

    staged = stage_code(source, tmp_path / "store")

    assert set(tree(staged.path)) == {"main.py", "pkg/", "pkg/mod.py"}
    assert (staged.path / "pkg" / "mod.py").read_text() == "X = 2\n"


def test_snapshot_is_named_by_its_full_digest(tmp_path: Path) -> None:
    write(tmp_path / "src", "main.py")
    store = tmp_path / "store"

    staged = stage_code(tmp_path / "src", store)

    assert staged.path == store / staged.digest
    assert len(staged.digest) == 64 and int(staged.digest, 16) >= 0
    assert staged.digest == code_digest(code_files(tmp_path / "src"))


def test_second_stage_reuses_the_snapshot(tmp_path: Path) -> None:
    write(tmp_path / "src", "main.py")
    store = tmp_path / "store"
    first = stage_code(tmp_path / "src", store)
    inode = (first.path / "main.py").stat().st_ino

    second = stage_code(tmp_path / "src", store)

    assert second == first
    assert (second.path / "main.py").stat().st_ino == inode  # the same copy, not a new one
    assert os.listdir(store) == [first.digest]


def test_a_snapshot_already_in_place_is_reused_and_the_new_copy_discarded(
    tmp_path: Path,
) -> None:
    # What a concurrent stage that won the race leaves: the finished snapshot of that digest.
    write(tmp_path / "src", "main.py")
    digest = code_digest(code_files(tmp_path / "src"))
    store = tmp_path / "store"
    placed = write(store, f"{digest}/main.py")
    first = placed.stat().st_ino

    staged = stage_code(tmp_path / "src", store)

    assert staged.path == store / digest and (store / digest / "main.py").stat().st_ino == first
    assert os.listdir(store) == [digest]


@pytest.mark.parametrize("planted", ["an extra file", "changed content", "a link"])
def test_what_stands_at_a_snapshots_name_and_is_not_it_is_moved_aside(
    tmp_path: Path, planted: str
) -> None:
    """A batch dir received from someone: its code/<digest> may hold other code, or be a link
    to a directory of the host (which a container would then mount)."""
    write(tmp_path / "src", "main.py", "print('mine')\n")
    digest = code_digest(code_files(tmp_path / "src"))
    store = tmp_path / "store"
    elsewhere = tmp_path / "host-dir"
    write(elsewhere, "secret.txt")
    if planted == "a link":
        store.mkdir()
        (store / digest).symlink_to(elsewhere)
    else:
        write(
            store,
            f"{digest}/main.py",
            "print('mine')\n" if planted != "changed content" else "print('theirs')\n",
        )
        if planted == "an extra file":
            write(store, f"{digest}/extra.py")

    staged = stage_code(tmp_path / "src", store)

    assert staged.path == store / digest and not (store / digest).is_symlink()
    assert sorted(os.listdir(store / digest)) == ["main.py"]
    assert (store / digest / "main.py").read_text() == "print('mine')\n"
    assert (elsewhere / "secret.txt").exists() and os.listdir(elsewhere) == ["secret.txt"]


def test_concurrent_stages_of_one_directory_share_one_snapshot(tmp_path: Path) -> None:
    for index in range(50):
        write(tmp_path / "src", f"pkg/m{index}.py", f"X = {index}\n")
    store = tmp_path / "store"
    start = threading.Barrier(4)
    results: list[Path] = []

    def stage() -> None:
        start.wait()
        results.append(stage_code(tmp_path / "src", store).path)

    threads = [threading.Thread(target=stage) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 4 and len(set(results)) == 1
    assert os.listdir(store) == [results[0].name]
    assert len(os.listdir(results[0] / "pkg")) == 50


def test_stage_leaves_no_temp_dirs_in_the_store_on_success_or_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    write(source, "a.py")
    store = tmp_path / "store"
    staged = stage_code(source, store)
    assert os.listdir(store) == [staged.digest]

    write(source, "b.py")
    fail_opening(monkeypatch, source / "b.py")
    with pytest.raises(UsageError):
        stage_code(source, store)
    assert os.listdir(store) == [staged.digest]


# --- digest ------------------------------------------------------------------------------------


def make_tree(root: Path, file_mode: int) -> Path:
    write(root, "main.py", "print('hi')\n", mode=file_mode)
    write(root, "pkg/mod.py", "X = 1\n", mode=file_mode)
    write(root, "run.sh", "#!/bin/sh\n", mode=0o755)
    return root


def test_digest_is_the_same_for_identical_trees_in_different_places(tmp_path: Path) -> None:
    # Modes other than the owner's x bit, mtimes and location do not count.
    one = make_tree(tmp_path / "one", 0o644)
    two = make_tree(tmp_path / "elsewhere" / "two", 0o600)
    os.utime(two / "main.py", (0, 0))

    assert code_digest(code_files(one)) == code_digest(code_files(two))
    assert stage_code(one, tmp_path / "s1").digest == stage_code(two, tmp_path / "s2").digest


def test_digest_is_sha256_over_path_executable_bit_and_content_hash(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", 0o644)
    expected = hashlib.sha256(code.DIGEST_FORMAT)
    for relative, executable in (("main.py", False), ("pkg/mod.py", False), ("run.sh", True)):
        content = hashlib.sha256((source / relative).read_bytes()).hexdigest()
        flag = "x" if executable else "-"
        expected.update(f"{relative}\0{flag}{content}\n".encode())

    assert code_digest(code_files(source)) == expected.hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "pkg" / "mod.py").write_text("X = 2\n"),
        lambda root: (root / "main.py").chmod(0o744),
        lambda root: (root / "pkg" / "mod.py").rename(root / "pkg" / "other.py"),
        lambda root: write(root, "new.py", ""),
    ],
    ids=["edit", "chmod+x", "rename", "new-empty-file"],
)
def test_digest_changes_with_any_change_that_ships(
    tmp_path: Path, change: Callable[[Path], object]
) -> None:
    source = make_tree(tmp_path / "src", 0o644)
    before = code_digest(code_files(source))

    change(source)

    assert code_digest(code_files(source)) != before


def test_listing_is_sorted_by_path(tmp_path: Path) -> None:
    for name in ("b.py", "a/z.py", "a.py", "A.py", "a/b/c.py"):
        write(tmp_path, name)

    assert shipped(tmp_path) == ["A.py", "a.py", "a/b/c.py", "a/z.py", "b.py"]
    assert code_files(tmp_path)[0] == CodeFile("A.py", tmp_path.resolve() / "A.py", 2, False)


# --- size cap and errors -----------------------------------------------------------------------


def test_too_much_code_is_one_line_naming_the_largest_entries_and_stores_nothing(
    tmp_path: Path,
) -> None:
    source = tmp_path / "scripts"
    sparse(source, "data/train.bin", 100 * MiB)
    sparse(source, "data/more/test.bin", 20 * MiB)
    sparse(source, "model.bin", 20 * MiB)
    sparse(source, "notes.txt", int(3.1 * MiB))
    write(source, "main.py")
    store = tmp_path / "batch" / "code"

    with pytest.raises(CodeTooLarge) as caught:
        stage_code(source, store)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{source}/: 143.1 MiB of code to ship, over the limit of ")
    assert "100.0 MiB (max_code_size)" in message
    assert "largest: data/ 120.0 MiB, model.bin 20.0 MiB, notes.txt 3.1 MiB, main.py 2 B;" in (
        message
    )
    assert message.endswith("add them to .gitignore or raise max_code_size")
    assert isinstance(caught.value, UsageError)
    assert not store.exists()


def test_too_large_names_at_most_five_entries(tmp_path: Path) -> None:
    for index in range(7):
        sparse(tmp_path / "src", f"f{index}.bin", (index + 1) * 1024)

    with pytest.raises(CodeTooLarge) as caught:
        stage_code(tmp_path / "src", tmp_path / "store", limit=1024)

    largest = "f6.bin 7.0 KiB, f5.bin 6.0 KiB, f4.bin 5.0 KiB, f3.bin 4.0 KiB, f2.bin 3.0 KiB"
    assert f"largest: {largest};" in str(caught.value)


def test_code_at_the_limit_ships(tmp_path: Path) -> None:
    sparse(tmp_path / "src", "blob.bin", 4096)

    staged = stage_code(tmp_path / "src", tmp_path / "store", limit=4096)

    assert (staged.path / "blob.bin").stat().st_size == 4096


def fail_opening(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Makes opening `path` fail as on a file of another user without read permission (the
    tests may run as root, which can read anything)."""
    real_open = os.open

    def fake_open(target: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(target).resolve() == path.resolve():
            raise PermissionError(13, "Permission denied", str(target))
        return real_open(target, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)  # the os module code.py reads through


def test_an_unreadable_file_is_a_one_line_usage_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    secret = write(source, "secret.py")
    fail_opening(monkeypatch, secret)

    with pytest.raises(UsageError) as caught:
        stage_code(source, tmp_path / "store")

    assert str(caught.value) == f"cannot read {secret.resolve()}: Permission denied"


def test_an_unreadable_gitignore_is_a_usage_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = write(tmp_path, ".gitignore", "*.log\n")
    fail_opening(monkeypatch, rules)

    with pytest.raises(UsageError, match=r"cannot read .*\.gitignore: Permission denied"):
        code_files(tmp_path)


def test_a_directory_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        code_files(tmp_path / "missing")
