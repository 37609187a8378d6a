"""The sandbox and secret handling, proved on a real Docker engine from inside the containers.

Each engine test runs a small probe script in a container of the tool. The probe looks at what
it can do (capabilities, uid, writable paths, forks, memory, network), prints what it saw as one
JSON line, compares that with the `EXPECT` mapping the jobs file gives it, and exits 0 only when
both agree. The tests then check the run's status and the facts again, so a failure names them.

Engine tests are marked `docker` and never skipped. Images get a repository name unique to this
module and are removed at its end; the network test removes its server container and network.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import docker
import pytest
from engine_fixtures import PLAIN_FRAMEWORK_YAML, remove_repository, write_project
from records import outcome_of

from safeagents_batch.backends.docker.backend import batch_container_ids
from safeagents_batch.cli import main as cli
from safeagents_batch.core.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNS_FAILED
from safeagents_batch.jobs.model import DEFAULT_MEMORY, DEFAULT_PIDS
from safeagents_batch.staging.images import CONTAINER_UID

REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.1
WAIT_LIMIT_SECONDS = 180
# The uid a container runs as: a fixed non-root one when the tool runs as root (as it does in
# CI), else the invoking user's own.
EXPECTED_UID = CONTAINER_UID if os.getuid() == 0 else os.getuid()
EXPECTED_GID = CONTAINER_UID if os.getuid() == 0 else os.getgid()


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_name(docker_client: docker.DockerClient) -> Iterator[str]:
    """One repository for the module: the `plain` image is built once, removed at the end."""
    name = f"sab-security-test-{secrets.token_hex(4)}"
    yield name
    remove_repository(docker_client, name)


def jobs_yaml(image_name: str, jobs: str) -> str:
    """A jobs file on the quick `plain` framework; `jobs` is the YAML list under `jobs:`."""
    body = textwrap.indent(textwrap.dedent(jobs).strip("\n"), "  ")
    return (
        f"version: 1\nimage_name: {image_name}\n{PLAIN_FRAMEWORK_YAML}"
        f"defaults: {{framework: plain, timeout: 300}}\njobs:\n{body}\n"
    )


def expect(**facts: object) -> str:
    """The `EXPECT` env value for a probe, as a YAML-safe single-quoted JSON string."""
    return "'" + json.dumps(facts) + "'"


@dataclass(frozen=True)
class Batch:
    code: int
    out: str
    err: str
    batch_dir: Path
    manifest: dict[str, Any]

    def run(self, run_id: str) -> dict[str, Any]:
        return next(r for r in self.manifest["runs"] if r["run_id"] == run_id)

    def log(self, run_id: str, name: str = "stdout.log") -> str:
        log_dir: str = self.run(run_id)["log_dir"]
        return (self.batch_dir / log_dir / name).read_text(encoding="utf-8")

    def facts(self, run_id: str) -> dict[str, Any]:
        """What the probe saw: the last JSON line it printed."""
        lines = [ln for ln in self.log(run_id).splitlines() if ln.startswith("{")]
        assert lines, f"{run_id} printed no facts; stderr: {self.log(run_id, 'stderr.log')}"
        facts: dict[str, Any] = json.loads(lines[-1])
        return facts

    def assert_succeeded(self, run_id: str) -> dict[str, Any]:
        """The probe agreed with its EXPECT; returns its facts for further asserts."""
        record = self.run(run_id)
        assert record["status"] == "succeeded", (
            f"{run_id}: {record['status']} ({record['error']}); saw {self.log(run_id)}"
            f"stderr: {self.log(run_id, 'stderr.log')}"
        )
        return self.facts(run_id)


def only_batch_dir(output_dir: Path) -> Path:
    dirs = [d for d in output_dir.iterdir() if (d / "manifest.json").is_file()]
    assert len(dirs) == 1, f"expected one batch dir under {output_dir}, found {dirs}"
    return dirs[0]


def run_batch(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    scripts: dict[str, str],
    *args: str,
    prepare: Callable[[Path], None] | None = None,
) -> Batch:
    """`safeagents-batch run` in this process on a fresh project (`prepare` gets its dir
    before the run); returns what the run left."""
    jobs = write_project(tmp_path / "proj", text, scripts)
    if prepare is not None:
        prepare(jobs.parent)
    out_dir = tmp_path / "out"
    code = cli.main(["run", str(jobs), "-o", str(out_dir), "--no-progress", *args])
    captured = capsys.readouterr()
    batch_dir = only_batch_dir(out_dir)
    manifest = json.loads((batch_dir / "manifest.json").read_text(encoding="utf-8"))
    return Batch(code, captured.out, captured.err, batch_dir, manifest)


# Shared by every probe: facts in, one JSON line out, exit code from the comparison with EXPECT.
PROBE = '''\
import errno, json, os, sys


def status_field(name):
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise KeyError(name)


def caps_nonzero(name):
    return int(status_field("Cap" + name), 16) != 0


def outcome(action, *args):
    """'ok', or the errno name the action failed with."""
    try:
        action(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"


def write_file(path):
    with open(path, "w") as handle:
        handle.write("planted")
    os.remove(path)


def append_file(path):
    with open(path, "a") as handle:
        handle.write("# planted")


def verdict(facts):
    print(json.dumps(facts, sort_keys=True), flush=True)
    wanted = json.loads(os.environ["EXPECT"])
    wrong = {k: facts.get(k) for k, v in wanted.items() if facts.get(k) != v}
    if wrong:
        print("not as expected:", wrong, file=sys.stderr)
    sys.exit(1 if wrong else 0)
'''


def probe(body: str) -> str:
    return PROBE + "\n" + textwrap.dedent(body)


# -- 1. secrets ---------------------------------------------------------------------------------

SECRET_PROBE = probe("""
    import hashlib, pathlib, time

    def digest(name):
        return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()

    expected = json.loads(os.environ["DIGESTS"])
    facts = {name: digest(name) == value for name, value in expected.items()}
    facts["unlisted_host_variable_absent"] = "SAB_UNLISTED_TOKEN" not in os.environ
    # Hold the container up until the test has looked at the host's process list: the test
    # says go by deleting `hold` from this run's code snapshot on the host.
    print("probe-started", flush=True)
    for _ in range(1200 if os.environ.get("HOLD") else 0):
        if not pathlib.Path("/safeagents/code/hold").exists():
            break
        time.sleep(0.1)
    verdict(facts)  # names and booleans only: no value is ever printed
