"""records: how a record names a path (relative to the batch dir when inside it) and where
a recorded path is now, for records of both manifest versions. Pure: no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeagents_batch.records.model import recorded_path
from safeagents_batch.records.safedir import UnsafePath, inside

CREATED = Path("/data/logs/b-1")  # where the batch was created
NOW = Path("/elsewhere/renamed")  # where it is now


@pytest.mark.parametrize(
    ("path", "recorded"),
    [
        (CREATED / "runs" / "r1" / "attempt-2", "runs/r1/attempt-2"),
        (CREATED / "images" / "t.log", "images/t.log"),
        (CREATED, "."),
    ],
)
def test_a_path_is_recorded_relative_to_the_batch_dir(path: Path, recorded: str) -> None:
    assert recorded_path(path, CREATED) == recorded


@pytest.mark.parametrize(
    "path",
    [Path("/data/builds/t.log"), Path("/data/logs/b-10/runs")],  # the second shares a prefix
)
def test_a_path_outside_the_batch_dir_is_never_recorded(path: Path) -> None:
    """The readers refuse a record naming one: the writer refuses to make it."""
    with pytest.raises(ValueError, match="outside the batch dir"):
        recorded_path(path, CREATED)


def test_a_relative_path_is_recorded_as_the_absolute_path_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert recorded_path(Path("b-1/runs/r"), tmp_path / "b-1") == "runs/r"


@pytest.mark.parametrize(
    ("recorded", "relative"),
    [
        ("runs/r1/attempt-2", "runs/r1/attempt-2"),  # versions 2 and 3
        (str(CREATED / "runs" / "r1" / "attempt-1"), "runs/r1/attempt-1"),  # version 1
        ("./runs//r1/", "runs/r1"),
    ],
)
def test_a_recorded_path_is_found_below_the_batch_dir_wherever_it_is(
    recorded: str, relative: str
) -> None:
    assert inside(recorded, str(CREATED)) == relative


@pytest.mark.parametrize(
    "recorded",
    ["/", "/data/builds/t.log", "/data/logs/b-10/x", "../b-2/runs", "runs/../../x", ".", "a\0b"],
)
def test_a_recorded_path_that_leaves_the_batch_dir_is_refused(recorded: str) -> None:
    with pytest.raises(UnsafePath):
        inside(recorded.replace("\\0", "\0"), str(CREATED))


def test_what_is_recorded_is_found_again_after_a_move() -> None:
    path = CREATED / "runs" / "r" / "attempt-1"
    assert (NOW / inside(recorded_path(path, CREATED), str(CREATED))) == NOW / "runs/r/attempt-1"
