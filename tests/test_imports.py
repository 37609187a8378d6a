"""The shape the design promises: the stages' layer contracts hold (import-linter, run as CI
runs it, and shown to catch a break), and the pure commands load no engine client, HTTP stack
or progress bar."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "safeagents_batch"
HEAVY = ("docker", "requests", "tqdm", "ray")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts (pyproject.toml) on the tree at `root`."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_layer_contracts() -> None:
    done = lint_imports(PACKAGE.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_report_module_that_imports_execution_breaks_a_contract(tmp_path: Path) -> None:
    """The contracts bite: the report stage importing the execution stage fails the check."""
    shutil.copytree(PACKAGE, tmp_path / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PACKAGE.parent / "pyproject.toml", tmp_path)
    matrix = tmp_path / PACKAGE.name / "report" / "matrix.py"
    matrix.write_text(matrix.read_text() + "\nimport safeagents_batch.execution.batch\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1
    assert "safeagents_batch.report.matrix -> safeagents_batch.execution.batch" in done.stdout
    assert "The report reads records only" in done.stdout


@pytest.mark.parametrize(
    "argv",
    [["validate", "jobs/example.yaml"], ["plan", "jobs/example.yaml"], ["schema"]],
    ids=["validate", "plan", "schema"],
)
def test_pure_commands_load_no_engine_client_http_stack_or_progress_bar(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from safeagents_batch.cli.main import main\n"
        f"code = main({argv!r})\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(code, loaded, file=sys.stderr)\n"
    )
    assert last_stderr_line(probe) == "0 []"


def test_the_command_line_loads_no_report_machinery_before_a_batch_starts() -> None:
    """The report's modules (Jinja2 and the report itself) load in the background once a
    batch is under way: they are a tenth of a second ahead of the first container otherwise."""
    probe = (
        "import sys\n"
        "from safeagents_batch.cli.main import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jinja2'\n"
        "             or m == 'safeagents_batch.report.page'), file=sys.stderr)\n"
    )
    assert last_stderr_line(probe) == "[]"


def last_stderr_line(probe: str) -> str:
    """What `probe` printed last on stderr, run in a fresh interpreter (nothing imported yet)."""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert lines, done.stderr
    return lines[-1]
