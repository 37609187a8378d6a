"""cli: validate, plan, schema, status (of batches run on the in-memory backend) and --version
through main(argv), plus one real subprocess."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project
from old_batches import write_as_version_1
from report_batches import default_behaviour, run_fake_batch

from safeagents_batch import __version__
from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import EXIT_RUNS_FAILED

LOCATED = re.compile(r"[^:]+:\d+:\d+: \S.*: .+")

GOOD = """
    version: 1
    jobs:
      - name: grid
        framework: langgraph
        scripts: scripts/*.py
        matrix: {MODEL: [gpt-4o, mini]}
        repeat: 3
        env: {OPENAI_API_KEY: sk-do-not-print}
        env_passthrough: [AZURE_TOKEN]
      - name: other
        framework: crewai
        scripts: scripts/a.py
"""

BAD = """
    version: 1
    jobs:
      - name: a
        framework: langgrph
        scripts: scripts/missing.py
        timout: 5
"""


def test_validate_ok(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - {name: a, framework: langgraph, scripts: "scripts/*.py", repeat: 2}
    """)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("OK: 4 runs, 1 images\n", "")


def test_validate_prints_warnings_on_stderr(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project.jobs(GOOD)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "OK: 13 runs, 2 images\n"
    (warning,) = err.splitlines()
    assert warning.startswith(f"warning: {path}:8:27: jobs[0].env.OPENAI_API_KEY: ")
    assert "sk-do-not-print" not in warning


def test_validate_bad_file(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    path = project.jobs(BAD)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 3
    assert all(LOCATED.fullmatch(line) and line.startswith(f"{path}:") for line in lines), lines
    assert "Traceback" not in err


def test_validate_several_files(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    good = project.jobs(
        "version: 1\njobs: [{name: a, framework: crewai, scripts: scripts/a.py}]", name="good.yaml"
    )
    bad = project.jobs(BAD, name="bad.yaml")
    assert main(["validate", str(good), str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == f"{good}: OK: 1 runs, 1 images\n"
    assert len(err.splitlines()) == 3 and all(
        line.startswith(f"{bad}:") for line in err.splitlines()
    )


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.yaml"
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"{path}:1:1: (file): cannot read: No such file or directory\n"
    )


def test_plan_json_is_deterministic_and_expands(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project.jobs(GOOD)
    outputs = []
    for _ in range(2):
        assert main(["plan", "--json", str(path)]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    document = json.loads(outputs[0])
    assert document["jobs_file"] == str(path)
    runs = document["runs"]
    assert [run["run_id"] for run in runs] == [
        f"grid-{stem}-{model}-r{k}"
        for stem in ("a", "b")
        for model in ("gpt-4o", "mini")
        for k in (1, 2, 3)
    ] + ["other-a"]
    first = runs[0]
    assert (first["job"], first["framework"], first["script"], first["timeout"]) == (
        "grid",
        "langgraph",
        "scripts/a.py",
        3600,
    )
    assert first["env"] == ["AZURE_TOKEN", "MODEL", "OPENAI_API_KEY"]
    assert re.fullmatch(r"safeagents-runtime:langgraph-[0-9a-f]{12}", first["image"])
    assert "sk-do-not-print" not in outputs[0]


def test_plan_json_is_the_same_for_a_copied_project(
    project: Project,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project.jobs(GOOD)
    copy = tmp_path / "moved" / "proj"
    shutil.copytree(project.root, copy)
    outputs = []
    for root in (project.root, copy):
        monkeypatch.chdir(root)
        assert main(["plan", "--json", "jobs.yaml"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


def test_plan_table(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(project.jobs(GOOD))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RUN_ID", "JOB", "FRAMEWORK", "SCRIPT", "IMAGE", "TIMEOUT", "ENV"]
    assert lines[1].startswith("grid-a-gpt-4o-r1 ")
    assert lines[-1] == "13 runs, 2 images"


def test_plan_bad_file(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--json", str(project.jobs(BAD))]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 3


def test_schema_prints_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["version", "jobs"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"safeagents-batch {__version__}\n"


def test_module_entry_point_from_another_cwd(project: Project, tmp_path: Path) -> None:
    path = project.jobs(BAD)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bad = subprocess.run(
        [sys.executable, "-m", "safeagents_batch", "validate", str(path)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 3 and "Traceback" not in bad.stderr
    path.write_text("version: 1\njobs: [{name: a, framework: crewai, scripts: scripts/a.py}]\n")
    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "safeagents_batch",
            "validate",
            str(Path("..") / "proj" / "jobs.yaml"),
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (good.returncode, good.stdout, good.stderr) == (0, "OK: 1 runs, 1 images\n", "")


@pytest.mark.parametrize("version", [2, 1])
def test_status_names_log_dirs_where_a_moved_batch_dir_is_now(
    project: Project,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    version: int,
) -> None:
    """Version 2 records log dirs relative to the batch dir, version 1 absolute where it was
    created: either way `status` prints absolute paths into the dir where it is now, which
    open from any shell, also when BATCH_DIR was given relative."""
    batch = run_fake_batch(project, default_behaviour)
    if version == 1:
        write_as_version_1(batch)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(batch, moved)
    monkeypatch.chdir(moved.parent)

    assert main(["status", "renamed", "--json"]) == EXIT_RUNS_FAILED
    unsuccessful = json.loads(capsys.readouterr().out)["not_succeeded"]
    assert main(["status", "renamed"]) == EXIT_RUNS_FAILED
    text = capsys.readouterr().out

    failing = ["grid-a-harmful-large-r1", "grid-a-harmful-large-r2"]
    assert [r["run_id"] for r in unsuccessful] == failing
    for record in unsuccessful:
        assert record["log_dir"] == str(moved / "runs" / record["run_id"] / "attempt-1")
        assert "Traceback" in (Path(record["log_dir"]) / "stderr.log").read_text("utf-8")
    printed = [line.split("logs: ", 1)[1] for line in text.splitlines() if "logs: " in line]
    assert printed == [r["log_dir"] for r in unsuccessful]
    assert str(batch) not in text  # nothing points where it was
