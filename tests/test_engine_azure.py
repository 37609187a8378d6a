"""Azure credentials that authenticate, and images whose contents are on record: the real CLI
against a real engine, as root (in process) and as an ordinary user (a child process).

One image with the Azure CLI (about 650 MB) is built once for the module and shared; it is
pinned by an unlabelled container so that a concurrent `clean --images` leaves it, and removed
at the end. The fake ~/.azure holds one subscription, `acc-sub`, and no token.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from safeagents_batch.backends.docker.images import DockerImages
from safeagents_batch.cli import main as cli
from safeagents_batch.core.errors import EXIT_OK
from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.plan import job_image
from safeagents_batch.staging.images import image_spec

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
SUBSCRIPTION_ID = "0b1f6471-1bf0-4dda-aec3-5f4e3c2d1a0b"  # a secret the batch dir must not see
PROFILE = {
    "installationId": "11111111-2222-3333-4444-555555555555",
    "subscriptions": [
        {
            "id": SUBSCRIPTION_ID,
            "name": "acc-sub",
            "state": "Enabled",
            # A service principal: asked for a token, the CLI looks in its local cache first and
            # says it has none there, with no network (a user account would first fetch the
            # tenant's OpenID configuration from login.microsoftonline.com).
            "user": {"name": "11111111-0000-0000-0000-000000000001", "type": "servicePrincipal"},
            "isDefault": True,
            "tenantId": "66666666-7777-8888-9999-000000000000",
            "environmentName": "AzureCloud",
            "homeTenantId": "66666666-7777-8888-9999-000000000000",
            "managedByTenants": [],
        }
    ],
}
ACCOUNT_SHOW = """\
import subprocess, sys
done = subprocess.run(["az", "account", "show", "--query", "name", "-o", "tsv"],
                      capture_output=True, text=True)
print("account:", done.stdout.strip())
print(done.stderr, file=sys.stderr)
sys.exit(done.returncode)
"""
CONFIGURE = """\
import subprocess, sys
done = subprocess.run(["az", "configure", "--defaults", "group=acc-rg"],
                      capture_output=True, text=True)
print(done.stdout, done.stderr)
sys.exit(done.returncode)
"""
CREDENTIAL = """\
import subprocess
from azure.identity import AzureCliCredential
# What the credential asks the CLI (it shows only a summary of the CLI's answer).
asked = subprocess.run(["az", "account", "get-access-token", "--resource",
                        "https://management.azure.com"], capture_output=True, text=True)
print("cli:", asked.stderr.strip())
try:
    AzureCliCredential().get_token("https://management.azure.com/.default")
except Exception as exc:
    print("credential:", type(exc).__name__, exc)
else:
    print("credential: a token")
