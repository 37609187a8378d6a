"""jobsfile: every error class, located as FILE:LINE:COL: key.path: message."""

from __future__ import annotations

from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.jobs.framework_keys import FRAMEWORK_KEYS
from safeagents_batch.jobs.keys import JOB_KEYS
from safeagents_batch.jobs.load import load_jobs_file, parse_memory
from safeagents_batch.jobs.model import (
    DEFAULT_ARTIFACT_LIMIT,
    DEFAULT_CODE_LIMIT,
    DEFAULT_TIMEOUT,
    ImageConfig,
    Job,
    JobsFile,
)
from safeagents_batch.jobs.schema import load_schema

LABEL = "jobs.yaml"


def load(path: Path) -> JobsFile:
    return load_jobs_file(path, label=LABEL)


def errors(path: Path) -> list[str]:
    """Every problem of an invalid jobs file, one `FILE:LINE:COL: key.path: message` each."""
    with pytest.raises(JobsFileError) as info:
        load(path)
    lines = [str(p) for p in info.value.problems]
    assert str(info.value) == "\n".join(lines)
    return lines


def one_error(path: Path) -> str:
    found = errors(path)
    assert len(found) == 1, found
    return found[0]


# -- a valid file ------------------------------------------------------------------------------


def test_valid_file_gives_typed_records(project: Project) -> None:
    path = project.jobs("""
        version: 1
        name: nightly
        workers: 3
        jobs:
          - name: smoke
            framework: langgraph
            scripts: [scripts/b.py, scripts/a.py]
            matrix:
              MODEL: [gpt-4o, mini]
              STRICT: [true, 2]
            repeat: 2
            resources: {memory: 2g, cpus: 1.5, pids: null}
    """)
    jobs_file = load(path)
    assert (jobs_file.name, jobs_file.workers, jobs_file.label) == ("nightly", 3, LABEL)
    assert jobs_file.path == path.absolute()
    assert jobs_file.output_dir == project.root / "logs"
    (job,) = jobs_file.jobs
    assert job.name == "smoke" and job.framework == "langgraph"
    assert job.scripts == (project.root / "scripts/b.py", project.root / "scripts/a.py")
    assert job.matrix == (("MODEL", ("gpt-4o", "mini")), ("STRICT", ("true", "2")))
    assert job.repeat == 2 and job.timeout == DEFAULT_TIMEOUT
    assert (job.resources.memory, job.resources.cpus, job.resources.pids) == (
        2 * 1024**3,
        1.5,
        None,
    )
    assert str(job.location) == f"{LABEL}:5:5"
    assert set(jobs_file.frameworks) == {"langgraph"}
    assert jobs_file.warnings == ()


def test_name_defaults_to_file_stem(project: Project) -> None:
    path = project.jobs(
        """
        version: 1
        jobs: [{name: a, framework: crewai, scripts: scripts/a.py}]
    """,
        name="my batch.yaml",
    )
    assert load(path).name == "my-batch"


