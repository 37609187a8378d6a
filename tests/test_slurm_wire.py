"""The Slurm backend's pure parts, without Slurm or an engine: the spool's encoding (order,
outcome, output frames), the node's sink and the driver's follower on a real directory, and
the `sbatch` command line a run's limits make."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pytest

from safeagents_batch.backends.base import AttemptRequest
from safeagents_batch.backends.slurm import commands, follow, wire
from safeagents_batch.backends.slurm.commands import JobState, SlurmOptions
from safeagents_batch.backends.slurm.follow import Follower
from safeagents_batch.backends.slurm.node import SpoolSink
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import UsageError
from safeagents_batch.jobs.model import Resources, SlurmSettings
from safeagents_batch.records.model import AttemptOutcome
from safeagents_batch.staging.code import StagedCode

NOW = now_iso()


class RecordingSink:
    def __init__(self) -> None:
        self.output: list[tuple[str, bytes]] = []
        self.traces: list[str] = []
        self.archives: list[bytes] = []
        self.dropped: list[str] = []

    def stdout(self, chunk: bytes) -> None:
        self.output.append(("out", chunk))

    def stderr(self, chunk: bytes) -> None:
        self.output.append(("err", chunk))

    def traceback(self, text: str) -> None:
        self.traces.append(text)

    def artifacts(self, tar_chunks: Iterable[bytes], *, selected: bool = False) -> None:
        assert selected
        self.archives.append(b"".join(tar_chunks))

    def model_call(self, line: bytes) -> None:
        raise AssertionError("no model calls here")

    def not_kept(self, line: str) -> None:
        self.dropped.append(line)

    def close(self) -> None:
        pass


class StateBoard:
    """A JobWatch stand-in: the test says the job's state."""

    def __init__(self, state: JobState | None) -> None:
        self.current = state

    def watch(self, job_id: str) -> None:
        pass

    def forget(self, job_id: str) -> None:
        pass

    def state(self, job_id: str) -> JobState | None:
        return self.current


def request(tmp_path: Path) -> AttemptRequest:
    return AttemptRequest(
        run_id="job-a",
        batch_id="b-1",
        attempt=2,
        image="img:tag",
        code=StagedCode("d" * 16, tmp_path / "code"),
        script="a.py",
        env={"SECRET": "s3cret"},
        timeout=30,
        resources=Resources(memory=1 << 30, cpus=1.5, pids=100),
        batch_dir=tmp_path,
    )


def test_an_order_comes_back_as_it_went(tmp_path: Path) -> None:
    order = wire.Order(request=request(tmp_path), image_archive="/x/y.tar")
    back = wire.decode_order(wire.encode_order(order))
    assert back == order
    assert back.request.env == {"SECRET": "s3cret"}
    assert isinstance(back.request.code.path, Path)


def test_an_outcome_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        wire.decode_outcome(b'{"outcome": {"status": "won", "started_at": "x", "ended_at": "y"}}')
    with pytest.raises(msgspec.ValidationError):  # a time that is none
        wire.decode_outcome(
            b'{"outcome": {"status": "failed", "started_at": "x", "ended_at": "y"}}'
        )
    with pytest.raises(msgspec.DecodeError):
        wire.decode_outcome(b"not json")


def test_frames_arrive_whole_and_in_order_however_they_are_cut() -> None:
    data = wire.frame(wire.STDOUT, b"one") + wire.frame(wire.STDERR, b"two")
    data += wire.frame(wire.STDOUT, b"three")
    reader = wire.FrameReader()
    got = []
    for i in range(len(data)):
        got += reader.feed(data[i : i + 1])
    assert got == [(1, b"one"), (2, b"two"), (1, b"three")]


def test_a_malformed_frame_ends_the_reading() -> None:
    reader = wire.FrameReader(limit=10)
    assert reader.feed(wire.frame(wire.STDOUT, b"x" * 11)) == []
    assert reader.broken and "11 bytes" in reader.broken
    assert reader.feed(wire.frame(wire.STDOUT, b"ok")) == []
    other = wire.FrameReader()
    assert other.feed(b"\x07\x00\x00\x00\x01z") == []
    assert other.broken and "stream 7" in other.broken


