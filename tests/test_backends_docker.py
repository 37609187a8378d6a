"""backends.docker, the parts that need no engine: the log dir after a run, the script path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from safeagents_batch.backends import RunRequest
from safeagents_batch.backends.docker import LogPump, defuse, real_script


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_defuse_clears_set_id_bits_and_keeps_the_files(tmp_path: Path) -> None:
    (tmp_path / "deep").mkdir()
    shell = tmp_path / "deep" / "shell"
    shell.write_bytes(b"#!/bin/sh\n")
    shell.chmod(0o6755)
    plain = tmp_path / "result.json"
    plain.write_text("{}")
    plain.chmod(0o640)

    defuse(tmp_path)

    assert (mode(shell), mode(plain)) == (0o755, 0o640)


def test_defuse_does_not_follow_a_link_out_of_the_log_dir(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"")
    outside.chmod(0o4755)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "link").symlink_to(outside)

    defuse(logs)

    assert mode(outside) == 0o4755
    assert os.readlink(logs / "link") == str(outside)


def test_real_script_resolves_a_link_so_its_target_dir_is_mounted(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "agent.py"
    target.write_text("print()\n")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "link.py").symlink_to(target)
    request = RunRequest("r", "b", 1, "img", tmp_path / "jobs" / "link.py", tmp_path / "logs")

    assert real_script(request) == target.resolve()


def test_log_pump_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("precious\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "stdout.log").symlink_to(victim)

    pump = LogPump(iter([(b"overwritten\n", None)]), logs)
    pump.start()
    pump.join(10)

    assert victim.read_text() == "precious\n"
    assert pump.error is not None and "symbolic links" in pump.error  # ELOOP: a run error


def test_log_pump_writes_each_stream_and_the_console(tmp_path: Path) -> None:
    pump = LogPump(iter([(b"out\n", None), (None, b"err\n")]), tmp_path)
    pump.start()
    pump.join(10)

    assert pump.error is None
    assert [(tmp_path / n).read_bytes() for n in ("stdout.log", "stderr.log", "console.log")] == [
        b"out\n",
        b"err\n",
        b"out\nerr\n",
    ]
