"""How builds show as they go (cli/builds.py), with a clock of the test's: a line when one
starts, its output at most every 10 s off a terminal, a live line on one, a line at the end;
and that a batch tells its reporter about the builds it makes."""

from __future__ import annotations

import io
from collections.abc import Callable

from conftest import Project
from fakes import FakeBackend

from safeagents_batch.cli.builds import CLEAR_LINE, EVERY_SECONDS, BuildDisplay
from safeagents_batch.execution.batch import run_batch
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.records.model import ImageRecord

TAG = "safeagents-runtime:web-0123456789ab"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeBar:
    """The part of a tqdm bar the display uses."""

    def __init__(self) -> None:
        self.fp = io.StringIO()
        self.descriptions: list[str] = []

    def set_description_str(self, text: str, refresh: bool = True) -> None:
        self.descriptions.append(text)

    def write(self, text: str, file: io.StringIO) -> None:
        file.write(text + "\n")


def built(seconds: float = 31.24) -> ImageRecord:
    return ImageRecord(
        tag=TAG, framework="web", status="built", build_seconds=seconds, build_log="x.log"
    )


def test_off_a_terminal_a_build_is_a_start_line_its_steps_every_10_s_and_an_end_line() -> None:
    clock, stream = Clock(), io.StringIO()
    display = BuildDisplay(stream, live=False, clock=clock, later=Later())

    display.started(TAG)
    for second, line in enumerate(["Step 1/9 : FROM python", "Step 2/9 : ENV X=1"] * 20):
        clock.now = 100.0 + second  # a line a second for 40 s
        display.output(TAG, line)
    display.finished(built())

    lines = stream.getvalue().splitlines()
    assert lines[0] == f"building {TAG}"
    assert lines[1:-1] == [
        f"building {TAG} (10s): Step 1/9 : FROM python",
        f"building {TAG} (20s): Step 1/9 : FROM python",
        f"building {TAG} (30s): Step 1/9 : FROM python",
    ]
    assert lines[-1] == f"built   {TAG} in 31.2s"
    assert EVERY_SECONDS == 10.0
    assert CLEAR_LINE not in stream.getvalue()


class Later:
    """The display's timer, fired by the test."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, seconds: float, function: Callable[[], None]) -> None:
        self.due.append((seconds, function))


def test_a_line_held_back_is_shown_when_its_time_comes() -> None:
    """A step that starts 3 s after the last line shown, then a minute of silence: the
    step is shown 10 s after that line, not when the next output comes."""
    clock, stream, later = Clock(), io.StringIO(), Later()
    display = BuildDisplay(stream, live=False, clock=clock, later=later)
    display.started(TAG)
    clock.now += 10
    display.output(TAG, "Step 4/9 : COPY requirements.txt")  # shown: 10 s since the start
    clock.now += 3
    display.output(TAG, "Step 5/9 : RUN uv pip install")  # too soon: held
    display.output(TAG, "Resolved 143 packages")  # replaces it, one timer still
    [(seconds, fire)] = later.due
    assert seconds == 7
    clock.now += 7
    fire()
    assert stream.getvalue().splitlines()[1:] == [
        f"building {TAG} (10s): Step 4/9 : COPY requirements.txt",
        f"building {TAG} (13s): Resolved 143 packages",
    ]
    display.finished(built())
    fire()  # a timer of a build that ended shows nothing
    assert stream.getvalue().splitlines()[-1] == f"built   {TAG} in 31.2s"


def test_two_builds_at_once_are_paced_each_on_its_own() -> None:
    clock, stream = Clock(), io.StringIO()
    display = BuildDisplay(stream, live=False, say_end=False, clock=clock, later=Later())
    other = "safeagents-runtime:web-ba9876543210"
    display.started(TAG)
    clock.now += 5
    display.started(other)
    clock.now += 6
    display.output(TAG, "a")  # 11 s into its build: shown
    display.output(other, "b")  # 6 s into its build: not yet
    display.finished(built())
    assert stream.getvalue().splitlines() == [
        f"building {TAG}",
        f"building {other}",
        f"building {TAG} (11s): a",
    ]


def test_on_a_terminal_each_line_rewrites_one_live_line() -> None:
    clock, stream = Clock(), io.StringIO()
    display = BuildDisplay(stream, live=True, clock=clock)
    display.started(TAG)
    display.output(TAG, "Step 1/9 : FROM python")
    clock.now += 3
    display.output(TAG, "Resolved 143 packages in 2.1s\x1b")
    display.finished(built())
    assert stream.getvalue() == (
        f"{CLEAR_LINE}building {TAG}\n"
        f"{CLEAR_LINE}building {TAG} (0s): Step 1/9 : FROM python"
        f"{CLEAR_LINE}building {TAG} (3s): Resolved 143 packages in 2.1s\\x1b"
        f"{CLEAR_LINE}"
        f"{CLEAR_LINE}built   {TAG} in 31.2s\n"
    )


def test_under_a_progress_bar_the_live_line_is_the_bars_description() -> None:
    bar, stream = FakeBar(), io.StringIO()
    display = BuildDisplay(stream, live=True, bar=lambda: bar, clock=Clock())
    display.started(TAG)
    display.output(TAG, "Step 3/9 : RUN uv pip install")
    display.finished(built())
    assert bar.descriptions[0].startswith("building web-0123456789ab (0s): Step")
    assert bar.descriptions[-1] == ""
    assert bar.fp.getvalue() == f"building {TAG}\nbuilt   {TAG} in 31.2s\n"
    assert stream.getvalue() == ""  # nothing written under the bar's feet


def test_a_batch_tells_its_reporter_about_each_build(project: Project) -> None:
    path = project.jobs(
        "version: 1\nframeworks:\n  plain: {packages: []}\n"
        "jobs:\n  - {name: a, framework: plain, scripts: scripts/a.py, repeat: 3}\n"
    )
    jobs_file, specs = load_and_expand(path)
    reporter = CollectingReporter()
    run_batch(jobs_file, specs, FakeBackend(), reporter)
    [tag] = {tag for tag, _ in reporter.builds}
    assert reporter.builds == [
        (tag, "started"),
        (tag, "Step 1/1 : FROM fake"),
        (tag, "built"),
    ]  # one build for the three runs, told once


def test_a_batch_shows_its_builds_on_one_display(tmp_path: object) -> None:
    """Builds at once share one lock and one live line."""
    from safeagents_batch.cli.output import ConsoleReporter

    reporter = ConsoleReporter(bar=False)
    assert reporter.build_progress() is reporter.build_progress()


def test_run_and_rerun_take_report_seconds() -> None:
    from safeagents_batch.cli.main import build_parser
    from safeagents_batch.cli.options import reporter

    for command in (["run", "jobs.yaml"], ["rerun", "batch-dir"]):
        args = build_parser().parse_args([*command, "--report", "15"])
        assert reporter(args).report_every == 15
        assert reporter(build_parser().parse_args(command)).report_every is None