"""


def header(image_name: str) -> str:
    # `azure_cli` is not written: a job that binds ~/.azure gives the framework the CLI.
    return textwrap.dedent(
        f"""\
        version: 1
        name: az
        image_name: {image_name}
        frameworks:
          azplain: {{packages: [azure-identity]}}
        defaults: {{framework: azplain, bind_azure_folder: true, timeout: 300}}
        jobs:
        """
    )


@dataclass(frozen=True)
class AzureImage:
    image_name: str
    tag: str

    def project(self, root: Path, jobs: str, scripts: dict[str, str]) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        for name, text in scripts.items():
            (root / name).write_text(text, encoding="utf-8")
        jobs_file = root / "jobs.yaml"
        jobs_file.write_text(header(self.image_name) + textwrap.dedent(jobs), encoding="utf-8")
        return jobs_file


@pytest.fixture(scope="module")
def azure_image(
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
    azure_layer: str,
) -> Iterator[AzureImage]:
    image_name = f"sab-azure-test-{secrets.token_hex(4)}"
    root = tmp_path_factory.mktemp("azure-image")
    jobs = AzureImage(image_name, "").project(
        root, "  - {name: b, scripts: b.py}\n", {"b.py": "pass\n"}
    )
    loaded = load_jobs_file(jobs)
    config = job_image(loaded.jobs[0], loaded)
    assert config.azure_cli  # from the job's bind_azure_folder
    spec = image_spec(config)
    outcome = DockerImages(docker_client, root / "builds").ensure(spec)
    assert outcome.status == "built", outcome.error
    pin = docker_client.containers.create(spec.tag, ["true"], name=f"{image_name}-pin")
    try:
        yield AzureImage(image_name, spec.tag)
    finally:
        pin.remove(force=True)
        docker_client.images.remove(spec.tag, force=True)


def fake_azure(home: Path, owner: int = 0) -> Path:
    """HOME/.azure with azureProfile.json (0600) and a 0700 dir, owned by `owner`."""
    azure = home / ".azure"
    azure.mkdir(parents=True)
    profile = azure / "azureProfile.json"
    profile.write_text(json.dumps(PROFILE), encoding="utf-8-sig")  # as the CLI writes it
    for path in (home, azure, profile):
        os.chown(path, owner, owner)
    azure.chmod(0o700)
    profile.chmod(0o600)
    return azure


def tree_state(folder: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry under `folder`: mode, owner, group and content digest (files)."""
    state = {}
    for path in sorted([folder, *folder.rglob("*")]):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[str(path.relative_to(folder))] = (info.st_mode, info.st_uid, info.st_gid, digest)
    return state


def only_batch_dir(output: Path) -> Path:
    [batch_dir] = [d for d in output.iterdir() if (d / "manifest.json").is_file()]
    return batch_dir


def stdout_of(batch_dir: Path, run_id: str) -> str:
    return (batch_dir / "runs" / run_id / "attempt-1" / "stdout.log").read_text("utf-8")


def manifest(batch_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch_dir / "manifest.json").read_text("utf-8"))
    return data


def assert_nothing_of_azure_in(batch_dir: Path) -> None:
    for path in batch_dir.rglob("*"):
        assert path.name != "azureProfile.json", path
        if path.is_file():
            assert SUBSCRIPTION_ID.encode() not in path.read_bytes(), path