""")


def token() -> str:
    return f"sabtok{secrets.token_hex(16)}"


def secret_jobs_yaml(image_name: str, literal: str, digests: dict[str, str]) -> str:
    return jobs_yaml(
        image_name,
        f"""
        - name: secrets
          scripts: probe.py
          env_passthrough: [SAB_PASSED_TOKEN]
          env_file: secrets.env
          env:
            LITERAL_API_KEY: "{literal}"
            DIGESTS: '{json.dumps(digests)}'
            HOLD: "1"
            EXPECT: {
            expect(
                SAB_PASSED_TOKEN=True,
                FROM_ENV_FILE=True,
                LITERAL_API_KEY=True,
                unlisted_host_variable_absent=True,
            )
        }
    """,
    )


def processes_showing(needles: list[str]) -> list[str]:
    """pid and command line of every host process whose command line holds a needle; what
    `ps -ef` would show, read from /proc directly."""
    hits = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # the process ended meanwhile
        if any(n.encode() in cmdline for n in needles):
            hits.append(f"{entry.name}: {cmdline[:200]!r}")
    return hits


def ps_output() -> str:
    return subprocess.run(
        ["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True, check=True
    ).stdout


def files_holding(root: Path, needles: list[str]) -> list[str]:
    """Every file under `root` (links not followed) whose bytes hold a needle."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [
                f"{path.relative_to(root)} holds needle {i}"
                for i, n in enumerate(needles)
                if n.encode() in data
            ]
    return found


def wait_for_start(
    proc: subprocess.Popen[str], out_dir: Path, seen_in_ps: list[str], needles: list[str]
) -> Path:
    """Samples the process list until the probe says it started; returns its log dir."""
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while time.monotonic() < deadline:
        seen_in_ps += processes_showing(needles)
        started = [
            log.parent
            for log in out_dir.glob("*/runs/*/attempt-1/stdout.log")
            if "probe-started" in log.read_text()
        ]
        if started:
            return started[0]
        if proc.poll() is not None:
            raise AssertionError(f"the tool ended before the probe started: {proc.communicate()}")
        time.sleep(POLL_SECONDS)
    proc.terminate()  # the tool's own SIGTERM handling removes its containers
    raise AssertionError("the probe did not start in time")


