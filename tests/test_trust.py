"""records/trust.py: this user's key and the seal of a batch's jobs.yaml. No engine."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from safeagents_batch.core.errors import UsageError
from safeagents_batch.records import trust


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "safeagents-batch" / trust.KEY_NAME


def test_the_key_is_made_once_private_and_seals_stay_true(config: Path) -> None:
    first = trust.seal(b"jobs")
    info = config.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == trust.KEY_BYTES
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert trust.sealed(b"jobs", first) and not trust.sealed(b"jobs!", first)
    assert not trust.sealed(b"jobs", None)
    assert sorted(p.name for p in config.parent.iterdir()) == [trust.KEY_NAME]  # no temp left


def _seal_in_a_process(config_home: str) -> str:
    os.environ["XDG_CONFIG_HOME"] = config_home
    return trust.seal(b"jobs")


def test_processes_making_the_key_at_once_agree_on_it(config: Path) -> None:
    home = str(config.parents[1])
    with ProcessPoolExecutor(4) as pool:
        seals = set(pool.map(_seal_in_a_process, [home] * 8))
    assert len(seals) == 1


@pytest.mark.parametrize(
    ("plant", "says"),
    [
        ("readable", "not this user's private key"),
        ("short", "a damaged key (3 bytes, not 32)"),
        ("link", "a link, not followed"),
        ("fifo", "not a regular file"),
    ],
)
def test_a_key_others_could_read_or_a_damaged_one_is_refused(
    config: Path, tmp_path: Path, plant: str, says: str
) -> None:
    config.parent.mkdir(parents=True)
    if plant == "readable":
        config.write_bytes(b"k" * trust.KEY_BYTES)
        config.chmod(0o644)
    elif plant == "short":
        config.write_bytes(b"abc")
        config.chmod(0o600)
    elif plant == "link":
        (tmp_path / "elsewhere").write_bytes(b"k" * trust.KEY_BYTES)
        config.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(config, 0o600)
    with pytest.raises(UsageError, match=says.replace("(", r"\(").replace(")", r"\)")):
        trust.seal(b"jobs")
