"""The test matrix (run by scripts/test, so by CI): the whole suite on the interpreter the
project's venv has, then the suite again on the floor interpreter, Debian 12's own Python
3.11.2 (the one users' machines and cluster nodes have), driver and Ray nodes alike: the
cluster fixture starts its nodes from the venv that runs the tests.

Arguments after `--` go to pytest in both sessions (e.g. `-k rerun`, `-x`).
"""

from __future__ import annotations

import sys

import nox

nox.options.error_on_missing_interpreters = True  # a missing floor fails, never skips
nox.options.sessions = ["tests", "floor"]

FLOOR_PYTHON = "/usr/bin/python3"  # Debian 12: 3.11.2, before tarfile's extraction filters
# Every test but the browser's (a page in Chromium is the same whichever Python wrote it) and
# the scale tests' batches of a thousand runs (the orchestration they time is the same code),
# and the SDK tests (what they check happens inside a container, whatever the host's Python).
FLOOR_MARKS = "not browser and not scale and not sdk"


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole suite in the venv nox runs from (scripts/setup-venv made it)."""
    session.run(sys.executable, "-m", "pytest", *session.posargs)


@nox.session(python=FLOOR_PYTHON)
def floor(session: nox.Session) -> None:
    """Unit, engine and cluster tests on the floor interpreter, in a venv made from it."""
    session.install(".[test,ray]")
    session.run("python", "-c", "import sys; print('floor:', sys.version)")
    session.run("python", "-m", "pytest", "-m", FLOOR_MARKS, *session.posargs)