@pytest.mark.docker
def test_secrets_reach_the_script_and_appear_nowhere_else(
    docker_client: docker.DockerClient, image_name: str, tmp_path: Path
) -> None:
    passed, from_file, literal, unlisted = token(), token(), token(), token()
    needles = [passed, from_file, literal, unlisted]
    digests = {
        name: sha256(value.encode()).hexdigest()
        for name, value in (
            ("SAB_PASSED_TOKEN", passed),
            ("FROM_ENV_FILE", from_file),
            ("LITERAL_API_KEY", literal),
        )
    }
    jobs = write_project(
        tmp_path / "proj",
        secret_jobs_yaml(image_name, literal, digests),
        {
            "probe.py": SECRET_PROBE,
            "hold": "",
            "secrets.env": f"# a comment\nexport FROM_ENV_FILE='{from_file}'\n",
        },
    )
    out_dir = tmp_path / "out"
    env = {
        **os.environ,
        "SAB_PASSED_TOKEN": passed,
        "SAB_UNLISTED_TOKEN": unlisted,
        "PYTHONPATH": str(REPO_ROOT),
    }
    seen_in_ps: list[str] = []
    # --no-cache: the build log is written into the batch dir and searched with the rest.
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safeagents_batch",
            "run",
            str(jobs),
            "-o",
            str(out_dir),
            "--no-progress",
            "--no-cache",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        wait_for_start(proc, out_dir, seen_in_ps, needles)
        seen_in_ps += processes_showing(needles)  # the container and the tool are both up now
        ps_while_running = ps_output()
        for held in out_dir.glob("*/code/*/hold"):
            held.unlink()
        out, err = proc.communicate(timeout=WAIT_LIMIT_SECONDS)

    assert proc.returncode == EXIT_OK, (out, err)
    assert seen_in_ps == []
    assert [n for n in needles if n in ps_while_running] == []
    assert [n for n in needles if n in out + err] == []
    batch_dir = only_batch_dir(out_dir)
    written = {p.relative_to(batch_dir).as_posix() for p in batch_dir.rglob("*") if p.is_file()}
    assert {
        "manifest.json",
        "jobs.yaml",
        "jobs.source.yaml",
        "runs/secrets-probe/attempt-1/stdout.log",
    } <= written
    assert [w for w in written if w.startswith("images/") and w.endswith(".log")], written
    assert files_holding(batch_dir, needles) == []
    manifest = json.loads((batch_dir / "manifest.json").read_text(encoding="utf-8"))
    shown = manifest["runs"][0]["env"]
    assert {name: shown[name] for name in digests} == dict.fromkeys(digests, "<redacted>")
    assert shown["DIGESTS"] == json.dumps(digests)  # a value that is not secret stays readable
    assert batch_container_ids(docker_client, manifest["batch_id"]) == []


LITERAL_ONLY_EXPECT = expect(LITERAL_API_KEY=True, unlisted_host_variable_absent=True)


def literal_only_yaml(image_name: str, literal: str) -> str:
    digests = {"LITERAL_API_KEY": sha256(literal.encode()).hexdigest()}
    return jobs_yaml(
        image_name,
        f"""
        - name: literal
          scripts: probe.py
          env:
            LITERAL_API_KEY: "{literal}"
            DIGESTS: '{json.dumps(digests)}'
            EXPECT: {LITERAL_ONLY_EXPECT}
    """,
    )


