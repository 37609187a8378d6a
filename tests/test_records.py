"""records: how a record names a path (relative to the batch dir when inside it) and where
a recorded path is now, for records of both manifest versions. Pure: no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeagents_batch.records.model import located, recorded_path

CREATED = Path("/data/logs/b-1")  # where the batch was created
NOW = Path("/elsewhere/renamed")  # where it is now


@pytest.mark.parametrize(
    ("path", "recorded"),
    [
        (CREATED / "runs" / "r1" / "attempt-2", "runs/r1/attempt-2"),
        (CREATED / "images" / "t.log", "images/t.log"),
        (CREATED, "."),
        (Path("/data/builds/t.log"), "/data/builds/t.log"),  # outside: absolute
        (Path("/data/logs/b-10/runs"), "/data/logs/b-10/runs"),  # a sibling sharing a prefix
    ],
)
def test_a_path_is_recorded_relative_inside_the_batch_dir_and_absolute_outside(
    path: Path, recorded: str
) -> None:
    assert recorded_path(path, CREATED) == recorded


def test_a_relative_path_is_recorded_as_the_absolute_path_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert recorded_path(Path("b-1/runs/r"), tmp_path / "b-1") == "runs/r"
    assert recorded_path(Path("out.log"), tmp_path / "b-1") == str(tmp_path / "out.log")


@pytest.mark.parametrize(
    ("recorded", "now"),
    [
        ("runs/r1/attempt-2", NOW / "runs" / "r1" / "attempt-2"),  # version 2
        (str(CREATED / "runs" / "r1" / "attempt-1"), NOW / "runs" / "r1" / "attempt-1"),  # 1
        ("/data/builds/t.log", Path("/data/builds/t.log")),  # outside: as recorded
        ("/data/logs/b-10/x", Path("/data/logs/b-10/x")),  # a sibling is not inside
    ],
)
def test_a_recorded_path_is_found_where_the_batch_dir_is_now(recorded: str, now: Path) -> None:
    assert located(recorded, NOW, str(CREATED)) == now


def test_what_is_recorded_is_located_again_after_a_move() -> None:
    for path in (CREATED / "runs" / "r" / "attempt-1", Path("/data/builds/t.log")):
        moved = NOW / path.relative_to(CREATED) if path.is_relative_to(CREATED) else path
        assert located(recorded_path(path, CREATED), NOW, str(CREATED)) == moved
