"""The shared filesystem as the wire between the driver and a Slurm job: one spool directory per
attempt below the batch dir, `slurm/attempts/<run id>/<attempt>/`.

The driver writes `order` (the attempt's request, with env values: mode 0600, and removed by
the node once read) and `job.sh`, submits, and records the job id in `job`. The node appends
the attempt's output to `output` as frames (one byte of stream, four of length, the bytes:
one file keeps stdout and stderr in the order they came), writes the kept artifacts to
`artifacts.tar` and the entries not kept to `dropped`, then the outcome to `outcome` by a
rename: once it is there, everything else is whole. A `cancel` file from the driver asks the
node to stop the attempt (Ctrl-C, or a job Slurm lost sight of, whose slurmd no `scancel`
reaches). The driver alone writes the batch's journal and the attempt's own directory.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import msgspec

from safeagents_batch.backends.base import AttemptRequest
from safeagents_batch.core.files import DIR_FLAGS, open_dir_below, open_regular, read_fd
from safeagents_batch.records.model import AttemptOutcome

SLURM_DIR = "slurm"  # below the batch dir: the batch's share of the cluster's filesystem
ORDER = "order"
OUTPUT = "output"
ARTIFACTS = "artifacts.tar"
DROPPED = "dropped"
OUTCOME = "outcome"
CANCEL = "cancel"
ABANDONED = b"abandoned"  # a cancel file's text when the driver recorded the attempt already
JOB = "job"
AZURE = "azure.tar"  # the driver's ~/.azure for this attempt (--ship-azure): mode 0600
TRACEBACK = "traceback"
SCRIPT = "job.sh"
SLURM_LOG = "slurm.log"  # the job's own stdout and stderr (Slurm's, the node process's)
FRAME = struct.Struct(">BI")
STDOUT, STDERR = 1, 2
MAX_OUTCOME_BYTES = 1 << 20
MAX_ORDER_BYTES = 64 << 20


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """What a job is asked to do: the attempt (its code path and the batch dir as the nodes
    see them: the same paths as the driver's), the package to import, and the image archive
    to load where the node's engine lacks the image (None: report it missing)."""

    request: AttemptRequest
    image_archive: str | None = None
    azure: bool = False  # the spool holds AZURE, for the attempt's ~/.azure


class NodeOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The node's last word: the attempt's outcome, and whether it ended only because the
    node's engine lacks the image (the driver then ships the archive and submits again)."""

    outcome: AttemptOutcome
    image_missing: bool = False


def spool_dir(batch_dir: Path, run_id: str, attempt: int) -> Path:
    return batch_dir / SLURM_DIR / "attempts" / run_id / str(attempt)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _dec_hook(kind: type, obj: Any) -> Any:
    if kind is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError(f"cannot decode {kind}")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encode_order(order: Order) -> bytes:
    return _ENCODER.encode(order)


def decode_order(data: bytes) -> Order:
    return msgspec.msgpack.decode(data, type=Order, dec_hook=_dec_hook)


def encode_outcome(outcome: NodeOutcome) -> bytes:
    return msgspec.json.encode(outcome)


def decode_outcome(data: bytes) -> NodeOutcome:
    """The node's outcome file; a node is untrusted input: a wrong shape is an error here."""
    return msgspec.json.decode(data, type=NodeOutcome)


def write_private(directory: int, name: str, data: bytes) -> None:
    """`name` in the directory `directory` (a descriptor) as a whole: written beside its
    place, mode 0600, then renamed in, so a reader sees all of it or nothing."""
    temp = f".{name}.{os.getpid()}.tmp"
    fd = os.open(
        temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=directory
    )
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, name, src_dir_fd=directory, dst_dir_fd=directory)


def _spool_parts(run_id: str, attempt: int) -> tuple[str, ...]:
    return (SLURM_DIR, "attempts", run_id, str(attempt))


def make_spool(batch_dir: Path, run_id: str, attempt: int) -> int:
    """The attempt's spool, made (mode 0700) and opened."""
    return make_below(batch_dir, _spool_parts(run_id, attempt))


def make_below(batch_dir: Path, parts: tuple[str, ...]) -> int:
    """batch_dir/parts..., made (mode 0700) and opened, walked from the batch dir without
    following a link: a received batch dir may have one planted on the way."""
    root = os.open(batch_dir, DIR_FLAGS)
    try:
        return open_dir_below(root, parts, create=True, mode=0o700)
    finally:
        os.close(root)


def read_job_id(batch_dir: Path, run_id: str, attempt: int) -> str | None:
    """The job id the driver noted in the attempt's spool; None when it noted none (or not
    a job id). OSError when there is no spool (or a link where one should be)."""
    root = os.open(batch_dir, DIR_FLAGS)
    try:
        spool = open_dir_below(root, _spool_parts(run_id, attempt), create=False)
    finally:
        os.close(root)
    try:
        fd = open_regular(JOB, os.O_RDONLY | os.O_NONBLOCK, dir_fd=spool)
    except FileNotFoundError:
        return None
    finally:
        os.close(spool)
    try:
        text = read_fd(fd, 64, JOB).decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return text if text.isdigit() else None


def open_spool(path: Path) -> int:
    """The spool directory, opened without following a link."""
    return os.open(path, DIR_FLAGS)


def frame(stream: int, chunk: bytes) -> bytes:
    return FRAME.pack(stream, len(chunk)) + chunk


class FrameReader:
    """Reads the frames of `output` as the node appends them: a frame cut by the end of the
    file waits for its rest. A frame of an unknown stream or beyond `limit` ends the reading
    (a node is untrusted: it must not make the driver buffer without bound)."""

    def __init__(self, limit: int = 16 << 20) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.broken: str | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self.broken:
            return []
        self.buffer += data
        frames = []
        while len(self.buffer) >= FRAME.size:
            stream, length = FRAME.unpack_from(self.buffer)
            if stream not in (STDOUT, STDERR) or length > self.limit:
                self.broken = f"a malformed output frame (stream {stream}, {length} bytes)"
                self.buffer.clear()
                break
            end = FRAME.size + length
            if len(self.buffer) < end:
                break
            frames.append((stream, bytes(self.buffer[FRAME.size : end])))
            del self.buffer[:end]
        return frames
