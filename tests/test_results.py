"""results: result.json read as untrusted data, flattened; results.csv and .jsonl written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from safeagents_batch.records.safedir import SafeDir
from safeagents_batch.report.results import (
    MAX_RESULT_BYTES,
    ResultFile,
    ResultRow,
    Scalar,
    header,
    mean_of,
    parse_result,
    read_result,
    write_results,
)


def row(run_id: str, result: ResultFile, **matrix: str) -> ResultRow:
    fixed: dict[str, Scalar] = {"run_id": run_id, "job": "j", "framework": "plain",
             "status": "succeeded", "attempt": 1, "exit_code": 0,
             "duration_seconds": 1.5}  # fmt: skip
    return ResultRow(fixed, dict(matrix), result)


def test_nested_objects_are_flattened_and_lists_left_out() -> None:
    parsed = parse_result(b'{"a": 1, "b": {"c": "x", "d": {"e": true}}, "l": [1, 2], "n": null}')
    assert parsed == ResultFile({"a": 1, "b.c": "x", "b.d.e": True, "n": None})


@pytest.mark.parametrize(
    ("raw", "note"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'{"x": NaN}', "NaN is not a JSON number"),
        (b'{"x": "\xff"}', "not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_malformed_result_is_a_note_never_an_exception(raw: bytes, note: str) -> None:
    parsed = parse_result(raw)
    assert parsed.fields == {}
    assert parsed.note is not None and note in parsed.note


def test_huge_numbers_that_parse_as_infinity_are_dropped() -> None:
    assert parse_result(b'{"big": 1e999, "ok": 2}').fields == {"ok": 2}


def test_no_file_is_no_fields_and_no_note_an_oversized_one_is_a_note(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with SafeDir(tmp_path) as safe:
        assert read_result(safe, "a") == ResultFile()
        assert read_result(safe, None) == ResultFile()
        (tmp_path / "a" / "result.json").write_bytes(b" " * (MAX_RESULT_BYTES + 1))
        note = read_result(safe, "a").note
    assert note is not None and "larger than" in note


def test_means_count_booleans_as_rates_and_skip_text() -> None:
    assert mean_of([True, False, True, True]) == 0.75
    assert mean_of([1, 2.5, "7", None]) == 1.75
    assert mean_of(["a", None]) is None


def test_a_result_field_cannot_take_a_fixed_column_or_matrix_name() -> None:
    rows = [row("r1", ResultFile({"status": "hacked", "MODEL": "y", "score": 1}), MODEL="m")]
    assert header(rows) == [
        "run_id", "job", "framework", "status", "attempt", "exit_code", "duration_seconds",
        "MODEL", "result.status", "result.MODEL", "score", "result_note",
    ]  # fmt: skip


def test_csv_and_jsonl_have_one_row_per_run_under_the_same_columns(tmp_path: Path) -> None:
    rows = [
        row("r1", ResultFile({"score": 0.5, "refused": True}), MODEL="a"),
        row("r2", ResultFile(note="result.json: not valid JSON: x"), MODEL="b"),
        row("r3", ResultFile({"extra.depth": 3}), MODEL="a"),
    ]
    csv_path, jsonl_path = write_results(rows, SafeDir(tmp_path))
    with csv_path.open(encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    lines = [json.loads(line) for line in jsonl_path.read_text("utf-8").splitlines()]
    assert [r["run_id"] for r in table] == [r["run_id"] for r in lines] == ["r1", "r2", "r3"]
    assert list(table[0]) == list(lines[0])
    assert table[0]["refused"] == "true" and lines[0]["refused"] is True
    assert table[1]["score"] == "" and lines[1]["score"] is None
    assert lines[1]["result_note"] == "result.json: not valid JSON: x"
    assert lines[2]["extra.depth"] == 3 and lines[0]["duration_seconds"] == 1.5


def test_an_integer_of_any_size_stays_exact_and_stays_out_of_means(tmp_path: Path) -> None:
    """400 digits crashed the report at the end of `run` (no float holds them)."""
    big = 10**400 + 7
    result = parse_result(json.dumps({"tokens": big, "small": 2**62, "score": 1}).encode())
    assert result.fields == {"tokens": str(big), "small": 2**62, "score": 1}
    assert mean_of([str(big), 1, 3]) == 2.0
    csv_path, jsonl_path = write_results([row("r1", result)], SafeDir(tmp_path))
    with csv_path.open(encoding="utf-8", newline="") as handle:
        [cells] = list(csv.DictReader(handle))
    assert cells["tokens"] == str(big) and cells["small"] == str(2**62)
    assert json.loads(jsonl_path.read_text("utf-8"))["tokens"] == str(big)


@pytest.mark.parametrize("digits", [19, 20, 4_300, 5_000, 100_000])
def test_an_integer_past_pythons_text_limit_keeps_the_file(digits: int) -> None:
    """Python's int() refuses more than 4,300 digits: such a file lost every field."""
    text = "9" * digits
    result = parse_result(f'{{"n": {text}, "m": -{text}, "score": 1}}'.encode())
    assert result.note is None
    assert result.fields == {"n": text, "m": "-" + text, "score": 1}


def test_a_result_field_named_as_a_formula_is_neutralised_in_the_header(tmp_path: Path) -> None:
    result = parse_result(b'{"=HYPERLINK(1)": 1}')
    csv_path, _ = write_results([row("r1", result)], SafeDir(tmp_path))
    header = csv_path.read_text("utf-8").splitlines()[0]
    assert header.endswith(",'=HYPERLINK(1),result_note"), header


@pytest.mark.parametrize(
    "text", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
)
def test_a_cell_a_spreadsheet_would_run_is_neutralised_jsonl_keeps_it(
    tmp_path: Path, text: str
) -> None:
    rows = [row("r1", ResultFile({"answer": text, "delta": -1.5}), MODEL=text)]
    csv_path, jsonl_path = write_results(rows, SafeDir(tmp_path))
    with csv_path.open(encoding="utf-8", newline="") as handle:
        [cells] = list(csv.DictReader(handle))
    assert cells["answer"] == cells["MODEL"] == "'" + text
    assert cells["delta"] == "-1.5"  # a number is a number, not a formula
    [line] = jsonl_path.read_text("utf-8").splitlines()
    assert json.loads(line)["answer"] == text