def test_sbatch_asks_for_the_runs_limits_and_names_the_job_after_the_run() -> None:
    options = SlurmOptions(partition="gpu", account="lab", sbatch_args=("--qos=short",))
    argv = commands.sbatch_argv(
        options,
        name="job-a",
        comment="safeagents-batch:b-1",
        log="/s/slurm.log",
        resources=Resources(memory=4 << 30, cpus=1.5, pids=None),
        timeout=3,
    )
    assert "--job-name=job-a" in argv and "--export=NONE" in argv
    assert "--cpus-per-task=2" in argv
    assert f"--mem={4096 + commands.MEMORY_MARGIN_MIB}M" in argv
    assert "--time=6" in argv  # the run's 3 s and the margin, in whole minutes
    assert argv[-3:] == ["--partition=gpu", "--account=lab", "--qos=short"]
    bare = commands.sbatch_argv(
        SlurmOptions(), name="n", comment="c", log="l", resources=Resources(None, None, None),
        timeout=None,
    )  # fmt: skip
    assert not [a for a in bare if a.startswith(("--time", "--mem", "--cpus"))]


@pytest.mark.parametrize(
    "arg",
    [
        "--output=x",
        "--export=ALL",
        "--array=0-3",
        "--job-name",
        "-J",
        "-ox.log",
        "--out=x",
        "--comm=y",
        "--job-n=z",
        "--requ",
        "--exp=ALL",
    ],
)
def test_sbatch_arguments_the_backend_sets_are_refused(arg: str) -> None:
    with pytest.raises(UsageError, match="sets"):
        commands.check_sbatch_args([arg])


@pytest.mark.parametrize(
    "arg", ["--qos=short", "--gres=gpu:1", "--export-file=f", "-p", "--time=5"]
)
def test_other_sbatch_arguments_go_through(arg: str) -> None:
    commands.check_sbatch_args([arg])


def test_a_jobs_slurm_settings_come_before_the_command_lines() -> None:
    job = SlurmSettings(partition="cpu", account="mine", sbatch_args=("--qos=long",))
    argv = commands.sbatch_argv(
        SlurmOptions(partition="gpu", sbatch_args=("--qos=short",)), name="n", comment="c",
        log="l", resources=Resources(None, None, None), timeout=None, job=job,
    )  # fmt: skip
    assert argv[-4:] == ["--partition=gpu", "--account=mine", "--qos=long", "--qos=short"]


def test_squeue_lines_become_states() -> None:
    states = commands.parse_squeue("12|RUNNING|nodea|None\nbad line\n13|NODE_FAIL|nodeb|Down\n")
    assert states == {
        "12": JobState("RUNNING", "nodea", "None"),
        "13": JobState("NODE_FAIL", "nodeb", "Down"),
    }
    assert states["13"].ended and not states["12"].ended


def spool_with_output(tmp_path: Path) -> tuple[Path, SpoolSink]:
    spool = tmp_path / "spool"
    spool.mkdir()
    directory = wire.open_spool(spool)
    return spool, SpoolSink(directory, artifact_limit=1 << 20, file_limit=10)


def archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"logs/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_follower_hands_over_what_the_node_wrote(tmp_path: Path) -> None:
    spool, sink = spool_with_output(tmp_path)
    sink.stdout(b"hello\n")
    sink.stderr(b"oops\n")
    sink.stdout(b"bye\n")
    sink.artifacts([archive({"result.txt": b"42"})])
    sink.not_kept("logs/link: a link")
    sink.close()
    outcome = AttemptOutcome(status="succeeded", started_at=NOW, ended_at=NOW, exit_code=0)
    wire.write_private(
        sink.directory, wire.OUTCOME, wire.encode_outcome(wire.NodeOutcome(outcome=outcome))
    )
    board = StateBoard(JobState("RUNNING", "nodea"))
    seen = RecordingSink()
    result = Follower(spool, "7", board, seen, threading.Event(), NOW, lambda j: None).follow()
    assert result.outcome.status == "succeeded"
    assert result.outcome.node == {"slurm_job": "7"}
    assert seen.output == [("out", b"hello\n"), ("err", b"oops\n"), ("out", b"bye\n")]
    with tarfile.open(fileobj=io.BytesIO(seen.archives[0])) as tar:
        assert tar.extractfile("logs/result.txt").read() == b"42"  # type: ignore[union-attr]
    assert seen.dropped == ["logs/link: a link"]


