"""The driver's side of one attempt's spool (backends/slurm/wire.py): its output into the sink
as the node appends it, then the artifacts, the entries not kept and the node's traceback,
and the node's outcome. A job that ends without an outcome (its node failed, Slurm cancelled
or timed it out, its process was killed) is the attempt's `error`, named by Slurm's state.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import msgspec
from msgspec import structs

from safeagents_batch.backends.base import Sink
from safeagents_batch.backends.slurm import wire
from safeagents_batch.backends.slurm.commands import JobState
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.files import open_regular, read_fd
from safeagents_batch.records.model import AttemptOutcome

PUMP_SECONDS = 0.25
READ_BYTES = 1 << 20
# After Slurm says the job ended: how long its outcome may take to show on a shared
# filesystem (attribute caches lag) before the attempt is the job's loss.
OUTCOME_GRACE_SECONDS = 10.0
# After a cancel: the node kills and removes its container on SIGTERM, before Slurm's KillWait.
CANCEL_GRACE_SECONDS = 60.0
# NFS caches a directory's entries for up to a minute (acdirmax 60 s by default).
COMPLETED_GRACE_SECONDS = 90.0
MAX_TRACEBACK_BYTES = 1 << 20
MAX_DROPPED_BYTES = 1 << 20
SLURM_LOG_TAIL = 4096


class JobStates(Protocol):
    """Where a follower learns its job's state (commands.JobWatch: one squeue for all)."""

    def watch(self, job_id: str) -> None: ...

    def forget(self, job_id: str) -> None: ...

    def state(self, job_id: str) -> JobState | None: ...