@pytest.mark.docker
def test_rerun_refuses_a_redacted_literal_secret_and_runs_with_the_original_file(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    literal = token()
    batch = run_batch(
        tmp_path, capsys, literal_only_yaml(image_name, literal), {"probe.py": SECRET_PROBE}
    )
    assert batch.code == EXIT_OK, batch.err
    assert files_holding(batch.batch_dir, [literal]) == []

    # The snapshot says "<redacted>": running with that in place of the key would be wrong.
    assert cli.main(["rerun", str(batch.batch_dir), "--all", "--no-progress"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "jobs[0].env.LITERAL_API_KEY" in err and "--jobs" in err
    assert literal not in err

    original = tmp_path / "proj" / "jobs.yaml"
    assert (
        cli.main(["rerun", str(batch.batch_dir), "--all", "--no-progress", "--jobs", str(original)])
        == EXIT_OK
    )
    captured = capsys.readouterr()
    assert literal not in captured.out + captured.err
    assert files_holding(batch.batch_dir, [literal]) == []
    manifest = json.loads((batch.batch_dir / "manifest.json").read_text(encoding="utf-8"))
    assert [outcome_of(a)["status"] for a in manifest["runs"][0]["attempts"]] == [
        "succeeded",
        "succeeded",
    ]


@pytest.mark.docker
def test_missing_passthrough_variable_fails_before_anything_runs(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SAB_NOT_SET_TOKEN", raising=False)
    jobs = write_project(
        tmp_path / "proj",
        jobs_yaml(
            image_name,
            """
        - name: needs
          scripts: probe.py
          env_passthrough: [SAB_NOT_SET_TOKEN]
    """,
        ),
        {"probe.py": "print('must not run')\n"},
    )
    out_dir = tmp_path / "out"

    code = cli.main(["run", str(jobs), "-o", str(out_dir), "--no-progress"])

    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "SAB_NOT_SET_TOKEN" in err
    assert err.count("\n") == 1  # one line, no traceback
    assert not out_dir.exists()


def test_validate_warns_about_a_literal_secret_without_printing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    literal = token()
    jobs = write_project(
        tmp_path / "proj", literal_only_yaml("sab-unused", literal), {"probe.py": "print()\n"}
    )

    assert cli.main(["validate", str(jobs)]) == EXIT_OK

    out, err = capsys.readouterr()
    assert out == "OK: 1 runs, 1 images\n"
    assert (
        "warning: " in err
        and "jobs[0].env.LITERAL_API_KEY: literal value under a secret-looking name" in err
    )
    assert literal not in out + err


# -- 2. privileges, mounts and limits inside a default container ---------------------------------

PRIVILEGES_PROBE = probe("""
    def become_root():
        os.setuid(0)

    facts = {
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
        "root_in_groups": 0 in os.getgroups(),
        "cap_eff": caps_nonzero("Eff"), "cap_prm": caps_nonzero("Prm"),
        "cap_bnd": caps_nonzero("Bnd"), "cap_amb": caps_nonzero("Amb"),
        "no_new_privs": status_field("NoNewPrivs"), "seccomp": status_field("Seccomp"),
        "setuid_0": outcome(become_root),
    }
    verdict(facts)
""")

DEFAULT_PRIVILEGES = dict(
    uid=EXPECTED_UID,
    euid=EXPECTED_UID,
    gid=EXPECTED_GID,
    root_in_groups=False,
    cap_eff=False,
    cap_prm=False,
    cap_bnd=False,
    cap_amb=False,
    no_new_privs="1",
    seccomp="2",
    setuid_0="EPERM",
)


@pytest.mark.docker
def test_default_container_has_no_root_no_capabilities_and_no_new_privileges(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            f"""
        - name: default
          scripts: privileges.py
          env: {{EXPECT: {expect(**DEFAULT_PRIVILEGES)}}}
    """,
        ),
        {"privileges.py": PRIVILEGES_PROBE},
    )

    facts = batch.assert_succeeded("default-privileges")
    assert facts["uid"] != 0
    if os.getuid() == 0:  # the tool runs as root (it does in CI): the container still is not
        assert facts["uid"] == CONTAINER_UID
    assert (facts["cap_eff"], facts["cap_bnd"], facts["no_new_privs"]) == (False, False, "1")
    assert batch.code == EXIT_OK


@pytest.mark.docker
def test_hardening_can_be_relaxed_per_job(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each switch changes only what it names. Capabilities kept for a non-root uid stay out of
    its effective set (the kernel clears them on exec): they take effect only for root."""
    relaxed = {
        "caps": ("{drop_capabilities: false}", {**DEFAULT_PRIVILEGES, "cap_bnd": True}),
        "root": (
            "{drop_capabilities: false, non_root: false}",
            {
                **DEFAULT_PRIVILEGES,
                "uid": 0,
                "euid": 0,
                "gid": 0,
                "root_in_groups": True,
                "cap_eff": True,
                "cap_prm": True,
                "cap_bnd": True,
                "setuid_0": "ok",
            },
        ),
        "nnp": ("{no_new_privileges: false}", {**DEFAULT_PRIVILEGES, "no_new_privs": "0"}),
    }
    jobs = "".join(
        f"""
        - name: {name}
          scripts: privileges.py
          hardening: {switches}
          env: {{EXPECT: {expect(**wanted)}}}
    """
        for name, (switches, wanted) in relaxed.items()
    )
    batch = run_batch(
        tmp_path, capsys, jobs_yaml(image_name, jobs), {"privileges.py": PRIVILEGES_PROBE}
    )

    for name in relaxed:
        batch.assert_succeeded(f"{name}-privileges")
    assert batch.facts("root-privileges")["cap_eff"] is True
    assert batch.facts("caps-privileges")["cap_bnd"] is True
    assert batch.facts("nnp-privileges")["no_new_privs"] == "0"


CODE_MOUNT_PROBE = probe("""
    me = os.path.abspath(__file__)
    facts = {
        "script_dir": os.path.dirname(me),
        "new_file": outcome(write_file, "/safeagents/code/planted.py"),
        "own_script": outcome(append_file, me),
        "mkdir": outcome(os.mkdir, "/safeagents/code/planted"),
        "chmod": outcome(os.chmod, me, 0o777),
        "uid": os.getuid(),
    }
    verdict(facts)
""")


def open_to_all(project: Path) -> None:
    """World-writable on the host: then only a read-only mount can refuse a write, and the
    probe's EROFS proves that mount (a permission refusal would be EACCES)."""
    project.chmod(0o777)
    for path in project.iterdir():
        path.chmod(0o666)


@pytest.mark.docker
def test_code_mount_is_read_only_even_for_root_with_capabilities(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    read_only = dict(
        script_dir="/safeagents/code",
        new_file="EROFS",
        own_script="EROFS",
        mkdir="EROFS",
        chmod="EROFS",
    )
    # The snapshot's files are the invoker's, 0644: a container uid other than the invoker's
    # (root invokes, uid 10001 runs) is refused by the file's mode before the mount is asked.
    unprivileged = {"own_script": "EACCES"} if os.getuid() == 0 else {}
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            f"""
        - name: default
          scripts: code_mount.py
          env: {{EXPECT: {expect(**{**read_only, **unprivileged}, uid=EXPECTED_UID)}}}
        - name: root
          scripts: code_mount.py
          hardening: {{non_root: false, drop_capabilities: false}}
          env: {{EXPECT: {expect(**read_only, uid=0)}}}
    """,
        ),
        {"code_mount.py": CODE_MOUNT_PROBE},
        prepare=open_to_all,
    )

    batch.assert_succeeded("default-code_mount")
    batch.assert_succeeded("root-code_mount")
    project = tmp_path / "proj"
    assert sorted(p.name for p in project.iterdir()) == ["code_mount.py", "jobs.yaml"]
    assert (project / "code_mount.py").read_text(encoding="utf-8") == CODE_MOUNT_PROBE


FORK_BOMB_PROBE = probe("""
    import signal, time

    children, failure = [], None
    while len(children) < 4000:  # bounded even if no limit held
        try:
            pid = os.fork()
        except OSError as exc:
            failure = exc
            break
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    for pid in children:
        os.waitpid(pid, 0)
    limit = int(os.environ["PIDS_LIMIT"])
    verdict({"children": len(children), "under_limit": 0 < len(children) < limit,
             "fork_error": type(failure).__name__ if failure else None,
             "errno": errno.errorcode[failure.errno] if failure else None})
""")


@pytest.mark.docker
def test_fork_bomb_is_stopped_by_the_default_pids_limit(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            f"""
        - name: bomb
          scripts: fork_bomb.py
          env:
            PIDS_LIMIT: "{DEFAULT_PIDS}"
            EXPECT: {expect(under_limit=True, fork_error="BlockingIOError", errno="EAGAIN")}
    """,
        ),
        {"fork_bomb.py": FORK_BOMB_PROBE},
    )

    facts = batch.assert_succeeded("bomb-fork_bomb")
    assert 0 < facts["children"] < DEFAULT_PIDS
    # The host is unharmed: this process can still fork, and the container is gone.
    assert subprocess.run(["true"], check=False).returncode == 0
    assert batch_container_ids(engine, batch.manifest["batch_id"]) == []


OOM_PROBE = """\
MIB = 1024 * 1024
blocks = []
for i in range(1, 65):  # 64 x 16 MiB = 1 GiB, far past the limit
    blocks.append(b"x" * (16 * MIB))  # written, so every page is really used
    print(f"holding {16 * i} MiB", flush=True)
print("survived: no memory limit held")
"""


@pytest.mark.docker
def test_allocating_past_the_memory_limit_is_an_oom_kill(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            """
        - name: hog
          scripts: hog.py
          resources: {memory: 64m}
    """,
        ),
        {"hog.py": OOM_PROBE},
    )

    record = batch.run("hog-hog")
    assert (record["status"], record["error"]) == ("failed", "oom_killed"), batch.log("hog-hog")
    assert "survived" not in batch.log("hog-hog")
    assert "holding 16 MiB" in batch.log("hog-hog")  # it ran, then met the limit
    assert batch.code == EXIT_RUNS_FAILED


LIMITS_PROBE = probe('''
    def cgroup(*paths):
        """The first of the cgroup v2 / v1 files that exists, split into words."""
        for path in paths:
            try:
                with open(path) as handle:
                    return handle.read().split()
            except OSError:
                pass
        return None

    memory = cgroup("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    pids = cgroup("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
    cpu = cgroup("/sys/fs/cgroup/cpu.max") or (cgroup("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
                                               + cgroup("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    verdict({"memory": int(memory[0]), "pids": int(pids[0]),
             "cpus": round(int(cpu[0]) / int(cpu[1]), 3)})
''')


@pytest.mark.docker
def test_resource_limits_are_applied_by_default_and_per_job(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            f"""
        - name: default
          scripts: limits.py
          env: {{EXPECT: {expect(memory=DEFAULT_MEMORY, pids=DEFAULT_PIDS, cpus=2.0)}}}
        - name: small
          scripts: limits.py
          resources: {{memory: 96m, cpus: 0.5, pids: 64}}
          env: {{EXPECT: {expect(memory=96 * 1024 * 1024, pids=64, cpus=0.5)}}}
    """,
        ),
        {"limits.py": LIMITS_PROBE},
    )

    assert batch.assert_succeeded("default-limits")["pids"] == DEFAULT_PIDS
    assert batch.assert_succeeded("small-limits")["memory"] == 96 * 1024 * 1024


