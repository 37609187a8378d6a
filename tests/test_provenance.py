"""provenance: the jobs file's git commit, branch and dirty flag, from a real git in temp dirs;
`run --require-clean` refusing a dirty or untracked batch before any engine is touched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Project
from fakes import Behaviour, FakeBackend, failed
from report_batches import default_behaviour, run_fake_batch

from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import EXIT_BAD_INPUT
from safeagents_batch.execution.batch import run_batch
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.execution.rerun import rerun_batch
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.records.manifest import load_manifest
from safeagents_batch.records.provenance import GitCheck, GitState, git_check
from safeagents_batch.report.page import write_report

JOBS = """\
version: 1
frameworks:
  plain: {packages: []}
jobs:
  - {name: j, framework: plain, scripts: [scripts/a.py]}
"""


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def repo(project: Project) -> Project:
    """The project as a git work tree on branch `main`, everything committed."""
    project.write("jobs.yaml", JOBS)
    project.write(".gitignore", "logs/\n")
    git(project.root, "init", "-q", "-b", "main")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "first")
    return project


def state(project: Project) -> GitCheck | None:
    root = project.root
    return git_check(root / "jobs.yaml", [root / "scripts" / "a.py"])


def clean_at(commit: str, branch: str | None = "main") -> GitCheck:
    return GitCheck(GitState(commit=commit, branch=branch, dirty=False), ())


def test_outside_a_work_tree_there_is_no_provenance(project: Project) -> None:
    assert state(project) is None


def test_a_committed_tree_is_clean_at_its_commit_and_branch(repo: Project) -> None:
    assert state(repo) == clean_at(git(repo.root, "rev-parse", "HEAD"))


@pytest.mark.parametrize("touch", ["scripts/a.py", "jobs.yaml"])
def test_a_modified_jobs_file_or_script_is_dirty(repo: Project, touch: str) -> None:
    repo.write(touch, "changed\n")
    found = state(repo)
    assert found is not None and found.state.dirty and found.changed == (touch,)


def test_an_untracked_script_is_dirty_other_files_do_not_matter(repo: Project) -> None:
    repo.write("scripts/b.py", "unrelated\n")
    repo.write("notes.txt", "unrelated\n")
    assert state(repo) == clean_at(git(repo.root, "rev-parse", "HEAD"))
    new = repo.write("scripts/new.py")
    found = git_check(repo.root / "jobs.yaml", [new])
    assert found is not None and found.state.dirty and found.changed == ("scripts/new.py",)


def test_no_commit_yet_and_a_detached_head_are_none_not_errors(project: Project) -> None:
    project.write("jobs.yaml", JOBS)
    git(project.root, "init", "-q", "-b", "main")
    found = state(project)
    assert found is not None and found.state.commit is None and found.state.dirty
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "first")
    git(project.root, "checkout", "-q", "--detach")
    detached = state(project)
    assert detached is not None and detached.state.branch is None and not detached.state.dirty


def test_git_missing_is_no_provenance(repo: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo.root / "nowhere"))
    assert state(repo) is None


def test_the_manifest_records_git_and_an_old_manifest_without_it_loads(repo: Project) -> None:
    batch_dir = run_fake_batch(repo, default_behaviour, JOBS)
    data = json.loads((batch_dir / "manifest.json").read_text("utf-8"))
    head = git(repo.root, "rev-parse", "HEAD")
    assert data["jobs_file"]["git"] == {"commit": head, "branch": "main", "dirty": False}
    assert load_manifest(batch_dir).jobs_file.git == GitState(
        commit=head, branch="main", dirty=False
    )
    del data["jobs_file"]["git"]  # as written before provenance existed
    (batch_dir / "manifest.json").write_text(json.dumps(data), "utf-8")
    assert load_manifest(batch_dir).jobs_file.git is None


def test_outside_git_the_manifest_says_null(project: Project) -> None:
    batch_dir = run_fake_batch(project, default_behaviour, JOBS)
    data = json.loads((batch_dir / "manifest.json").read_text("utf-8"))
    assert data["jobs_file"]["git"] is None


def test_require_clean_refuses_a_dirty_script_with_one_line(
    repo: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.write("scripts/a.py", "print('edited')\n")
    code = main(["run", str(repo.root / "jobs.yaml"), "--require-clean"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert err.splitlines() == [
        "safeagents-batch: error: --require-clean: uncommitted changes in the jobs file or "
        "its scripts: scripts/a.py"
    ]
    assert not (repo.root / "logs").exists()


def test_require_clean_refuses_a_jobs_file_outside_git(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project.write("jobs.yaml", JOBS)
    assert main(["run", str(path), "--require-clean"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip().endswith("is not in a git work tree")


def test_each_attempt_records_the_code_it_ran_and_a_rerun_after_an_edit_says_dirty(
    project: Project,
) -> None:
    """The first attempts ran the committed code; the script is then edited, not committed,
    and the failed runs rerun: their new attempts say dirty, the report shows both states.
    A changed file that does not ship (the env file, the batch output) counts for neither."""
    # The env file and the output dir sit in the script's dir, which ships (but for them).
    among_scripts = "scripts: [scripts/a.py], env_file: scripts/.env"
    text = JOBS.replace("scripts: [scripts/a.py]", among_scripts)
    project.write(
        "jobs.yaml", text.replace("version: 1\n", "version: 1\noutput_dir: scripts/out\n")
    )
    project.write("scripts/.env", "A=1\n")
    (project.root / "scripts" / "out").mkdir()  # the user's: no `.gitignore` of the tool's
    git(project.root, "init", "-q", "-b", "main")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "first")
    project.write("scripts/.env", "A=2\n")  # changed, never shipped: still clean
    path = project.root / "jobs.yaml"
    jobs_file, specs = load_and_expand(path)
    backend = FakeBackend({s.run_id: [failed(), Behaviour()] for s in specs})
    batch_dir = run_batch(jobs_file, specs, backend, CollectingReporter()).batch_dir
    project.write("scripts/a.py", "print('edited')\n")

    rerun_batch(batch_dir, backend, CollectingReporter())

    head = git(project.root, "rev-parse", "HEAD")
    manifest = load_manifest(batch_dir)
    states = [[a.git for a in run.attempts] for run in manifest.runs.values()]
    clean, dirty = (GitState(commit=head, branch="main", dirty=d) for d in (False, True))
    assert states == [[clean, dirty]] * len(specs)
    assert manifest.jobs_file.git == clean  # the batch as it was made
    page = write_report(batch_dir).html.read_text()
    assert 'id="code-states"' in page and page.count(head[:12]) >= 3  # git row and both states
