"""Samples: what scripts wrote to /safeagents/logs/results.jsonl, one JSON object a line (a
task of a benchmark shard: `sample_id` or `id` names it), one row each in samples.csv and
samples.jsonl, with the run's columns first.

A batch may hold a million samples, so nothing holds them all: each run's file is streamed
twice, once to learn the columns and take each matrix cell's statistics, once to write the
rows. A line is untrusted like result.json: capped, flattened, a malformed one skipped and
counted (the run's note says how many and why the first was)."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgspec

from safeagents_batch.core.errors import UsageError
from safeagents_batch.records.layout import SAMPLES, SAMPLES_CSV, SAMPLES_JSONL
from safeagents_batch.records.safedir import SafeDir
from safeagents_batch.report.results import Scalar, csv_cell, is_number, parse_result
from safeagents_batch.report.stats import Summary

MAX_LINE_BYTES = 1024**2  # a sample is a task's verdicts and scores, not its transcript
MAX_COLUMNS = 1_000  # fields past this many distinct names are left out of the table
ID_KEYS = ("sample_id", "id")
BUFFER_BYTES = 8 * 1024**2  # rows are written out once this much is waiting
ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True)
class SampleRun:
    """A run whose latest attempt's samples are read, with the columns its rows start with
    and the matrix cell its samples count in."""

    run_id: str
    attempt_dir: str | None
    columns: dict[str, Scalar]  # run_id, job, matrix values, attempt, status
    cell: Hashable


@dataclass
class Sample:
    sample_id: Scalar
    fields: dict[str, Scalar]


@dataclass
class SampleFile:
    """One run's results.jsonl, read line by line; `note` says what was skipped."""

    safe: SafeDir
    attempt_dir: str | None
    skipped: int = 0
    first_problem: str | None = None
    unread: str | None = None  # why the file as a whole was not read

    def __iter__(self) -> Iterator[Sample]:
        if self.attempt_dir is None:
            return
        try:
            with self.safe.reader(f"{self.attempt_dir}/{SAMPLES}") as stream:
                yield from self._samples(stream)
        except FileNotFoundError:
            return
        except (OSError, UsageError) as exc:  # a link, FIFO or device in its place
            self.unread = f"{SAMPLES} not read: {exc}"

    def _samples(self, stream: BinaryIO) -> Iterator[Sample]:
        for number, line in enumerate(_lines(stream), start=1):
            if line is None:
                self._skip(f"{SAMPLES}:{number}: longer than {MAX_LINE_BYTES} bytes")
                continue
            if not line.strip():
                continue
            parsed = parse_result(line, f"{SAMPLES}:{number}")
            if parsed.note is not None:
                self._skip(parsed.note)
                continue
            yield Sample(_sample_id(parsed.fields, number), parsed.fields)

    def _skip(self, problem: str) -> None:
        self.skipped += 1
        self.first_problem = self.first_problem or problem

    @property
    def note(self) -> str | None:
        if self.unread is not None:
            return self.unread
        if not self.skipped:
            return None
        return f"{self.skipped} sample line(s) not read; the first: {self.first_problem}"


def _lines(stream: BinaryIO) -> Iterator[bytes | None]:
    """Each line, or None for one over MAX_LINE_BYTES (read past, never held whole)."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def _sample_id(fields: dict[str, Scalar], number: int) -> Scalar:
    """`sample_id`, else `id` (taken out of the fields: it is a column of its own), else
    the line's number."""
    for key in ID_KEYS:
        if key in fields:
            return fields.pop(key)
    return number