def run_as_root(jobs: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["run", str(jobs), "--no-progress", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# -- as root ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_ro_copy_lets_az_work_as_root_and_leaves_the_host_folder_untouched(
    azure_image: AzureImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    azure = fake_azure(tmp_path / "home")
    before = tree_state(azure)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    jobs = azure_image.project(
        tmp_path / "proj",
        """\
          - {name: show, scripts: show.py}
          - {name: rofs, scripts: show.py, read_only_rootfs: true}
          - {name: conf, scripts: configure.py}
          - {name: cred, scripts: credential.py, network: none}
        """,
        {"show.py": ACCOUNT_SHOW, "configure.py": CONFIGURE, "credential.py": CREDENTIAL},
    )
    code, output = run_as_root(jobs, capsys)
    assert code == EXIT_OK, output
    batch_dir = only_batch_dir(tmp_path / "proj" / "logs")
    assert "account: acc-sub" in stdout_of(batch_dir, "show-show")
    assert "account: acc-sub" in stdout_of(batch_dir, "rofs-show")  # a read-only rootfs too
    # The CLI wrote its config into its copy (and succeeded): the host's folder never changed.
    assert tree_state(azure) == before
    assert_nothing_of_azure_in(batch_dir)
    # AzureCliCredential found its module and `az`, and `az` said the account has no token.
    credential = stdout_of(batch_dir, "cred-credential")
    assert "credential: CredentialUnavailableError" in credential, credential
    assert "Please run 'az login'" in credential, credential
    assert "Could not retrieve credential from local cache" in credential, credential
    assert "not found" not in credential.lower(), credential


@pytest.mark.usefixtures("engine")
def test_rw_as_root_writes_what_the_cli_changed_back_keeping_owners_and_modes(
    azure_image: AzureImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    azure = fake_azure(tmp_path / "home")
    profile_before = tree_state(azure)["azureProfile.json"]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    jobs = azure_image.project(
        tmp_path / "proj",
        """\
          - {name: conf, scripts: configure.py, azure_mount: rw}
          - {name: show, scripts: show.py, azure_mount: rw}
        """,
        {"show.py": ACCOUNT_SHOW, "configure.py": CONFIGURE},
    )
    # One at a time: of two concurrent runs that change one file, the first to end wins (its
    # rule is tested in test_backends_azure), which would make the order matter here.
    code, output = run_as_root(jobs, capsys, "-j", "1")
    assert code == EXIT_OK, output
    batch_dir = only_batch_dir(tmp_path / "proj" / "logs")
    assert "account: acc-sub" in stdout_of(batch_dir, "show-show")
    config = azure / "config"
    assert "group = acc-rg" in config.read_text("utf-8")
    info = config.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
    after = tree_state(azure)
    assert after["azureProfile.json"][:3] == profile_before[:3]  # still root's, still 0600
    assert not [name for name in after if name.endswith(".tmp")]
    assert_nothing_of_azure_in(batch_dir)


# -- images on record ------------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_manifest_names_every_package_of_a_built_and_of_a_cached_image(
    azure_image: AzureImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    docker_client: docker.DockerClient,
) -> None:
    fake_azure(tmp_path / "home")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    jobs = azure_image.project(tmp_path / "proj", "  - {name: ok, scripts: ok.py}\n", {"ok.py": ""})
    code, output = run_as_root(jobs, capsys)
    assert code == EXIT_OK, output
    [image] = manifest(only_batch_dir(tmp_path / "proj" / "logs"))["images"]
    assert image["status"] == "cached"
    frozen = _freeze_in(docker_client, azure_image.tag)
    assert image["packages"] == frozen and any(p.startswith("azure-identity==") for p in frozen)
    assert any(p.startswith("azure-cli==") for p in image["azure_cli_packages"])
    labels = docker_client.images.get(azure_image.tag).labels
    assert json.loads(labels["safeagents-batch.packages"]) == frozen


def _freeze_in(client: docker.DockerClient, tag: str) -> list[str]:
    out = client.containers.run(tag, ["python", "-m", "pip", "freeze", "--all"], remove=True)
    return [line for line in bytes(out).decode().splitlines() if line]


@pytest.mark.usefixtures("engine")
def test_build_prints_resolved_versions_and_a_pin_changes_the_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fresh_image_name: str
) -> None:
    jobs = tmp_path / "jobs.yaml"
    (tmp_path / "a.py").write_text("", encoding="utf-8")

    def write(package: str) -> None:
        jobs.write_text(
            f"version: 1\nimage_name: {fresh_image_name}\n"
            f"frameworks:\n  plain: {{packages: [{package}]}}\n"
            "jobs:\n  - {name: a, framework: plain, scripts: a.py}\n",
            encoding="utf-8",
        )

    write("six")
    assert cli.main(["build", str(jobs)]) == EXIT_OK
    first = capsys.readouterr().out
    assert "built" in first and "six==" in first, first
    version = first.split("six==")[1].split()[0]
    write(f"six=={version}")
    assert cli.main(["build", str(jobs)]) == EXIT_OK
    second = capsys.readouterr().out
    assert second.split()[1] != first.split()[1], (first, second)  # the tags
    assert f"six=={version}" in second, second
    # Found again by its tag: the versions come from the image's label, not from a build.
    assert cli.main(["build", str(jobs)]) == EXIT_OK
    third = capsys.readouterr().out
    assert third.startswith("cached") and f"six=={version}" in third, third


# -- as an ordinary user ---------------------------------------------------------------------


@dataclass(frozen=True)
class OtherUser:
    """`nobody`, with the docker group for the engine's socket (setpriv: no account change)."""

    uid: int
    gid: int
    docker_gid: int
    pythonpath: str

    def run(self, args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": self.pythonpath}
        argv = [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            f"--groups={self.docker_gid}",
            "--inh-caps=-all",
            "/usr/bin/python3",
            "-m",
            "safeagents_batch",
            *args,
        ]
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=600, check=False
        )


# Lists the distributions' top-level modules the tool loads for `validate` and `run`.
IMPORTED = """\
import sys, sysconfig
from safeagents_batch.cli import main as cli
from safeagents_batch.backends.docker import backend as docker
cli.main(["validate", sys.argv[1]])
site = sysconfig.get_paths()["purelib"]
print(" ".join(sorted({n.split(".")[0] for n, m in list(sys.modules.items())
                        if (getattr(m, "__file__", None) or "").startswith(site)})))
"""


@pytest.fixture(scope="module")
def other_user(azure_image: AzureImage) -> Iterator[OtherUser]:
    """The tool and what it imports, copied where any user can read them: the venv's python
    lives in root's home; Debian's /usr/bin/python3 is the same minor version."""
    if os.geteuid() != 0:
        pytest.fail("these tests run as root: they switch to an ordinary user themselves")
    root = Path(tempfile.mkdtemp(prefix="sab-azure-user-"))
    try:
        root.chmod(0o755)
        jobs = azure_image.project(root / "probe", "  - {name: b, scripts: b.py}\n", {"b.py": ""})
        listed = subprocess.run(
            [sys.executable, "-c", IMPORTED, str(jobs)], capture_output=True, text=True, check=True
        )
        for name in {"safeagents_batch", *listed.stdout.splitlines()[-1].split()}:
            _copy_import(name, root)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        import grp

        yield OtherUser(65534, 65534, grp.getgrnam("docker").gr_gid, str(root))
    finally:
        shutil.rmtree(root)


def _copy_import(name: str, root: Path) -> None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    assert spec is not None, name
    if spec.submodule_search_locations:  # a package (a namespace package: every part of it)
        for location in spec.submodule_search_locations:
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(location, root / Path(location).name, ignore=ignore, dirs_exist_ok=True)
    else:
        assert spec.origin is not None, name
        shutil.copy2(spec.origin, root / Path(spec.origin).name)


@pytest.fixture
def user_dir(other_user: OtherUser) -> Iterator[Path]:
    """A dir the other user owns (pytest's tmp dirs are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="sab-azure-run-"))
    os.chown(path, other_user.uid, other_user.gid)
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _give(path: Path, user: OtherUser) -> None:
    for entry in [path, *path.rglob("*")]:
        os.chown(entry, user.uid, user.gid)


@pytest.mark.usefixtures("engine")
def test_ro_and_rw_work_for_an_ordinary_user(
    azure_image: AzureImage, other_user: OtherUser, user_dir: Path
) -> None:
    home = user_dir / "home"
    azure = fake_azure(home, owner=other_user.uid)
    jobs = azure_image.project(
        user_dir / "proj",
        """\
          - {name: show, scripts: show.py}
          - {name: ro-conf, scripts: configure.py}
        """,
        {"show.py": ACCOUNT_SHOW, "configure.py": CONFIGURE},
    )
    _give(user_dir / "proj", other_user)
    before = tree_state(azure)
    done = other_user.run(["run", str(jobs), "--no-progress"], home)
    assert done.returncode == 0, done.stdout + done.stderr
    batch_dir = only_batch_dir(user_dir / "proj" / "logs")
    assert "account: acc-sub" in stdout_of(batch_dir, "show-show")
    assert tree_state(azure) == before
    assert_nothing_of_azure_in(batch_dir)
    assert batch_dir.stat().st_uid == other_user.uid  # the tool really ran as that user

    # rw binds the user's own folder in place: what the CLI writes is the user's, on the host.
    jobs.write_text(
        header(azure_image.image_name)
        + "  - {name: rw-conf, scripts: configure.py, azure_mount: rw}\n",
        encoding="utf-8",
    )
    done = other_user.run(["run", str(jobs), "--no-progress"], home)
    assert done.returncode == 0, done.stdout + done.stderr
    config = azure / "config"
    assert "group = acc-rg" in config.read_text("utf-8")
    assert config.stat().st_uid == other_user.uid
