"""Results: what scripts wrote to /safeagents/logs/result.json, one flat row per run.

result.json is the script's output, so untrusted: read with a size cap, nested objects
flattened as `a.b`, lists and non-finite numbers left out, and anything malformed a note in
the row, never an exception. Rows go to results.csv and results.jsonl beside the manifest.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from safeagents_batch.core.errors import UsageError
from safeagents_batch.records import layout
from safeagents_batch.records.layout import RESULT, BatchLayout
from safeagents_batch.records.safedir import SafeDir

MAX_RESULT_BYTES = 1024**2  # a result is a few numbers and labels; more is not a result
# An integer past 64 bits fits no float a mean is taken in, and few readers of a table: it is
# carried exactly, as its digits in a string, and left out of means.
BIG_INTEGER = 2**63
BIG_DIGITS = len(str(BIG_INTEGER))  # an integer of more digits is past 64 bits
# Past this a float is carried, not averaged: squares of values up to it, summed over a
# million samples, stay finite, so no mean or interval turns into infinity or NaN.
LARGEST_MEANT = 1e150
# What a spreadsheet runs as a formula when a cell starts with it (OWASP's CSV injection rule).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
Scalar = str | int | float | bool | None
FIXED_COLUMNS = (
    "run_id",
    "job",
    "framework",
    "status",
    "attempt",
    "exit_code",
    "duration_seconds",
)
NOTE_COLUMN = "result_note"
# Model calls through the gateway, summed over the run's models; only in a batch that has any.
USAGE_COLUMNS = (
    "model_requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "model",
)


@dataclass(frozen=True)
class ResultFile:
    """The flattened scalar fields of one result.json, or why there are none (`note`)."""

    fields: dict[str, Scalar] = field(default_factory=dict)
    note: str | None = None


@dataclass(frozen=True)
class ResultRow:
    """One run's row: the fixed columns, its matrix and recorded values, its result fields."""

    fixed: dict[str, Scalar]
    matrix: dict[str, str]
    result: ResultFile
    recorded: dict[str, str] = field(default_factory=dict)  # `record_env`'s names, values
    usage: dict[str, Scalar] = field(default_factory=dict)  # USAGE_COLUMNS, when it had models


def read_result(safe: SafeDir, attempt_dir: str | None) -> ResultFile:
    """The result.json the latest attempt left; no file is no fields and no note."""
    if attempt_dir is None:
        return ResultFile()
    try:
        raw = safe.read(f"{attempt_dir}/{RESULT}", MAX_RESULT_BYTES)
    except FileNotFoundError:
        return ResultFile()
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            return ResultFile(note=f"{RESULT}: larger than {MAX_RESULT_BYTES} bytes, not read")
        return ResultFile(note=f"{RESULT}: unreadable: {exc.strerror or exc}")
    except UsageError as exc:  # a link, FIFO or device in its place
        return ResultFile(note=f"{RESULT}: not read: {exc}")
    return parse_result(raw)


def parse_result(raw: bytes, name: str = RESULT) -> ResultFile:
    """One JSON object (`name`, for its notes: result.json, or a line of results.jsonl)."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_int=_integer)
    except (UnicodeDecodeError, ValueError) as exc:
        return ResultFile(note=f"{name}: not valid JSON: {exc}")
    except RecursionError:
        return ResultFile(note=f"{name}: nested too deeply")
    if not isinstance(data, dict):
        return ResultFile(note=f"{name}: not a JSON object but {type(data).__name__}")
    return ResultFile(fields=flatten(data))


def _integer(text: str) -> int | str:
    """An integer of more digits than any 64-bit one stays its text (the table carries such
    numbers as text anyway): int() refuses past 4,300 digits, which would lose the file."""
    return int(text) if len(text.lstrip("-")) <= BIG_DIGITS else text


def _no_constant(name: str) -> float:
    # NaN and Infinity are not JSON; passed on, they would break every reader after us.
    raise ValueError(f"{name} is not a JSON number")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Scalars of a JSON object, nested objects as `a.b`; lists are not scalars and are left out."""
    flat: dict[str, Scalar] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, float) and not math.isfinite(value):
            continue  # 1e999 parses as infinity: not a number any reader after us accepts
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= BIG_INTEGER:
            flat[name] = str(value)
        elif value is None or isinstance(value, str | bool | int | float):
            flat[name] = value
    return flat


