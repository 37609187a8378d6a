"""The node side's pure parts, without a cluster: output coalescing and order, the artifact
cap, code tars that unpack to the same tree, an agent's early cancel. Marked `ray`: they
import Ray."""

from __future__ import annotations

import io
import queue
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import ray
import ray.exceptions
from fakes import tar_of

from safeagents_batch.backends.base import AttemptRequest, Sink
from safeagents_batch.backends.ray import backend as ray_backend
from safeagents_batch.backends.ray import node as ray_node
from safeagents_batch.backends.ray.items import Art, ArtDrop, Done, Err, Item, Out, Trace
from safeagents_batch.backends.ray.node import CHUNK_BYTES, QueueSink, _drain, unpack
from safeagents_batch.core.tarsafe import tar_tree
from safeagents_batch.records.model import AttemptOutcome

pytestmark = pytest.mark.ray

OUTCOME = AttemptOutcome(
    status="succeeded",
    exit_code=0,
    started_at="2026-01-01T00:00:00Z",
    ended_at="2026-01-01T00:00:01Z",
)


def drained(items: list[Item]) -> list[Item]:
    waiting: queue.Queue[Item] = queue.Queue()
    for item in items:
        waiting.put(item)
    return list(_drain(waiting))


def test_queued_chunks_of_one_stream_are_coalesced_and_streams_keep_their_order() -> None:
    items: list[Item] = [Out(b"a"), Out(b"b"), Err(b"c"), Out(b"d")]
    assert drained([*items, Done(OUTCOME)]) == [
        Out(b"ab"),
        Err(b"c"),
        Out(b"d"),
        Done(OUTCOME),
    ]


def test_coalescing_stops_at_the_chunk_size() -> None:
    big = b"x" * (CHUNK_BYTES - 1)
    out = drained([Out(big), Out(b"yy"), Done(OUTCOME)])
    assert out == [Out(big), Out(b"yy"), Done(OUTCOME)]


def test_the_node_sends_only_what_the_artifact_rules_keep() -> None:
    """A file over the cap first, a link, then the small result: the node's tar holds the
    top directory and the result, and a line says each entry it did not keep."""
    archive = tar_of({"a-big.bin": bytes(5000), "result.json": b'{"score": 1}'})
    items: queue.Queue[Item] = queue.Queue()
    QueueSink(items, artifact_limit=2048, file_limit=10).artifacts(_pieces(archive, 700))
    got = [items.get_nowait() for _ in range(items.qsize())]
    pieces = b"".join(item.chunk for item in got if isinstance(item, Art))
    drops = [item.line for item in got if isinstance(item, ArtDrop)]
    assert drops == [
        "a-big.bin: 4.9 KiB, over the artifact limit of 2.0 KiB (archive bytes, headers included)"
    ]
    with tarfile.open(fileobj=io.BytesIO(pieces)) as tar:
        assert tar.getnames() == ["logs", "logs/result.json"]
        member = tar.extractfile("logs/result.json")
        assert member is not None and member.read() == b'{"score": 1}'


def test_the_node_stops_at_the_file_limit_and_says_so() -> None:
    archive = tar_of({f"e{i}": b"" for i in range(5)})
    items: queue.Queue[Item] = queue.Queue()
    QueueSink(items, artifact_limit=1 << 20, file_limit=2).artifacts([archive])
    got = [items.get_nowait() for _ in range(items.qsize())]
    assert [item.line for item in got if isinstance(item, ArtDrop)] == [
        "later entries not collected: 2 files and directories kept already"
    ]
    pieces = b"".join(item.chunk for item in got if isinstance(item, Art))
    with tarfile.open(fileobj=io.BytesIO(pieces)) as tar:
        assert tar.getnames() == ["logs", "logs/e0", "logs/e1"]


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_code_tar_unpacks_to_the_same_files_and_modes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "main.py").write_text("print(1)\n")
    (source / "pkg" / "tool.sh").write_text("echo\n")
    (source / "pkg" / "tool.sh").chmod(0o755)
    (source / "link").symlink_to("main.py")  # staged code has none; a tar carries none
    target = tmp_path / "dst"
    target.mkdir()

    unpack(tar_tree(source), target)

    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "main.py",
        "pkg",
        "pkg/tool.sh",
    ]
    assert (target / "main.py").read_text() == "print(1)\n"
    assert (target / "pkg" / "tool.sh").stat().st_mode & 0o777 == 0o755


