"""DockerRunner: every code block of the original helper's documentation, run against a real
engine with only its import line changed, plus the failure cases the document promises.

Image configurations used (each built once, then found by its content-addressed tag):
langgraph; langgraph + pandas/numpy/requests; langgraph + a host `safeagents` package (only
adds a COPY layer on top of the first); langgraph + a package that cannot exist (fails).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from safeagents_batch import DockerRunner
from safeagents_batch.runner import RUNNER_BATCH_ID, new_run_id

REPO = Path(__file__).resolve().parent.parent
RESULT_KEYS = {"success", "exit_code", "stdout", "stderr", "log_dir", "run_id", "status", "error"}
AGENT_SCRIPT = """\
import os, sys
print("agent says hello")
print("LOG_LEVEL=" + os.environ.get("LOG_LEVEL", "unset"))
print("agent warning on stderr", file=sys.stderr)
"""
AZURE_PROBE = """\
from pathlib import Path
azure = Path.home() / ".azure"
print("azure dir:", azure.is_dir())
if azure.is_dir():
    print("config:", (azure / "config").read_text().strip())
    try:
        (azure / "written-by-container").write_text("x")
        print("azure writable")
    except OSError:
        print("azure read-only")
"""


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private working directory as cwd (0700, what `mktemp -d` and pytest make; scripts in
    it 0600) and a HOME with ~/.azure. The container runs as an unprivileged uid when the tests
    run as root: the runner's staged copy of the code is what it reads, so no chmod is needed."""
    directory = tmp_path / "work"
    directory.mkdir(mode=0o700)
    directory.chmod(0o700)
    monkeypatch.chdir(directory)
    monkeypatch.setenv("HOME", str(_home(tmp_path / "home", with_azure=True)))
    return directory


def _home(path: Path, *, with_azure: bool) -> Path:
    path.mkdir(mode=0o755)
    if with_azure:
        (path / ".azure").mkdir(mode=0o755)
        (path / ".azure" / "config").write_text("[cloud]\nname = AzureCloud\n")
        os.chmod(path / ".azure" / "config", 0o644)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)  # private, like everything in `work`
    return path


def _logs(log_dir: str) -> dict[str, str]:
    return {
        name: (Path(log_dir) / name).read_text(encoding="utf-8")
        for name in ("console.log", "stdout.log", "stderr.log")
    }


