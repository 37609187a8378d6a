"""report: the HTML page, its data and links, results files, comparison and the CLI, on real
batch dirs run on the in-memory backend (no engine, no browser; the browser tests are in
test_report_browser.py)."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import records
from conftest import Project
from fakes import Behaviour
from msgspec import structs
from old_batches import recorded_paths, write_as_version_1
from report_batches import (
    HOSTILE_LINE,
    SCRIPT_LINE,
    big_manifest,
    default_behaviour,
    failing,
    run_fake_batch,
    succeeded_with,
)

import safeagents_batch.report.page as report_module
from safeagents_batch.cli.main import main
from safeagents_batch.cli.options import finish_batch
from safeagents_batch.core.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNS_FAILED
from safeagents_batch.core.units import format_number
from safeagents_batch.execution.batch import BatchOutcome
from safeagents_batch.jobs.plan import RunSpec
from safeagents_batch.records.manifest import load_manifest
from safeagents_batch.records.safedir import SafeDir
from safeagents_batch.records.store import ManifestStore
from safeagents_batch.report.batch import BatchView, read_results
from safeagents_batch.report.page import (
    TAIL_BYTES,
    TAIL_LINES,
    render,
    stderr_tail,
    write_report,
)


class Links(html.parser.HTMLParser):
    """Every href, src and element name of a page, as the browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("href") is not None:
            self.hrefs.append(str(values["href"]))
        if values.get("src") is not None:
            self.srcs.append(str(values["src"]))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def parsed(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text("utf-8"))
    return links


def page_data(path: Path) -> dict[str, Any]:
    text = path.read_text("utf-8")
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def run_links(data: dict[str, Any]) -> list[str]:
    """Every link the page's script makes for the runs (as report.js builds them)."""
    links = []
    for run in data["runs"]:
        if run["dir"] is not None:
            names = ["console.log", "stdout.log", "stderr.log", *run["art"]]
            links += [f"{run['dir']}/{name}" for name in names]
    return links


@pytest.fixture
def batch(project: Project) -> Path:
    return run_fake_batch(project, default_behaviour)


def test_report_writes_the_page_and_both_results_files_and_prints_its_path(
    batch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(batch)]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [str(batch / "report.html")]
    for name in ("report.html", "results.csv", "results.jsonl"):
        assert (batch / name).stat().st_size > 0
    lines = (batch / "results.jsonl").read_text("utf-8").splitlines()
    rows = {r["run_id"]: r for r in map(json.loads, lines)}
    assert len(rows) == len(load_manifest(batch).runs) == 13
    row = rows["grid-a-benign-small-r2"]
    assert row["VARIANT"] == "benign" and row["MODEL"] == "small"
    assert (row["refused"], row["score"], row["meta.n"]) == (False, 2, 1)
    assert (row["status"], row["attempt"], row["exit_code"]) == ("succeeded", 1, 0)
    assert rows["single-b"]["VARIANT"] is None  # a job without that variable
    # The framework column is each job's framework, as the jobs file names it.
    assert {r["framework"] for r in rows.values()} == {"plain", "other"}
    page_runs = page_data(batch / "report.html")["runs"]
    assert {r["id"]: r["fw"] for r in page_runs} == {r: rows[r]["framework"] for r in rows}


def test_the_page_is_self_contained_and_fetches_nothing(batch: Path) -> None:
    path = write_report(batch).html
    text = path.read_text("utf-8")
    links = parsed(path)
    assert links.srcs == []  # no script, image or frame from anywhere
    assert "link" not in links.tags and "iframe" not in links.tags and "img" not in links.tags
    ours = without_chart_libraries(text)
    assert not re.search(r"(https?:)?//[a-z]", ours.replace("http-equiv", ""), re.I)
    assert "default-src 'none'" in text
    assert "fetch(" not in ours and "XMLHttpRequest" not in ours and "import(" not in ours


def without_chart_libraries(text: str) -> str:
    """The page less d3 and Plot, inlined unmodified (templates/vendor/README.md): d3 holds
    fetch() and namespace URLs that nothing here calls and the page's CSP would refuse; the
    browser tests see that nothing is fetched."""
    vendor = resources.files("safeagents_batch.report").joinpath("templates", "vendor")
    for name in ("d3.min.js", "plot.umd.min.js"):
        text = text.replace(vendor.joinpath(name).read_text("utf-8"), "")
    return text


