"""Staged code and the sink, on a real engine: what a container sees under /safeagents/code,
which code each attempt ran, and what a hostile script can leave in the batch dir."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest
from engine_fixtures import PLAIN_FRAMEWORK_YAML, write_project
from test_engine_batch import load_valid_manifest, only_batch_dir, runs_by_id

from safeagents_batch.backends.docker.images import DockerImages
from safeagents_batch.cli import main as cli
from safeagents_batch.core import labels
from safeagents_batch.core.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNS_FAILED
from safeagents_batch.jobs.model import ImageConfig
from safeagents_batch.staging.images import image_spec, write_build_context

pytestmark = pytest.mark.docker

LIST_CODE = (
    "import os\n"
    "for root, dirs, files in os.walk('/safeagents/code'):\n"
    "    dirs.sort()\n"
    "    for name in sorted(files):\n"
    "        print('FILE', os.path.relpath(os.path.join(root, name), '/safeagents/code'))\n"
)


def header(image_name: str) -> str:
    return f"version: 1\nname: seam\nimage_name: {image_name}\n" + PLAIN_FRAMEWORK_YAML


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def shipped(batch_dir: Path, run: dict[str, Any]) -> list[str]:
    text = (batch_dir / run["log_dir"] / "stdout.log").read_text(encoding="utf-8")
    return [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("FILE ")]


def test_a_private_script_dir_runs_and_ships_only_its_code(
    engine: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Scripts in a 0700 dir (files 0600) beside the jobs file, the batch output dir, a .git
    dir and a .gitignore'd file: the run succeeds with no chmod, and the container sees the
    scripts, the helper and the .gitignore only."""
    jobs_yaml = (
        header(fresh_image_name) + "jobs:\n  - {name: ls, framework: plain, scripts: list.py}\n"
    )
    jobs = write_project(
        tmp_path / "proj",
        jobs_yaml,
        {
            "list.py": LIST_CODE,
            "helper.py": "X = 1\n",
            ".gitignore": "secret-notes.txt\n",
            "secret-notes.txt": "not for containers\n",
            ".git/config": "[core]\n",
        },
    )
    project = jobs.parent
    for path in project.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    project.chmod(0o700)
    # An earlier batch's output beside the scripts (the default `./logs`).
    (project / "logs" / "old-batch").mkdir(parents=True)
    (project / "logs" / "old-batch" / "console.log").write_text("an old run\n")

    code, out = run(["run", str(jobs)], capsys)

    assert code == EXIT_OK, out
    batch_dir = only_batch_dir(project / "logs")
    manifest = load_valid_manifest(batch_dir)
    listed = shipped(batch_dir, runs_by_id(manifest)["ls-list"])
    assert listed == [".gitignore", "helper.py", "list.py"]


def test_each_attempt_records_the_code_it_ran_and_rerun_takes_the_code_as_it_is_now(
    engine: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jobs_yaml = header(fresh_image_name) + "jobs:\n  - {name: v, framework: plain, scripts: v.py}\n"
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"v.py": "print('version one')\n"})
    out_dir = tmp_path / "out"
    assert run(["run", str(jobs), "-o", str(out_dir)], capsys)[0] == EXIT_OK
    batch_dir = only_batch_dir(out_dir)

    (jobs.parent / "v.py").write_text("print('version two')\n")
    code, out = run(["rerun", str(batch_dir), "--all"], capsys)

    assert code == EXIT_OK, out
    attempts = runs_by_id(load_valid_manifest(batch_dir))["v-v"]["attempts"]
    digests = [a["code_digest"] for a in attempts]
    assert len(digests) == 2 and digests[0] != digests[1]
    for attempt, version in zip(attempts, ("one", "two"), strict=True):
        snapshot = batch_dir / "code" / attempt["code_digest"]
        assert f"version {version}" in (snapshot / "v.py").read_text()
        assert f"version {version}" in (batch_dir / attempt["log_dir"] / "stdout.log").read_text()


