"""The hostile-input properties (tests marked `bounded`) run in a child process of their own,
so that what they cost is theirs alone: the child must end within a bound (a hang fails, it
does not stall CI) and its peak memory must stay under 500 MB (the issue's bound). No engine."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import BOUNDED_CHILD

TESTS = Path(__file__).resolve().parent
MEMORY_LIMIT_MIB = 500
HANG = 900.0  # an upper bound for a hung child, not a timing assertion
POLL = 0.2


def test_the_hostile_properties_end_in_bounded_memory(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "bounded"]
    argv += [str(TESTS / "test_hostile_jobs.py"), str(TESTS / "test_hostile_batch.py")]
    env = {**os.environ, BOUNDED_CHILD: "1"}
    log = tmp_path / "child.log"
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the child
        child = subprocess.Popen(
            argv, cwd=TESTS.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        status, usage = _wait(child.pid)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
    output = log.read_text(errors="replace")
    assert child.returncode == 0, output
    assert re.search(r"(?<!\d)2 passed", output), output  # both properties ran, in the child
    peak_mib = usage.ru_maxrss // 1024  # kilobytes on Linux
    assert peak_mib < MEMORY_LIMIT_MIB, (peak_mib, output)


def _wait(pid: int) -> tuple[int, resource.struct_rusage]:
    """The child's exit status and its own resource usage (wait4: that child's alone); killed
    past HANG, which fails the test."""
    deadline = time.monotonic() + HANG
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if time.monotonic() >= deadline:
            os.killpg(pid, signal.SIGKILL)
            os.wait4(pid, 0)
            raise AssertionError(f"the hostile properties did not end within {HANG:.0f} s")
        time.sleep(POLL)
