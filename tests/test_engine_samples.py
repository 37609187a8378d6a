"""Samples on the Docker engine: a script writes 50 samples a run over a 2 x 2 matrix; the
batch's samples.csv holds every one, its matrix shows each cell's n, mean and interval, and
`report --compare` marks the one cell whose refusal rate moved by 0.5, and none against an
identical rerun."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import docker
import pytest
from engine_fixtures import PLAIN_FRAMEWORK_YAML, only_batch, write_project

from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import EXIT_OK

pytestmark = pytest.mark.docker

# Refuses samples i < rate * 50: 0.2 everywhere, HARMFUL_RATE in the harmful/small cell.
SCRIPT = """\
import json, os
cell = (os.environ["VARIANT"], os.environ["MODEL"])
rate = float(os.environ["HARMFUL_RATE"]) if cell == ("harmful", "small") else 0.2
with open("/safeagents/logs/results.jsonl", "w") as out:
    for i in range(50):
        sample = {"sample_id": f"task-{i}", "refused": i < rate * 50, "score": i % 7}
        out.write(json.dumps(sample) + "\\n")
"""


def run_batch(tmp_path: Path, image_name: str, name: str, harmful_rate: float) -> Path:
    text = (
        f"version: 1\nname: {name}\nimage_name: {image_name}\n{PLAIN_FRAMEWORK_YAML}"
        "jobs:\n  - name: eval\n    framework: plain\n    scripts: [tasks.py]\n"
        f"    env: {{HARMFUL_RATE: '{harmful_rate}'}}\n"
        "    matrix: {VARIANT: [benign, harmful], MODEL: [small, large]}\n"
    )
    jobs = write_project(tmp_path / name, text, {"tasks.py": SCRIPT})
    assert main(["run", str(jobs), "--no-progress"]) == EXIT_OK
    batch = only_batch(jobs.parent / "logs")
    return batch


def compare(batch: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:  # type: ignore[type-arg]
    capsys.readouterr()
    assert main(["report", str(batch), "--compare", str(baseline), "--json"]) == EXIT_OK
    means: list[dict] = json.loads(capsys.readouterr().out)["means"]  # type: ignore[type-arg]
    return means


@pytest.mark.usefixtures("engine")
def test_samples_are_rows_and_a_moved_rate_is_marked_against_noise(
    docker_client: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = run_batch(tmp_path, fresh_image_name, "first", 0.2)
    moved = run_batch(tmp_path, fresh_image_name, "moved", 0.7)
    again = run_batch(tmp_path, fresh_image_name, "again", 0.2)

    with (first / "samples.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 50 * 4
    assert {(r["VARIANT"], r["MODEL"]) for r in rows} == {
        ("benign", "small"),
        ("benign", "large"),
        ("harmful", "small"),
        ("harmful", "large"),
    }
    assert {r["status"] for r in rows} == {"succeeded"} and rows[0]["sample_id"] == "task-0"

    page = (first / "report.html").read_text("utf-8")
    assert page.count('<div class="mean" data-field="refused">') == 4
    assert "n=50" in page and '<span class="ci">[' in page and "means over samples" in page

    marked = [m for m in compare(moved, first, capsys) if m["excludes_zero"]]
    assert [(m["cell"], m["field"]) for m in marked] == [
        ({"VARIANT": "harmful", "MODEL": "small"}, "refused")
    ]
    [change] = marked
    assert change["delta"] == pytest.approx(0.5)
    assert change["before"]["n"] == change["after"]["n"] == 50
    assert change["delta_low"] > 0 and change["method"] == "wilson"

    assert [m for m in compare(again, first, capsys) if m["excludes_zero"]] == []
