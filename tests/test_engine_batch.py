"""Engine tests of the execution layer: `run`, `build`-on-demand, `status` on a real Docker engine.

Every test here needs a Docker engine and is marked `docker`; a missing engine fails the test
(see engine_fixtures). Images built from test-only configurations carry a repository name unique
to the test and are removed at its end; the built-in openai-agents image is kept for reuse.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import jsonschema
import pytest
from engine_fixtures import remove_repository, write_project

from safeagents_batch.backends.docker.backend import batch_container_ids
from safeagents_batch.cli import main as cli
from safeagents_batch.core.errors import EXIT_ENGINE_UNAVAILABLE, EXIT_OK, EXIT_RUNS_FAILED
from safeagents_batch.execution.sink import LocalSink

pytestmark = pytest.mark.docker

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "manifest.schema.json"
MISSING_PACKAGE = "safeagents-batch-no-such-package-xyz"
MIB = 1024 * 1024


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def image_name(docker_client: docker.DockerClient) -> Iterator[str]:
    """A repository name no image has yet: every image of the test is built fresh, then removed."""
    name = f"sab-engine-test-{secrets.token_hex(4)}"
    yield name
    remove_repository(docker_client, name)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def only_batch_dir(output_dir: Path) -> Path:
    dirs = [d for d in output_dir.iterdir() if (d / "manifest.json").is_file()]
    assert len(dirs) == 1, f"expected one batch dir under {output_dir}, found {dirs}"
    return dirs[0]


def load_valid_manifest(batch_dir: Path) -> dict[str, Any]:
    """The manifest, checked against the schema shipped with the tool."""
    data: dict[str, Any] = json.loads((batch_dir / "manifest.json").read_text(encoding="utf-8"))
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(data)
    return data


def runs_by_id(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in manifest["runs"]}


def images_by_framework(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["framework"]: i for i in manifest["images"]}


def counts(manifest: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in manifest["summary"].items() if v and k != "total"}


def build_logs(batch_dir: Path) -> list[Path]:
    return sorted((batch_dir / "images").glob("*.log")) if (batch_dir / "images").is_dir() else []


# -- 1. a mixed batch across two frameworks -----------------------------------------------------

MIXED_SCRIPTS = {
    "scripts/ok.py": (
        "import os, pathlib\n"
        "logs = pathlib.Path('/safeagents/logs')\n"
        "(logs / 'artifacts').mkdir()\n"
        "(logs / 'artifacts' / 'result.txt').write_text(os.environ.get('X', 'none'))\n"
        "print('ok', os.environ.get('X', ''))\n"
    ),
    "scripts/uses_helper.py": "from helpers import helper\nprint(helper.NAME)\n",
    "scripts/exit3.py": "print('about to fail', flush=True)\nraise SystemExit(3)\n",
    "scripts/stderr_writer.py": (
        "import json, os, sys\n"
        "print('plain stdout line')\n"
        "print('STDERR-MARKER-7d1f only on stderr', file=sys.stderr)\n"
        # The seed's name of the logs dir (SafeAgents' Docker examples write there).
        "os.makedirs('/SafeAgents/logs', exist_ok=True)\n"
        "json.dump({'seed_path': 1}, open('/SafeAgents/logs/result.json', 'w'))\n"
    ),
    "scripts/sleeper.py": "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n",
    "helpers/helper.py": "NAME = 'helper from source_dirs'\n",
}


def mixed_jobs_yaml(image_name: str, plain2_extra: str = "[]") -> str:
    """12 runs: 10 succeed, exit3 fails with 3, sleeper times out. `plain2` copies a source dir,
    so its Dockerfile (and image) differs from `plain`'s while both build in seconds."""
    return f"""\
version: 1
name: mixed
image_name: {image_name}
workers: 4
frameworks:
  plain: {{packages: []}}
  plain2: {{packages: [], additional_packages: {plain2_extra}, source_dirs: [helpers]}}
jobs:
  - name: ok
    framework: plain
    scripts: scripts/ok.py
    matrix: {{X: [a, b, c, d, e]}}
  - name: helper
    framework: plain2
    scripts: scripts/uses_helper.py
    repeat: 4
  - name: bad
    framework: plain
    scripts: scripts/exit3.py
  - name: noisy
    framework: plain2
    scripts: scripts/stderr_writer.py
  - name: slow
    framework: plain
    scripts: scripts/sleeper.py
    timeout: 2
"""


