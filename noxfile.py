"""The test matrix (run by scripts/test, so by CI), every test run once on the interpreter that
matters for it:

* `floor`: Debian 12's own Python 3.11.2 (the one users' machines and cluster nodes have), in a
  venv made from it: the pure-logic tests, and every engine and cluster test, driver and Ray
  nodes alike (the cluster fixture starts its nodes from the venv that runs the tests). What
  passes on 3.11.2 passes on the later 3.11 releases; the reverse is what breaks (tarfile's
  extraction filters came in 3.11.4), so the real-engine tests run here.
* `tests`: the interpreter of the project's venv (3.11.7 in CI): the pure-logic tests again,
  and the tests whose subject does not depend on the host's Python: the report in a browser,
  batches of a thousand runs, the agent SDKs inside a container.

Arguments after `--` go to pytest in both sessions (e.g. `-k rerun`, `-x`); an `-m` given there
replaces the session's own.
"""

from __future__ import annotations

import sys

import nox

nox.options.error_on_missing_interpreters = True  # a missing floor fails, never skips
nox.options.sessions = ["tests", "floor"]

FLOOR_PYTHON = "/usr/bin/python3"  # Debian 12: 3.11.2, before tarfile's extraction filters
# Everything but the browser's (a page in Chromium is the same whichever Python wrote it), the
# scale tests' batches of a thousand runs (the orchestration they time is the same code) and
# the SDK tests (what they check happens inside a container, whatever the host's Python).
HOST_NEUTRAL = "browser or scale or sdk"
FLOOR_MARKS = f"not ({HOST_NEUTRAL})"
# The pure-logic tests (no engine, no cluster) and the host-neutral ones.
TESTS_MARKS = f"not docker and not ray and not slurm or {HOST_NEUTRAL}"


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Pure logic and the host-neutral tests in the venv nox runs from (scripts/setup-venv)."""
    session.run(sys.executable, "-m", "pytest", "-m", TESTS_MARKS, *session.posargs)


@nox.session(python=FLOOR_PYTHON)
def floor(session: nox.Session) -> None:
    """Unit, engine and cluster tests on the floor interpreter, in a venv made from it."""
    session.install(".[test,ray]")
    session.run("python", "-c", "import sys; print('floor:', sys.version)")
    session.run("python", "-m", "pytest", "-m", FLOOR_MARKS, *session.posargs)