class Follower:
    """Follows one submitted job's spool to the attempt's end."""

    def __init__(
        self,
        spool: Path,
        job_id: str,
        watch: JobStates,
        sink: Sink,
        cancel: threading.Event,
        started: str,
        scancel: Callable[[str], None],
    ) -> None:
        self.spool = spool
        self.job_id = job_id
        self.watch = watch
        self.sink = sink
        self.cancel = cancel
        self.started = started
        self.scancel = scancel
        self.directory = wire.open_spool(spool)
        self.reader = wire.FrameReader()
        self._output: int | None = None
        self._offset = 0  # of `output`, read so far
        self._cancelled_at: float | None = None
        self._ended_at: float | None = None
        self._seen_running = False
        self.abandoned = False  # the spool is the node's to remove (it may still run)

    def follow(self) -> wire.NodeOutcome:
        try:
            return self._follow()
        finally:
            if self._output is not None:
                os.close(self._output)
            os.close(self.directory)

    def _follow(self) -> wire.NodeOutcome:
        self.watch.watch(self.job_id)
        try:
            while True:
                try:
                    outcome = self._step()
                except OSError as exc:  # a spool someone else wrote into (a FIFO, a link)
                    self._ask_cancel()
                    return self._lost("error", f"the attempt's spool is unreadable: {exc}")
                if outcome is not None:
                    return outcome
                time.sleep(PUMP_SECONDS)
        finally:
            self.watch.forget(self.job_id)

    def _step(self) -> wire.NodeOutcome | None:
        self._pump()
        if _exists(self.directory, wire.OUTCOME):
            self._pump(reopen=True)  # all of it: the outcome is written last
            return self._finish()
        if self.cancel.is_set() and self._cancelled_at is None:
            self._ask_cancel()
        state = self.watch.state(self.job_id)
        if state is not None and state.state not in ("PENDING", "GONE") and not state.ended:
            self._seen_running = True
        if state is not None and state.ended:
            return self._ended_without_outcome(state)
        waited = time.monotonic() - (self._cancelled_at or time.monotonic())
        if waited > CANCEL_GRACE_SECONDS:
            return self._lost("cancelled", "cancelled by the user (the node did not confirm)")
        return None

    def _ask_cancel(self) -> None:
        """Ctrl-C: the node stops the attempt on `scancel`'s SIGTERM, or on the spool's
        cancel file where no signal reaches it (its slurmd gone)."""
        self._cancelled_at = time.monotonic()
        self.tell_node_to_stop()
        with contextlib.suppress(Exception):  # a job that just ended: nothing to cancel
            self.scancel(self.job_id)

    def tell_node_to_stop(self, *, abandon: bool = False) -> None:
        """The cancel file; `abandon`: the driver records the attempt without the node's
        outcome, and leaves the spool to the node, which removes it once it has stopped."""
        if abandon:
            self.abandoned = True
        with contextlib.suppress(OSError):
            wire.write_private(self.directory, wire.CANCEL, wire.ABANDONED if abandon else b"")

    def _ended_without_outcome(self, state: JobState) -> wire.NodeOutcome | None:
        if self._ended_at is None:
            self._ended_at = time.monotonic()
        never_ran = self._cancelled_at is not None and not self._seen_running
        if never_ran and self._output is None:
            return self._lost("cancelled", "cancelled by the user before its job started")
        # A job Slurm says COMPLETED ran its node process to the end, which wrote the outcome
        # first: only a slow shared filesystem keeps it from view.
        grace = COMPLETED_GRACE_SECONDS if state.state == "COMPLETED" else OUTCOME_GRACE_SECONDS
        if time.monotonic() - self._ended_at < grace:
            return None
        # The node's process may live on (a node whose slurmd died): it stops its container,
        # then removes the spool.
        self.tell_node_to_stop(abandon=True)
        if self._cancelled_at is not None:
            return self._lost("cancelled", "cancelled by the user")
        where = f" on {state.node}" if state.node else ""
        reason = f" ({state.reason})" if state.reason and state.reason != "None" else ""
        said = "is no longer known to Slurm" if state.state == "GONE" else f"ended {state.state}"
        return self._lost(
            "error", f"slurm job {self.job_id}{where} {said}{reason} without an outcome"
        )

    def _lost(self, status: str, reason: str) -> wire.NodeOutcome:
        """An end without the node's outcome; what Slurm's log of the job says goes beside
        the attempt's logs (a node without this Python, a job killed at its time limit)."""
        said = _read_tail(self.directory, wire.SLURM_LOG, SLURM_LOG_TAIL)
        if said.strip():
            self.sink.traceback(f"The end of Slurm's log of job {self.job_id}:\n{said}")
        state = self.watch.state(self.job_id)
        node = {"slurm_job": self.job_id, "slurm_node": state.node if state else ""}
        outcome = AttemptOutcome(
            status="cancelled" if status == "cancelled" else "error",
            started_at=self.started,
            ended_at=now_iso(),
            error=reason,
            node=node,
        )
        return wire.NodeOutcome(outcome=outcome)

    # -- reading the spool ---------------------------------------------------------------

    def _pump(self, *, reopen: bool = False) -> None:
        """New output into the sink. `reopen`: through a new descriptor (NFS shows what
        another machine wrote fully only to an open made after it: the last read is one)."""
        if reopen and self._output is not None:
            os.close(self._output)
            self._output = None
        if self._output is None:
            try:
                self._output = open_regular(wire.OUTPUT, _READ_FLAGS, dir_fd=self.directory)
            except FileNotFoundError:
                return
            os.lseek(self._output, self._offset, os.SEEK_SET)
        while True:
            data = os.read(self._output, READ_BYTES)
            if not data:
                return
            self._offset += len(data)
            for stream, chunk in self.reader.feed(data):
                (self.sink.stdout if stream == wire.STDOUT else self.sink.stderr)(chunk)

    def _finish(self) -> wire.NodeOutcome:
        try:
            data = _read(self.directory, wire.OUTCOME, wire.MAX_OUTCOME_BYTES)
            result = wire.decode_outcome(data)
        except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            return self._lost("error", f"the node's outcome file is unreadable: {exc}")
        self._take_files()
        if self.reader.broken:
            self.sink.not_kept(f"output: {self.reader.broken}; the rest was not read")
        outcome = result.outcome
        node = {**(outcome.node or {}), "slurm_job": self.job_id}
        return structs.replace(result, outcome=structs.replace(outcome, node=node))

    def _take_files(self) -> None:
        trace = _read_text(self.directory, wire.TRACEBACK, MAX_TRACEBACK_BYTES)
        if trace:
            self.sink.traceback(trace)
        for chunks in _artifact_chunks(self.directory):
            # The node's artifact rules kept these, in a tar the node wrote.
            self.sink.artifacts(chunks, selected=True)
        dropped = _read_text(self.directory, wire.DROPPED, MAX_DROPPED_BYTES)
        for line in dropped.splitlines():
            self.sink.not_kept(line)


# Never through a link, never waiting on a FIFO: the spool is below a shared directory.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK


def _read(directory: int, name: str, limit: int) -> bytes:
    fd = open_regular(name, _READ_FLAGS, dir_fd=directory)
    try:
        return read_fd(fd, limit, name)
    finally:
        os.close(fd)


def _exists(directory: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _read_text(directory: int, name: str, limit: int) -> str:
    try:
        return _read(directory, name, limit).decode(errors="replace")
    except FileNotFoundError:
        return ""


def _read_tail(directory: int, name: str, limit: int) -> str:
    try:
        fd = open_regular(name, _READ_FLAGS, dir_fd=directory)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(fd).st_size
        handle.seek(max(0, size - limit))
        return handle.read(limit).decode(errors="replace")


def _artifact_chunks(directory: int) -> Iterator[Iterator[bytes]]:
    """The node's archive of kept artifacts, read in pieces (it may be large); none if absent."""
    try:
        fd = open_regular(wire.ARTIFACTS, _READ_FLAGS, dir_fd=directory)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as handle:
        yield iter(lambda: handle.read(READ_BYTES), b"")