@dataclass
class SampleScan:
    """What the first pass learns: the sample columns (first seen first), each cell's
    statistics per numeric field, each run's count and note."""

    columns: dict[str, None] = field(default_factory=dict)
    cells: dict[Hashable, dict[str, Summary]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def read_samples(runs: Sequence[SampleRun], safe: SafeDir, *, write_files: bool) -> SampleScan:
    """One pass over every run's samples: each cell's statistics, the columns, each run's
    count and note. With `write_files`, each sample becomes a line of samples.jsonl as it is
    read, then samples.csv is made from that file (its header, the columns, is known only at
    the end): the scripts' files are parsed once."""
    scan = SampleScan()
    fixed = run_columns(runs)
    taken = {*fixed, ID_KEYS[0]}
    with contextlib.ExitStack() as stack:
        lines = _Lines(stack, safe, taken) if write_files else None
        for run in runs:
            _scan_run(scan, run, safe, lines)
        if lines is not None:
            lines.drain()
            if lines.out is not None:  # both files go in place together, as the block ends
                header = [*fixed, ID_KEYS[0], *(_sample_key(n, taken) for n in scan.columns)]
                _write_csv(header, lines.out, stack.enter_context(safe.writer(SAMPLES_CSV)))
    if write_files and not scan.total:  # an earlier report's, now wrong: none is right
        safe.remove(SAMPLES_CSV)
        safe.remove(SAMPLES_JSONL)
    return scan


def _scan_run(scan: SampleScan, run: SampleRun, safe: SafeDir, lines: _Lines | None) -> None:
    file = SampleFile(safe, run.attempt_dir)
    stats = scan.cells.setdefault(run.cell, {})
    count = 0
    for sample in file:
        count += 1
        _take(scan, stats, sample)
        if lines is not None:
            lines.add(run, sample, scan.columns)
    if not stats:
        del scan.cells[run.cell]
    if count:
        scan.counts[run.run_id] = count
    if file.note is not None:
        scan.notes[run.run_id] = file.note


def _take(scan: SampleScan, stats: dict[str, Summary], sample: Sample) -> None:
    for name, value in sample.fields.items():
        if name not in scan.columns:
            if len(scan.columns) >= MAX_COLUMNS:
                continue
            scan.columns[name] = None
        if is_number(value):
            summary = stats.get(name)
            if summary is None:
                summary = stats[name] = Summary()
            summary.add(float(value))


def run_columns(runs: Sequence[SampleRun]) -> list[str]:
    return list(dict.fromkeys(name for run in runs for name in run.columns))


def _sample_key(name: str, taken: set[str]) -> str:
    """A field named like a run column gets a `sample.` prefix: no sample passes for its
    run's status. So does one that has the prefix already, so that no two names meet."""
    prefixed = name in taken or name.startswith("sample.")
    return f"sample.{name}" if prefixed else name


class _Lines:
    """samples.jsonl, opened at its first sample (a batch without samples gets none), written
    a few MiB at a time. A line holds the run's columns, `sample_id` and the sample's fields
    (those within MAX_COLUMNS)."""

    def __init__(self, stack: contextlib.ExitStack, safe: SafeDir, taken: set[str]) -> None:
        self.stack = stack
        self.safe = safe
        self.taken = taken
        self.out: BinaryIO | None = None
        self.pending = bytearray()

    def add(self, run: SampleRun, sample: Sample, columns: dict[str, None]) -> None:
        record = {**run.columns, ID_KEYS[0]: sample.sample_id}
        for name, value in sample.fields.items():
            if name in columns:
                record[_sample_key(name, self.taken)] = value
        self.pending += ENCODER.encode(record)
        self.pending += b"\n"
        if len(self.pending) >= BUFFER_BYTES:
            self.drain()

    def drain(self) -> None:
        if not self.pending:
            return
        if self.out is None:
            self.out = self.stack.enter_context(self.safe.writer(SAMPLES_JSONL))
        self.out.write(self.pending)
        self.pending.clear()


def _write_csv(header: list[str], lines: BinaryIO, out: BinaryIO) -> None:
    """samples.csv from samples.jsonl, still under its temp name (the tool's own lines, read
    back as written): cells as results.csv has them, a few MiB at a time."""
    lines.flush()
    lines.seek(0)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(csv_cell(c) for c in header)
    for line in lines:
        record = DECODER.decode(line)
        writer.writerow(csv_cell(record.get(c)) for c in header)
        if buffer.tell() >= BUFFER_BYTES:
            out.write(buffer.getvalue().encode("utf-8"))
            buffer.seek(0)
            buffer.truncate()
    out.write(buffer.getvalue().encode("utf-8"))