def test_a_job_that_ends_without_an_outcome_is_an_error_naming_slurms_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow, "OUTCOME_GRACE_SECONDS", 0.0)
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / wire.SLURM_LOG).write_text("slurmstepd: error: *** JOB 7 ON nodeb CANCELLED ***\n")
    board = StateBoard(JobState("NODE_FAIL", "nodeb", "NodeDown"))
    seen = RecordingSink()
    result = Follower(spool, "7", board, seen, threading.Event(), NOW, lambda j: None).follow()
    assert result.outcome.status == "error"
    assert (
        result.outcome.error == "slurm job 7 on nodeb ended NODE_FAIL (NodeDown) without an outcome"
    )
    assert "JOB 7 ON nodeb" in seen.traces[0]
    # The node's process, should it live on (its slurmd gone), is told to stop.
    assert (spool / wire.CANCEL).exists()


def test_a_cancel_before_the_job_started_ends_at_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    board = StateBoard(JobState("PENDING"))
    cancelled: list[str] = []
    cancel = threading.Event()
    cancel.set()
    follower = Follower(spool, "9", board, RecordingSink(), cancel, NOW, cancelled.append)
    board.current = JobState("CANCELLED")
    result = follower.follow()
    assert cancelled == ["9"]
    assert result.outcome.status == "cancelled"


def test_a_spool_with_a_fifo_and_a_link_is_read_without_waiting_or_following(
    tmp_path: Path,
) -> None:
    import os

    spool = tmp_path / "spool"
    spool.mkdir()
    os.mkfifo(spool / wire.OUTPUT)  # opening it for reading would wait for a writer
    elsewhere = tmp_path / "elsewhere.json"
    outcome = AttemptOutcome(status="succeeded", started_at=NOW, ended_at=NOW)
    elsewhere.write_bytes(wire.encode_outcome(wire.NodeOutcome(outcome=outcome)))
    (spool / wire.OUTCOME).symlink_to(elsewhere)
    board = StateBoard(JobState("RUNNING", "nodea"))
    cancelled: list[str] = []
    sink = RecordingSink()
    held = Follower(spool, "3", board, sink, threading.Event(), NOW, cancelled.append).follow()
    assert held.outcome.status == "error"
    assert "spool is unreadable" in (held.outcome.error or "")
    assert cancelled == ["3"]  # its job is not left running
    os.unlink(spool / wire.OUTPUT)
    result = Follower(spool, "3", board, sink, threading.Event(), NOW, print).follow()
    assert result.outcome.status == "error"
    assert "unreadable" in (result.outcome.error or "")


def test_a_cancel_the_driver_did_not_ask_for_is_slurms_and_an_error() -> None:
    from safeagents_batch.backends.slurm.node import final_outcome

    cancelled = AttemptOutcome(status="cancelled", started_at=NOW, ended_at=NOW)
    assert final_outcome(cancelled, driver_asked=True) == cancelled
    by_slurm = final_outcome(cancelled, driver_asked=False)
    assert by_slurm.status == "error" and "stopped by Slurm" in (by_slurm.error or "")
    done = AttemptOutcome(status="succeeded", started_at=NOW, ended_at=NOW)
    assert final_outcome(done, driver_asked=False) == done


def test_jobs_squeue_has_purged_are_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """squeue fails when every job asked about is purged; asked one by one, the known ones
    come back and the others are gone."""

    def squeue(argv: list[str], **kwargs: object) -> str:
        ids = argv[argv.index("-j") + 1].split(",")
        if ids == ["5"]:
            return "5|RUNNING|nodea|None\n"
        raise commands.SlurmError(
            "`squeue -h` failed (exit 1): slurm_load_jobs error: Invalid job id specified"
        )

    monkeypatch.setattr(commands, "call", squeue)
    assert commands.query(["4"]) == {}
    assert commands.query(["4", "5"]) == {"5": JobState("RUNNING", "nodea", "None")}

    def silent(argv: list[str], **kwargs: object) -> str:
        raise commands.SlurmError("`squeue -h` did not answer within 60 s")

    monkeypatch.setattr(commands, "call", silent)
    with pytest.raises(commands.SlurmError, match="did not answer"):
        commands.query(["4"])
