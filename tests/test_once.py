"""OncePerKey: made once per key however many threads ask, keys apart, failures by outcome
remembered, exceptions not."""

from __future__ import annotations

import threading

import pytest

from safeagents_batch.core.once import OncePerKey

PATIENCE = 10.0  # a bound on waits for other threads, not a timing assertion


def test_many_askers_of_one_key_share_one_making() -> None:
    once: OncePerKey[str, int] = OncePerKey()
    made: list[str] = []
    release = threading.Event()

    def make() -> int:
        made.append("x")
        release.wait(PATIENCE)
        return 42

    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(once.get("k", make))) for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(PATIENCE)
    assert made == ["x"] and got == [42] * 8


def test_another_key_is_made_while_one_is_being_made() -> None:
    once: OncePerKey[str, str] = OncePerKey()
    slow_started, slow_may_end = threading.Event(), threading.Event()

    def slow() -> str:
        slow_started.set()
        slow_may_end.wait(PATIENCE)
        return "slow"

    thread = threading.Thread(target=lambda: once.get("slow", slow))
    thread.start()
    assert slow_started.wait(PATIENCE)
    assert once.get("fast", lambda: "fast") == "fast"  # not held up by the other key
    slow_may_end.set()
    thread.join(PATIENCE)
    assert once.get("slow", lambda: "again") == "slow"


def test_an_outcome_is_remembered_an_exception_is_not() -> None:
    once: OncePerKey[str, str | None] = OncePerKey()
    assert once.get("ship", lambda: "no route to the node") == "no route to the node"
    assert once.get("ship", lambda: None) == "no route to the node"

    def broken() -> str:
        raise OSError("disk full")

    with pytest.raises(OSError):
        once.get("push", broken)
    assert once.get("push", lambda: "pushed") == "pushed"
