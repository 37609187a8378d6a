"""`run --detach`'s pure parts: which flags need it, and the `run` its driver job is given."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pytest

from safeagents_batch.cli.detach import check_detach, driver_argv
from safeagents_batch.cli.main import build_parser, main
from safeagents_batch.core.errors import UsageError


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_the_driver_runs_the_same_batch_with_its_id_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = parse(
        "jobs.yaml", "--backend", "slurm", "--detach", "-j", "3", "--only", "a-*",
        "--slurm-partition", "gpu", "--slurm-arg=--qos=short", "--no-cache",
        "--driver-arg=--nodelist=n1", "--slurm-share", "share", "--ship-azure",
    )  # fmt: skip
    argv = driver_argv(args, "b-1", tmp_path / "out")
    assert argv[:4] == ["run", str(tmp_path / "jobs.yaml"), "--batch-id", "b-1"]
    assert "--detach" not in argv and not [a for a in argv if "nodelist" in a]
    pairs = dict(itertools.pairwise(argv))
    assert pairs["-o"] == str(tmp_path / "out") and pairs["--backend"] == "slurm"
    assert pairs["-j"] == "3" and pairs["--only"] == "a-*"
    assert pairs["--slurm-partition"] == "gpu"
    assert pairs["--slurm-share"] == str(tmp_path / "share")
    assert "--slurm-arg=--qos=short" in argv and "--no-cache" in argv
    assert "--ship-azure" in argv
    # What it is given parses as a run of the same batch.
    again = build_parser().parse_args(argv)
    assert again.batch_id == "b-1" and not again.detach and again.workers == 3


def test_detach_needs_slurm_and_driver_args_need_detach() -> None:
    with pytest.raises(UsageError, match="--backend slurm"):
        check_detach(parse("j.yaml", "--detach"))
    with pytest.raises(UsageError, match="--detach"):
        check_detach(parse("j.yaml", "--backend", "slurm", "--driver-arg=-x"))


def test_a_batch_id_that_is_no_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "j.yaml", "--batch-id", "../x"])
    assert exited.value.code == 2
    assert "not a batch id" in capsys.readouterr().err
