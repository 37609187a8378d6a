"""The batch report: one self-contained HTML file, results.csv and results.jsonl.

Pure apart from reading the batch dir: the manifest (through `load_manifest`, its runs with
their matrix values), each latest attempt's result.json, stderr tail and file names.
The page is rendered by Jinja2 with autoescape; the run table is a JSON blob that the page's
own script renders page by page with textContent, so script output never becomes markup.
Every link is relative to the report file, so a moved, zipped or committed batch dir works.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.units import format_number
from safeagents_batch.records import layout
from safeagents_batch.records.layout import RESERVED_NAMES, STDERR_LOG
from safeagents_batch.records.manifest import Manifest
from safeagents_batch.records.model import STATUSES, RunRecord
from safeagents_batch.records.provenance import GitState
from safeagents_batch.records.safedir import SafeDir
from safeagents_batch.report.batch import BatchResults, BatchView, open_batch, read_results
from safeagents_batch.report.compare import Comparison, compare_results
from safeagents_batch.report.matrix import chart_cells
from safeagents_batch.report.results import (
    ResultRow,
    recorded_columns,
    write_results,
)
from safeagents_batch.report.stats import METHODS
from safeagents_batch.report.timeline import attempt_lanes
from safeagents_batch.report.usage import usage_lines

REPORT_FORMAT = 1
TAIL_LINES = 20
TAIL_BYTES = 2048
REFRESH_SECONDS = 30  # how often the page of a running batch reloads itself
MAX_ARTIFACTS_LISTED = 50  # per run: a script that leaves 10,000 files gets a count instead


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    csv: Path
    jsonl: Path
    comparison: Comparison | None = None


# -- files of an attempt ------------------------------------------------------------------


def stderr_tail(safe: SafeDir, attempt_dir: str | None) -> str | None:
    """The last TAIL_LINES lines of stderr.log, at most TAIL_BYTES; None if there is none (or
    something other than a regular file stands in its place)."""
    if attempt_dir is None:
        return None
    try:
        raw, size = safe.read_tail(f"{attempt_dir}/{STDERR_LOG}", TAIL_BYTES)
    except (OSError, UsageError):
        return None
    lines = raw.decode("utf-8", "replace").splitlines()
    if size > TAIL_BYTES and lines:
        lines = lines[1:]  # the first one is cut
    return "\n".join(lines[-TAIL_LINES:]) or None


def artifact_names(safe: SafeDir, attempt_dir: str | None) -> tuple[list[str], int]:
    """Files the script left (not the logs), relative to the attempt dir, sorted; and how many
    there are in all. Links are not followed: the sink keeps none, a later hand might."""
    if attempt_dir is None:
        return [], 0
    names, count = safe.files(attempt_dir, MAX_ARTIFACTS_LISTED + len(RESERVED_NAMES))
    reserved = sum(1 for n in RESERVED_NAMES if safe.kind(f"{attempt_dir}/{n}") == "file")
    names = [n for n in names if n not in RESERVED_NAMES]
    return names[:MAX_ARTIFACTS_LISTED], count - reserved


def href(path: Path, report_dir: Path) -> str:
    """A relative URL from the report's directory to `path`, each segment percent-encoded."""
    relative = Path(os.path.relpath(path, report_dir)).as_posix()
    return "/".join(quote(part) for part in relative.split("/"))


# -- the page -----------------------------------------------------------------------------


def page_data(view: BatchView, results: BatchResults, report_dir: Path) -> dict[str, Any]:
    """What the page's script renders: one compact entry per run, columns named once; each
    matrix cell's estimates and each attempt's time, for the charts."""
    rows = results.rows
    columns = list(dict.fromkeys(name for row in rows for name in row.matrix))
    recorded = recorded_columns(rows)
    samples = results.samples
    return {
        "format": REPORT_FORMAT,
        "statuses": list(STATUSES),
        "matrix": columns,
        "recorded": recorded,
        "methods": METHODS,
        "cells": chart_cells(results.matrices),
        "attempts": attempt_lanes(view.manifest),
        "runs": [
            {
                **_run_entry(view, record, row, (columns, recorded), report_dir),
                "ns": samples.counts.get(record.run_id, 0),
                "note": row.result.note or samples.notes.get(record.run_id),
            }
            for record, row in zip(view.manifest.runs.values(), rows, strict=True)
        ],
    }


def _run_entry(
    view: BatchView,
    record: RunRecord,
    row: ResultRow,
    named: tuple[list[str], list[str]],
    report_dir: Path,
) -> dict[str, Any]:
    """The run's cells; `named`: the page's matrix and recorded variables, in column order."""
    columns, recorded = named
    attempt_dir = view.local(record.log_dir)
    artifacts, artifact_count = artifact_names(view.safe, attempt_dir)
    unsuccessful = record.status != "succeeded"
    dir_link = None
    if attempt_dir is not None and view.safe.kind(attempt_dir) == "dir":
        dir_link = href(view.batch_dir / attempt_dir, report_dir)
    return {
        "id": record.run_id,
        "job": record.job,
        "fw": record.framework,
        "st": record.status,
        "att": len(record.attempts),
        "dur": record.duration_seconds,
        "exit": record.exit_code,
        "err": record.error,
        "m": [row.matrix.get(c, "") for c in columns],
        "rec": [row.recorded.get(c, "") for c in recorded],
        "dir": dir_link,
        "art": artifacts,
        "nart": artifact_count,
        "tail": stderr_tail(view.safe, attempt_dir) if unsuccessful else None,
    }


