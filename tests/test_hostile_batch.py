"""Hostile batch dirs (the issue's list, each reproduced on a batch made on the in-memory
backend): links, FIFOs and devices planted at the names the tool reads and writes, wrong
types in records, paths that leave the batch dir, terminal escapes, a received jobs.yaml.
`status`, `report` and `rerun` answer with one line (or a correct result) and never hang,
never read or write outside the batch dir. A property test plants more. No engine."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from fakes import FakeBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_batches import default_behaviour, run_fake_batch, succeeded_with

from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import UsageError
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.execution.rerun import RerunChoice, rerun_batch

CLI = [sys.executable, "-m", "safeagents_batch"]
HANG = 60  # a bound on one command: past it the test fails, as a user's command would hang
SECRET = "sk-host-secret-7f3a"


@pytest.fixture
def batch(project: Project) -> Path:
    return run_fake_batch(project, default_behaviour)


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=HANG, check=False)


def manifest(batch: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch / "manifest.json").read_text("utf-8"))
    return data


def write_manifest(batch: Path, data: dict[str, Any]) -> None:
    (batch / "manifest.json").write_text(json.dumps(data), "utf-8")


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    return line


def a_run_dir(batch: Path) -> Path:
    log_dir: str = manifest(batch)["runs"][0]["log_dir"]
    return batch / log_dir


def replace_with(path: Path, kind: str, target: Path) -> None:
    """`path` (unlinked first) as a FIFO, a link to `target`, or a link to /dev/zero."""
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link":
        path.symlink_to(target)
    else:
        path.symlink_to("/dev/zero")


# -- reading: FIFOs, devices, links ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "link", "zero"])
@pytest.mark.parametrize("name", ["manifest.json", "journal.jsonl"])
def test_a_planted_record_is_one_line_never_a_hang(
    batch: Path, tmp_path: Path, name: str, kind: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    replace_with(batch / name, kind, secret)
    for command in (["status", str(batch)], ["report", str(batch)]):
        line = one_line_error(tool(*command))
        assert name in line and SECRET not in line


@pytest.mark.parametrize("kind", ["fifo", "link", "zero"])
@pytest.mark.parametrize("name", ["result.json", "stderr.log"])
def test_a_planted_file_in_an_attempt_dir_is_not_read(
    project: Project, tmp_path: Path, name: str, kind: str
) -> None:
    batch = run_fake_batch(project, default_behaviour)
    secret = tmp_path / "key.json"
    secret.write_text(json.dumps({"key": SECRET}))  # valid JSON: read through, it would show
    for run in manifest(batch)["runs"]:
        replace_with(batch / run["log_dir"] / name, kind, secret)
    done = tool("report", str(batch))
    assert done.returncode == 0, done.stderr
    for written in ("report.html", "results.csv", "results.jsonl"):
        assert SECRET not in (batch / written).read_text("utf-8")


def test_deeply_nested_brackets_in_a_manifest_are_one_line(batch: Path) -> None:
    (batch / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    line = one_line_error(tool("status", str(batch)))
    assert "manifest.json" in line


# -- wrong types in records --------------------------------------------------------------------


def set_attempt(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["runs"][0]["attempts"][0][field] = value

    return change


def set_run(index: int, field: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["runs"][index][field] = value

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            set_attempt("log_dir", 5),
            "Expected `str`, got `int` - at `$.runs[0].attempts[0].log_dir`",
        ),
        (
            set_attempt("log_dir", "/"),
            "'/' is outside the batch dir - at `$.runs[0].attempts[0].log_dir`",
        ),
        (set_attempt("log_dir", "../../etc"), "is not a path inside the batch dir"),
        (set_run(12, "timeout", "x"), "Expected `int`, got `str` - at `$.runs[12].timeout`"),
        (set_attempt("number", 1.5), "Expected `int`, got `float`"),
    ],
    ids=["log_dir a number", "log_dir /", "log_dir climbs", "last run's type", "number"],
)
def test_a_wrong_field_anywhere_is_one_line_naming_it(
    batch: Path, change: Callable[[dict[str, Any]], None], says: str
) -> None:
    data = manifest(batch)
    change(data)
    write_manifest(batch, data)
    for command in ("status", "report"):
        line = one_line_error(tool(command, str(batch)))
        assert says in line and "manifest.json" in line, line


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"v":2,"seq":"x"}', "damaged journal line: Expected `int`, got `str` - at `$.seq`"),
        (
            '{"v":2,"seq":99,"at":"t","event":"attempt","run_id":"r","attempt":'
            '{"number":1,"log_dir":"/etc","started_at":"t","outcome":{"status":"failed",'
            '"started_at":"t","ended_at":"t","duration_seconds":"x"}}}',
            "bad journal event: Expected `float | null`, got `str`",
        ),
    ],
    ids=["seq not a number", "duration not a number"],
)
def test_a_wrong_journal_line_is_one_line(batch: Path, line: str, says: str) -> None:
    with (batch / "journal.jsonl").open("a") as journal:
        journal.write(line + "\n" + '{"v":2,"seq":100}\n')
    out = one_line_error(tool("status", str(batch)))
    assert says in out and "journal.jsonl" in out


# -- writing: planted links are replaced, never written through -------------------------------


@pytest.mark.parametrize("name", ["results.csv", "results.jsonl", "report.html"])
def test_report_replaces_a_planted_link_and_leaves_its_target(
    batch: Path, tmp_path: Path, name: str
) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious")
    (batch / name).unlink(missing_ok=True)
    (batch / name).symlink_to(target)
    done = tool("report", str(batch))
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "precious"
    assert not (batch / name).is_symlink() and (batch / name).stat().st_size > 0


def test_rerun_never_writes_through_a_planted_lock_or_journal(batch: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious")
    for name in (".lock", "journal.jsonl"):
        (batch / name).unlink(missing_ok=True)
        (batch / name).symlink_to(target)
        with pytest.raises(UsageError, match=f"{name}: a link, not followed"):
            rerun_batch(batch, FakeBackend(), CollectingReporter(), RerunChoice(everything=True))
        (batch / name).unlink()
    assert target.read_text() == "precious"


def test_an_attempt_dir_through_a_linked_parent_is_refused(batch: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    run_id = manifest(batch)["runs"][0]["run_id"]
    runs = batch / "runs"
    (runs / run_id).rename(tmp_path / "moved-away")
    (runs / run_id).symlink_to(outside)
    outcome = rerun_batch(batch, FakeBackend(), CollectingReporter(), RerunChoice(everything=True))
    assert os.listdir(outside) == []
    [record] = [r for r in manifest(batch)["runs"] if r["run_id"] == run_id]
    assert record["status"] == "error" and "a link or a file, not a directory" in record["error"]
    assert outcome.exit_code == 1


def test_a_planted_next_attempt_dir_is_moved_aside_not_written_into(batch: Path) -> None:
    """A FIFO at its console.log hung the rerun; a result.json there won over the script's."""
    [record] = [r for r in manifest(batch)["runs"] if r["run_id"] == "single-b"]
    planted = batch / "runs" / "single-b" / f"attempt-{len(record['attempts']) + 1}"
    planted.mkdir()
    os.mkfifo(planted / "console.log")
    (planted / "result.json").write_text('{"score": 99}')
    backend = FakeBackend(behaviours={"single-b": [succeeded_with({"score": 1})]})
    rerun_batch(batch, backend, CollectingReporter(), RerunChoice(everything=True))
    assert json.loads((planted / "result.json").read_text()) == {"score": 1}
    assert (planted / "console.log").read_bytes() == b"done\n"
    [aside] = (batch / "runs" / "single-b").glob(f".{planted.name}.stale-*")
    assert sorted(os.listdir(aside)) == ["console.log", "result.json"]