# -- the document's code blocks ---------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_quick_start(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(work / "my_agent_script.py", AGENT_SCRIPT)

    from pathlib import Path

    from safeagents_batch import DockerRunner

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # 1. Create a runner
        runner = DockerRunner(framework="langgraph", log_output_dir=Path("./logs"))

        # 2. Prepare and build
        runner.prepare_environment()
        runner.build_image()

        # 3. Run your script
        result = runner.run_script(
            script_path=Path("my_agent_script.py"), environment_vars={"LOG_LEVEL": "DEBUG"}
        )

    # 4. Check results
    print(f"Success: {result['success']}")
    print(f"Logs: {result['log_dir']}")

    assert set(result) == RESULT_KEYS
    assert result["success"] is True and result["exit_code"] == 0
    assert result["status"] == "succeeded" and result["error"] is None
    assert Path(result["log_dir"]) == work / "logs" / result["run_id"]
    assert result["run_id"].startswith("run_my_agent_script_")
    logs = _logs(result["log_dir"])
    assert "LOG_LEVEL=DEBUG" in result["stdout"] == logs["stdout.log"]
    assert "agent warning on stderr" in result["stderr"] == logs["stderr.log"]
    assert "agent says hello" in logs["console.log"]
    assert "agent warning on stderr" in logs["console.log"]
    assert (work / "build_folder" / "Dockerfile").is_file()
    assert capsys.readouterr().out.startswith("Success: True\nLogs: ")
    assert [str(w.message) for w in caught] == []  # a private dir needs no chmod, no warning
    # The script's dir was staged into the build folder, without the runner's own folders.
    staged = [d for d in (work / "build_folder" / "code").iterdir() if d.name != "safeagents"]
    assert [sorted(f.name for f in d.iterdir()) for d in staged] == [["my_agent_script.py"]]


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_custom_log_location(work: Path) -> None:
    script = _write(work / "script.py", AGENT_SCRIPT)
    existed = Path("/tmp/my_logs").exists()

    runner = DockerRunner(framework="langgraph", log_output_dir=Path("/tmp/my_logs"))

    result = runner.run_script(script_path=script)
    try:
        assert result["success"] is True
        assert Path(result["log_dir"]).parent == Path("/tmp/my_logs")
        assert "agent says hello" in _logs(result["log_dir"])["stdout.log"]
        assert not (work / "logs").exists()
    finally:
        shutil.rmtree(Path("/tmp/my_logs") if not existed else result["log_dir"])


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_additional_packages(work: Path) -> None:
    _write(
        work / "script.py",
        "import numpy, pandas, requests\nprint('sum', pandas.Series(numpy.arange(4)).sum())\n",
    )

    runner = DockerRunner(
        framework="langgraph", additional_packages=["pandas", "numpy", "requests"]
    )

    assert runner.prepare_environment() and runner.build_image()
    result = runner.run_script(script_path=Path("script.py"))
    assert result["success"] is True, result["stderr"]
    assert "sum 6" in result["stdout"]


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_without_azure_folder(work: Path) -> None:
    _write(work / "script.py", AZURE_PROBE)
    runner = DockerRunner(framework="langgraph")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.run_script(script_path=Path("script.py"), bind_azure_folder=False)

    assert not [w for w in caught if issubclass(w.category, UserWarning)]
    assert result["success"] is True
    assert "azure dir: False" in result["stdout"]


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_with_timeout(work: Path) -> None:
    _write(work / "script.py", AGENT_SCRIPT)
    runner = DockerRunner(framework="langgraph")

    result = runner.run_script(
        script_path=Path("script.py"),
        timeout=60,  # Kill after 60 seconds
    )

    # This script ends well within the limit; test_timeout_kills_the_container covers the kill.
    assert result["success"] is True and result["status"] == "succeeded"


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_multiple_runs(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(work / "task1.py", "print('one')\n")
    _write(work / "task2.py", "print('two')\n")
    _write(work / "task3.py", "raise SystemExit('task3 fails on purpose')\n")

    # Build once
    runner = DockerRunner(framework="langgraph")
    runner.prepare_environment()
    runner.build_image()

    # Run multiple times
    for script in ["task1.py", "task2.py", "task3.py"]:
        result = runner.run_script(script_path=Path(script))
        print(f"{script}: {'✅' if result['success'] else '❌'}")

    assert capsys.readouterr().out == "task1.py: ✅\ntask2.py: ✅\ntask3.py: ❌\n"
    run_dirs = sorted(p.name for p in (work / "logs").iterdir() if p.is_dir())
    assert [name.rsplit("_", 1)[0] for name in run_dirs] == ["run_task1", "run_task2", "run_task3"]


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_environment_variables(work: Path) -> None:
    _write(
        work / "script.py",
        "import os\n"
        "print(os.environ['LOG_LEVEL'], os.environ['CUSTOM_VAR'])\n"
        "print('api key length', len(os.environ['API_KEY']))\n",
    )
    runner = DockerRunner(framework="langgraph")

    result = runner.run_script(
        script_path=Path("script.py"),
        environment_vars={"LOG_LEVEL": "DEBUG", "API_KEY": "secret", "CUSTOM_VAR": "value"},
    )

    assert result["success"] is True
    assert result["stdout"] == "DEBUG value\napi key length 6\n"


# -- behaviour the document promises, and its failure cases ------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_azure_folder_is_a_private_copy_in_the_container_home(work: Path) -> None:
    _write(work / "script.py", AZURE_PROBE)
    result = DockerRunner(framework="langgraph").run_script(script_path=Path("script.py"))
    assert result["success"] is True, result["stderr"]
    assert "azure dir: True" in result["stdout"]
    assert "config: [cloud]" in result["stdout"]
    # Writable in the container (the Azure CLI writes there on every call), never on the host.
    assert "azure writable" in result["stdout"]
    assert sorted(p.name for p in (Path.home() / ".azure").iterdir()) == ["config"]


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_missing_azure_folder_warns_and_runs_without_it(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(_home(tmp_path / "bare-home", with_azure=False)))
    _write(work / "script.py", AZURE_PROBE)
    with pytest.warns(UserWarning, match=r"\.azure does not exist"):
        result = DockerRunner(framework="langgraph").run_script(script_path=Path("script.py"))
    assert result["success"] is True
    assert "azure dir: False" in result["stdout"]


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_failing_script_reports_its_exit_code_and_stderr(work: Path) -> None:
    _write(
        work / "fail.py",
        "import sys\nprint('before failing')\n"
        "print('something broke', file=sys.stderr)\nsys.exit(3)\n",
    )
    result = DockerRunner(framework="langgraph").run_script(script_path=Path("fail.py"))
    assert result["success"] is False
    assert result["exit_code"] == 3 and result["status"] == "failed"
    assert result["error"] == "script exited with code 3"
    logs = _logs(result["log_dir"])
    assert result["stderr"] == logs["stderr.log"] == "something broke\n"
    assert "something broke" not in logs["stdout.log"]
    assert "before failing" in logs["console.log"] and "something broke" in logs["console.log"]


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_timeout_kills_the_container(work: Path) -> None:
    _write(work / "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    result = DockerRunner(framework="langgraph").run_script(script_path=Path("slow.py"), timeout=3)
    assert result["success"] is False
    assert result["status"] == "timed_out" and result["exit_code"] is None
    assert "started" in result["stdout"]
    assert not _runner_containers()  # killed and removed


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_ctrl_c_removes_the_container_and_propagates(work: Path) -> None:
    _write(work / "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    runner = DockerRunner(framework="langgraph")
    assert runner.build_image()
    # Ctrl-C reaches Python as KeyboardInterrupt only under its default handler, which Python
    # does not install when SIGINT was ignored when it started (a shell's `cmd &` without
    # job control ignores it): installed here, for this test only.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sent: list[float] = []
    interrupter = threading.Thread(
        target=_interrupt_once_started, args=(work / "logs", sent), daemon=True
    )
    interrupter.start()
    try:
        result = runner.run_script(script_path=Path("slow.py"), timeout=120)
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail(f"no KeyboardInterrupt (SIGINT sent: {bool(sent)}); the run ended: {result}")
    finally:
        signal.signal(signal.SIGINT, previous)
    interrupter.join()
    assert not _runner_containers()


def _interrupt_once_started(logs: Path, sent: list[float]) -> None:
    """Sends SIGINT to this process when the script's first line has reached stdout.log."""
    for _ in range(1200):
        if any("started" in p.read_text() for p in logs.glob("run_*/stdout.log")):
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.1)


def _runner_containers() -> list[str]:
    label = f"safeagents-batch.batch={RUNNER_BATCH_ID}"
    client = docker.from_env()
    try:
        return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_missing_script_is_a_result_not_an_exception(work: Path) -> None:
    result = DockerRunner(framework="langgraph").run_script(script_path=Path("nope.py"))
    assert set(result) == RESULT_KEYS
    assert result["success"] is False and result["exit_code"] is None
    assert result["status"] == "error"
    assert result["error"] == f"script not found: {work / 'nope.py'}"


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_failed_build_returns_false_and_keeps_its_log(work: Path) -> None:
    _write(work / "script.py", "print('never runs')\n")
    runner = DockerRunner(
        framework="langgraph", additional_packages=["safeagents-batch-no-such-package-7f3a9c"]
    )
    assert runner.prepare_environment() is True
    assert runner.build_image() is False
    assert runner.build_log is not None and runner.build_log.is_file()
    assert runner.build_log.parent.parent == work / "build_folder"
    assert "safeagents-batch-no-such-package-7f3a9c" in runner.build_log.read_text()

    result = runner.run_script(script_path=Path("script.py"))
    assert result["success"] is False and result["status"] == "error"
    assert "image build failed" in (result["error"] or "")


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_host_safeagents_source_is_importable_in_the_container(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "host-site" / "safeagents"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("MARKER = 'from the host'\n")
    (package / "tools.py").write_text("def name() -> str:\n    return 'tools'\n")
    (package / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"\0")
    monkeypatch.syspath_prepend(str(tmp_path / "host-site"))
    _write(
        work / "script.py",
        "import safeagents, safeagents.tools\nprint(safeagents.MARKER, safeagents.tools.name())\n",
    )

    runner = DockerRunner(framework="langgraph")
    assert runner.prepare_environment()
    copy = work / "build_folder" / "code" / "safeagents"
    assert (copy / "tools.py").is_file() and not (copy / "__pycache__").exists()
    result = runner.run_script(script_path=Path("script.py"))
    assert result["success"] is True, result["stderr"]
    assert result["stdout"] == "from the host tools\n"


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_examples_run_as_they_stand(work: Path) -> None:
    for example in ("quick_start.py", "multiple_runs.py"):
        done = subprocess.run(
            [sys.executable, str(REPO / "examples" / example)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((work / "logs").glob("run_*"))) == 4
    assert list((work / "logs").glob("run_task2_*/report.json"))
    assert list((work / "logs").glob("run_my_agent_script_*/result.json"))


# SafeAgents' Docker examples (05_docker_isolation.py and the like), unchanged in what they
# need: a package of its requirements file, its own package from a source dir, and results
# written to /SafeAgents/logs.
SEED_STYLE_SCRIPT = """\
import json, os
from importlib.metadata import version
from termcolor import colored
from seedpkg.config import NAME

os.makedirs("/SafeAgents/logs", exist_ok=True)
with open("/SafeAgents/logs/result.json", "w") as handle:
    json.dump({"package": NAME, "termcolor": version("termcolor"), "text": colored("x")}, handle)
print("isolated run done")
"""


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_requirements_source_dirs_and_the_seeds_log_path(work: Path) -> None:
    _write(work / "requirements.txt", "termcolor==2.4.0\n")
    package = work.parent / "elsewhere" / "seedpkg"  # outside the script's dir: not staged
    package.mkdir(parents=True)
    _write(package / "__init__.py", "")
    _write(package / "config.py", "NAME = 'seedpkg from source_dirs'\n")
    _write(work / "05_docker_isolation.py", SEED_STYLE_SCRIPT)

    runner = DockerRunner(
        framework="langgraph", requirements="requirements.txt", source_dirs=[package]
    )
    result = runner.run_script(script_path=Path("05_docker_isolation.py"), bind_azure_folder=False)

    assert result["success"] is True, result["stderr"]
    assert "isolated run done" in result["stdout"]
    collected = json.loads((Path(result["log_dir"]) / "result.json").read_text())
    assert collected == {"package": "seedpkg from source_dirs", "termcolor": "2.4.0", "text": "x"}


# -- no engine needed ---------------------------------------------------------------------------


def test_unknown_framework_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="unknown framework 'smolagents'") as info:
        DockerRunner(framework="smolagents")
    for name in ("magentic", "openai-agents", "autogen", "langgraph", "crewai"):
        assert name in str(info.value)


def test_defaults_are_relative_to_the_cwd_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = DockerRunner(framework="crewai")
    monkeypatch.chdir("/")
    assert runner.build_folder == tmp_path / "build_folder"
    assert runner.log_output_dir == tmp_path / "logs"


def test_prepare_environment_writes_the_build_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = DockerRunner(framework="autogen", python_version="3.12", additional_packages=["rich"])
    assert runner.prepare_environment() is True
    dockerfile = (tmp_path / "build_folder" / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in dockerfile
    assert "'autogen-ext[openai]'" in dockerfile and " rich " in dockerfile
    assert (tmp_path / "logs").is_dir()


def test_prepare_environment_failure_is_false_with_a_logged_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    runner = DockerRunner(framework="langgraph", build_folder=blocker, log_output_dir=tmp_path)
    assert runner.prepare_environment() is False
    assert "prepare_environment failed" in caplog.text


def test_no_engine_is_false_and_an_error_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    script = _write(tmp_path / "script.py", "print('hi')\n")
    runner = DockerRunner(framework="langgraph")
    assert runner.build_image() is False
    result = runner.run_script(script_path=script, bind_azure_folder=False)
    assert result["success"] is False and result["status"] == "error"
    assert "cannot reach the Docker engine" in (result["error"] or "")


def test_run_ids_are_safe_directory_and_container_names() -> None:
    run_id = new_run_id(Path("/x/my agent (v2).py"))
    assert run_id.startswith("run_my_agent_v2_") and len(run_id.rsplit("_", 1)[1]) == 8
    assert new_run_id(Path("a.py")) != new_run_id(Path("a.py"))


@pytest.fixture(autouse=True)
def _no_repo_litter() -> Iterator[None]:
    """The runner's default folders must land in the test's cwd, never in the repository."""
    before = {name for name in ("logs", "build_folder") if (REPO / name).exists()}
    yield
    after = {name for name in ("logs", "build_folder") if (REPO / name).exists()}
    assert after - before == set()