ROOTFS_PROBE = probe("""
    home = os.environ["HOME"]

    def tmp_round_trip():
        with open("/tmp/scratch", "w") as handle:
            handle.write("scratch")
        with open("/tmp/scratch") as handle:
            assert handle.read() == "scratch"

    verdict({"root": outcome(write_file, "/planted"), "etc": outcome(write_file, "/etc/planted"),
             "home": outcome(write_file, os.path.join(home, "planted")),
             "tmp": outcome(tmp_round_trip), "logs": outcome(write_file, "/safeagents/logs/x")})
""")


@pytest.mark.docker
def test_read_only_rootfs_refuses_writes_but_tmp_and_logs_work(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The default container is the control: its home is writable, so EROFS there is the
    setting's doing, not a permission."""
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            f"""
        - name: readonly
          scripts: rootfs.py
          read_only_rootfs: true
          env: {{EXPECT: {expect(root="EROFS", etc="EROFS", home="EROFS", tmp="ok", logs="ok")}}}
        - name: default
          scripts: rootfs.py
          env: {{EXPECT: {expect(root="EACCES", etc="EACCES", home="ok", tmp="ok", logs="ok")}}}
    """,
        ),
        {"rootfs.py": ROOTFS_PROBE},
    )

    assert batch.assert_succeeded("readonly-rootfs")["root"] == "EROFS"
    assert batch.assert_succeeded("default-rootfs")["home"] == "ok"


