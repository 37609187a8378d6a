"""The local sink: writes one attempt's output into its directory on this host.

The backend streams the container's stdout and stderr into it while the run goes, then hands it
the tar stream of what the script left in /safeagents/logs. The script is untrusted: the log
files are never opened through a link, and the archive is read as data, never extracted: what
records/artifacts.py keeps lands as new regular files and directories, under directories
entered without following a link; everything else is listed in `dropped`.
"""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from safeagents_batch.core.files import DIR_FLAGS, open_regular
from safeagents_batch.core.tarsafe import directory, write_all, write_file
from safeagents_batch.jobs.model import DEFAULT_ARTIFACT_FILES, DEFAULT_ARTIFACT_LIMIT
from safeagents_batch.records.artifacts import ArtifactSelection
from safeagents_batch.records.layout import (
    CONSOLE_LOG,
    LOG_NAMES,
    MODEL_CALLS,
    STDERR_LOG,
    STDOUT_LOG,
    TRACEBACK,
)

# O_NONBLOCK: a FIFO planted at a log's name fails to open (ENXIO) rather than waiting for a
# reader; open_regular then refuses anything but a regular file.
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK
_APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK
# Failures of the host's own file system calls that the archive's content causes (a name given
# twice, a file where a directory goes, a name too long): that entry is dropped, not the run.
_CONTENT_ERRNOS = {
    errno.EEXIST: "already in the attempt dir",
    errno.ENOTDIR: "a file or link where a directory should be",
    errno.ELOOP: "a file or link where a directory should be",
    errno.ENAMETOOLONG: "name too long",
}


class LocalSink:
    """Owns one attempt's directory: console.log (stdout and stderr in arrival order),
    stdout.log, stderr.log, and the artifacts the script left.

    Each chunk is written to the kernel at once, nothing held back or held whole. Write errors
    (a full disk) raise OSError. `stdout` and `stderr` are meant to be called from one pump
    thread, and `artifacts` and `close` after it ends: there is no locking.
    `dropped` lists what the archive held that was not kept, one line each.
    Every file system call goes through a descriptor of the attempt dir, so a link planted
    after the checks cannot redirect a write.
    """

    def __init__(
        self,
        attempt_dir: Path,
        artifact_limit: int = DEFAULT_ARTIFACT_LIMIT,
        *,
        file_limit: int = DEFAULT_ARTIFACT_FILES,
        dir_fd: int | None = None,
    ) -> None:
        """`artifact_limit`: archive bytes kept (headers and data); `file_limit`: files and
        directories kept.
        `dir_fd`: the attempt dir, already opened (a batch's, walked from the batch dir
        without following a link: records/safedir.py); the sink takes it over."""
        self.attempt_dir = attempt_dir
        self.selection = ArtifactSelection(artifact_limit, file_limit)
        self._dir_fd = _open_attempt_dir(attempt_dir) if dir_fd is None else dir_fd
        self._logs: dict[str, int] = {}
        self._calls = _CallLog(artifact_limit)
        try:
            for name in LOG_NAMES:
                self._logs[name] = open_regular(name, _LOG_FLAGS, dir_fd=self._dir_fd)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LocalSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stdout(self, chunk: bytes) -> None:
        self._log(STDOUT_LOG, chunk)

    def stderr(self, chunk: bytes) -> None:
        self._log(STDERR_LOG, chunk)

    def _log(self, name: str, chunk: bytes) -> None:
        self._check_open()
        # Straight to the kernel, no buffer in between: until the next chunk, which may be
        # minutes away, the files show everything said so far (tail -f, a crash of ours).
        write_all(self._logs[name], chunk)
        write_all(self._logs[CONSOLE_LOG], chunk)

    def traceback(self, text: str) -> None:
        """The whole traceback behind the attempt's error, as `traceback.log`."""
        self._check_open()
        fd = open_regular(TRACEBACK, _LOG_FLAGS, dir_fd=self._dir_fd)
        try:
            write_all(fd, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)

    def model_call(self, line: bytes) -> None:
        """One call through the model gateway (called from the gateway's thread), appended to
        `model_calls.jsonl` while the file stays under the artifact cap."""
        self._check_open()
        if self._calls.fits(line):
            fd = open_regular(MODEL_CALLS, _APPEND_FLAGS, dir_fd=self._dir_fd)
            try:
                write_all(fd, line)
            finally:
                os.close(fd)

    @property
    def dropped(self) -> list[str]:
        return [*self.selection.dropped, *self._calls.dropped()]

    def artifacts(self, tar_chunks: Iterable[bytes], *, selected: bool = False) -> None:
        """Keeps the regular files and directories of the archive (records/artifacts.py);
        never raises for the archive's content, only for the host's own errors and for errors
        of `tar_chunks` itself. The iterator is closed once collection stops. `selected`:
        the caps were applied where the archive was made (base.Sink)."""
        self._check_open()
        selection = self.selection.without_caps() if selected else self.selection
        selection.select(tar_chunks, self._keep)

    def not_kept(self, line: str) -> None:
        """An artifact the backend did not send (a Ray node applies the same rules)."""
        self.selection.drop(line)

    def close(self) -> None:
        """Closes the log files and the attempt dir; a second call does nothing."""
        logs, self._logs = self._logs, {}
        fds = [*logs.values(), self._dir_fd]
        self._dir_fd = -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _check_open(self) -> None:
        if self._dir_fd < 0:
            raise ValueError(f"the sink of {self.attempt_dir} is closed")

    def _keep(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: Sequence[str]) -> str:
        """Writes one checked member; returns why it was not written, or "" when it was."""
        try:
            if member.isdir():
                with directory(self._dir_fd, rel):
                    pass
            else:
                with directory(self._dir_fd, rel[:-1]) as parent:
                    write_file(tar, member, parent, rel[-1])
        except OSError as exc:
            if exc.errno not in _CONTENT_ERRNOS:
                raise
            return _CONTENT_ERRNOS[exc.errno]
        return ""


class _CallLog:
    """How much of the model call records one attempt keeps: whole lines, up to the cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.over = 0

    def fits(self, line: bytes) -> bool:
        if self.size + len(line) > self.limit:
            self.over += 1
            return False
        self.size += len(line)
        return True

    def dropped(self) -> list[str]:
        if not self.over:
            return []
        return [f"{MODEL_CALLS}: {self.over} call records over the artifact cap not kept"]


def _open_attempt_dir(attempt_dir: Path) -> int:
    if attempt_dir.is_symlink():
        raise OSError(errno.ELOOP, "refusing an attempt dir that is a symbolic link", attempt_dir)
    attempt_dir.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW again: a link swapped in after the check above would fail here, and every
    # later write goes through this descriptor rather than the path.
    return os.open(attempt_dir, DIR_FLAGS)