# -- what reaches a terminal ---------------------------------------------------------------------


@pytest.mark.parametrize("offset", [10**400, 2**63, 10**9, -5])
def test_a_journal_offset_past_the_end_is_only_a_hint(batch: Path, offset: int) -> None:
    """Found by the property below: a huge offset crashed the seek."""
    before = tool("status", str(batch))
    data = manifest(batch)
    data["journal"]["offset"] = offset
    write_manifest(batch, data)
    after = tool("status", str(batch))
    assert (after.returncode, after.stdout) == (before.returncode, before.stdout), after.stderr


def test_status_shows_escapes_as_text(batch: Path) -> None:
    data = manifest(batch)
    run = data["runs"][0]
    run["unstarted"] = {"status": "error", "reason": "\x1b]2;pwned\x07\x1b[31mred\x1b[0m\rover"}
    write_manifest(batch, data)
    done = tool("status", str(batch))
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    assert "\\x1b[31mred" in done.stdout


# -- received batch dirs ------------------------------------------------------------------------


def test_an_edited_jobs_yaml_is_not_rerun_unasked(batch: Path) -> None:
    snapshot = batch / "jobs.yaml"
    # The last job in the snapshot is `single`: give it the host's network.
    head, _, tail = snapshot.read_text().rpartition("  network: bridge\n")
    edited = f"{head}  network: host\n{tail}"
    snapshot.write_text(edited)
    with pytest.raises(UsageError, match=r"not as this tool wrote it for you.*--trust-batch-dir"):
        rerun_batch(batch, FakeBackend(), CollectingReporter(), RerunChoice(everything=True))
    backend = FakeBackend()
    rerun_batch(batch, backend, CollectingReporter(), RerunChoice(everything=True, trust=True))
    assert {r.network for r in backend.requests if r.run_id.startswith("single")} == {"host"}
    # Trusted once, sealed as the user's: the next rerun takes it without asking.
    rerun_batch(batch, FakeBackend(), CollectingReporter(), RerunChoice(everything=True))