@pytest.mark.docker
def test_mixed_batch_statuses_logs_cleanup_and_ownership(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jobs = write_project(tmp_path / "proj", mixed_jobs_yaml(image_name), MIXED_SCRIPTS)
    out_dir = tmp_path / "out"

    code, stdout, _ = run_cli(["run", str(jobs), "-o", str(out_dir), "--no-progress"], capsys)

    assert code == EXIT_RUNS_FAILED, stdout
    batch_dir = only_batch_dir(out_dir)
    manifest = load_valid_manifest(batch_dir)
    assert manifest["state"] == "finished"
    assert manifest["summary"]["total"] == 12
    assert counts(manifest) == {"succeeded": 10, "failed": 1, "timed_out": 1}
    runs = runs_by_id(manifest)
    assert runs["bad-exit3"]["status"] == "failed"
    assert runs["bad-exit3"]["exit_code"] == 3
    assert runs["slow-sleeper"]["status"] == "timed_out"
    assert {i["status"] for i in manifest["images"]} == {"built"}
    assert len({i["tag"] for i in manifest["images"]}) == 2

    noisy = batch_dir / runs["noisy-stderr_writer"]["log_dir"]
    assert "STDERR-MARKER-7d1f" in (noisy / "stderr.log").read_text()
    assert "STDERR-MARKER-7d1f" in (noisy / "console.log").read_text()
    assert "STDERR-MARKER-7d1f" not in (noisy / "stdout.log").read_text()
    assert json.loads((noisy / "result.json").read_text()) == {"seed_path": 1}
    assert "plain stdout line" in (noisy / "stdout.log").read_text()
    assert (
        "helper from source_dirs"
        in (batch_dir / runs["helper-uses_helper-r1"]["log_dir"] / "stdout.log").read_text()
    )
    assert (batch_dir / runs["ok-ok-c"]["log_dir"] / "artifacts" / "result.txt").read_text() == "c"

    assert batch_container_ids(engine, manifest["batch_id"]) == []
    uid = os.getuid()
    not_ours = [str(p) for p in [batch_dir, *batch_dir.rglob("*")] if p.lstat().st_uid != uid]
    assert not_ours == []
    # The manifest is as readable as the logs and the jobs snapshot next to it.
    mode = (batch_dir / "jobs.yaml").stat().st_mode & 0o777
    assert (batch_dir / "manifest.json").stat().st_mode & 0o777 == mode


# -- 2. image cache: nothing rebuilt, then only the changed image -------------------------------


@pytest.mark.docker
def test_second_run_builds_nothing_and_a_changed_framework_rebuilds_alone(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scripts = {
        **MIXED_SCRIPTS,
        "scripts/uses_six.py": "import six\nprint('six', six.__version__)\n",
    }
    jobs = write_project(tmp_path / "proj", mixed_jobs_yaml(image_name), scripts)

    def run(output: str) -> tuple[Path, dict[str, Any]]:
        run_cli(
            ["run", str(jobs), "-o", str(tmp_path / output), "--no-progress", "--only", "[oh]*"],
            capsys,
        )  # jobs ok and helper: all succeed
        batch_dir = only_batch_dir(tmp_path / output)
        return batch_dir, load_valid_manifest(batch_dir)

    first_dir, first = run("first")
    assert {f: i["status"] for f, i in images_by_framework(first).items()} == {
        "plain": "built",
        "plain2": "built",
    }
    assert len(build_logs(first_dir)) == 2

    again_dir, again = run("again")
    assert {f: i["status"] for f, i in images_by_framework(again).items()} == {
        "plain": "cached",
        "plain2": "cached",
    }
    assert build_logs(again_dir) == []
    assert counts(again) == {"succeeded": 9}

    jobs.write_text(
        mixed_jobs_yaml(image_name, plain2_extra="[six]")
        + "  - name: hassix\n    framework: plain2\n    scripts: scripts/uses_six.py\n"
    )
    changed_dir, changed = run("changed")
    images = images_by_framework(changed)
    assert images["plain"]["status"] == "cached"
    assert images["plain"]["tag"] == images_by_framework(first)["plain"]["tag"]
    assert images["plain2"]["status"] == "built"
    assert images["plain2"]["tag"] != images_by_framework(first)["plain2"]["tag"]
    assert build_logs(changed_dir) == [changed_dir / images["plain2"]["build_log"]]
    assert counts(changed) == {"succeeded": 10}
    six_run = runs_by_id(changed)["hassix-uses_six"]
    assert "six 1." in (changed_dir / six_run["log_dir"] / "stdout.log").read_text()


# -- 3. 200 MB of output with flat orchestrator memory ------------------------------------------


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


class RssSampler(threading.Thread):
    """Samples this process's resident set while the batch runs; keeps the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kib = _rss_kib("VmRSS")
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak_kib = max(self.peak_kib, _rss_kib("VmRSS"))


@pytest.mark.docker
def test_200_mb_of_stdout_keeps_orchestrator_memory_flat(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    megabytes = 200
    script = (
        "import sys\n"
        f"line = b'y' * 1023 + b'\\n'\nblock = line * 1024\n"
        f"for _ in range({megabytes}):\n    sys.stdout.buffer.write(block)\n"
        "sys.stdout.buffer.flush()\n"
    )
    jobs_yaml = (
        f"version: 1\nimage_name: {image_name}\nframeworks:\n  plain: {{packages: []}}\n"
        "jobs:\n  - {name: flood, framework: plain, scripts: flood.py, timeout: 900}\n"
    )
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"flood.py": script})
    # Build first, so that the measurement covers the run alone.
    assert run_cli(["build", str(jobs)], capsys)[0] == EXIT_OK

    # Resets VmHWM to the current RSS (Linux >= 4.0), so the HWM after covers this run alone.
    Path("/proc/self/clear_refs").write_text("5")
    before_kib = _rss_kib("VmRSS")
    sampler = RssSampler()
    sampler.start()
    try:
        code, stdout, _ = run_cli(
            ["run", str(jobs), "-o", str(tmp_path / "out"), "--no-progress"], capsys
        )
    finally:
        sampler.stop.set()
        sampler.join()
    growth_mib = (sampler.peak_kib - before_kib) / 1024
    hwm_growth_mib = (_rss_kib("VmHWM") - before_kib) / 1024
    print(
        f"\nRSS before {before_kib / 1024:.1f} MiB, sampled peak {sampler.peak_kib / 1024:.1f} "
        f"MiB (+{growth_mib:.1f}), VmHWM +{hwm_growth_mib:.1f} MiB"
    )

    assert code == EXIT_OK, stdout
    batch_dir = only_batch_dir(tmp_path / "out")
    run = runs_by_id(load_valid_manifest(batch_dir))["flood-flood"]
    log_dir = batch_dir / run["log_dir"]
    assert (log_dir / "stdout.log").stat().st_size == megabytes * MIB
    assert (log_dir / "console.log").stat().st_size == megabytes * MIB
    assert (log_dir / "stderr.log").stat().st_size == 0
    assert growth_mib < 200, f"orchestrator RSS grew by {growth_mib:.0f} MiB"
    assert hwm_growth_mib < 200, f"orchestrator peak RSS grew by {hwm_growth_mib:.0f} MiB"


# -- 4. a real framework image from PyPI --------------------------------------------------------


@pytest.mark.docker
def test_openai_agents_image_builds_from_pypi_and_imports_agents(
    engine: docker.DockerClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = (
        "import agents\nfrom agents import Agent\nprint('agents imported from', agents.__file__)\n"
    )
    jobs_yaml = (
        "version: 1\njobs:\n"
        "  - {name: agents, framework: openai-agents, scripts: check.py, timeout: 300}\n"
    )
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"check.py": script})

    code, stdout, _ = run_cli(
        ["run", str(jobs), "-o", str(tmp_path / "out"), "--no-progress"], capsys
    )

    batch_dir = only_batch_dir(tmp_path / "out")
    manifest = load_valid_manifest(batch_dir)
    image = images_by_framework(manifest)["openai-agents"]
    # The image is kept between sessions: the first session builds it, later ones reuse it.
    assert image["status"] in ("built", "cached"), image
    if image["status"] == "built":
        log = (batch_dir / image["build_log"]).read_text()
        # The pip layer may come from the engine's build cache: then pip prints nothing.
        assert "openai-agents" in log and f"Successfully tagged {image['tag']}" in log
    assert code == EXIT_OK, stdout
    run = runs_by_id(manifest)["agents-check"]
    assert "agents imported from" in (batch_dir / run["log_dir"] / "stdout.log").read_text()


# -- 5. no engine -------------------------------------------------------------------------------


@pytest.mark.docker
def test_unreachable_engine_is_one_line_naming_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    socket = tmp_path / "no-such-dir" / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    jobs = write_project(
        tmp_path / "proj",
        "version: 1\nframeworks:\n  plain: {packages: []}\n"
        "jobs:\n  - {name: a, framework: plain, scripts: a.py}\n",
        {"a.py": "print('never runs')\n"},
    )

    code, stdout, stderr = run_cli(
        ["run", str(jobs), "-o", str(tmp_path / "out"), "--no-progress"], capsys
    )

    assert code == EXIT_ENGINE_UNAVAILABLE
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert str(socket) in lines[0]
    assert "Traceback" not in stderr + stdout
    assert not (tmp_path / "out").exists()  # nothing written when the engine is not there


# -- 6. status, and a failed build that fails only its own runs ---------------------------------


@pytest.mark.docker
def test_failed_build_errors_only_its_runs_and_status_reports_them(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jobs_yaml = f"""\
version: 1
name: halfbroken
image_name: {image_name}
frameworks:
  good: {{packages: []}}
  broken: {{packages: [], additional_packages: [{MISSING_PACKAGE}]}}
jobs:
  - {{name: fine, framework: good, scripts: ok.py, repeat: 3}}
  - {{name: doomed, framework: broken, scripts: ok.py, repeat: 2}}
"""
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"ok.py": "print('ok')\n"})

    code, stdout, _ = run_cli(
        ["run", str(jobs), "-o", str(tmp_path / "out"), "-j", "3", "--no-progress"], capsys
    )

    assert code == EXIT_RUNS_FAILED, stdout
    batch_dir = only_batch_dir(tmp_path / "out")
    manifest = load_valid_manifest(batch_dir)
    assert counts(manifest) == {"succeeded": 3, "error": 2}
    broken = images_by_framework(manifest)["broken"]
    assert broken["status"] == "failed"
    assert broken["build_log"].startswith("images/"), broken  # relative to the batch dir
    build_log = batch_dir / broken["build_log"]
    assert MISSING_PACKAGE in build_log.read_text()
    assert images_by_framework(manifest)["good"]["status"] == "built"
    runs = runs_by_id(manifest)
    for run_id in ("doomed-ok-r1", "doomed-ok-r2"):
        assert runs[run_id]["status"] == "error"
        assert str(build_log) in runs[run_id]["error"]
    for run_id in ("fine-ok-r1", "fine-ok-r2", "fine-ok-r3"):
        assert runs[run_id]["status"] == "succeeded"

    code, text, _ = run_cli(["status", str(batch_dir)], capsys)
    assert code == EXIT_RUNS_FAILED
    lines = text.splitlines()
    assert any(line.split() == ["succeeded", "3"] for line in lines), text
    assert any(line.split() == ["error", "2"] for line in lines), text
    assert any(line.split() == ["total", "5"] for line in lines), text
    for run_id in ("doomed-ok-r1", "doomed-ok-r2"):
        assert any(run_id in line and str(build_log) in line for line in lines), text
    assert "fine-ok" not in text

    code, text, _ = run_cli(["status", str(batch_dir), "--json"], capsys)
    assert code == EXIT_RUNS_FAILED
    status = json.loads(text)
    assert status["batch_id"] == manifest["batch_id"]
    assert status["summary"]["succeeded"] == 3
    assert status["summary"]["error"] == 2
    assert status["summary"]["total"] == 5
    assert sorted(r["run_id"] for r in status["not_succeeded"]) == ["doomed-ok-r1", "doomed-ok-r2"]
    for record in status["not_succeeded"]:
        assert record["status"] == "error"
        assert str(build_log) in record["error"]


# -- 7. one build, however many runs wait for it ------------------------------------------------


@pytest.mark.docker
def test_concurrent_runs_share_one_build(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jobs_yaml = (
        f"version: 1\nimage_name: {image_name}\nframeworks:\n  plain: {{packages: []}}\n"
        "jobs:\n  - {name: many, framework: plain, scripts: ok.py, repeat: 12}\n"
    )
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"ok.py": "print('ok')\n"})
    since = int(time.time()) - 1

    code, stdout, _ = run_cli(
        ["run", str(jobs), "-o", str(tmp_path / "out"), "-j", "4", "--no-progress"], capsys
    )

    until = int(time.time()) + 1
    assert code == EXIT_OK, stdout
    batch_dir = only_batch_dir(tmp_path / "out")
    manifest = load_valid_manifest(batch_dir)
    assert counts(manifest) == {"succeeded": 12}
    [image] = manifest["images"]
    assert image["status"] == "built"
    assert build_logs(batch_dir) == [batch_dir / image["build_log"]]
    log = (batch_dir / image["build_log"]).read_text()
    assert log.count(f"# building {image['tag']}") == 1
    # The engine's own record: one build tagged it twice (its Dockerfile, then the label step
    # that records its packages); a second build would make it four.
    events = engine.api.events(
        since=since, until=until, decode=True, filters={"type": "image", "event": "tag"}
    )
    tagged = [
        e for e in events if e.get("Actor", {}).get("Attributes", {}).get("name") == image["tag"]
    ]
    assert len(tagged) == 2, tagged


# -- found on the way: a log file that cannot be written ----------------------------------------


@pytest.mark.docker
def test_unwritable_log_ends_the_run_as_an_error_and_removes_its_container(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """stdout.log on a full disk (/dev/full: every write fails with ENOSPC) while the script
    keeps running: the run is an `error` naming the cause, its container is gone, and the
    attempt keeps its log dir; not an internal error after the engine's wait times out."""

    def full_stdout(self: LocalSink, chunk: bytes) -> None:
        with open("/dev/full", "wb") as full:
            full.write(chunk)
            full.flush()

    monkeypatch.setattr(LocalSink, "stdout", full_stdout)
    script = "import time\nprint('x' * 100_000, flush=True)\ntime.sleep(600)\n"
    jobs_yaml = (
        f"version: 1\nimage_name: {image_name}\nframeworks:\n  plain: {{packages: []}}\n"
        "jobs:\n  - {name: full, framework: plain, scripts: talk.py, timeout: 900}\n"
    )
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"talk.py": script})

    code, stdout, _ = run_cli(
        ["run", str(jobs), "-o", str(tmp_path / "out"), "--no-progress"], capsys
    )

    assert code == EXIT_RUNS_FAILED, stdout
    batch_dir = only_batch_dir(tmp_path / "out")
    manifest = load_valid_manifest(batch_dir)
    run = runs_by_id(manifest)["full-talk"]
    assert run["status"] == "error"
    assert "No space left on device" in run["error"]
    assert "internal error" not in run["error"]
    assert (batch_dir / run["log_dir"]).is_dir()
    assert batch_container_ids(engine, manifest["batch_id"]) == []


