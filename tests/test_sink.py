"""sink: log routing and flushing, no writes through links, and artifacts taken from an
untrusted tar stream (only files and directories, safe names, a size cap, broken streams)."""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safeagents_batch.core.tarsafe import StreamingTar
from safeagents_batch.core.units import format_size
from safeagents_batch.execution.sink import LocalSink
from safeagents_batch.jobs.model import DEFAULT_ARTIFACT_LIMIT
from safeagents_batch.records.artifacts import MAX_DROPS_LISTED
from safeagents_batch.records.layout import LOG_NAMES
from safeagents_batch.records.layout import TRACEBACK as TRACEBACK_NAME

CHUNK = 1000
GIB = 1024**3


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """Modes are checked as created under the usual umask."""
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- building archives -----------------------------------------------------------------


def entry(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def archive(*members: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    """A tar as `docker cp` gives it (GNU format, padded, with its end marker)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            info, data = member if isinstance(member, tuple) else (member, b"")
            if info.isreg():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, mode=mode), data


def chunks(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@dataclass
class Guarded:
    """A chunk source that fails the test when pulled beyond `allowed` bytes (the sink read
    past where it should have stopped) and records whether the sink closed it."""

    head: bytes
    allowed: int
    pulled: int = 0
    closed: bool = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.pulled >= self.allowed:
            raise AssertionError(f"the sink read {self.pulled} bytes, more than {self.allowed}")
        start = self.pulled
        self.pulled += CHUNK
        if start < len(self.head):
            return self.head[start : start + CHUNK]
        return b"\0" * CHUNK  # the big member's data, never-ending

    def close(self) -> None:
        self.closed = True


def collect(
    tmp_path: Path, stream: Iterable[bytes], limit: int | None = None, file_limit: int = 10_000
) -> LocalSink:
    cap = DEFAULT_ARTIFACT_LIMIT if limit is None else limit
    with LocalSink(tmp_path / "attempt", cap, file_limit=file_limit) as sink:
        sink.artifacts(stream)
    return sink


def walk_kinds(root: Path) -> dict[str, int]:
    """Every path under root (relative) and its lstat mode: links are seen, not followed."""
    found: dict[str, int] = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(parent, name)
            found[str(path.relative_to(root))] = os.lstat(path).st_mode
    return found


# --- logs ------------------------------------------------------------------------------


def test_stdout_and_stderr_go_to_their_logs_and_console_in_arrival_order(tmp_path: Path) -> None:
    with LocalSink(tmp_path / "a") as sink:
        sink.stdout(b"out 1\n")
        sink.stderr(b"err 1\n")
        sink.stdout(b"out 2\n")
        sink.stderr(b"err 2\n")
    logs = {name: (tmp_path / "a" / name).read_bytes() for name in LOG_NAMES}
    assert logs == {
        "stdout.log": b"out 1\nout 2\n",
        "stderr.log": b"err 1\nerr 2\n",
        "console.log": b"out 1\nerr 1\nout 2\nerr 2\n",
    }


def test_each_chunk_is_on_disk_before_close(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path / "a")
    sink.stdout(b"first")
    assert (tmp_path / "a" / "stdout.log").read_bytes() == b"first"
    sink.stderr(b"second")
    assert (tmp_path / "a" / "stderr.log").read_bytes() == b"second"
    assert (tmp_path / "a" / "console.log").read_bytes() == b"firstsecond"
    sink.close()


def test_creates_parents_and_truncates_logs_of_an_existing_dir(tmp_path: Path) -> None:
    attempt = tmp_path / "runs" / "r1" / "attempt-1"
    with LocalSink(attempt) as sink:
        sink.stdout(b"old run, longer")
    with LocalSink(attempt) as sink:
        sink.stdout(b"new")
    assert (attempt / "stdout.log").read_bytes() == b"new"
    assert stat.S_IMODE((attempt / "stdout.log").stat().st_mode) == 0o644  # 0666 less umask


@pytest.mark.parametrize("name", LOG_NAMES)
def test_a_planted_log_symlink_is_not_followed(tmp_path: Path, name: str) -> None:
    attempt = tmp_path / "a"
    attempt.mkdir()
    target = tmp_path / "host-file"
    target.write_bytes(b"precious")
    (attempt / name).symlink_to(target)
    with pytest.raises(OSError) as raised:
        LocalSink(attempt)
    assert raised.value.errno == errno.ELOOP
    assert target.read_bytes() == b"precious"


def test_a_dangling_log_symlink_creates_nothing(tmp_path: Path) -> None:
    attempt = tmp_path / "a"
    attempt.mkdir()
    (attempt / "console.log").symlink_to(tmp_path / "would-be-created")
    with pytest.raises(OSError):
        LocalSink(attempt)
    assert not (tmp_path / "would-be-created").exists()


@pytest.mark.parametrize("target_exists", [True, False])
def test_an_attempt_dir_that_is_a_symlink_is_refused(tmp_path: Path, target_exists: bool) -> None:
    real = tmp_path / "elsewhere"
    if target_exists:
        real.mkdir()
    link = tmp_path / "attempt"
    link.symlink_to(real)
    with pytest.raises(OSError, match="symbolic link"):
        LocalSink(link)
    assert not real.exists() or list(real.iterdir()) == []


def test_close_is_idempotent_and_writes_after_it_fail(tmp_path: Path) -> None:
    with LocalSink(tmp_path / "a") as sink:
        pass
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.stdout(b"late")
    with pytest.raises(ValueError, match="closed"):
        sink.artifacts([])


def test_a_write_error_reaches_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with LocalSink(tmp_path / "a") as sink:
        monkeypatch.setattr(os, "write", disk_full)
        with pytest.raises(OSError) as raised:
            sink.stdout(b"x")
        monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC


# --- artifacts: what is kept -----------------------------------------------------------


def test_podmans_archive_of_a_volume_is_read_like_dockers(tmp_path: Path) -> None:
    """Podman 4.3 names a volume's top directory "" and its entries "/NAME": kept as Docker's
    `logs/NAME` would be, with the same rules (a link dropped, a climb refused)."""
    stream = archive(
        entry("", tarfile.DIRTYPE),
        file("/result.json", b'{"ok": true}'),
        entry("/sub", tarfile.DIRTYPE),
        file("/sub/f.txt", b"x"),
        entry("/link", tarfile.SYMTYPE, linkname="/etc/passwd"),
        file("/../escape", b"no"),
        file("/stdout.log", b"reserved"),
    )
    sink = collect(tmp_path, chunks(stream))
    root = tmp_path / "attempt"
    assert (root / "result.json").read_bytes() == b'{"ok": true}'
    assert (root / "sub" / "f.txt").read_bytes() == b"x"
    assert not (root / "link").exists() and not (tmp_path / "escape").exists()
    assert sorted(line.split(":")[0] for line in sink.dropped) == [
        "../escape",
        "link",
        "stdout.log",
    ]


def test_files_and_nested_dirs_are_kept_with_content_and_plain_modes(tmp_path: Path) -> None:
    big = os.urandom(5 * CHUNK + 17)  # spans many chunks
    stream = archive(
        entry("logs", tarfile.DIRTYPE),
        file("logs/result.json", b'{"ok": true}'),
        entry("logs/sub", tarfile.DIRTYPE, mode=0o1777),
        entry("logs/sub/deep", tarfile.DIRTYPE, mode=0o700),
        file("logs/sub/deep/data.bin", big, mode=0o600),
        file("logs/run.sh", b"#!/bin/sh\n", mode=0o700),
        file("logs/suid", b"\x7fELF", mode=0o4755),
        file("logs/sgid-sticky", b"x", mode=0o7777),
        file("logs/implicit/parent.txt", b"no dir entry before me"),
        file("logs/sub/stdout.log", b"reserved only at the top"),
    )
    sink = collect(tmp_path, chunks(stream))
    root = tmp_path / "attempt"
    assert sink.dropped == []
    assert (root / "result.json").read_bytes() == b'{"ok": true}'
    assert (root / "sub" / "deep" / "data.bin").read_bytes() == big
    assert (root / "implicit" / "parent.txt").read_bytes() == b"no dir entry before me"
    assert (root / "sub" / "stdout.log").read_bytes() == b"reserved only at the top"
    modes = {name: stat.S_IMODE(mode) for name, mode in walk_kinds(root).items()}
    assert modes == {
        "console.log": 0o644,
        "stdout.log": 0o644,
        "stderr.log": 0o644,
        "result.json": 0o644,
        "sub": 0o755,
        "sub/deep": 0o755,
        "sub/deep/data.bin": 0o644,
        "sub/stdout.log": 0o644,
        "run.sh": 0o755,
        "suid": 0o755,
        "sgid-sticky": 0o755,
        "implicit": 0o755,
        "implicit/parent.txt": 0o644,
    }


def test_a_sparse_member_is_kept_at_its_apparent_size(tmp_path: Path) -> None:
    stream = pax_archive(entry("logs", tarfile.DIRTYPE), sparse("logs/holes.bin", 3000))
    sink = collect(tmp_path, chunks(stream))
    assert sink.dropped == []
    assert (tmp_path / "attempt" / "holes.bin").read_bytes() == b"abcd" + bytes(2996)


def sparse(name: str, apparent: int) -> tuple[tarfile.TarInfo, bytes]:
    """A GNU sparse 1.0 member (pax headers and a map): 4 bytes of data, then a hole."""
    info = entry(name.replace("logs/", "logs/GNUSparseFile.0/"))
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(apparent),
    }
    return info, b"1\n0\n4\n".ljust(tarfile.BLOCKSIZE, b"\0") + b"abcd"


def pax_archive(*members: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info, data = member if isinstance(member, tuple) else (member, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# --- artifacts: what is dropped --------------------------------------------------------


def test_links_fifos_and_devices_are_dropped_and_listed(tmp_path: Path) -> None:
    stream = archive(
        entry("logs", tarfile.DIRTYPE),
        file("logs/kept.txt", b"kept"),
        entry("logs/result.json", tarfile.FIFOTYPE),
        entry("logs/shadow", tarfile.SYMTYPE, linkname="/etc/shadow"),
        entry("logs/root", tarfile.SYMTYPE, linkname="/"),
        entry("logs/hard", tarfile.LNKTYPE, linkname="/etc/passwd"),
        entry("logs/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        entry("logs/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
        entry("logs/odd", b"Z"),
        entry("logs/bad\nname", tarfile.FIFOTYPE),
        file("logs/root/through-the-link.txt", b"must not land in /"),
    )
    sink = collect(tmp_path, chunks(stream))
    assert sink.dropped == [
        "result.json: a FIFO",
        "shadow: a symbolic link",
        "root: a symbolic link",
        "hard: a hard link",
        "null: a character device",
        "sda: a block device",
        "odd: an entry of unsupported tar type b'Z'",
        "bad\\nname: a FIFO",
    ]
    # "root/..." went into a directory of the sink's own making, not through the link.
    assert (tmp_path / "attempt" / "root" / "through-the-link.txt").is_file()
    assert_files_and_dirs_only(tmp_path / "attempt")
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted([*LOG_NAMES, "kept.txt", "root"])


def test_unsafe_and_reserved_names_are_dropped(tmp_path: Path) -> None:
    stream = archive(
        entry("logs", tarfile.DIRTYPE),
        file("logs/../escape", b"out"),
        file("../escape2", b"out"),
        file("/abs", b"out"),
        file("logs/sub/../../escape3", b"out"),
        file("other/x", b"not under the top dir"),
        file("logs/stdout.log", b"forged log"),
        entry("logs/console.log", tarfile.DIRTYPE),
        file("logs/traceback.log", b"a forged traceback"),
    )
    with LocalSink(tmp_path / "attempt") as sink:
        sink.stdout(b"real log")
        sink.artifacts(chunks(stream))
    assert sink.dropped == [
        "../escape: unsafe path",
        "../escape2: unsafe path",
        "/abs: unsafe path",
        "sub/../../escape3: unsafe path",
        "other/x: outside the archive's top directory",
        "stdout.log: reserved name",
        "console.log: reserved name",
        "traceback.log: reserved name",
    ]
    assert sorted(os.listdir(tmp_path)) == ["attempt"]
    assert (tmp_path / "attempt" / "stdout.log").read_bytes() == b"real log"
    assert (tmp_path / "attempt" / "console.log").read_bytes() == b"real log"
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted(LOG_NAMES)


def test_an_unsafe_first_member_does_not_become_the_top(tmp_path: Path) -> None:
    stream = archive(file("/etc/passwd", b"x"), file("logs/a.txt", b"a"), file("etc/b", b"b"))
    sink = collect(tmp_path, chunks(stream))
    assert sink.dropped == [
        "/etc/passwd: unsafe path",
        "etc/b: outside the archive's top directory",
    ]
    assert (tmp_path / "attempt" / "a.txt").read_bytes() == b"a"


def test_duplicates_and_files_in_place_of_dirs_are_dropped(tmp_path: Path) -> None:
    stream = archive(
        file("logs/a.txt", b"first"),
        file("logs/a.txt", b"second"),
        file("logs/a.txt/b", b"under a file"),
        entry("logs/a.txt", tarfile.DIRTYPE),
        file("logs", b"a file as the top"),
    )
    sink = collect(tmp_path, chunks(stream))
    assert sink.dropped == [
        "a.txt: already in the attempt dir",
        "a.txt/b: a file or link where a directory should be",
        "a.txt: a file or link where a directory should be",
        "logs: a file in place of the archive's top directory",
    ]
    assert (tmp_path / "attempt" / "a.txt").read_bytes() == b"first"


def test_a_link_planted_in_the_attempt_dir_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    attempt = tmp_path / "attempt"
    with LocalSink(attempt) as sink:
        (attempt / "sub").symlink_to(outside)
        (attempt / "f.txt").symlink_to(outside / "f.txt")
        sink.artifacts(chunks(archive(file("logs/sub/x", b"x"), file("logs/f.txt", b"f"))))
    assert sink.dropped == [
        "sub/x: a file or link where a directory should be",
        "f.txt: already in the attempt dir",
    ]
    assert list(outside.iterdir()) == []


# --- artifacts: the cap ----------------------------------------------------------------


def test_a_member_over_the_cap_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    """The cap counts what the archive holds of each kept member: headers and padded data
    (dir 512 + a.bin 512 + 6,144 = 7,168; b.bin would make it 13,824; c.txt 1,024 fits)."""
    stream = archive(
        entry("logs", tarfile.DIRTYPE),
        file("logs/a.bin", bytes(6000)),
        file("logs/b.bin", bytes(6000)),
        file("logs/c.txt", b"after the cap"),
    )
    sink = collect(tmp_path, chunks(stream), limit=10_000)
    assert sink.dropped == [
        "b.bin: 5.9 KiB, over the artifact limit of 9.8 KiB (archive bytes, headers included)"
    ]
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted([*LOG_NAMES, "a.bin", "c.txt"])
    assert (tmp_path / "attempt" / "c.txt").read_bytes() == b"after the cap"


@pytest.mark.parametrize(("limit", "kept"), [(11_264, ["a.bin", "b.bin"]), (11_263, ["a.bin"])])
def test_exactly_the_cap_is_kept(tmp_path: Path, limit: int, kept: list[str]) -> None:
    stream = archive(file("logs/a.bin", bytes(4000)), file("logs/b.bin", bytes(6000)))
    collect(tmp_path, chunks(stream), limit=limit)
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted([*LOG_NAMES, *kept])


def test_only_what_is_kept_counts_toward_the_cap(tmp_path: Path) -> None:
    stream = archive(file("logs/stdout.log", bytes(8000)), file("logs/b.bin", bytes(3000)))
    sink = collect(tmp_path, chunks(stream), limit=10_000)
    assert sink.dropped == ["stdout.log: reserved name"]
    assert (tmp_path / "attempt" / "b.bin").read_bytes() == bytes(3000)


def test_empty_files_count_by_their_headers_and_the_drops_are_listed_in_bounds(
    tmp_path: Path,
) -> None:
    """20,000 empty files under a 1k cap (once, only content bytes counted: all of them
    passed). Each takes a 512-byte header; the top directory is docker cp's, free."""
    stream = archive(
        entry("logs", tarfile.DIRTYPE), *(file(f"logs/e{i}", b"") for i in range(20_000))
    )
    sink = collect(tmp_path, chunks(stream), limit=1024)
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted([*LOG_NAMES, "e0", "e1"])
    assert len(sink.dropped) == MAX_DROPS_LISTED + 1
    assert (
        sink.dropped[0]
        == "e2: 0 B, over the artifact limit of 1.0 KiB (archive bytes, headers included)"
    )
    assert sink.dropped[-1] == f"... and {19_998 - MAX_DROPS_LISTED} more entries not kept"


def test_no_more_files_than_the_file_limit_are_kept(tmp_path: Path) -> None:
    stream = archive(
        *(file(f"logs/f{i}", b"x") for i in range(10)), file("logs/sub/late.txt", b"y")
    )
    sink = collect(tmp_path, chunks(stream), file_limit=3)
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted([*LOG_NAMES, "f0", "f1", "f2"])
    assert sink.dropped == ["later entries not collected: 3 files and directories kept already"]


def test_directories_count_toward_the_file_limit_and_the_top_one_does_not(tmp_path: Path) -> None:
    stream = archive(
        entry("logs", tarfile.DIRTYPE),
        entry("logs/d1", tarfile.DIRTYPE),
        entry("logs/d2", tarfile.DIRTYPE),
        file("logs/f", b"x"),
    )
    sink = collect(tmp_path, chunks(stream), file_limit=2)
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted([*LOG_NAMES, "d1", "d2"])
    assert sink.dropped == ["later entries not collected: 2 files and directories kept already"]


def blocks(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """One member as it sits in an archive: header, data, padding (no end marker)."""
    if info.isreg():
        info.size = len(data)
    padding = -len(data) % tarfile.BLOCKSIZE
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + bytes(padding)


def big_member_stream(head: bytes, big: tarfile.TarInfo) -> Guarded:
    """`head`, then the header of `big` and its data, made up on demand: pulling more than
    one tarfile read (a record) past that header fails the test."""
    prefix = head + big.tobuf(format=tarfile.GNU_FORMAT)
    return Guarded(prefix, allowed=len(prefix) + tarfile.RECORDSIZE)


def test_a_member_too_large_to_read_past_ends_collection_unread(tmp_path: Path) -> None:
    """Past a member is only by reading it: beyond the cap plus READ_SLACK the archive is read
    no further (a huge file must not stall collection)."""
    head = blocks(entry("logs", tarfile.DIRTYPE)) + blocks(entry("logs/small.txt"), b"small")
    source = big_member_stream(head, entry("logs/big.bin", size=20 * GIB))
    sink = collect(tmp_path, source)
    assert sink.dropped == [
        "big.bin: 20.0 GiB, too large to read past",
        "later entries not collected: the archive is read no further",
    ]
    assert source.closed
    assert (tmp_path / "attempt" / "small.txt").read_bytes() == b"small"
    assert not (tmp_path / "attempt" / "big.bin").exists()


def test_a_sparse_member_counts_at_its_apparent_size_and_what_follows_is_kept(
    tmp_path: Path,
) -> None:
    stream = pax_archive(sparse("logs/holes.bin", 5 * GIB), file("logs/after.txt", b"x"))
    source = Guarded(stream, allowed=len(stream))
    sink = collect(tmp_path, source, limit=1024**2)
    assert sink.dropped == [
        "holes.bin: 5.0 GiB, over the artifact limit of 1.0 MiB (archive bytes, headers included)"
    ]
    assert source.closed
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted([*LOG_NAMES, "after.txt"])


def test_a_huge_metadata_header_is_refused_unread(tmp_path: Path) -> None:
    long_name = entry("././@LongLink", tarfile.GNUTYPE_LONGNAME, size=512 * 1024**2)
    head = blocks(entry("logs/first.txt"), b"first")
    source = big_member_stream(head, long_name)
    sink = collect(tmp_path, source)
    assert sink.dropped == ["artifacts: unreadable archive: a metadata header of 512.0 MiB"]
    assert source.closed
    assert (tmp_path / "attempt" / "first.txt").read_bytes() == b"first"


def test_headers_already_read_are_not_kept_in_memory() -> None:
    stream = archive(*(file(f"logs/f{i}", b"") for i in range(50)))
    with StreamingTar.open(fileobj=io.BytesIO(stream), mode="r|") as tar:
        while tar.next() is not None:
            assert len(tar.members) == 0


# --- artifacts: broken streams ---------------------------------------------------------


def test_a_stream_cut_mid_file_is_recorded_and_leaves_no_partial_file(tmp_path: Path) -> None:
    stream = archive(file("logs/first.txt", b"first"), file("logs/big.bin", bytes(50_000)))
    sink = collect(tmp_path, chunks(stream[:20_000]))
    assert sink.dropped == ["artifacts: unreadable archive: unexpected end of data"]
    assert (tmp_path / "attempt" / "first.txt").read_bytes() == b"first"
    assert not (tmp_path / "attempt" / "big.bin").exists()


def test_a_stream_cut_between_members_is_recorded(tmp_path: Path) -> None:
    stream = archive(file("logs/first.txt", b"first"), file("logs/second.txt", b"second"))
    cut = stream.index(b"logs/second.txt")  # where the second header starts: all of it is gone
    sink = collect(tmp_path, chunks(stream[:cut]))
    assert sink.dropped == [
        "artifacts: unreadable archive: the archive ends before its end-of-archive marker"
    ]
    assert (tmp_path / "attempt" / "first.txt").read_bytes() == b"first"


def test_a_corrupt_header_after_good_members_is_recorded(tmp_path: Path) -> None:
    stream = bytearray(archive(file("logs/first.txt", b"first"), file("logs/second", b"2")))
    header = stream.index(b"logs/second")
    stream[header : header + 4] = b"LOGS"  # the checksum no longer matches
    sink = collect(tmp_path, chunks(bytes(stream)))
    assert len(sink.dropped) == 1
    assert sink.dropped[0].startswith("artifacts: unreadable archive: bad header: ")
    assert (tmp_path / "attempt" / "first.txt").read_bytes() == b"first"


@pytest.mark.parametrize("stream", [b"", b"not a tar at all" * 100, bytes(100)])
def test_garbage_is_recorded_not_raised(tmp_path: Path, stream: bytes) -> None:
    sink = collect(tmp_path, chunks(stream))
    assert len(sink.dropped) == 1
    assert sink.dropped[0].startswith("artifacts: unreadable archive: ")
    assert sorted(os.listdir(tmp_path / "attempt")) == sorted(LOG_NAMES)


def test_an_empty_archive_is_fine(tmp_path: Path) -> None:
    assert collect(tmp_path, chunks(archive())).dropped == []


def test_errors_of_the_source_propagate_and_leave_no_partial_file(tmp_path: Path) -> None:
    stream = archive(file("logs/big.bin", bytes(50_000)))

    def broken() -> Iterator[bytes]:
        yield from chunks(stream[:20_000])
        raise ConnectionError("the engine went away")

    with LocalSink(tmp_path / "attempt") as sink, pytest.raises(ConnectionError):
        sink.artifacts(broken())
    assert not (tmp_path / "attempt" / "big.bin").exists()


def test_a_full_disk_propagates_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    written = 0

    def filling(fd: int, data: bytes) -> int:
        nonlocal written
        written += len(data)
        if written > 10_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with LocalSink(tmp_path / "attempt") as sink:
        monkeypatch.setattr(os, "write", filling)
        with pytest.raises(OSError) as raised:
            sink.artifacts(chunks(archive(file("logs/big.bin", bytes(50_000)))))
        monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC
    assert not (tmp_path / "attempt" / "big.bin").exists()


def test_the_source_is_closed_after_a_complete_archive(tmp_path: Path) -> None:
    stream = archive(file("logs/a.txt", b"a"))
    source = Guarded(stream, allowed=len(stream))
    collect(tmp_path, source)
    assert source.closed


# --- helpers -----------------------------------------------------------------------------


def assert_files_and_dirs_only(root: Path) -> None:
    for name, mode in walk_kinds(root).items():
        assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), name
        assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), name


def test_sizes_read_in_binary_units() -> None:
    sizes = [0, 1023, 1024, 1536, 1024**2 - 1, 10 * 1024**2, 5 * GIB, 3 * 1024**4]
    assert [format_size(size) for size in sizes] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "1.0 MiB",
        "10.0 MiB",
        "5.0 GiB",
        "3.0 TiB",
    ]


def test_a_traceback_is_kept_beside_the_logs_never_through_a_planted_link(
    tmp_path: Path,
) -> None:
    attempt = tmp_path / "a"
    with LocalSink(attempt) as sink:
        sink.traceback("Traceback (most recent call last):\n  ...\nValueError: x")
    assert (attempt / TRACEBACK_NAME).read_text() == (
        "Traceback (most recent call last):\n  ...\nValueError: x\n"
    )
    target = tmp_path / "host-file"
    target.write_bytes(b"precious")
    (attempt / TRACEBACK_NAME).unlink()
    (attempt / TRACEBACK_NAME).symlink_to(target)
    with LocalSink(attempt) as sink, pytest.raises(OSError) as raised:
        sink.traceback("again")
    assert raised.value.errno == errno.ELOOP
    assert target.read_bytes() == b"precious"