def test_a_task_lost_while_the_head_does_not_answer_is_an_engine_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch then pauses as for a lost local engine (runs not started stay pending)
    instead of failing every remaining run one after the other."""

    def unanswered() -> list[dict[str, object]]:
        raise ConnectionError("GCS at 127.0.0.1:6379 unreachable")

    monkeypatch.setattr(ray_backend, "live_nodes", unanswered)
    stream = cast(ray.ObjectRefGenerator, None)  # never read: the task already failed
    attempt = ray_backend.RemoteAttempt(
        stream, cast(Sink, None), threading.Event(), "2026-01-01T00:00:00+00:00"
    )
    attempt.node = {"node_id": "abc", "host": "n1"}
    outcome = attempt._lost(ray.exceptions.RayError("worker died"))
    assert outcome.engine_lost and outcome.status == "error"
    assert outcome.error is not None and outcome.error.startswith("cluster lost"), outcome


def test_a_cancel_that_arrives_before_its_attempt_still_cancels_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C right after an attempt was sent: the agent's `cancel` call may run before the
    attempt's own call has begun; the attempt must start cancelled, not run to its end."""
    seen: list[bool] = []

    def attempt(*args: object) -> Iterator[Item]:
        cancel = args[-1]
        assert isinstance(cancel, threading.Event)
        seen.append(cancel.is_set())
        yield Done(OUTCOME)

    monkeypatch.setattr(ray_node, "run_attempt", attempt)
    agent = ray_node.NodeAgent()
    agent.cancel("early")
    list(agent.run_attempt("early", cast(AttemptRequest, None), [], []))
    list(agent.run_attempt("other", cast(AttemptRequest, None), [], []))
    assert seen == [True, False]
    assert agent._cancels == {} and agent._cancelled_early == set()


class TraceSink:
    def __init__(self) -> None:
        self.traces: list[str] = []

    def traceback(self, text: str) -> None:
        self.traces.append(text)


def test_an_error_the_agent_raised_ends_the_attempt_at_once_with_its_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node lives (its code raised): no wait for the cluster to declare it dead."""

    def never(node_id: str, wait: float = 0.0) -> bool:
        raise AssertionError("waited for the node's death")

    monkeypatch.setattr(ray_backend, "node_gone", never)
    sink = TraceSink()
    stream = cast(ray.ObjectRefGenerator, None)
    asked: list[bool] = []
    attempt = ray_backend.RemoteAttempt(
        stream,
        cast(Sink, sink),
        threading.Event(),
        "2026-01-01T00:00:00+00:00",
        lambda: asked.append(True),
    )
    attempt.node = {"node_id": "abc", "host": "n1"}
    text = (
        "\x1b[36mray::BootedAgent.run_attempt()\x1b[39m (pid=1, ip=127.0.0.1)\n"
        '  File "/tmp/c/package/d/safeagents_batch/backends/ray_node.py", line 9, in unpack\n'
        "    archive.extractall(target)\n"
        "TypeError: TarFile.extractall() got an unexpected keyword argument 'filter'\n"
    )
    task_error: Any = ray.exceptions.RayTaskError  # untyped in Ray
    cause = TypeError("TarFile.extractall() got an unexpected keyword argument 'filter'")
    outcome = attempt._lost(task_error("run_attempt", text, cause))
    assert outcome.status == "error" and not outcome.engine_lost
    assert outcome.error == (
        "ray call failed on the node: TypeError: TarFile.extractall() got an unexpected "
        "keyword argument 'filter' (raised at safeagents_batch/backends/ray_node.py:9 in unpack)"
    )
    [trace] = sink.traces
    assert "\x1b" not in trace and trace.rstrip().endswith("keyword argument 'filter'")
    assert asked == [True]  # the agent is asked to stop it, in case anything runs on


def test_a_failure_before_the_container_starts_is_the_attempts_outcome_with_its_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(digest: str, box: list[object]) -> Path:
        raise FileExistsError(17, "File exists", "/cache/code")

    monkeypatch.setattr(ray_node, "node_backend", lambda: None)
    monkeypatch.setattr(ray_node, "code_dir", broken)
    request = cast(AttemptRequest, SimpleNamespace(code=SimpleNamespace(digest="d")))
    items = list(ray_node.run_attempt(request, [], [], threading.Event()))
    trace, done = items
    assert isinstance(trace, Trace) and isinstance(done, Done)
    assert trace.text.startswith("Traceback (most recent call last):")
    outcome = done.outcome
    assert outcome.status == "error" and outcome.error is not None
    assert outcome.error.startswith(
        "on the node, before the container started: FileExistsError: [Errno 17] File exists: "
        "'/cache/code' (raised at tests/test_ray_node.py:"
    )