# -- found on the way: output reaches the log files while the script still runs ---------------


@pytest.mark.docker
def test_output_is_in_the_log_files_while_the_script_is_quiet(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A script prints one line on each stream, then stays quiet while a file exists in its
    code snapshot (a bind mount: the test deletes it on the host). Both lines must be in the
    log files meanwhile (`tail -f`, and an orchestrator killed now must not lose them)."""
    script = (
        "import os, sys, time\nprint('first out line', flush=True)\n"
        "print('first err line', file=sys.stderr, flush=True)\n"
        "while os.path.exists('/safeagents/code/hold'):\n    time.sleep(0.1)\n"
    )
    jobs_yaml = (
        f"version: 1\nimage_name: {image_name}\nframeworks:\n  plain: {{packages: []}}\n"
        "jobs:\n  - {name: quiet, framework: plain, scripts: quiet.py, timeout: 300}\n"
    )
    jobs = write_project(tmp_path / "proj", jobs_yaml, {"quiet.py": script, "hold": ""})
    out_dir = tmp_path / "out"
    outcome: list[int] = []
    batch = threading.Thread(
        target=lambda: outcome.append(
            cli.main(["run", str(jobs), "-o", str(out_dir), "--no-progress"])
        )
    )
    batch.start()

    def logged(name: str, text: str) -> bool:
        return any(text in p.read_text() for p in out_dir.glob(f"*/runs/*/*/{name}"))

    try:
        seen = False
        for _ in range(600):  # an upper bound for a hang (60 s), not a timing assertion
            seen = logged("stdout.log", "first out line") and logged("stderr.log", "first err line")
            if seen or not batch.is_alive():
                break
            time.sleep(0.1)
        still_running = batch.is_alive()
    finally:
        for held in out_dir.glob("*/code/*/hold"):
            held.unlink()
        batch.join(120)
    capsys.readouterr()
    assert still_running, "the script ended before the test released it"
    assert seen, "output written by a running script is not in its log files"
    assert outcome == [EXIT_OK]


# -- source_dirs go through the one file selector ----------------------------------------------

SOURCE_SECRET = "sk-source-dir-secret-4b1e"  # in the .env files: never in the image
LIST_SOURCES = (
    "import os\n"
    "for root, dirs, files in sorted(os.walk('/opt/safeagents/src')):\n"
    "    for name in sorted(files):\n"
    "        print(os.path.relpath(os.path.join(root, name), '/opt/safeagents/src'))\n"
)


@pytest.mark.docker
def test_source_dirs_ship_what_code_ships_no_env_files_caches_venvs_or_ignored_files(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = {
        "scripts/ls.py": LIST_SOURCES,
        "lib/pkg/__init__.py": "",
        "lib/pkg/tool.py": "X = 1\n",
        "lib/.env": f"OPENAI_API_KEY={SOURCE_SECRET}\n",
        "lib/pkg/.env.local": f"TOKEN={SOURCE_SECRET}\n",
        "lib/pkg/__pycache__/tool.cpython-311.pyc": "compiled",
        "lib/.gitignore": "data/\n",
        "lib/data/big.csv": "ignored by .gitignore\n",
        "lib/venv/pyvenv.cfg": "home = /usr/bin\n",
        "lib/venv/lib/site.py": "a virtualenv's file\n",
    }
    jobs = write_project(
        tmp_path / "proj",
        f"""\
version: 1
name: sources
image_name: {image_name}
frameworks:
  withsrc: {{packages: [], source_dirs: [lib]}}
jobs:
  - {{name: ls, framework: withsrc, scripts: scripts/ls.py}}
""",
        files,
    )
    code, stdout, _ = run_cli(["run", str(jobs), "-o", str(tmp_path / "out")], capsys)
    assert code == EXIT_OK, stdout
    batch_dir = only_batch_dir(tmp_path / "out")
    [run] = load_valid_manifest(batch_dir)["runs"]
    listed = (batch_dir / run["log_dir"] / "stdout.log").read_text().split()
    assert listed == ["lib/.gitignore", "lib/pkg/__init__.py", "lib/pkg/tool.py"]
