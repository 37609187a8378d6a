"""backends.docker, the parts that need no engine: output routing, mounts, the container user."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from safeagents_batch.backends.base import AttemptRequest
from safeagents_batch.backends.docker.backend import (
    OutputPump,
    _mounts,
    container_labels,
    container_user,
    go_time,
)
from safeagents_batch.jobs.model import Hardening
from safeagents_batch.staging.code import StagedCode
from safeagents_batch.staging.images import CODE_DIR, CONTAINER_UID, LOGS_DIR


class ListSink:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    def stdout(self, chunk: bytes) -> None:
        self.seen.append(("out", chunk))

    def stderr(self, chunk: bytes) -> None:
        self.seen.append(("err", chunk))

    def traceback(self, text: str) -> None:
        raise AssertionError("not expected here")

    def artifacts(self, tar_chunks: Iterable[bytes], *, selected: bool = False) -> None:
        raise AssertionError("not expected here")

    def not_kept(self, line: str) -> None:
        raise AssertionError("not expected here")

    def model_call(self, line: bytes) -> None:
        raise AssertionError("not expected here")

    def close(self) -> None:
        pass


class BrokenSink(ListSink):
    def stdout(self, chunk: bytes) -> None:
        raise OSError(28, "No space left on device")


def request(tmp_path: Path, **changes: object) -> AttemptRequest:
    code = StagedCode("d" * 64, tmp_path / "code")
    return AttemptRequest("run-1", "batch-1", 2, "img:tag", code, "agent.py", **changes)  # type: ignore[arg-type]


def test_the_pump_hands_each_stream_to_the_sink_in_arrival_order() -> None:
    sink = ListSink()
    pump = OutputPump(iter([(b"a", None), (None, b"b"), (b"c", b"d")]), sink, "t")
    pump.start()
    pump.join(10)

    assert pump.error is None
    assert sink.seen == [("out", b"a"), ("err", b"b"), ("out", b"c"), ("err", b"d")]


def test_a_sink_that_cannot_write_is_the_pumps_error_not_a_dead_thread() -> None:
    pump = OutputPump(iter([(b"a", None)]), BrokenSink(), "t")
    pump.start()
    pump.join(10)

    assert pump.error is not None and "No space left" in pump.error


def test_code_is_the_staged_snapshot_read_only_and_logs_a_fresh_volume(tmp_path: Path) -> None:
    mounts = {m["Target"]: m for m in _mounts(request(tmp_path))}

    assert mounts[CODE_DIR]["Type"] == "bind"
    assert mounts[CODE_DIR]["Source"] == str((tmp_path / "code").resolve())
    assert mounts[CODE_DIR]["ReadOnly"] is True
    # No host path behind the logs: the script's files reach the host only through the sink.
    assert mounts[LOGS_DIR]["Type"] == "volume" and not mounts[LOGS_DIR].get("Source")
    assert len(mounts) == 2


def test_the_container_user_is_never_root_unless_the_job_says_so(tmp_path: Path) -> None:
    expected = (
        f"{CONTAINER_UID}:{CONTAINER_UID}" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    )
    assert container_user(request(tmp_path)) == expected
    relaxed = request(tmp_path, hardening=Hardening(non_root=False))
    assert container_user(relaxed) == "0:0"


def test_labels_name_batch_run_and_attempt(tmp_path: Path) -> None:
    found = container_labels(request(tmp_path))

    assert found["safeagents-batch.batch"] == "batch-1"
    assert found["safeagents-batch.run"] == "run-1"
    assert found["safeagents-batch.attempt"] == "2"
    assert found["safeagents-batch.pid"] == str(os.getpid())


def test_engine_timestamps_keep_their_nanoseconds() -> None:
    started = go_time("2026-12-01T09:50:06.926542775Z")
    written = go_time("2026-12-01T09:50:06.92889074Z")
    built = go_time("2026-12-01T09:48:32Z")

    assert built < started < written
    assert round(written - started, 6) == 0.002348