def is_number(value: Scalar) -> TypeGuard[int | float]:
    """Numbers and booleans (a mean of `refused` is a refusal rate); never NaN or infinity,
    nor a float so large that its square (a variance) would overflow."""
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= LARGEST_MEANT
    return isinstance(value, int) and abs(value) < BIG_INTEGER


def mean_of(values: Iterable[Scalar]) -> float | None:
    numbers = [float(v) for v in values if is_number(v)]
    return sum(numbers) / len(numbers) if numbers else None


def result_columns(rows: Sequence[ResultRow]) -> list[str]:
    """Every result field of any row, in first-seen order."""
    return list(dict.fromkeys(name for row in rows for name in row.result.fields))


def matrix_columns(rows: Sequence[ResultRow]) -> list[str]:
    return list(dict.fromkeys(name for row in rows for name in row.matrix))


def recorded_columns(rows: Sequence[ResultRow]) -> list[str]:
    """The variables `record_env` wrote down, but for those the matrix already names."""
    matrix = set(matrix_columns(rows))
    names = (name for row in rows for name in row.recorded if name not in matrix)
    return list(dict.fromkeys(names))


def header(rows: Sequence[ResultRow]) -> list[str]:
    """Fixed columns, matrix and recorded variables, result fields; a result field whose name
    is taken gets a `result.` prefix so that a script cannot overwrite the run's own status."""
    usage = USAGE_COLUMNS if any(row.usage for row in rows) else ()
    named = [*matrix_columns(rows), *recorded_columns(rows)]
    taken = {*FIXED_COLUMNS, *usage, *named, NOTE_COLUMN}
    return [
        *FIXED_COLUMNS,
        *usage,
        *named,
        *(_result_key(n, taken) for n in result_columns(rows)),
        NOTE_COLUMN,
    ]


def _result_key(name: str, taken: set[str]) -> str:
    """A taken name gets the prefix, and so does one that has it already: `result.status`
    of a nested `{"result": {"status": ...}}` cannot meet the prefixed `status`."""
    prefixed = name in taken or name.startswith("result.")
    return f"result.{name}" if prefixed else name


def as_dict(row: ResultRow, columns: Sequence[str]) -> dict[str, Scalar]:
    """The row under every column of `columns` (None where it has no value)."""
    taken = {*FIXED_COLUMNS, *USAGE_COLUMNS, *row.matrix, *row.recorded, NOTE_COLUMN}
    values: dict[str, Scalar] = {**row.fixed, **row.usage, **row.recorded, **row.matrix}
    for name, value in row.result.fields.items():
        values[_result_key(name, taken)] = value
    values[NOTE_COLUMN] = row.result.note
    return {c: values.get(c) for c in columns}


def write_results(rows: Sequence[ResultRow], safe: SafeDir) -> tuple[Path, Path]:
    """results.csv and results.jsonl in the batch dir, one row per run, the same columns."""
    columns = header(rows)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(csv_cell(column) for column in columns)  # result.json names its fields
    for row in rows:
        writer.writerow(csv_cell(v) for v in as_dict(row, columns).values())
    lines = "".join(json.dumps(as_dict(row, columns), ensure_ascii=False) + "\n" for row in rows)
    safe.write(layout.RESULTS_CSV, table.getvalue().encode("utf-8"))
    safe.write(layout.RESULTS_JSONL, lines.encode("utf-8"))
    where = BatchLayout(safe.root)
    return where.results_csv, where.results_jsonl


def csv_cell(value: Scalar) -> str:
    """A cell as a spreadsheet should take it: text that would run as a formula is quoted
    with a leading apostrophe (numbers stay numbers); results.jsonl keeps the raw value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as in the JSON the script wrote
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return str(value)