def test_glob_expands_sorted_and_overlaps_once(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: [scripts/*.py, scripts/a.py]
    """)
    (job,) = load(path).jobs
    assert job.scripts == (project.root / "scripts/a.py", project.root / "scripts/b.py")


# -- schema problems -------------------------------------------------------------------------


def test_unknown_key_with_did_you_mean(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            timout: 5
    """)
    assert one_error(path) == (
        f"{LABEL}:6:5: jobs[0].timout: unknown key 'timout' (did you mean 'timeout'?)"
    )


def test_unknown_keys_everywhere_are_located(project: Project) -> None:
    path = project.jobs("""
        version: 1
        wokers: 2
        frameworks:
          langgraph:
            packges: [x]
        defaults:
          framwork: crewai
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            resources: {memroy: 2g}
            zzz: 1
    """)
    assert errors(path) == [
        f"{LABEL}:2:1: wokers: unknown key 'wokers' (did you mean 'workers'?)",
        f"{LABEL}:5:5: frameworks.langgraph.packges: unknown key 'packges' "
        "(did you mean 'packages'?)",
        f"{LABEL}:7:3: defaults.framwork: unknown key 'framwork' (did you mean 'framework'?)",
        f"{LABEL}:12:17: jobs[0].resources.memroy: unknown key 'memroy' (did you mean 'memory'?)",
        f"{LABEL}:13:5: jobs[0].zzz: unknown key 'zzz'",
    ]


def test_schema_type_error_points_at_the_value(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            timeout: soon
    """)
    assert one_error(path) == f"{LABEL}:6:14: jobs[0].timeout: 'soon' is not of type 'integer'"


def test_schema_minimum_errors(project: Project) -> None:
    path = project.jobs("""
        version: 1
        workers: 0
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            repeat: 0
    """)
    assert errors(path) == [
        f"{LABEL}:2:10: workers: 0 is less than the minimum of 1",
        f"{LABEL}:7:13: jobs[0].repeat: 0 is less than the minimum of 1",
    ]


@pytest.mark.parametrize("value", ["2.0", "!!float 2", "1.0e+1"])
def test_float_is_not_an_integer(project: Project, value: str) -> None:
    path = project.jobs(f"""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            repeat: {value}
    """)
    assert one_error(path).startswith(f"{LABEL}:6:13: jobs[0].repeat: ")
    assert one_error(path).endswith(" is not of type 'integer'")


def test_bad_framework_name_points_at_the_name(project: Project) -> None:
    path = project.jobs("""
        version: 1
        frameworks:
          langgraph: {}
          My_FW: {packages: [x]}
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py}
    """)
    assert one_error(path).startswith(
        f"{LABEL}:4:3: frameworks.My_FW: 'My_FW' is not allowed here: must match "
    )


def test_env_number_value_says_quote_it(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            env:
              RETRIES: 3
    """)
    assert one_error(path) == (
        f"{LABEL}:7:16: jobs[0].env.RETRIES: a number is not a string; "
        "quote it to make it a string (value not shown)"
    )


def test_bad_env_name_points_at_the_name(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            env:
              GOOD: x
              bad-name: y
    """)
    error = one_error(path)
    assert error.startswith(f"{LABEL}:8:7: jobs[0].env.bad-name: 'bad-name' is not allowed here")


def test_unsupported_version_and_missing_jobs(project: Project) -> None:
    path = project.jobs("version: 2\n")
    assert errors(path) == [
        f"{LABEL}:1:1: (top): 'jobs' is a required property",
        f"{LABEL}:1:10: version: unsupported version 2; this tool reads version 1",
    ]


def test_job_without_framework_or_scripts(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
    """)
    assert errors(path) == [
        f"{LABEL}:3:5: jobs[0]: no framework: set `framework` here or under defaults",
        f"{LABEL}:3:5: jobs[0]: no scripts: set `scripts` here or under defaults",
    ]


@pytest.mark.parametrize("where", ["job", "batch"])
def test_name_with_path_parts_is_rejected(project: Project, where: str) -> None:
    if where == "job":
        path = project.jobs("""
            version: 1
            jobs:
              - name: ../../x
                framework: langgraph
                scripts: scripts/a.py
        """)
        expected = f"{LABEL}:3:11: jobs[0].name: '../../x' is not allowed here: "
    else:
        path = project.jobs("""
            version: 1
            name: ../x
            jobs: [{name: a, framework: langgraph, scripts: scripts/a.py}]
        """)
        expected = f"{LABEL}:2:7: name: '../x' is not allowed here: "
    assert one_error(path).startswith(expected)


@pytest.mark.parametrize("value", ['"a\\n"', "|\n    a"])
def test_name_ending_in_newline_is_rejected(project: Project, value: str) -> None:
    # Python's `$` matches before a final newline; JSON Schema's does not.
    path = project.jobs(
        f"version: 1\nname: {value}\n"
        "jobs: [{name: a, framework: langgraph, scripts: scripts/a.py}]\n"
    )
    assert one_error(path).startswith(f"{LABEL}:2:7: name: 'a\\n' is not allowed here")


def test_memory_with_trailing_newline_is_an_error_not_a_crash(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            resources: {memory: "2g\\n"}
    """)
    assert one_error(path).startswith(
        f"{LABEL}:6:25: jobs[0].resources.memory: '2g\\n' is not allowed here"
    )


def test_memory_string_below_minimum(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults:
          resources: {memory: 1k}
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py}
          - {name: b, framework: langgraph, scripts: scripts/a.py}
    """)
    assert one_error(path) == (
        f"{LABEL}:3:23: defaults.resources.memory: memory '1k' is below the minimum of 4m"
    )


def test_parse_memory_units() -> None:
    assert parse_memory("512m") == 512 * 1024**2
    assert parse_memory("1.5g") == int(1.5 * 1024**3)
    assert parse_memory("4194304") == parse_memory(4194304) == 4 * 1024**2


def test_wrong_secret_patterns_is_a_schema_error_not_a_crash(project: Project) -> None:
    for patterns, expected in [
        ("5", "5 is not of type 'array'"),
        ("[1]", "1 is not of type 'string'"),
    ]:
        path = project.jobs(f"""
            version: 1
            secret_patterns: {patterns}
            jobs:
              - {{name: a, framework: langgraph, scripts: scripts/a.py, env: {{A_KEY: x}}}}
        """)
        assert expected in one_error(path)


# -- semantic problems -----------------------------------------------------------------------


def test_duplicate_job_names(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults:
          framework: langgraph
          scripts: scripts/a.py
        jobs:
          - name: a
          - name: b
          - name: a
    """)
    assert one_error(path) == (
        f"{LABEL}:8:11: jobs[2].name: duplicate job name 'a' (first at jobs[0])"
    )


def test_duplicate_yaml_keys(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            timeout: 5
            timeout: 6
    """)
    assert one_error(path) == f"{LABEL}:7:5: jobs[0].timeout: duplicate key 'timeout'"


def test_merge_keys_let_explicit_keys_override(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults: &base
          framework: langgraph
          timeout: 5
        jobs:
          - <<: *base
            name: a
            timeout: 10
            scripts: scripts/a.py
    """)
    (job,) = load(path).jobs
    assert job.timeout == 10


def test_merge_keys_chained_and_reused(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults: &d {framework: langgraph, timeout: 5}
        jobs:
          - &j {<<: *d, name: a, scripts: scripts/a.py, timeout: 6}
          - {<<: *j, name: b}
          - {<<: [*j, *d], name: c, repeat: 2}
    """)
    a, b, c = load(path).jobs
    assert [(j.name, j.framework, j.timeout) for j in (a, b)] == [
        ("a", "langgraph", 6),
        ("b", "langgraph", 6),
    ]
    assert (c.name, c.repeat, c.scripts) == ("c", 2, a.scripts)


def test_duplicate_key_next_to_a_merge_key(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults: &d {framework: langgraph}
        jobs:
          - <<: *d
            name: a
            scripts: scripts/a.py
            name: b
    """)
    assert one_error(path) == f"{LABEL}:7:5: jobs[0].name: duplicate key 'name'"


def test_non_string_keys(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            on: push
        1: x
    """)
    assert errors(path) == [
        f"{LABEL}:6:5: jobs[0]: key 'on' is not a string (quote it: 'on')",
        f"{LABEL}:7:1: (top): key '1' is not a string (quote it: '1')",
    ]


def test_odd_keys_stay_on_one_line(project: Project) -> None:
    path = project.jobs(
        'version: 1\n"a\\nb": 1\n" x": 2\n'
        "jobs: [{name: a, framework: langgraph, scripts: scripts/a.py}]\n"
    )
    assert errors(path) == [
        f"{LABEL}:2:1: ['a\\nb']: unknown key 'a\\nb'",
        f"{LABEL}:3:1: [' x']: unknown key ' x'",
    ]


def test_glob_matching_nothing(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: [scripts/a.py, "missing/*.py"]
    """)
    assert one_error(path) == (
        f"{LABEL}:5:29: jobs[0].scripts[1]: glob 'missing/*.py' matches "
        f"no file under {project.root}"
    )


def test_glob_reaching_outside_is_rejected(project: Project) -> None:
    (project.root.parent / "outside.py").write_text("print(1)\n")
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: ../*.py
    """)
    assert one_error(path) == (
        f"{LABEL}:5:14: jobs[0].scripts: glob '../*.py' reaches outside the jobs file's "
        "directory; name such scripts explicitly, one path each"
    )


def test_absolute_glob_is_rejected(project: Project) -> None:
    path = project.jobs(f"""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: {project.root}/scripts/*.py
    """)
    assert "reaches outside the jobs file's directory" in one_error(path)


def test_explicit_path_outside_is_accepted(project: Project) -> None:
    outside = project.root.parent / "x.py"
    outside.write_text("print(1)\n")
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: ../x.py
    """)
    (job,) = load(path).jobs
    assert [s.resolve() for s in job.scripts] == [outside.resolve()]


def test_invalid_glob_is_an_error_not_a_crash(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/**.py
    """)
    assert one_error(path).startswith(
        f"{LABEL}:5:14: jobs[0].scripts: invalid glob 'scripts/**.py'"
    )


def test_missing_script(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/missing.py
    """)
    assert one_error(path) == (
        f"{LABEL}:5:14: jobs[0].scripts: script not found: {project.root / 'scripts/missing.py'}"
    )


def test_overlong_script_name_is_not_found_not_a_crash(project: Project) -> None:
    path = project.jobs(f"""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: {"a" * 300}.py
    """)
    assert one_error(path).startswith(f"{LABEL}:5:14: jobs[0].scripts: script not found: ")


def test_missing_env_file(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            env_file: .env
    """)
    assert one_error(path) == (
        f"{LABEL}:6:15: jobs[0].env_file: env file not found: {project.root / '.env'}"
    )


def test_missing_requirements_and_source_dir(project: Project) -> None:
    path = project.jobs("""
        version: 1
        frameworks:
          langgraph:
            requirements: req.txt
            source_dirs: [lib]
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py}
    """)
    assert errors(path) == [
        f"{LABEL}:4:19: frameworks.langgraph.requirements: requirements file not found: "
        f"{project.root / 'req.txt'}",
        f"{LABEL}:5:19: frameworks.langgraph.source_dirs[0]: source directory not found: "
        f"{project.root / 'lib'}",
    ]


def test_source_dirs_sharing_a_name_are_rejected(project: Project) -> None:
    project.write("one/lib/m.py")
    project.write("two/lib/m.py")
    path = project.jobs("""
        version: 1
        frameworks:
          langgraph:
            source_dirs: [one/lib, two/lib]
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py}
    """)
    assert one_error(path) == (
        f"{LABEL}:4:28: frameworks.langgraph.source_dirs[1]: source "
        "directory name 'lib' is used twice "
        "(first at frameworks.langgraph.source_dirs[0])"
    )


def test_source_dir_dot_dot_is_named_after_the_real_directory(project: Project) -> None:
    path = project.jobs("""
        version: 1
        frameworks:
          langgraph:
            source_dirs: [scripts/..]
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py}
    """)
    (source,) = load(path).frameworks["langgraph"].source_dirs
    assert source == project.root and source.name == "proj"


def test_unknown_framework_with_hint(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgrph
            scripts: scripts/a.py
    """)
    assert one_error(path) == (
        f"{LABEL}:4:16: jobs[0].framework: unknown framework 'langgrph' (did you mean "
        "'langgraph'?); known: autogen, crewai, langgraph, magentic, openai-agents; "
        "define others under `frameworks:`"
    )


def test_custom_framework_without_packages(project: Project) -> None:
    path = project.jobs("""
        version: 1
        frameworks:
          myfw:
            additional_packages: [x]
        jobs:
          - {name: a, framework: myfw, scripts: scripts/a.py}
    """)
    assert one_error(path) == (
        f"{LABEL}:3:3: frameworks.myfw: 'myfw' is not a built-in framework: list its pip "
        "`packages` (`[]` for none), `requirements` or `dockerfile`"
    )


def test_a_custom_framework_may_be_its_requirements_file_alone(project: Project) -> None:
    project.write("requirements.txt", "termcolor==2.4.0\n")
    path = project.jobs("""
        version: 1
        frameworks:
          myfw: {requirements: requirements.txt}
        jobs:
          - {name: a, framework: myfw, scripts: scripts/a.py}
    """)
    config = load_jobs_file(path).frameworks["myfw"]
    assert config.packages == () and config.requirements == project.root / "requirements.txt"


def test_custom_framework_with_packages(project: Project) -> None:
    path = project.jobs("""
        version: 1
        image_name: registry.local/agents
        frameworks:
          myfw:
            packages: [mylib==1.0]
            python_version: "3.12"
        jobs:
          - {name: a, framework: myfw, scripts: scripts/a.py}
    """)
    config = load(path).frameworks["myfw"]
    assert config.packages == ("mylib==1.0",)
    assert config.effective_base_image == "python:3.12-slim"
    assert config.image_name == "registry.local/agents"


def test_faulty_framework_definition_is_reported_once(project: Project) -> None:
    path = project.jobs("""
        version: 1
        frameworks:
          myfw:
            packages: [x]
            bogus: 1
        jobs:
          - {name: a, framework: myfw, scripts: scripts/a.py}
    """)
    assert one_error(path) == f"{LABEL}:5:5: frameworks.myfw.bogus: unknown key 'bogus'"


def test_faulty_default_is_reported_once_not_per_job(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults:
          framework: langgraph
          scripts: none/*.py
          env_file: .env
        jobs:
          - name: a
          - name: b
          - name: c
    """)
    assert errors(path) == [
        f"{LABEL}:4:12: defaults.scripts: glob 'none/*.py' matches no file under {project.root}",
        f"{LABEL}:5:13: defaults.env_file: env file not found: {project.root / '.env'}",
    ]


# -- YAML and file problems --------------------------------------------------------------------


def test_yaml_syntax_error_with_line_and_column(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a: b
    """)
    assert one_error(path) == f"{LABEL}:3:12: (syntax): mapping values are not allowed here"


def test_tab_indentation_is_a_located_syntax_error(project: Project) -> None:
    path = project.write("jobs.yaml", "version: 1\njobs:\n- name: a\n\tframework: x\n")
    assert one_error(path) == (
        f"{LABEL}:4:1: (syntax): while scanning for the next token, "
        "found character '\\t' that cannot start any token"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: 1\n---\nversion: 1\n", "expected a single document in the stream"),
        (
            "version: !!python/object/apply:os.system [echo hi]\n",
            "could not determine a constructor",
        ),
        ("version: 1\njobs: !!python/object:os.system\n  - name: a\n", "could not determine"),
        ("a: *nowhere\n", "found undefined alias 'nowhere'"),
        ("a: &x [*x]\n", "recursive alias"),
        ("version: !!int one\n", "cannot read this value as !!int (ValueError; value not shown)"),
        ("version: !!timestamp soon\n", "cannot read this value as !!timestamp"),
        ("? !!float ''\n: 1\n", "cannot read this value as !!float"),
    ],
)
def test_unsafe_or_broken_yaml_is_a_syntax_error(project: Project, text: str, message: str) -> None:
    error = one_error(project.write("jobs.yaml", text))
    assert error.startswith(f"{LABEL}:") and ": (syntax): " in error and message in error


def test_alias_bomb_is_refused(project: Project) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    error = one_error(project.write("jobs.yaml", "\n".join(lines) + "\n"))
    assert ": (syntax): document too large after alias expansion" in error


def test_deep_nesting_is_a_syntax_error_not_a_crash(project: Project) -> None:
    error = one_error(project.write("jobs.yaml", "a: " + "[" * 5000))
    assert error.startswith(f"{LABEL}:1:") and error.endswith(": (syntax): nesting too deep")


def test_control_character_is_located(project: Project) -> None:
    error = one_error(project.write("jobs.yaml", "version: 1\njobs: x\x00y\n"))
    assert error == (
        f"{LABEL}:2:8: (syntax): unacceptable character #x0000: special characters are not allowed"
    )


@pytest.mark.parametrize(
    "text, where", [("", "1:1"), ("\n\n", "1:1"), ("# only a comment\n", "1:1"), ("---\n", "2:1")]
)
def test_empty_file(project: Project, text: str, where: str) -> None:
    assert one_error(project.write("jobs.yaml", text)) == (
        f"{LABEL}:{where}: (top): the file is empty; it needs at least `version: 1` and `jobs:`"
    )


def test_non_utf8_file_points_at_the_first_bad_byte(project: Project) -> None:
    path = project.root / "jobs.yaml"
    path.write_bytes("version: 1\njobs: é".encode() + b"\xff\xfe\n")
    assert one_error(path) == (
        f"{LABEL}:2:8: (file): cannot read: not UTF-8 text (invalid start byte: byte 0xff)"
    )


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file(project: Project, kind: str) -> None:
    path = project.root / "jobs.yaml"
    if kind == "directory":
        path.mkdir()
    error = one_error(path)
    assert error.startswith(f"{LABEL}:1:1: (file): cannot read: ")
    assert "\n" not in error


def test_label_defaults_to_the_path(project: Project) -> None:
    path = project.write("jobs.yaml", "version: 2\njobs: []\n")
    with pytest.raises(JobsFileError) as info:
        load_jobs_file(path)
    assert all(p.location.file == str(path) for p in info.value.problems)


# -- defaults and warnings -------------------------------------------------------------------


def test_defaults_merge_job_value_wins_env_maps_merge(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults:
          framework: langgraph
          scripts: scripts/a.py
          timeout: 100
          env: {A: "1", B: "1"}
          env_passthrough: [HOME]
        jobs:
          - name: inherit
          - name: override
            framework: crewai
            scripts: scripts/b.py
            timeout: 5
            env: {B: "2", C: "3"}
            env_passthrough: [USER]
    """)
    inherit, override = load(path).jobs
    assert (inherit.framework, inherit.timeout, inherit.env_passthrough) == (
        "langgraph",
        100,
        ("HOME",),
    )
    assert inherit.scripts == (project.root / "scripts/a.py",)
    assert inherit.env == {"A": "1", "B": "1"}
    assert (override.framework, override.timeout, override.env_passthrough) == (
        "crewai",
        5,
        ("USER",),
    )
    assert override.scripts == (project.root / "scripts/b.py",)
    assert override.env == {"A": "1", "B": "2", "C": "3"}


def test_literal_secret_warning(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults:
          env: {DB_PASSWORD: hunter2}
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            env:
              OPENAI_API_KEY: sk-123
              MODEL: gpt-4o
              EMPTY_TOKEN: ""
            env_passthrough: [OTHER_TOKEN]
    """)
    assert load(path).warnings == (
        f"{LABEL}:3:22: defaults.env.DB_PASSWORD: literal value under a secret-looking name is "
        "committed with this file; use env_passthrough or env_file instead",
        f"{LABEL}:9:23: jobs[0].env.OPENAI_API_KEY: literal value under a secret-looking name is "
        "committed with this file; use env_passthrough or env_file instead",
    )


def test_secret_patterns_are_configurable(project: Project) -> None:
    path = project.jobs("""
        version: 1
        secret_patterns: ["*model*"]
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            env: {OPENAI_API_KEY: sk-123, MODEL: gpt-4o}
    """)
    (warning,) = load(path).warnings
    assert warning.startswith(f"{LABEL}:7:42: jobs[0].env.MODEL: literal value")


# -- many problems at once -------------------------------------------------------------------


def test_five_mistakes_five_located_errors(project: Project) -> None:
    path = project.jobs("""
        version: 1
        workers: 0
        jobs:
          - name: a
            framework: langgrph
            scripts: scripts/a.py
            timout: 5
          - name: a
            framework: langgraph
            scripts: missing/*.py
    """)
    found = errors(path)
    assert [line.split(": ", 2)[:2] for line in found] == [
        [f"{LABEL}:2:10", "workers"],
        [f"{LABEL}:5:16", "jobs[0].framework"],
        [f"{LABEL}:7:5", "jobs[0].timout"],
        [f"{LABEL}:8:11", "jobs[1].name"],
        [f"{LABEL}:10:14", "jobs[1].scripts"],
    ]
    assert "minimum of 1" in found[0]
    assert "unknown framework 'langgrph'" in found[1]
    assert "unknown key 'timout'" in found[2]
    assert "duplicate job name 'a'" in found[3]
    assert "matches no file" in found[4]


# -- size limits -------------------------------------------------------------------------------


def test_size_limits_default_inherit_and_override(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults:
          framework: langgraph
          scripts: scripts/a.py
          max_code_size: 50m
        jobs:
          - name: inherit
          - name: own
            max_code_size: 2048
            max_artifacts_size: 1.5G
    """)
    inherit, own = load(path).jobs
    assert (inherit.max_code_size, inherit.max_artifacts_size) == (
        50 * 1024**2,
        DEFAULT_ARTIFACT_LIMIT,
    )
    assert (own.max_code_size, own.max_artifacts_size) == (2048, int(1.5 * 1024**3))
    (plain,) = load(project.jobs(JOB_A)).jobs
    assert (plain.max_code_size, plain.max_artifacts_size) == (
        DEFAULT_CODE_LIMIT,
        DEFAULT_ARTIFACT_LIMIT,
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ('"10x"', "'10x' is not allowed here: A size: bytes, or a number with a unit"),
        ('"1g\\n"', "'1g\\n' is not allowed here: A size:"),
        ("1000", "1000 is less than the minimum of 1024"),
        ("0", "0 is less than the minimum of 1024"),
        ("1b", "max_code_size '1b' is below the minimum of 1k"),
        ("0.5k", "max_code_size '0.5k' is below the minimum of 1k"),
        ("null", "None is not of type 'string', 'integer'"),
        ("2048.0", "2048.0 is not of type 'string', 'integer'"),
        ("true", "True is not of type 'string', 'integer'"),
    ],
)
def test_bad_size_limit_is_located(project: Project, value: str, message: str) -> None:
    path = project.jobs(f"""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            max_code_size: {value}
    """)
    error = one_error(path)
    assert error.startswith(f"{LABEL}:6:20: jobs[0].max_code_size: {message}"), error


def test_size_limit_below_minimum_in_defaults_is_reported_once(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults:
          max_artifacts_size: 512b
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py}
          - {name: b, framework: langgraph, scripts: scripts/a.py}
    """)
    assert one_error(path) == (
        f"{LABEL}:3:23: defaults.max_artifacts_size: max_artifacts_size '512b' is below "
        "the minimum of 1k"
    )


def test_size_limit_exactly_the_minimum_is_accepted(project: Project) -> None:
    path = project.jobs("""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            max_code_size: 1k
            max_artifacts_size: 1024
    """)
    (job,) = load(path).jobs
    assert job.max_code_size == job.max_artifacts_size == 1024


def test_long_run_of_digits_is_a_located_line_not_a_crash(project: Project) -> None:
    """Sizes are bounded (at most 1 PiB); a run of digits far past it is refused, exactly:
    as a float it would be infinity, as a Fraction of 5,000 digits a crash."""
    digits = "9" * 400
    assert parse_memory(digits + "k") == int(digits) * 1024
    path = project.jobs(f"""
        version: 1
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            resources: {{memory: "{"9" * 15}k"}}
            max_code_size: "{"9" * 5000}m"
    """)
    with pytest.raises(JobsFileError) as raised:
        load(path)
    lines = str(raised.value).splitlines()
    assert len(lines) == 2, lines
    assert "memory: memory '999999999999999k' is above the maximum of 1048576g" in lines[0]
    assert "max_code_size: '9999" in lines[1] and "(5003 chars) is not allowed here" in lines[1]


def test_name_from_a_stem_starting_with_underscore_is_a_valid_name(project: Project) -> None:
    path = project.jobs(JOB_A, name="_nightly.yaml")
    assert load(path).name == "nightly"


JOB_A = """
    version: 1
    jobs: [{name: a, framework: langgraph, scripts: scripts/a.py}]
"""


# -- the key tables ----------------------------------------------------------------------------


def test_every_job_key_of_the_schema_has_a_rule_and_the_fields_default() -> None:
    settings = load_schema("jobs")["$defs"]["jobSettings"]["properties"]
    assert [key.name for key in JOB_KEYS] == list(settings)
    job_fields = {f.name: f for f in fields(Job)}
    assert set(job_fields) == {*settings, "name", "location", "index"}
    for key in JOB_KEYS:
        field = job_fields[key.name]
        if key.missing:
            assert field.default is MISSING, key.name
        else:
            assert key.default == field_default(field), key.name


def test_every_framework_key_of_the_schema_has_a_rule_and_the_fields_default() -> None:
    settings = load_schema("jobs")["$defs"]["imageSettings"]["properties"]
    assert ["packages", *(key.name for key in FRAMEWORK_KEYS)] == list(settings)
    image_fields = {f.name: f for f in fields(ImageConfig)}
    for key in FRAMEWORK_KEYS:
        assert key.default == field_default(image_fields[key.name]), key.name


def field_default(field: Field[Any]) -> Any:
    if field.default_factory is not MISSING:
        return field.default_factory()
    return field.default


# -- limits: max_parallel, pool, pools ---------------------------------------------------------


def test_pools_max_parallel_and_pool_load_onto_the_records(project: Project) -> None:
    path = project.jobs("""
        version: 1
        pools: {openai: 3, anthropic: 1}
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py, pool: openai}
          - {name: b, framework: langgraph, scripts: scripts/a.py, max_parallel: 2}
          - {name: c, framework: langgraph, scripts: scripts/a.py, max_parallel: 1, pool: anthropic}
          - {name: d, framework: langgraph, scripts: scripts/a.py}
    """)
    jobs_file = load(path)
    assert jobs_file.pools == {"openai": 3, "anthropic": 1}
    assert [(j.name, j.max_parallel, j.pool) for j in jobs_file.jobs] == [
        ("a", None, "openai"),
        ("b", 2, None),
        ("c", 1, "anthropic"),
        ("d", None, None),
    ]
    assert load(project.jobs(JOB_A)).pools == {}


def test_max_parallel_and_pool_inherit_from_defaults(project: Project) -> None:
    path = project.jobs("""
        version: 1
        pools: {api: 2, other: 5}
        defaults:
          framework: langgraph
          scripts: scripts/a.py
          max_parallel: 3
          pool: api
        jobs:
          - name: inherit
          - name: own
            max_parallel: 1
            pool: other
    """)
    inherit, own = load(path).jobs
    assert (inherit.max_parallel, inherit.pool) == (3, "api")
    assert (own.max_parallel, own.pool) == (1, "other")


def test_an_unknown_pool_is_located_with_did_you_mean(project: Project) -> None:
    path = project.jobs("""
        version: 1
        pools: {openai: 2, anthropic: 1}
        jobs:
          - name: a
            framework: langgraph
            scripts: scripts/a.py
            pool: opnai
    """)
    assert one_error(path) == (
        f"{LABEL}:7:11: jobs[0].pool: unknown pool 'opnai' (did you mean 'openai'?); "
        "pools: anthropic, openai"
    )


def test_a_pool_with_no_pools_defined_is_located(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults: {pool: api}
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py}
          - {name: b, framework: langgraph, scripts: scripts/a.py}
    """)
    assert one_error(path) == (
        f"{LABEL}:2:18: defaults.pool: unknown pool 'api'; pools: none defined"
    )


@pytest.mark.parametrize(
    "value, located",
    [
        ("0", "3:8: pools.api: 0 is less than the minimum of 1"),
        ("-2", "3:8: pools.api: -2 is less than the minimum of 1"),
        ('"2"', "3:8: pools.api: '2' is not of type 'integer', 'object'"),
        ("1.5", "3:8: pools.api: 1.5 is not of type 'integer', 'object'"),
        ("{runs: 0}", "3:15: pools.api.runs: 0 is less than the minimum of 1"),
        ("{runz: 2}", "3:9: pools.api.runz: unknown key 'runz' (did you mean 'runs'?)"),
        ("{}", "3:8: pools.api: {} should be non-empty"),
    ],
)
def test_a_bad_pool_size_or_rate_is_located_at_its_key(
    project: Project, value: str, located: str
) -> None:
    path = project.jobs(f"""
        version: 1
        pools:
          api: {value}
        jobs:
          - {{name: a, framework: langgraph, scripts: scripts/a.py, pool: api}}
    """)
    assert one_error(path) == f"{LABEL}:{located}"


def test_a_bad_max_parallel_is_located_in_a_job_and_in_defaults(project: Project) -> None:
    path = project.jobs("""
        version: 1
        defaults: {max_parallel: 0}
        jobs:
          - {name: a, framework: langgraph, scripts: scripts/a.py, max_parallel: -1}
    """)
    assert errors(path) == [
        f"{LABEL}:2:26: defaults.max_parallel: 0 is less than the minimum of 1",
        f"{LABEL}:4:74: jobs[0].max_parallel: -1 is less than the minimum of 1",
    ]