def test_a_batch_dir_sealed_under_another_key_is_received_not_trusted(
    batch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's key (another machine): a seal this user's key does not make."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "someone-else"))
    with pytest.raises(UsageError, match="edited, or received"):
        rerun_batch(batch, FakeBackend(), CollectingReporter(), RerunChoice(everything=True))


def test_a_batch_dir_owned_by_another_user_is_refused(batch: Path) -> None:
    os.chown(batch, 12345, 12345)
    try:
        with pytest.raises(UsageError, match=r"belongs to another user \(uid 12345\)"):
            rerun_batch(batch, FakeBackend(), CollectingReporter(), RerunChoice(everything=True))
    finally:
        os.chown(batch, os.getuid(), os.getgid())


# -- the property ---------------------------------------------------------------------------------


def in_process(command: str, batch: Path) -> tuple[int, str]:
    """The command in this process (no FIFO in these cases: nothing can hang); any exception
    escaping the CLI's boundary fails the test as a traceback would."""
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main([command, str(batch)])
    return code, err.getvalue()


FIELDS = [
    ("batch_id",), ("batch_dir",), ("state",), ("created_at",), ("manifest_version",),
    ("jobs_file", "path"), ("jobs_file", "git"), ("journal", "seq"), ("journal", "offset"),
    ("runs", 0, "run_id"), ("runs", 0, "env"), ("runs", 0, "matrix"), ("runs", 0, "timeout"),
    ("runs", 0, "attempts"), ("runs", 0, "attempts", 0, "log_dir"),
    ("runs", 0, "attempts", 0, "outcome"), ("runs", 0, "attempts", 0, "outcome", "status"),
    ("runs", 0, "attempts", 0, "outcome", "node"), ("images",), ("images", 0, "build_log"),
]  # fmt: skip
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["/", "..", "../x", "/etc/passwd", "\x1b[2J", 10**400]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)  # fmt: skip


@pytest.mark.bounded
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_any_wrong_value_at_any_field_is_one_line_or_a_report(
    batch: Path, field: tuple[str | int, ...], value: object
) -> None:
    original = (batch / "manifest.json").read_bytes()
    data = manifest(batch)
    target: Any = data
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    try:
        (batch / "manifest.json").write_text(json.dumps(data), "utf-8")
        for command in ("status", "report"):
            code, err = in_process(command, batch)
            if code == 2:
                assert len(err.strip().splitlines()) == 1, err
            else:
                assert code in (0, 1), err
    finally:
        (batch / "manifest.json").write_bytes(original)