HOSTILE = """\
import os
logs = '/safeagents/logs'
os.mkfifo(os.path.join(logs, 'result.json'))
os.symlink('/etc/shadow', os.path.join(logs, 'shadow'))
os.symlink('/', os.path.join(logs, 'root'))
os.mkdir(os.path.join(logs, 'nested'))
with open(os.path.join(logs, 'nested', 'score.txt'), 'w') as f:
    f.write('0.75')
with open(os.path.join(logs, 'sparse.bin'), 'wb') as f:
    f.truncate(5 * 1024 ** 3)
print('planted')
"""


def test_a_hostile_script_leaves_regular_files_only_and_the_record_says_what_was_dropped(
    engine: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jobs_yaml = header(fresh_image_name) + "jobs:\n  - {name: h, framework: plain, scripts: h.py}\n"
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"h.py": HOSTILE})
    out_dir = tmp_path / "out"

    code, out = run(["run", str(jobs), "-o", str(out_dir)], capsys)

    assert code == EXIT_OK, out
    batch_dir = only_batch_dir(out_dir)
    attempt = runs_by_id(load_valid_manifest(batch_dir))["h-h"]["attempts"][0]
    dropped = "\n".join(attempt["dropped_artifacts"])
    for name in ("result.json: a FIFO", "shadow: a symbolic link", "root: a symbolic link"):
        assert name in dropped
    assert "sparse.bin: 5.0 GiB, over the artifact limit of 1.0 GiB" in dropped
    kinds = {
        p.relative_to(batch_dir).as_posix(): stat.S_IFMT(p.lstat().st_mode)
        for p in batch_dir.rglob("*")
    }
    assert {k for k, v in kinds.items() if v not in (stat.S_IFREG, stat.S_IFDIR)} == set()
    log_dir = batch_dir / attempt["log_dir"]
    assert (log_dir / "nested" / "score.txt").read_text() == "0.75"
    assert not (log_dir / "sparse.bin").exists()
    # `zip -r` of the batch dir now follows no link out of it (it has none): a real archiver.
    archive = tmp_path / "batch.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(batch_dir), "."], check=True)
    assert archive.stat().st_size < 10 * 1024**2


# The script output. `before`: a 5 GiB sparse file and 20,000 empty files, then (in
# the archive's order: docker sorts names) a small result.json holding a 400-digit integer and
# a formula. `capped`: the result, then 20,000 empty files under a 1 MiB cap.
FLOOD = """\
import json, os, sys
logs = '/safeagents/logs'
if sys.argv[0].endswith('before.py'):
    with open(os.path.join(logs, 'a-sparse.bin'), 'wb') as f:
        f.truncate(5 * 1024 ** 3)
empty = os.path.join(logs, 'b-empty' if sys.argv[0].endswith('before.py') else 'z-empty')
os.mkdir(empty)
for i in range(20000):
    open(os.path.join(empty, f'e{i:05d}'), 'w').close()
with open(os.path.join(logs, 'result.json'), 'w') as f:
    json.dump({'big': int('9' * 400), 'note': '=HYPERLINK("http://x")', 'score': 0.5}, f)
print('flooded')
"""


