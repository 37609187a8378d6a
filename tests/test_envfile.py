"""Env files through python-dotenv's parser: what a value is, and bad lines named by number
without their content (a secret may sit on a broken line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeagents_batch.core.errors import UsageError
from safeagents_batch.jobs.envfile import read_dotenv


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def test_values_as_dotenv_reads_them(tmp_path: Path) -> None:
    text = (
        "# a comment\n"
        "PLAIN=one\n"
        "export EXPORTED=two\n"
        'DOUBLE="three four"\n'
        "SINGLE='five $NOT_EXPANDED'\n"
        'ESCAPED="line\\nbreak"\n'
        "INLINE=six # not part of it\n"
        "EMPTY=\n"
        "\n"
    )
    assert read_dotenv(env_file(tmp_path, text)) == {
        "PLAIN": "one",
        "EXPORTED": "two",
        "DOUBLE": "three four",
        "SINGLE": "five $NOT_EXPANDED",
        "ESCAPED": "line\nbreak",
        "INLINE": "six",
        "EMPTY": "",
    }


@pytest.mark.parametrize("line", ["this is not one", "NAME_ONLY", "=value"])
def test_a_bad_line_is_named_by_its_number_never_its_content(tmp_path: Path, line: str) -> None:
    path = env_file(tmp_path, f"GOOD=1\n{line}\n")
    with pytest.raises(UsageError) as raised:
        read_dotenv(path)
    assert str(raised.value) == f"{path}:2: not a KEY=VALUE line"


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "missing.env"
    with pytest.raises(UsageError, match=r"missing\.env: cannot read env file"):
        read_dotenv(path)
    binary = tmp_path / "binary.env"
    binary.write_bytes(b"KEY=\xff\xfe\n")
    with pytest.raises(UsageError, match=r"binary\.env: cannot read env file"):
        read_dotenv(binary)