_TEMPLATE_LOCK = threading.Lock()


@functools.cache
def _compiled_template() -> jinja2.Template:
    return _environment().get_template("report.html.j2")


def _template() -> jinja2.Template:
    """Compiled once per process (tens of ms): `warm_up` does it while a batch runs, and the
    end of the batch waits for that compilation rather than doing it a second time."""
    with _TEMPLATE_LOCK:
        return _compiled_template()


def warm_up() -> None:
    """Does the report's one-off work ahead of time, so the report a batch writes when it
    ends costs only its rendering."""
    _template()


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("safeagents_batch.report", "templates"),
        autoescape=True,  # every value is text unless marked otherwise; ours only are
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # A NaN in the page's data would be a bare `NaN` that JSON.parse refuses, leaving the page
    # dead: an error here instead (the statistics never make one: report/stats.py).
    environment.policies["json.dumps_kwargs"] = {"sort_keys": True, "allow_nan": False}
    return environment


def _asset(name: str) -> Markup:
    """Our own CSS and JS, inlined: the page fetches nothing."""
    text = resources.files("safeagents_batch.report").joinpath("templates", name).read_text("utf-8")
    return Markup(text)  # a file of the package, not data: the one unescaped text


def render(
    view: BatchView,
    results: BatchResults,
    report_path: Path,
    comparison: Comparison | None = None,
    *,
    refresh: int = REFRESH_SECONDS,
) -> str:
    report_dir = report_path.absolute().parent
    manifest = view.manifest
    return _template().render(
        m=manifest,
        git=manifest.jobs_file.git,
        summary=manifest.summary(),
        statuses=STATUSES,
        images=[_image_entry(view, i.tag, report_dir) for i in manifest.images.values()],
        matrices=results.matrices,
        methods=METHODS,
        code_states=code_states(manifest),
        usage=usage_lines(results.rows),
        comparison=comparison,
        data=page_data(view, results, report_dir),
        css=_asset("report.css"),
        js=_asset("report.js"),
        charts=_asset("charts.js"),
        plot=[
            (_asset("vendor/LICENSE.d3"), _asset("vendor/d3.min.js")),
            (_asset("vendor/LICENSE.plot"), _asset("vendor/plot.umd.min.js")),
        ],
        links={
            "manifest": href(view.layout.manifest, report_dir),
            "csv": href(view.layout.results_csv, report_dir),
            "jsonl": href(view.layout.results_jsonl, report_dir),
            "samples": href(view.batch_dir / layout.SAMPLES_CSV, report_dir),
        },
        samples=results.samples.total,
        fmt_cell=format_number,
        refresh=refresh,
    )


def code_states(manifest: Manifest) -> list[tuple[GitState, int]]:
    """The git states the batch's attempts ran (a `rerun` after an edit adds one), each with
    its count, most first; none when every attempt ran the batch's own recorded state."""
    counts = Counter(a.git for r in manifest.runs.values() for a in r.attempts if a.git)
    if set(counts) <= {manifest.jobs_file.git}:
        return []
    return counts.most_common()


def _image_entry(view: BatchView, tag: str, report_dir: Path) -> dict[str, Any]:
    image = view.manifest.images[tag]
    log = view.local(image.build_log)
    shown = log is not None and view.safe.kind(log) == "file"
    return {
        "record": image,
        "log": href(view.batch_dir / log, report_dir) if log is not None and shown else None,
    }


def write_report(
    batch_dir: Path,
    output: Path | None = None,
    compare_with: Path | None = None,
    *,
    refresh: int = REFRESH_SECONDS,
    samples: bool = True,
) -> ReportFiles:
    """report.html (or `output`), results.csv and results.jsonl for the batch at `batch_dir`;
    with `compare_with`, the report compares the batch against that earlier one. Every file
    is written whole under a new name and renamed into place: a name planted in the batch dir
    (a link to a file elsewhere) is replaced, never written through."""
    view = open_batch(batch_dir)
    try:
        results = read_results(view, write_sample_files=samples)
        comparison = _comparison(compare_with, results)
        csv_path, jsonl_path = write_results(results.rows, view.safe)
        html_path = (output or view.layout.report).absolute()
        html = render(view, results, html_path, comparison, refresh=refresh).encode("utf-8")
        if output is None:
            view.safe.write(layout.REPORT, html)
        else:  # wherever the user said, written the same way
            with SafeDir(html_path.parent) as there:
                there.write(html_path.name, html)
    finally:
        view.close()
    return ReportFiles(html_path, csv_path, jsonl_path, comparison)


def _comparison(compare_with: Path | None, results: BatchResults) -> Comparison | None:
    if compare_with is None:
        return None
    other = open_batch(compare_with)
    try:
        return compare_results(other.manifest.batch_id, read_results(other), results)
    finally:
        other.close()