def test_every_link_is_relative_and_resolves_after_the_batch_dir_moves(
    batch: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "renamed-batch"
    moved.parent.mkdir()
    shutil.move(batch, moved)
    path = write_report(moved).html
    hrefs = parsed(path).hrefs + run_links(page_data(path))
    assert len(hrefs) > 13 * 3
    for href in hrefs:
        assert not href.startswith(("/", "file:", "http")) and ":" not in href.split("/")[0]
        assert (moved / unquote(href)).exists(), href
    assert {"result.json", "notes/x.txt"} <= {n for r in page_data(path)["runs"] for n in r["art"]}


@pytest.mark.parametrize("version", [2, 1])
def test_a_moved_batch_dir_of_either_manifest_version_reports_in_full(
    project: Project, tmp_path: Path, version: int
) -> None:
    """Version 2 records paths relative to the batch dir, version 1 absolute where it was
    created: after a move, the report finds every log dir, build log, result and stderr."""
    batch = run_fake_batch(project, default_behaviour, build_logs=True)
    if version == 1:
        write_as_version_1(batch)
    recorded = recorded_paths(batch)
    assert len(recorded) == 13 + 2  # a log dir per run, a build log per image
    assert all(Path(p).is_absolute() == (version == 1) for p in recorded), recorded
    moved = tmp_path / "elsewhere" / "renamed-batch"
    moved.parent.mkdir()
    shutil.move(batch, moved)

    path = write_report(moved).html

    data = page_data(path)
    hrefs = parsed(path).hrefs + run_links(data)
    for href in hrefs:
        assert (moved / unquote(href)).exists(), href
    assert sum(h.startswith("images/") and h.endswith(".log") for h in hrefs) == 2
    assert all(r["dir"] == f"runs/{r['id']}/attempt-1" for r in data["runs"])
    tails = {r["id"]: r["tail"] for r in data["runs"] if r["st"] != "succeeded"}
    assert len(tails) == 2 and all(HOSTILE_LINE in t for t in tails.values()), tails
    lines = (moved / "results.jsonl").read_text("utf-8").splitlines()
    rows = {r["run_id"]: r for r in map(json.loads, lines)}
    assert (rows["grid-a-benign-small-r2"]["score"], rows["single-b"]["score"]) == (2, 1)


def test_a_report_written_elsewhere_links_back_into_the_batch(batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "r.html"
    out.parent.mkdir()
    assert write_report(batch, out).html == out
    for href in parsed(out).hrefs + run_links(page_data(out)):
        assert (out.parent / unquote(href)).exists(), href


def test_script_output_and_run_ids_are_text_never_markup(project: Project, tmp_path: Path) -> None:
    batch = run_fake_batch(project, default_behaviour)
    manifest = load_manifest(batch)
    # Run ids from a jobs file are safe names; a manifest from elsewhere need not be.
    hostile = "<script>alert('id')</script>"
    log_dir = batch / "runs" / "x" / "attempt-1"
    log_dir.mkdir(parents=True)
    (log_dir / "stderr.log").write_text(f"{HOSTILE_LINE}\n", "utf-8")
    attempt = records.attempt(1, "failed", "runs/x/attempt-1", error=SCRIPT_LINE + HOSTILE_LINE)
    manifest.runs[hostile] = records.run(hostile, attempt, job="</table><b>job")
    manifest.batch_id = "b-<i>x</i>"
    # Straight to render: the manifest's schema would refuse these names on load.
    view = BatchView(manifest, batch, {hostile: {"V": "<u>v</u>"}}, SafeDir(batch))
    text = render(view, read_results(view), batch / "report.html")
    links = parsed_text(text)
    assert links.tags.count("script") == 5  # the data blob, our script, d3, Plot, our charts
    assert not {"img", "i", "u"} & set(links.tags) and "b" in links.tags  # ours: <b>
    assert "<i>x</i>" not in text and "&lt;i&gt;x&lt;/i&gt;" in text
    for needle in (hostile, HOSTILE_LINE, SCRIPT_LINE, "</table><b>job", "<u>v</u>"):
        assert needle not in text
    data = json.loads(links.scripts[0])
    [run] = [r for r in data["runs"] if r["id"] == hostile]
    assert run["tail"] == HOSTILE_LINE and run["job"] == "</table><b>job"
    assert run["m"] == ["<u>v</u>"] and run["err"] == f"{SCRIPT_LINE}{HOSTILE_LINE}"


def parsed_text(text: str) -> Links:
    links = Links()
    links.feed(text)
    return links


def test_stderr_tails_only_for_runs_that_did_not_succeed_and_capped(
    project: Project, tmp_path: Path
) -> None:
    long_stderr = "".join(f"line {i} " + "x" * 150 + "\n" for i in range(100))

    def choose(spec: RunSpec) -> Behaviour:
        if spec.job.name == "single":
            return failing(long_stderr)
        return Behaviour(stderr=b"warning: noisy but fine\n")

    batch = run_fake_batch(project, choose)
    runs = {r["id"]: r for r in page_data(write_report(batch).html)["runs"]}
    assert all(r["tail"] is None for r in runs.values() if r["st"] == "succeeded")
    tail = runs["single-b"]["tail"]
    lines = tail.splitlines()
    assert len(lines) <= TAIL_LINES and len(tail.encode()) <= TAIL_BYTES
    assert lines[-1].startswith("line 99 ") and lines[0].startswith("line ")  # whole lines
    with SafeDir(tmp_path) as safe:
        assert stderr_tail(safe, "missing") is None


def test_matrix_view_counts_and_means_per_cell(batch: Path) -> None:
    text = write_report(batch).html.read_text("utf-8")
    matrix = text[text.index('<section id="matrix">') : text.index('<section id="runs">')]
    # grid: rows VARIANT, columns MODEL; harmful on the large model failed twice.
    assert "rows: VARIANT · columns: MODEL" in matrix
    cells = re.findall(r'<div class="frac (?:good|bad)">(\d+/\d+)</div>', matrix)
    assert cells == ["2/2", "2/2", "2/2", "0/2", "2/2", "2/2", "1/1"]
    assert matrix.count('<span class="dim">score</span> 1.5') == 5  # repeats 1 and 2
    assert '<span class="dim">refused</span> 0' in matrix


@pytest.mark.parametrize("change", ["deleted", "edited", "scripts gone"])
def test_the_page_is_the_same_whatever_became_of_the_jobs_file(
    project: Project, change: str
) -> None:
    """Every fact the page shows comes from the records (matrix values included), written
    when the runs were made: not from the batch's jobs.yaml, nor the scripts, read again."""
    batch = run_fake_batch(project, default_behaviour)
    before = write_report(batch).html.read_text("utf-8")
    snapshot = batch / "jobs.yaml"
    if change == "deleted":
        snapshot.unlink()
        (batch / "jobs.source.yaml").unlink()
    elif change == "edited":  # another matrix, another job: what a guess would go by
        snapshot.write_text(snapshot.read_text("utf-8").replace("MODEL", "SIZE"), "utf-8")
    else:
        shutil.rmtree(project.root / "scripts")
    assert write_report(batch).html.read_text("utf-8") == before
    data = page_data(write_report(batch).html)
    assert data["matrix"] == ["VARIANT", "MODEL"]
    run = next(r for r in data["runs"] if r["id"] == "grid-a-jailbreak-large-r1")
    assert run["m"] == ["jailbreak", "large"]


def test_runs_recorded_without_matrix_values_get_them_guessed_from_their_env(
    project: Project,
) -> None:
    """Manifest versions 1 and 2 did not record matrix values: the env values that differ
    between a job's runs stand in for them."""
    batch = run_fake_batch(project, default_behaviour)
    write_as_version_1(batch)
    data = page_data(write_report(batch).html)
    assert sorted(data["matrix"]) == ["MODEL", "VARIANT"]
    run = next(r for r in data["runs"] if r["id"] == "grid-a-jailbreak-large-r1")
    assert sorted(run["m"]) == ["jailbreak", "large"]


def test_a_malformed_result_is_a_note_in_its_row(project: Project) -> None:
    def choose(spec: RunSpec) -> Behaviour:
        return succeeded_with(b"{oops" if spec.job.name == "single" else b'{"score": 1}')

    batch = run_fake_batch(project, choose)
    files = write_report(batch)
    rows = {r["run_id"]: r for r in map(json.loads, files.jsonl.read_text("utf-8").splitlines())}
    assert rows["single-b"]["result_note"].startswith("result.json: not valid JSON")
    assert rows["grid-a-benign-small-r1"]["result_note"] is None
    note = next(r["note"] for r in page_data(files.html)["runs"] if r["id"] == "single-b")
    assert note.startswith("result.json: not valid JSON")


def test_compare_lists_status_changes_and_mean_changes_as_json(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    before = run_fake_batch(project, default_behaviour)

    def worse(spec: RunSpec) -> Behaviour:
        if spec.job.name == "single":
            return failing()
        if dict(spec.matrix_env) == {"VARIANT": "harmful", "MODEL": "large"}:
            return succeeded_with({"refused": True, "score": 5})
        return default_behaviour(spec)

    after = run_fake_batch(project, worse)
    assert main(["report", str(after), "--compare", str(before), "--json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["baseline"] == load_manifest(before).batch_id
    assert [c["run_id"] for c in out["newly_failing"]] == ["single-b"]
    assert sorted(c["run_id"] for c in out["newly_succeeding"]) == [
        "grid-a-harmful-large-r1",
        "grid-a-harmful-large-r2",
    ]
    assert len(out["changed"]) == 3 and out["only_here"] == out["only_there"] == []

    def mean(estimate: dict[str, Any] | None) -> float | None:
        return None if estimate is None else float(estimate["mean"])

    changed = [
        (m["job"], m["cell"], m["field"], mean(m["before"]), mean(m["after"]), m["delta"])
        for m in out["means"]
        if mean(m["before"]) != mean(m["after"])
    ]
    harmful_large = {"VARIANT": "harmful", "MODEL": "large"}
    assert changed == [
        ("grid", harmful_large, "refused", None, 1.0, None),
        ("grid", harmful_large, "score", None, 5.0, None),
        # The job without a matrix is one cell; its run failed, so it has no result now.
        ("single", {}, "refused", 1.0, None, None),
        ("single", {}, "score", 1.0, None, None),
        ("single", {}, "meta.n", 1.0, None, None),
    ]
    same = [m for m in out["means"] if mean(m["before"]) == mean(m["after"])]
    assert same and all(m["delta"] == 0 and not m["excludes_zero"] for m in same)
    assert all(m["before"]["n"] == m["after"]["n"] for m in same)  # counts with each mean
    page = (after / "report.html").read_text("utf-8")
    assert "Compared with" in page and "Newly failing" in page and "single-b" in page


def test_compare_without_json_prints_a_summary_line(
    batch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(batch), "--compare", str(batch)]) == EXIT_OK
    first, second = capsys.readouterr().out.splitlines()
    assert "0 newly failing, 0 newly succeeding, 0 changed status" in first
    assert second == str(batch / "report.html")


def test_json_without_compare_and_a_non_batch_dir_are_bad_input(
    batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(batch), "--json"]) == EXIT_BAD_INPUT
    assert main(["report", str(tmp_path)]) == EXIT_BAD_INPUT
    assert main(["report", str(tmp_path / "nope")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(e.startswith("safeagents-batch: error: ") for e in err)


def test_the_end_of_run_and_rerun_writes_the_report_keeping_the_exit_code(
    batch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = load_manifest(batch).summary()
    outcome = BatchOutcome(batch, summary, interrupted=False)
    assert finish_batch(outcome) == EXIT_RUNS_FAILED
    assert f"report: {batch / 'report.html'}" in capsys.readouterr().out.splitlines()
    assert (batch / "report.html").is_file()


def test_a_report_that_fails_at_the_end_of_a_run_is_a_warning(
    batch: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(batch_dir: Path) -> None:
        raise RuntimeError("disk\nfull")

    monkeypatch.setattr(report_module, "write_report", broken)
    outcome = BatchOutcome(batch, load_manifest(batch).summary(), interrupted=False)
    assert finish_batch(outcome) == EXIT_RUNS_FAILED
    err = capsys.readouterr().err.splitlines()
    assert err == ["safeagents-batch: warning: no report written: disk full"]


def test_a_10000_run_report_stays_small(tmp_path: Path) -> None:
    batch = tmp_path / "big"
    batch.mkdir()
    big_manifest(batch, 10_000)
    files = write_report(batch)
    data = page_data(files.html)
    assert len(data["runs"]) == 10_000
    assert sum(1 for r in data["runs"] if r["tail"]) == 500
    # About 300 bytes a run, the stderr tails of 500 failed runs included.
    assert files.html.stat().st_size < 6 * 1024**2
    assert len(files.csv.read_text("utf-8").splitlines()) == 10_001


def test_the_images_table_names_the_packages_each_image_holds(project: Project) -> None:
    """The manifest records each image's `pip freeze`; the page shows it, escaped like all."""
    batch_dir = run_fake_batch(project, lambda spec: Behaviour())
    manifest = load_manifest(batch_dir)
    tag = next(iter(manifest.images))
    record = structs.replace(manifest.images[tag], packages=("langgraph==0.2.1", "<b>evil</b>==1"))
    with ManifestStore(manifest, batch_dir) as store:
        store.set_image(record)

    page = (write_report(batch_dir).html).read_text(encoding="utf-8")

    assert "langgraph==0.2.1" in page and "2 pinned" in page
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;==1" in page


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1410.3, "1,410"),
        (0.62, "0.62"),
        (1.0, "1"),
        (0.000123456, "0.000123"),
        (1234567.0, "1,230,000"),
        (-2.5, "-2.5"),
        (99999.0, "100,000"),
        (2 / 3, "0.667"),
        (0.0, "0"),
        (None, ""),
    ],
)
def test_numbers_read_as_people_write_them(value: float | None, shown: str) -> None:
    assert format_number(value) == shown
