"""Opening a big report in a browser: a finished batch of 10,000 runs (4 jobs, 20 matrix cells
each, 50 samples a run in results.jsonl: 500,000 samples), its report written by the tool, then
opened in headless Chromium, from navigation start until the run table is ready and the charts
are drawn and painted. Beside it, the same report with the charts taken out (their section and
the three scripts: d3, Plot, charts.js; the page data is the same). Each round starts a fresh
browser for each page, alternating; prints the medians.

    PYTHONPATH=. python benchmarks/report_open.py [--runs 10000] [--samples 50] [--rounds 5]

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from selenium import webdriver
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from safeagents_batch.records.layout import MANIFEST, RESULT, SAMPLES, STDERR_LOG
from safeagents_batch.records.manifest import JobsFileRecord, Manifest, encode
from safeagents_batch.records.model import (
    Attempt,
    AttemptOutcome,
    ImageRecord,
    RunRecord,
    Status,
    recorded_path,
)
from safeagents_batch.records.safedir import SafeDir
from safeagents_batch.report.page import write_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import CHROMEDRIVER, CHROMIUM, FLAGS  # the tests' browser, as they run it

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
SLOTS = 32  # the batch ran at -j 32: the timeline's lanes
PATIENCE_SECONDS = 120.0
# Run in the page before its own scripts (DevTools, so the page's CSP does not apply): the
# moment both flags are set, and the end of the next frame after it (the charts on screen).
PROBE = """
(() => {
  const ready = () => document.body && document.body.dataset.ready === "true";
  const drawn = () =>
    !document.getElementById("charts") || document.body.dataset.charts === "drawn";
  const seen = new MutationObserver(() => {
    if (ready() && !window.__ready) window.__ready = performance.now();
    if (!ready() || !drawn() || window.__drawn) return;
    window.__drawn = performance.now();
    seen.disconnect();
    requestAnimationFrame(() => setTimeout(() => { window.__painted = performance.now(); }, 0));
  });
  seen.observe(document, {subtree: true, attributes: true,
    attributeFilter: ["data-ready", "data-charts"]});
})();
"""
CHART_SCRIPTS = ("// https://d3js.org", "// @observablehq/plot", "// The report's charts")


def stamp(seconds: float) -> str:
    return (CREATED + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def write_batch(batch: Path, runs: int, samples: int) -> None:
    """A finished batch written straight through the records API (as tests/report_batches.py
    fakes one): every run's attempt dir with its samples and result.json; every 20th run
    failed (a stderr.log), every 40th of those succeeded on a second attempt."""
    rng = random.Random(24)
    free = [0.0] * SLOTS  # when each slot of the pool is next free
    records: dict[str, RunRecord] = {}
    for i in range(runs):
        run_id = f"job{i % 4}-v{i % 10}-{'large' if i % 3 else 'small'}-r{i}"
        matrix = {"V": str(i % 10), "MODEL": "large" if i % 3 else "small"}
        tries = 2 if i % 800 == 0 else 1
        attempts = []
        after = 0.0  # a retry starts after the attempt before it ended
        for number in range(1, tries + 1):
            failed = i % 20 == 0 and number == 1
            slot = min(range(SLOTS), key=free.__getitem__)
            start = max(free[slot], after) + rng.uniform(0.05, 0.3)
            end = start + rng.lognormvariate(3.0, 0.6)
            free[slot] = after = end
            log_dir = batch / "runs" / run_id / f"attempt-{number}"
            write_attempt(log_dir, i, samples, failed, rng)
            attempts.append(attempt(number, log_dir, batch, (start, end), failed))
        records[run_id] = RunRecord(
            run_id=run_id,
            job=f"job{i % 4}",
            framework="plain",
            script="task.py",
            script_sha256="0" * 64,
            image="img:1",
            env=matrix,
            timeout=600,
            matrix=matrix,
            attempts=tuple(attempts),
        )
    write_manifest(batch, records, max(free))


def attempt(
    number: int, log_dir: Path, batch: Path, times: tuple[float, float], failed: bool
) -> Attempt:
    status: Status = "failed" if failed else "succeeded"
    outcome = AttemptOutcome(
        status=status,
        started_at=stamp(times[0]),
        ended_at=stamp(times[1]),
        exit_code=1 if failed else 0,
        error="script exited with code 1" if failed else None,
    )
    path = recorded_path(log_dir, batch)
    return Attempt(number=number, log_dir=path, started_at=stamp(times[0]), outcome=outcome)


def write_attempt(log_dir: Path, i: int, samples: int, failed: bool, rng: random.Random) -> None:
    log_dir.mkdir(parents=True)
    if failed:
        lines = "".join(f"error line {n} of run {i}\n" for n in range(40))
        (log_dir / STDERR_LOG).write_text(lines, encoding="utf-8")
        return
    rate = 0.2 + 0.06 * (i % 10)  # each V refuses at its own rate
    rows = [
        {"sample_id": s, "refused": rng.random() < rate, "score": round(rng.gauss(i % 7, 1), 3)}
        for s in range(samples)
    ]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (log_dir / SAMPLES).write_text(text, encoding="utf-8")
    (log_dir / RESULT).write_text(json.dumps({"score": i % 7}), encoding="utf-8")


def write_manifest(batch: Path, records: dict[str, RunRecord], last: float) -> None:
    manifest = Manifest(
        batch_id="open-1",
        batch_dir=str(batch),
        jobs_file=JobsFileRecord(path="/x/jobs.yaml", sha256="0" * 64),
        created_at=stamp(0),
        runs=records,
        images={"img:1": ImageRecord(tag="img:1", framework="plain", status="cached")},
        updated_at=stamp(last),
        finished_at=stamp(last),
        state="finished",
    )
    with SafeDir(batch) as safe:
        safe.write(MANIFEST, encode(manifest, indent=False))


def without_charts(html: str) -> str:
    """The report as it was before its charts: no charts section, no chart scripts."""
    html = re.sub(r'<section id="charts">.*?</section>\n*', "", html, count=1, flags=re.S)
    removed: list[str] = []

    def drop(script: re.Match[str]) -> str:
        if not any(marker in script.group(1)[:2000] for marker in CHART_SCRIPTS):
            return script.group(0)
        removed.append(script.group(1)[:20])
        return ""

    kept = re.sub(r"<script>(.*?)</script>\n?", drop, html, flags=re.S)
    if len(removed) != len(CHART_SCRIPTS):
        raise SystemExit(f"chart scripts found: {removed}; has the template changed?")
    return kept


def browser(profile: Path) -> Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


Figures = tuple[float, float, float]  # seconds from navigation start: table, charts, painted


def open_once(page: Path, profile: Path) -> Figures:
    """Seconds from navigation start until the run table is ready, until the charts are drawn
    too (the same moment on a page without charts), and until the frame after that."""
    driver = browser(profile)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        driver.get(page.as_uri())
        WebDriverWait(driver, PATIENCE_SECONDS).until(
            lambda d: d.execute_script("return window.__painted") is not None
        )
        marks = driver.execute_script("return [window.__ready, window.__drawn, window.__painted]")
        log: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
        errors = [e for e in log if e["level"] == "SEVERE"]
        if errors:
            raise SystemExit(f"console errors on {page.name}: {errors}")
        ready, drawn, painted = (float(mark) / 1000 for mark in marks)
        return ready, drawn, painted
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=50, help="per run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sab-report-open-") as tmp:
        batch = Path(tmp) / "batch"
        batch.mkdir()
        started = time.perf_counter()
        write_batch(batch, args.runs, args.samples)
        made = time.perf_counter() - started
        started = time.perf_counter()
        charts = write_report(batch).html
        written = time.perf_counter() - started
        plain = Path(tmp) / "report-without-charts.html"
        plain.write_text(without_charts(charts.read_text("utf-8")), encoding="utf-8")
        print(f"{args.runs} runs, {args.runs * args.samples} samples: batch made in {made:.1f} s,"
              f" report written in {written:.1f} s; pages {mib(charts):.2f} MiB with charts,"
              f" {mib(plain):.2f} MiB without")  # fmt: skip
        times: dict[str, list[Figures]] = {"with charts": [], "without charts": []}
        for round_ in range(args.rounds):
            for name, page in (("with charts", charts), ("without charts", plain)):
                figures = open_once(page, Path(tmp) / f"profile-{round_}-{len(times[name])}")
                times[name].append(figures)
                print(f"round {round_ + 1}, {name}: {show(figures)}")
        for name, rounds in times.items():
            medians = tuple(statistics.median(f[i] for f in rounds) for i in range(3))
            print(f"median of {args.rounds}, {name}: {show(medians)}")  # type: ignore[arg-type]


def show(figures: Figures) -> str:
    ready, drawn, painted = figures
    return f"table ready {ready:.2f} s, charts drawn {drawn:.2f} s, painted {painted:.2f} s"


def mib(path: Path) -> float:
    return path.stat().st_size / 1024**2


if __name__ == "__main__":
    main()
