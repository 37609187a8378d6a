"""The node side's pure parts, without a cluster: output coalescing and order, the artifact
cap, code tars that unpack to the same tree, an agent's early cancel. Marked `ray`: they
import Ray."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import ray
import ray.exceptions

from safeagents_batch.backends import ray as ray_backend
from safeagents_batch.backends import ray_node
from safeagents_batch.backends.base import AttemptOutcome, AttemptRequest, Sink
from safeagents_batch.backends.ray import tar_tree
from safeagents_batch.backends.ray_node import CHUNK_BYTES, Item, QueueSink, _drain, unpack

pytestmark = pytest.mark.ray

OUTCOME = AttemptOutcome("succeeded", 0, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")


def drained(items: list[Item]) -> list[Item]:
    waiting: queue.Queue[Item] = queue.Queue()
    for item in items:
        waiting.put(item)
    return list(_drain(waiting))


def test_queued_chunks_of_one_stream_are_coalesced_and_streams_keep_their_order() -> None:
    items: list[Item] = [("out", b"a"), ("out", b"b"), ("err", b"c"), ("out", b"d")]
    assert drained([*items, ("outcome", OUTCOME)]) == [
        ("out", b"ab"),
        ("err", b"c"),
        ("out", b"d"),
        ("outcome", OUTCOME),
    ]


def test_coalescing_stops_at_the_chunk_size() -> None:
    big = b"x" * (CHUNK_BYTES - 1)
    out = drained([("out", big), ("out", b"yy"), ("outcome", OUTCOME)])
    assert out == [("out", big), ("out", b"yy"), ("outcome", OUTCOME)]


def test_artifacts_past_the_cap_are_announced_not_sent() -> None:
    items: queue.Queue[Item] = queue.Queue()
    QueueSink(items, artifact_cap=10).artifacts([b"12345", b"67890", b"1"])
    assert [items.get_nowait() for _ in range(items.qsize())] == [
        ("art", b"12345"),
        ("art", b"67890"),
        ("art_over", 10),
    ]


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
    attempt = ray_backend.RemoteAttempt(stream, cast(Sink, None), threading.Event(), "t0")
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
        yield ("outcome", OUTCOME)

    monkeypatch.setattr(ray_node, "run_attempt", attempt)
    agent = ray_node.NodeAgent()
    agent.cancel("early")
    list(agent.run_attempt("early", cast(AttemptRequest, None), [], []))
    list(agent.run_attempt("other", cast(AttemptRequest, None), [], []))
    assert seen == [True, False]
    assert agent._cancels == {} and agent._cancelled_early == set()
