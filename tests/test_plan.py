"""plan: expansion order, run ids (format, safety, stability), duplicates, needed images."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import Project
from hypothesis import given
from hypothesis import strategies as st

from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.plan import MAX_RUN_ID_LENGTH, RunSpec, expand, needed_images, run_id

LABEL = "jobs.yaml"
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def plan(path: Path) -> list[RunSpec]:
    return expand(load_jobs_file(path, label=LABEL))


def ids(path: Path) -> list[str]:
    return [spec.run_id for spec in plan(path)]


MATRIX_FILE = """
    version: 1
    jobs:
      - name: grid
        framework: langgraph
        scripts: [scripts/b.py, scripts/a.py]
        matrix:
          MODEL: [gpt-4o, mini]
          TEMP: [0, 0.5]
        repeat: 2
      - name: single
        framework: crewai
        scripts: scripts/*.py
"""


def test_expansion_order_scripts_matrix_repeat_in_file_order(project: Project) -> None:
    specs = plan(project.jobs(MATRIX_FILE))
    assert [(s.job.name, s.script.name, s.matrix_env, s.repeat_index) for s in specs] == [
        ("grid", script, (("MODEL", model), ("TEMP", temp)), k)
        for script in ("b.py", "a.py")
        for model in ("gpt-4o", "mini")
        for temp in ("0", "0.5")
        for k in (1, 2)
    ] + [("single", "a.py", (), 1), ("single", "b.py", (), 1)]


def test_run_id_format(project: Project) -> None:
    assert ids(project.jobs(MATRIX_FILE)) == [
        f"grid-{stem}-{model}-{temp}-r{k}"
        for stem in ("b", "a")
        for model in ("gpt-4o", "mini")
        for temp in ("0", "0.5")
        for k in (1, 2)
    ] + ["single-a", "single-b"]


def test_run_id_parts() -> None:
    assert run_id("job", "script", (), None) == "job-script"
    assert run_id("job", "script", ("x", "true"), None) == "job-script-x-true"
    assert run_id("job", "script", (), 3) == "job-script-r3"
    assert run_id("job", "my script", ("a/b", "../..", ""), 1) == "job-my_script-a_b-_-_-r1"


def test_matrix_booleans_stay_lowercase_in_ids_and_env(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: j
            framework: langgraph
            scripts: scripts/a.py
            matrix: {FLAG: [true, false]}
    """)
    specs = plan(path)
    assert [s.run_id for s in specs] == ["j-a-true", "j-a-false"]
    assert [s.literal_env for s in specs] == [{"FLAG": "true"}, {"FLAG": "false"}]


def test_run_env_names_include_passthrough_never_values(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: j
            framework: langgraph
            scripts: scripts/a.py
            env: {B: "1"}
            env_passthrough: [OPENAI_API_KEY]
            matrix: {A: [x]}
    """)
    (spec,) = plan(path)
    assert spec.env_names == ("A", "B", "OPENAI_API_KEY")
    assert spec.literal_env == {"B": "1", "A": "x"}


def test_overlong_ids_are_capped_and_stay_distinct() -> None:
    long_values = [("v" * 150 + suffix,) for suffix in ("1", "2")]
    first, second = (run_id("job", "script", values, None) for values in long_values)
    assert len(first) == len(second) == MAX_RUN_ID_LENGTH
    assert first != second
    assert first.startswith("job-script-vvvv")


@given(
    job=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
    stem=st.text(max_size=80),
    values=st.lists(st.text(max_size=40), max_size=4).map(tuple),
    repeat=st.one_of(st.none(), st.integers(1, 1000)),
)
def test_run_ids_are_safe_directory_names(
    job: str, stem: str, values: tuple[str, ...], repeat: int | None
) -> None:
    made = run_id(job, stem, values, repeat)
    assert SAFE_ID.fullmatch(made), made
    assert len(made) <= MAX_RUN_ID_LENGTH
    assert made not in {".", ".."} and "/" not in made and "\\" not in made
    assert Path(made).name == made
    assert made == run_id(job, stem, values, repeat)


def test_unsafe_matrix_values_give_safe_ids(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: j
            framework: langgraph
            scripts: scripts/a.py
            matrix: {TARGET: ["../../etc", "a/b c", "..", "x:y"]}
    """)
    made = ids(path)
    assert made == ["j-a-etc", "j-a-a_b_c", "j-a-_", "j-a-x_y"]
    assert all(SAFE_ID.fullmatch(i) and ".." not in i for i in made)


def test_ids_are_stable_for_the_same_file(project: Project) -> None:
    path = project.jobs(MATRIX_FILE)
    assert ids(path) == ids(path)


def test_ids_are_the_same_when_the_project_is_copied(project: Project, tmp_path: Path) -> None:
    project.jobs(MATRIX_FILE)
    copy = tmp_path / "elsewhere" / "deeper" / "copy"
    shutil.copytree(project.root, copy)
    assert ids(copy / "jobs.yaml") == ids(project.root / "jobs.yaml")


def test_same_stem_in_two_dirs_is_a_located_duplicate(project: Project) -> None:
    project.write("other/a.py")
    path = project.jobs("""
        version: 1
        jobs:
          - name: ok
            framework: langgraph
            scripts: scripts/b.py
          - name: clash
            framework: langgraph
            scripts: [scripts/a.py, other/a.py]
    """)
    with pytest.raises(JobsFileError) as info:
        plan(path)
    (problem,) = info.value.problems
    assert str(problem.location) == f"{LABEL}:6:5"
    assert problem.key_path == "jobs[1]"
    assert problem.message.startswith("run id 'clash-a' is produced twice (")
    assert problem.message.endswith("); rename a script or a matrix value")


def test_matrix_values_that_collide_after_sanitizing(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: j
            framework: langgraph
            scripts: scripts/a.py
            matrix: {M: ["a b", "a_b"]}
    """)
    with pytest.raises(JobsFileError) as info:
        plan(path)
    assert [str(p).split(": ", 2)[:2] for p in info.value.problems] == [[f"{LABEL}:3:5", "jobs[0]"]]
    assert "run id 'j-a-a_b' is produced twice" in info.value.problems[0].message


def test_needed_images_are_deduplicated_in_first_use_order(project: Project) -> None:
    path = project.jobs("""
        version: 1
        frameworks:
          unused:
            packages: [x]
        jobs:
          - {name: one, framework: crewai, scripts: "scripts/*.py"}
          - {name: two, framework: langgraph, scripts: scripts/a.py, matrix: {M: [1, 2]}}
          - {name: three, framework: crewai, scripts: scripts/b.py, repeat: 3}
    """)
    specs = plan(path)
    assert len(specs) == 2 + 2 + 3
    assert [config.framework for config in needed_images(specs)] == ["crewai", "langgraph"]
    assert needed_images([]) == []