LOG_DIR_PROBE = probe("""
    import shutil, stat

    logs = "/safeagents/logs"
    shell = shutil.copy("/bin/sh", logs + "/rootshell")
    os.chmod(shell, 0o6755)
    os.makedirs(logs + "/deep")
    os.mknod(logs + "/deep/disk", 0o666 | stat.S_IFBLK, os.makedev(8, 0))
    os.mknod(logs + "/mem", 0o666 | stat.S_IFCHR, os.makedev(1, 1))
    verdict({"setuid_made": bool(os.stat(shell).st_mode & stat.S_ISUID),
             "nodes_made": stat.S_ISBLK(os.stat(logs + "/deep/disk").st_mode)})
""")


@pytest.mark.docker
def test_script_cannot_leave_setuid_files_or_device_nodes_on_the_host(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The log dir is the script's one writable host path. Root in a relaxed container can make
    a setuid-root shell or a world-writable disk node there; neither may outlive the run."""
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            f"""
        - name: relaxed
          scripts: plant.py
          hardening: {{non_root: false, drop_capabilities: false}}
          env: {{EXPECT: {expect(setuid_made=True, nodes_made=True)}}}
    """,
        ),
        {"plant.py": LOG_DIR_PROBE},
    )

    batch.assert_succeeded("relaxed-plant")
    log_dir = batch.batch_dir / batch.run("relaxed-plant")["log_dir"]
    entries = {p.relative_to(log_dir).as_posix(): p.lstat().st_mode for p in log_dir.rglob("*")}
    assert "rootshell" in entries  # the script's own files stay, defused
    assert {
        name: oct(mode)
        for name, mode in entries.items()
        if mode & (stat.S_ISUID | stat.S_ISGID) or stat.S_ISBLK(mode) or stat.S_ISCHR(mode)
    } == {}


AZURE_CONFIG = "[cloud]\nname = test\n"
AZURE_PROBE = probe("""
    azure = os.path.join(os.environ["HOME"], ".azure")
    with open(os.path.join(azure, "config")) as handle:
        content = handle.read()
    verdict({"read": content, "append": outcome(append_file, os.path.join(azure, "config")),
             "new_file": outcome(write_file, os.path.join(azure, "planted"))})
""")


@pytest.mark.docker
@pytest.mark.usefixtures("azure_layer")
def test_azure_folder_is_a_private_copy_the_host_never_sees_written(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    (home / ".azure").mkdir(parents=True)
    (home / ".azure" / "config").write_text(AZURE_CONFIG, encoding="utf-8")
    # Writable by anyone on the host: only the copy keeps the probe's writes from reaching it.
    (home / ".azure").chmod(0o777)
    (home / ".azure" / "config").chmod(0o666)
    monkeypatch.setenv("HOME", str(home))
    # `ro` (the default) copies the folder in: the Azure CLI writes into its config dir on
    # every call, so the copy is writable, and the host's files stay as they were.
    wanted = expect(read=AZURE_CONFIG, append="ok", new_file="ok")
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            f"""
        - name: azure
          scripts: azure.py
          bind_azure_folder: true
          env: {{EXPECT: {wanted}}}
    """,
        ),
        {"azure.py": AZURE_PROBE},
    )

    batch.assert_succeeded("azure-azure")
    assert sorted(p.name for p in (home / ".azure").iterdir()) == ["config"]
    assert (home / ".azure" / "config").read_text(encoding="utf-8") == AZURE_CONFIG


# -- 3. network -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    network: str
    name: str
    ip: str


def wait_until_serving(container: Any) -> None:
    """Asks the server from inside its own container: no traffic leaves the test's containers."""
    check = [
        "python3",
        "-c",
        "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/', timeout=2)",
    ]
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if container.exec_run(check).exit_code == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the test server did not start: {container.logs()[-2000:]!r}")


@pytest.fixture
def server(docker_client: docker.DockerClient) -> Iterator[Server]:
    """An HTTP server on a network of its own; both are removed afterwards, whatever happened."""
    suffix = secrets.token_hex(4)
    labels = {"safeagents-batch-security-test": suffix}
    network = docker_client.networks.create(f"sab-sec-net-{suffix}", driver="bridge", labels=labels)
    container = None
    try:
        container = docker_client.containers.run(
            "python:3.11-slim",
            ["python3", "-m", "http.server", "8000"],
            name=f"sab-sec-srv-{suffix}",
            network=network.name,
            labels=labels,
            detach=True,
        )
        wait_until_serving(container)
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        yield Server(network.name, container.name, ip)
    finally:
        if container is not None:
            container.remove(force=True)
        network.remove()


NETWORK_PROBE = probe("""
    import urllib.request

    def reached(host):
        try:
            urllib.request.urlopen(f"http://{host}:8000/", timeout=5).read()
        except OSError as exc:
            print(f"{host}: {exc!r}", file=sys.stderr)
            return False
        return True

    verdict({"by_name": reached(os.environ["SERVER_NAME"]),
             "by_ip": reached(os.environ["SERVER_IP"]),
             "interfaces": sorted(os.listdir("/sys/class/net"))})
""")


@pytest.mark.docker
def test_network_choice_decides_what_the_script_can_reach(
    engine: docker.DockerClient,
    server: Server,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server answers before the batch starts, so `none` failing to reach it is the
    network's doing; `none` leaves only the loopback interface."""
    env = f"SERVER_NAME: {server.name}, SERVER_IP: '{server.ip}'"
    batch = run_batch(
        tmp_path,
        capsys,
        jobs_yaml(
            image_name,
            f"""
        - name: joined
          scripts: reach.py
          network: {server.network}
          env: {{{env}, EXPECT: {expect(by_name=True, by_ip=True)}}}
        - name: isolated
          scripts: reach.py
          network: none
          env: {{{env}, EXPECT: {expect(by_name=False, by_ip=False, interfaces=["lo"])}}}
    """,
        ),
        {"reach.py": NETWORK_PROBE},
    )

    assert batch.assert_succeeded("joined-reach")["by_name"] is True
    facts = batch.assert_succeeded("isolated-reach")
    assert (facts["by_name"], facts["by_ip"], facts["interfaces"]) == (False, False, ["lo"])


# -- 4. names and paths in the jobs file ----------------------------------------------------------

LOCATED = r"^{file}:\d+:\d+: {key}: .+"


def validate(jobs: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["validate", str(jobs)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize(
    ("top", "job_name", "key"),
    [
        ("", "../../x", r"jobs\[0\]\.name"),
        ("", "a/b", r"jobs\[0\]\.name"),
        ("", "..", r"jobs\[0\]\.name"),
        ("name: ../../x\n", "ok", r"name"),
        ("name: a/b\n", "ok", r"name"),
    ],
)
def test_names_that_could_leave_the_batch_dir_are_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], top: str, job_name: str, key: str
) -> None:
    jobs = write_project(
        tmp_path,
        f"version: 1\n{top}jobs:\n  - name: '{job_name}'\n"
        "    framework: langgraph\n    scripts: ok.py\n",
        {"ok.py": "print('ok')\n"},
    )

    code, output = validate(jobs, capsys)

    assert code == EXIT_BAD_INPUT
    assert re.search(LOCATED.format(file=re.escape(str(jobs)), key=key), output, re.M), output


def test_matrix_values_cannot_put_a_slash_into_a_run_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = write_project(
        tmp_path,
        "version: 1\njobs:\n  - name: m\n    framework: langgraph\n"
        "    scripts: ok.py\n"
        "    matrix: {TARGET: ['../../etc', 'a/b', '..']}\n",
        {"ok.py": "print('ok')\n"},
    )

    assert cli.main(["plan", str(jobs), "--json"]) == EXIT_OK

    run_ids = [r["run_id"] for r in json.loads(capsys.readouterr().out)["runs"]]
    assert len(run_ids) == 3
    for run_id in run_ids:
        assert "/" not in run_id and ".." not in run_id.split("-"), run_ids
        assert Path(run_id).name == run_id and not run_id.startswith(".")


def outside_layout(tmp_path: Path) -> Path:
    """proj/ with ok.py, link.py -> ../outside/evil.py and linked/ -> ../outside; returns proj."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text(
        "print('ran the script outside the jobs dir')\n", encoding="utf-8"
    )
    project = tmp_path / "proj"
    project.mkdir()
    (project / "ok.py").write_text("print('ok')\n", encoding="utf-8")
    (project / "link.py").symlink_to(Path("..") / "outside" / "evil.py")
    (project / "linked").symlink_to(Path("..") / "outside", target_is_directory=True)
    return project


@pytest.mark.parametrize(
    "pattern",
    [
        "../outside/*.py",
        "../*/evil.py",
        "{tmp}/outside/*.py",
        "*.py",
        "link*",
        "**/*.py",
        "linked/*.py",
        "linked/*",
    ],
)
def test_globs_reaching_outside_the_jobs_dir_are_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pattern: str
) -> None:
    """Also through a symlink inside the jobs dir: a glob is never followed out of it."""
    project = outside_layout(tmp_path)
    jobs = project / "jobs.yaml"
    jobs.write_text(
        f"version: 1\njobs:\n  - name: g\n    framework: langgraph\n    scripts: "
        f"'{pattern.format(tmp=tmp_path)}'\n",
        encoding="utf-8",
    )

    code, output = validate(jobs, capsys)

    assert code == EXIT_BAD_INPUT, output
    assert re.search(
        LOCATED.format(file=re.escape(str(jobs)), key=r"jobs\[0\]\.scripts"), output, re.M
    ), output
    assert "outside the jobs file's directory" in output


@pytest.mark.docker
def test_explicit_paths_outside_or_through_a_symlink_are_allowed_and_run(
    engine: docker.DockerClient,
    image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = outside_layout(tmp_path)
    jobs = project / "jobs.yaml"
    jobs.write_text(
        jobs_yaml(
            image_name,
            """
        - {name: up, scripts: ../outside/evil.py}
        - {name: link, scripts: link.py}
        - {name: linkeddir, scripts: linked/evil.py}
    """,
        ),
        encoding="utf-8",
    )

    code, output = validate(jobs, capsys)
    assert (code, output) == (EXIT_OK, "OK: 3 runs, 1 images\n")

    out_dir = tmp_path / "out"
    code = cli.main(["run", str(jobs), "-o", str(out_dir), "--no-progress"])
    captured = capsys.readouterr()
    manifest = json.loads((only_batch_dir(out_dir) / "manifest.json").read_text())
    batch = Batch(code, captured.out, captured.err, only_batch_dir(out_dir), manifest)
    for run_id in ("up-evil", "link-link", "linkeddir-evil"):
        assert batch.run(run_id)["status"] == "succeeded", (
            run_id,
            batch.run(run_id)["error"],
            batch.log(run_id, "stderr.log"),
        )
        assert batch.log(run_id) == "ran the script outside the jobs dir\n"
