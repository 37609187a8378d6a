"""The shape the design promises: the orchestrator knows no Docker, and the pure commands load
no engine client, HTTP stack or progress bar."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "safeagents_batch"
HEAVY = ("docker", "requests", "tqdm", "ray")
# The edges that may construct a backend (and so import the Docker one, lazily).
EDGES = {"cli_run.py", "runner.py"}


def _imported_names(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def _modules_outside_backends() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "backends" not in p.relative_to(PACKAGE).parts]


def test_docker_is_imported_only_under_backends_and_at_the_two_edges() -> None:
    offenders = {}
    for path in _modules_outside_backends():
        names = _imported_names(ast.parse(path.read_text(encoding="utf-8")))
        engine = [n for n in names if n.split(".")[0] in ("docker", "requests", "ray")]
        docker_backend = [
            n
            for n in names
            if n.startswith(("safeagents_batch.backends.docker", "safeagents_batch.backends.ray"))
        ]
        if engine or (docker_backend and path.name not in EDGES):
            offenders[path.name] = engine + docker_backend
    assert offenders == {}


@pytest.mark.parametrize(
    "argv",
    [["validate", "jobs/example.yaml"], ["plan", "jobs/example.yaml"], ["schema"]],
    ids=["validate", "plan", "schema"],
)
def test_pure_commands_load_no_engine_client_http_stack_or_progress_bar(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from safeagents_batch.cli import main\n"
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
        "from safeagents_batch.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jinja2'\n"
        "             or m == 'safeagents_batch.report'), file=sys.stderr)\n"
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
