"""Hostile jobs files (the issue's list, each reproduced): every one is one located line and
exit 2 (or a correct answer), never a traceback, a hang or a blow-up of memory; a property
test makes more of them. No engine: `validate`, `plan` and the loader only."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.plan import _job_ids, check_runs, iter_runs

LOCATED = re.compile(r"^[^:]+:\d+:\d+: \S.*: .+")
HEAD = "version: 1\nframeworks:\n  plain: {packages: []}\njobs:\n"
JOB = "  - {name: a, framework: plain, scripts: s/a.py}\n"
MEMORY_LIMIT_MIB = 500


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.py").write_text("print(1)\n")
    return tmp_path


def validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(path)])
    return code, out.getvalue(), err.getvalue()


def one_located_line(project: Path, text: str) -> str:
    path = project / "jobs.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = validate(path)
    assert (code, out) == (2, ""), err
    [line] = err.splitlines()
    assert LOCATED.match(line) and "Traceback" not in err, err
    assert len(line) < 700, line  # a message quotes a value's start, never all of it
    return line


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (HEAD.replace("version: 1", "version: 0x" + "f" * 5000) + JOB, ":1:10: (syntax)", "digits"),
        (
            HEAD + JOB.replace("s/a.py}", "s/a.py, max_code_size: " + "9" * 5000 + "}"),
            ":5:",
            "a number of 5000 digits (at most 40)",
        ),
        (HEAD + JOB.replace("name: a,", 'name: "\\U99999999",'), ":5:", "escape sequence"),
        (HEAD + JOB.replace("s/a.py}", "'" + "*/" * 400 + "a.py'}"), ":5:", "400 wildcard"),
        ('version: 1\noutput_dir: "out\\0x"\n' + HEAD[11:] + JOB, ":2:", "NUL character"),
        (HEAD + JOB.replace("scripts:", 'env: {K: "a\\0b"}, scripts:'), ":5:", "NUL character"),
        (HEAD + JOB.replace("name: a", "name: '" + "x" * 70_000 + "'"), ":5:", "70000 characters"),
    ],
    ids=["hex digits", "decimal digits", "escape", "glob", "nul path", "nul env", "long"],
)
def test_a_value_no_jobs_file_needs_is_one_located_line(
    project: Path, text: str, where: str, says: str
) -> None:
    line = one_located_line(project, text)
    assert where in line and says in line, line


def test_a_secret_looking_value_is_never_in_a_message(project: Path) -> None:
    line = one_located_line(
        project, HEAD + JOB.replace("scripts:", "env: {DB_PASSWORD: 12345678}, scripts:")
    )
    assert "12345678" not in line
    assert line.endswith("jobs[0].env.DB_PASSWORD: a number is not a string; quote it to make "
                         "it a string (value not shown)")  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("env: {DB_PASSWORD: [hunter5]}", "env.DB_PASSWORD: a list is not a string"),
        ("env: {DB_PASSWORD: !!float hunter5}", "cannot read this value as !!float"),
        ("matrix: {API_KEY: [{x: hunter5}]}", "matrix.API_KEY[0]: a mapping is not allowed"),
        ("defaults_env: {TOKEN: {a: hunter5}}", "env.TOKEN: a mapping is not a string"),
    ],
    ids=["a list", "a bad tag", "a matrix mapping", "defaults"],
)
def test_a_value_of_any_shape_under_env_or_matrix_is_never_in_a_message(
    project: Path, setting: str, says: str
) -> None:
    if setting.startswith("defaults_env"):
        text = HEAD.replace(
            "jobs:", "defaults:\n  " + setting.removeprefix("defaults_") + "\njobs:"
        )
        text += JOB
    else:
        text = HEAD + JOB.replace("scripts:", f"{setting}, scripts:")
    line = one_located_line(project, text)
    assert "hunter5" not in line and says in line, line


def test_deep_nesting_is_one_line(project: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    line = one_located_line(project, HEAD + JOB.replace("scripts:", f"x: {deep}, scripts:"))
    assert "nesting too deep" in line


def matrix_file(variables: int, values: int, max_runs: str = "") -> str:
    """A matrix written with YAML anchors: `variables` variables of `values` values each."""
    first = "[" + ", ".join(f"v{i}" for i in range(values)) + "]"
    names = [f"V{n}" for n in range(variables)]
    entries = [f"{names[0]}: &v {first}", *(f"{n}: *v" for n in names[1:])]
    return HEAD.replace("frameworks:", f"{max_runs}frameworks:") + textwrap.dedent(
        f"""\
          - name: a
            framework: plain
            scripts: s/a.py
            matrix: {{{", ".join(entries)}}}
        """
    )


def test_a_matrix_past_max_runs_is_refused_before_any_run_is_made(project: Path) -> None:
    line = one_located_line(project, matrix_file(12, 10))
    assert "1,000,000,000,000 runs (1 scripts x 10 V0 x" in line
    assert "over max_runs (1,000,000)" in line
    raised = one_located_line(project, matrix_file(3, 10, "max_runs: 999\n"))
    assert "1,000 runs" in raised and "over max_runs (999)" in raised


def test_a_million_runs_validate_in_bounded_memory(project: Path) -> None:
    """At the default limit: counted and their ids checked, no run kept (a child process, so
    that its peak memory is this alone)."""
    path = project / "jobs.yaml"
    path.write_text(matrix_file(6, 10), encoding="utf-8")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so the child's
    # would be at least what the pytest process had grown to by then.
    probe = (
        "import sys\n"
        "from safeagents_batch.cli.main import main\n"
        f"code = main(['validate', {str(path)!r}])\n"
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "print(code, int(hwm.split()[1]) // 1024, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.stdout == "OK: 1000000 runs, 1 images\n", done.stderr
    code, peak_mib = map(int, done.stderr.split()[-2:])
    assert code == 0 and peak_mib < MEMORY_LIMIT_MIB, peak_mib


def test_run_ids_checked_without_runs_are_the_runs_ids(project: Path) -> None:
    """The duplicate check's ids (made part by part) are exactly the ids of the runs, with
    values that names must be made safe of, and ids long enough to end in a digest."""
    long = "x" * 120
    text = HEAD + textwrap.dedent(
        f"""\
          - name: odd
            framework: plain
            scripts: [s/a.py]
            matrix: {{A: ["a b", "ü/ü", "{long}"], B: [1, true, "-"]}}
            repeat: 2
        """
    )
    path = project / "jobs.yaml"
    path.write_text(text, encoding="utf-8")
    jobs_file = load_jobs_file(path)
    check_runs(jobs_file)
    [job] = jobs_file.jobs
    assert [run for _, run in _job_ids(job)] == [spec.run_id for spec in iter_runs(jobs_file)]


def test_many_faulty_jobs_are_each_reported(project: Path) -> None:
    """Every faulty job gets its lines (the checker's work grows with the problems, not with
    their square: 3,000 such jobs took over 10 s before)."""
    jobs = "".join(
        f"  - {{name: j{i}, framework: nope{i}, scripts: s/a.py, timeout: -1}}\n"
        for i in range(3000)
    )
    path = project / "jobs.yaml"
    path.write_text(HEAD + jobs, encoding="utf-8")
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path)
    assert len(raised.value.problems) == 6000


# -- the property ----------------------------------------------------------------------------

HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [
            "0x" + "f" * 5000,
            "9" * 5000,
            '"\\U99999999"',
            '"a\\0b"',
            "'" + "*/" * 300 + "a.py'",
            "[" * 3000 + "]" * 3000,
            "&a [1, *a]",
            "!!python/object/apply:os.system ['true']",
            "1e99999",
            "-0x8",
            ".nan",
            '"\\ud800"',
            "'" + "y" * 70_000 + "'",
            '"' + "9" * 5000 + 'k"',
            '"1.' + "1" * 5000 + 'k"',
            '"999999999999999g"',
        ]
    ),
    st.integers(min_value=-(10**50), max_value=10**50).map(str),
    st.text(max_size=30).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
V = "@VALUE@"  # where a template takes the hostile value
PLACES = [
    f"version: {V}\n" + HEAD[11:] + JOB,
    HEAD.replace("frameworks:", f"output_dir: {V}\nframeworks:") + JOB,
    HEAD.replace("frameworks:", f"max_runs: {V}\nframeworks:") + JOB,
    HEAD + JOB.replace("s/a.py", V),
    HEAD + JOB.replace("scripts:", f"env: {{K: {V}}}, scripts:"),
    HEAD + JOB.replace("scripts:", f"matrix: {{M: [{V}]}}, scripts:"),
    HEAD + JOB.replace("scripts:", f"timeout: {V}, scripts:"),
    HEAD + JOB.replace("name: a", f"name: {V}"),
    HEAD + JOB.replace("scripts:", f"resources: {{memory: {V}}}, scripts:"),
    HEAD + JOB.replace("scripts:", f"max_artifacts_size: {V}, scripts:"),
    HEAD.replace("packages: []", f"packages: [{V}]") + JOB,
]


@pytest.mark.bounded
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(place=st.sampled_from(PLACES), value=HOSTILE_VALUES)
def test_a_hostile_value_anywhere_is_located_lines_or_ok(
    tmp_path_factory: pytest.TempPathFactory, place: str, value: str
) -> None:
    project = tmp_path_factory.mktemp("hostile")
    (project / "s").mkdir()
    (project / "s" / "a.py").write_text("print(1)\n")
    path = project / "jobs.yaml"
    path.write_text(place.replace(V, value), encoding="utf-8")
    code, out, err = validate(path)
    assert "Traceback" not in err
    lines = err.splitlines()
    if code == 0:
        assert out.startswith("OK: ")
        assert all(line.startswith("warning: ") for line in lines), err
    else:
        assert code == 2 and out == "" and lines, err
        assert all(LOCATED.match(line) for line in lines), err