def test_a_flood_of_output_keeps_the_small_result_and_the_report_renders(
    engine: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jobs_yaml = header(fresh_image_name) + (
        "jobs:\n"
        "  - {name: f, framework: plain, scripts: before.py, max_artifacts_files: 25000}\n"
        "  - {name: g, framework: plain, scripts: capped.py, max_artifacts_size: 1m}\n"
    )
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"before.py": FLOOD, "capped.py": FLOOD})
    out_dir = tmp_path / "out"

    code, out = run(["run", str(jobs), "-o", str(out_dir)], capsys)

    assert code == EXIT_OK, out
    batch_dir = only_batch_dir(out_dir)
    runs = runs_by_id(load_valid_manifest(batch_dir))
    # `before`: the sparse file is skipped, the 20,000 files and the result after it kept.
    attempt = runs["f-before"]["attempts"][0]
    log_dir = batch_dir / attempt["log_dir"]
    assert attempt["dropped_artifacts"] == [
        "a-sparse.bin: 5.0 GiB, over the artifact limit of 1.0 GiB "
        "(archive bytes, headers included)"
    ]
    assert not (log_dir / "a-sparse.bin").exists()
    assert len(os.listdir(log_dir / "b-empty")) == 20_000
    assert json.loads((log_dir / "result.json").read_text())["big"] == int("9" * 400)
    # `capped`: empty files count by their headers: 1 MiB holds about 2,000 of the 20,000;
    # the rest are listed (the first 100, then a count) and not one is lost from the count.
    attempt = runs["g-capped"]["attempts"][0]
    log_dir = batch_dir / attempt["log_dir"]
    dropped = attempt["dropped_artifacts"]
    kept = len(os.listdir(log_dir / "z-empty"))
    assert 1_000 < kept < 2_100
    assert len(dropped) == 101
    assert all(line.startswith("z-empty/e") for line in dropped[:100])
    not_listed = int(dropped[-1].removeprefix("... and ").removesuffix(" more entries not kept"))
    assert kept + 100 + not_listed == 20_000
    assert json.loads((log_dir / "result.json").read_text())["score"] == 0.5
    # The report renders; the table carries the big number exactly, the formula as text.
    # (it shows means of numeric fields: the score's, not the big number's, which is skipped)
    html = (batch_dir / "report.html").read_text(encoding="utf-8")
    assert '"f-before"' in html and "score" in html and "9" * 400 not in html
    with (batch_dir / "results.csv").open(newline="", encoding="utf-8") as table:
        rows = list(csv.DictReader(table))
    assert [row["big"] for row in rows] == ["9" * 400] * 2
    assert [row["note"] for row in rows] == ['\'=HYPERLINK("http://x")'] * 2
    for line in (batch_dir / "results.jsonl").read_text(encoding="utf-8").splitlines():
        assert json.loads(line)["note"] == '=HYPERLINK("http://x")'
    assert cli.main(["report", str(batch_dir)]) == EXIT_OK


def test_code_over_the_cap_is_one_line_exit_2_and_nothing_runs(
    engine: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jobs_yaml = (
        header(fresh_image_name)
        + "jobs:\n  - {name: big, framework: plain, scripts: s.py, max_code_size: 64k}\n"
    )
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"s.py": "print()\n"})
    with open(jobs.parent / "weights.bin", "wb") as handle:
        handle.truncate(1024**2)
    out_dir = tmp_path / "out"

    code = cli.main(["run", str(jobs), "-o", str(out_dir), "--no-progress"])

    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert len(err.strip().splitlines()) == 1 and "weights.bin 1.0 MiB" in err, err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []  # no batch, so no run


def test_a_failing_script_still_hands_back_what_it_wrote(
    engine: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = "open('/safeagents/logs/partial.json', 'w').write('{}')\nraise SystemExit(4)\n"
    jobs_yaml = header(fresh_image_name) + "jobs:\n  - {name: f, framework: plain, scripts: f.py}\n"
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"f.py": script})

    code, out = run(["run", str(jobs), "-o", str(tmp_path / "out")], capsys)

    assert code == EXIT_RUNS_FAILED, out
    batch_dir = only_batch_dir(tmp_path / "out")
    run_record = runs_by_id(load_valid_manifest(batch_dir))["f-f"]
    assert run_record["exit_code"] == 4
    assert (batch_dir / run_record["log_dir"] / "partial.json").read_text() == "{}"
    assert os.stat(batch_dir / run_record["log_dir"] / "partial.json").st_uid == os.getuid()


def test_a_cached_image_without_package_labels_is_frozen_once_and_labelled(
    engine: docker.DockerClient, fresh_image_name: str, tmp_path: Path
) -> None:
    """An image built before packages were recorded costs one freeze container, once: the
    labels it then gets answer every later batch."""
    spec = image_spec(ImageConfig(framework="plain", packages=(), image_name=fresh_image_name))
    context = tmp_path / "context"
    write_build_context(spec, context)
    # No label step, and no build cache: other tests remove their images (and parents) freely.
    engine.images.build(path=str(context), tag=spec.tag, pull=False, rm=True, nocache=True)
    assert labels.PACKAGES not in (engine.images.get(spec.tag).labels or {})

    outcome = DockerImages(engine, tmp_path / "logs").ensure(spec)

    assert outcome.status == "cached"
    assert any(line.startswith("pip==") for line in outcome.packages)
    recorded = json.loads(engine.images.get(spec.tag).labels[labels.PACKAGES])
    assert recorded == list(outcome.packages)
