"""The Slurm backend: each attempt is a Slurm job named after its run, submitted with `sbatch`;
the batch dir on the cluster's shared filesystem is the wire (backends/slurm/wire.py). The job
runs the attempt on its node's own engine (backends/slurm/node.py); the driver follows its
spool, feeds the attempt's sink and stays the only writer of the batch's records.

Images are built on the driver's engine. A node whose engine lacks one says so; the driver
then saves the image once into the batch's shared cache, named by its image id, and submits
the attempt again, and each node loads it once. This package reaches the nodes the same way:
copied once into the shared directory, by digest, so a node never runs a stale copy of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from safeagents_batch.backends.base import (
    QUIET_BUILD,
    AttemptRequest,
    BuildProgress,
    CleanRequest,
    Sink,
)
from safeagents_batch.backends.docker.backend import DockerBackend, through_gateway
from safeagents_batch.backends.slurm import commands, wire
from safeagents_batch.backends.slurm.commands import JobWatch, SlurmError, SlurmOptions
from safeagents_batch.backends.slurm.follow import Follower
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import EngineUnavailable, UsageError, one_line
from safeagents_batch.core.once import OncePerKey
from safeagents_batch.core.tarsafe import tar_tree
from safeagents_batch.records.model import AttemptOutcome, ImageRecord
from safeagents_batch.staging.images import ImageSpec

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # safeagents_batch/: what the nodes import
SHARE_DIR = ".safeagents-slurm"  # below the shared directory: the package, the probe
COMMENT = "safeagents-batch:"  # each job's --comment: the batch it belongs to
NODE_MAIN = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from safeagents_batch.backends.slurm.node import main; sys.exit(main(sys.argv[2:]))"
)
DRIVER_MAIN = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from safeagents_batch.cli.main import main; sys.exit(main(sys.argv[2:]))"
)
# Whether the node sees the marker and imports this package from the share: nothing else of
# the package, so a node without it says so rather than failing on an import.
PROBE_MAIN = (
    "import os, sys; marker = sys.argv[2]\n"
    "if not os.path.isdir(marker): print('the shared directory is not there'); sys.exit()\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "try: import safeagents_batch.backends.slurm.node\n"
    "except Exception as exc: print(f'this Python cannot import the package: {exc!r}')\n"
    "else: print('visible')"
)
AZURE_NEEDS_OPT_IN = (
    "bind_azure_folder on a Slurm cluster copies this machine's ~/.azure to the node only "
    "with --ship-azure; run not started"
)


class SlurmBackend:
    """The Backend of a Slurm cluster; `local` is the driver's engine, where images are built;
    `share` a directory the nodes see at the same path (the batch dirs go below it)."""

    name = "slurm"

    def __init__(
        self,
        local: DockerBackend,
        options: SlurmOptions,
        share: Path,
        package: Path,
        nodes: list[str],
        engine_kind: str = "docker",
        warn: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.local = local
        self.options = options
        self.share = share
        self.package = package
        self.nodes = nodes
        self.engine_kind = engine_kind
        self.python = options.python or sys.executable
        self.watch = JobWatch(warn=warn)
        self._archives: OncePerKey[str, Path] = OncePerKey()
        self._saved: list[Path] = []
        self._host: OncePerKey[str, str] = OncePerKey()

    @classmethod
    def connect(
        cls,
        local: DockerBackend,
        options: SlurmOptions,
        share: Path,
        warn: Callable[[str], None] = lambda text: None,
        engine_kind: str = "docker",
    ) -> SlurmBackend:
        """Checks the cluster answers, ships the package into `share`, and probes that every
        node that is up sees it (one step per node); a node that does not is bad input."""
        commands.check_sbatch_args(options.sbatch_args)
        nodes = commands.require_cluster()
        share = share.absolute()
        package = ship_package(share / SHARE_DIR)
        backend = cls(local, options, share, package, nodes, engine_kind, warn)
        backend.probe(warn)
        return backend

    def close(self) -> None:
        """The image archives saved for the nodes: a batch's only while its command runs
        (each node has loaded what it needed; a later command saves them again if asked)."""
        for archive in self._saved:
            archive.unlink(missing_ok=True)

    # -- the probe -----------------------------------------------------------------------

    def probe(self, warn: Callable[[str], None]) -> None:
        """Whether each node sees `share` (a directory only this command made there), with
        this Python and the package in it: before anything is submitted. A node too busy to
        give a step a CPU within `srun --immediate`'s wait is only warned about."""
        marker = self.share / SHARE_DIR / f"probe-{secrets.token_hex(6)}"
        marker.mkdir(parents=True)
        try:
            answers = self._on_nodes(self.nodes, [str(marker)], PROBE_MAIN)
        finally:
            marker.rmdir()
        problems = []
        for node, answer in answers.items():
            if isinstance(answer, Exception) and commands.UNALLOCATED in str(answer):
                warn(f"slurm node {node} could not be probed: {one_line(answer, 300)}")
            elif isinstance(answer, Exception):
                problems.append(f"{node} ({one_line(answer, 300)})")
            elif answer != "visible":
                problems.append(f"{node} ({answer})")
        if problems:
            raise UsageError(
                f"{self.share} is not usable at the same path on slurm node(s) "
                f"{'; '.join(problems)}: put the output dir on the cluster's shared "
                "filesystem (--output), with this Python on every node (--slurm-python)"
            )

    def _on_nodes(
        self, nodes: Sequence[str], argv: list[str], main: str = ""
    ) -> dict[str, str | Exception]:
        """A node command (node.py's main, or `main` with this package) on each node at
        once, as `srun` steps."""
        command = [self.python, "-c", main or NODE_MAIN, str(self.package), *argv]

        def one(node: str) -> str | Exception:
            try:
                return commands.node_command(node, command).strip()
            except (SlurmError, EngineUnavailable) as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(16, len(nodes)))) as pool:
            return dict(zip(nodes, pool.map(one, nodes), strict=True))

    # -- Backend -------------------------------------------------------------------------

    def ensure_images(
        self,
        specs: Sequence[ImageSpec],
        build_logs: Path,
        *,
        rebuild: bool = False,
        progress: BuildProgress = QUIET_BUILD,
    ) -> dict[str, ImageRecord]:
        """Built (or found) on the driver's engine; each reaches a node when an attempt
        there asks for it (run below)."""
        return self.local.ensure_images(specs, build_logs, rebuild=rebuild, progress=progress)

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        started = now_iso()
        refused = self._refused(request)
        if refused is not None:
            return _error(started, refused)
        if not request.models:
            return self._on_cluster(request, sink, cancel, started)
        return self._with_models(request, sink, cancel, started)

    def _with_models(
        self, request: AttemptRequest, sink: Sink, cancel: threading.Event, started: str
    ) -> AttemptOutcome:
        """The attempt with a pass at the driver's model gateway (through_gateway), reached
        from the nodes at gateway_host()."""
        try:
            host = self.gateway_host()
        except (SlurmError, OSError) as exc:  # scontrol, or no route to the controller
            why = f"no address of this machine for the nodes' model calls: {one_line(exc)}"
            return _error(started, f"{why} (give one with --slurm-gateway-host)")
        return through_gateway(
            self.local.models,
            request,
            sink,
            host,
            lambda passed: self._on_cluster(passed, sink, cancel, started),
        )

    def gateway_host(self) -> str:
        """The address of this machine that the nodes reach it by: `--slurm-gateway-host`,
        else the one it would reach the controller from (a UDP socket's connect sends
        nothing; it only picks the route)."""
        if self.options.gateway_host:
            return self.options.gateway_host
        return self._host.get("", route_to_controller)

    def _on_cluster(
        self, request: AttemptRequest, sink: Sink, cancel: threading.Event, started: str
    ) -> AttemptOutcome:
        batch_dir = request.batch_dir
        assert batch_dir is not None, "the executor names the batch dir"
        spool = wire.spool_dir(batch_dir, request.run_id, request.attempt)
        archive: Path | None = None
        for _ in range(2):  # again only once the image was put where the node loads it
            try:
                result = self._submit_and_follow(request, spool, archive, sink, cancel, started)
            except (SlurmError, OSError) as exc:
                return _error(started, f"slurm: {one_line(exc, 600)}")
            if not result.image_missing or cancel.is_set():
                return result.outcome
            try:
                archive = self._archive(request.image, batch_dir)
            except Exception as exc:
                return _error(started, f"image {request.image} not saved for the nodes: {exc}")
        return _error(started, f"image {request.image} is still missing on the node once saved")

    def _refused(self, request: AttemptRequest) -> str | None:
        if request.azure_dir is not None and not self.options.ship_azure:
            return AZURE_NEEDS_OPT_IN
        return None

    def _submit_and_follow(
        self,
        request: AttemptRequest,
        spool: Path,
        archive: Path | None,
        sink: Sink,
        cancel: threading.Event,
        started: str,
    ) -> wire.NodeOutcome:
        try:
            job_id = self._submit(request, spool, archive)
        except BaseException:
            self._drop_spool(spool)  # the order's env values go with it
            raise
        return self._follow(spool, job_id, sink, cancel, started)

    def _follow(
        self, spool: Path, job_id: str, sink: Sink, cancel: threading.Event, started: str
    ) -> wire.NodeOutcome:
        """The job's spool to the attempt's end, then gone; a spool the follower handed to
        its node (a job lost while its node's process may live on) is the node's to remove.
        Interrupted here (a KeyboardInterrupt), the job and its spool are left as they are:
        a later `rerun` finds them."""
        try:
            follower = Follower(spool, job_id, self.watch, sink, cancel, started, self._scancel)
        except OSError:
            with contextlib.suppress(Exception):
                self._scancel(job_id)
            self._drop_spool(spool)
            raise
        result = follower.follow()
        if not follower.abandoned:
            self._drop_spool(spool)
        return result

    def _drop_spool(self, spool: Path) -> None:
        """Once followed, a spool is of no more use: its output is in the attempt's logs. A
        job lost without an outcome left its own log there; it went to the sink first."""
        shutil.rmtree(spool, ignore_errors=True)

    def _submit(self, request: AttemptRequest, spool: Path, archive: Path | None) -> str:
        """A fresh spool with the order and the job script, then `sbatch`; the job id is
        written beside them (a later `rerun` finds the job by it)."""
        if spool.exists():
            shutil.rmtree(spool)  # a first submission's, whose node lacked the image
        assert request.batch_dir is not None
        directory = wire.make_spool(request.batch_dir, request.run_id, request.attempt)
        try:
            # No driver path travels: the node makes its own copy of ~/.azure.
            remote = replace(request, azure_dir=None)
            order = wire.Order(
                request=remote,
                image_archive=str(archive) if archive else None,
                azure=request.azure_dir is not None,
            )
            wire.write_private(directory, wire.ORDER, wire.encode_order(order))
            if request.azure_dir is not None:
                wire.write_private(directory, wire.AZURE, tar_tree(request.azure_dir))
            wire.write_private(directory, wire.SCRIPT, self._script(request, spool).encode())
            argv = commands.sbatch_argv(
                self.options,
                name=request.run_id,
                comment=f"{COMMENT}{request.batch_id}",
                log=str(spool / wire.SLURM_LOG),
                resources=request.resources,
                timeout=request.timeout,
                job=request.slurm,
            )
            job_id = commands.submit([*argv, str(spool / wire.SCRIPT)])
            wire.write_private(directory, wire.JOB, job_id.encode())
        finally:
            os.close(directory)
        return job_id

    def _script(self, request: AttemptRequest, spool: Path) -> str:
        node = [self.python, "-c", NODE_MAIN, str(self.package), "run", str(spool)]
        return "\n".join(
            [
                "#!/bin/sh",
                f"# safeagents-batch: run {request.run_id}, attempt {request.attempt}, "
                f"batch {request.batch_id}",
                f"export SAFEAGENTS_ENGINE={shlex.quote(self.engine_kind)}",
                f"exec {shlex.join(node)}",
                "",
            ]
        )

    def submit_driver(
        self, argv: list[str], batch_id: str, sbatch_args: tuple[str, ...]
    ) -> tuple[str, Path]:
        """A batch's driver (`run` with `argv`) as a Slurm job, in this directory and with
        this environment (sbatch's default export); returns its job id and log."""
        drivers = self.share / SHARE_DIR / "drivers"
        drivers.mkdir(parents=True, exist_ok=True)
        script = drivers / f"{batch_id}.sh"
        log = drivers / f"{batch_id}.log"
        command = [self.python, "-c", DRIVER_MAIN, str(self.package), *argv]
        script.write_text(f"#!/bin/sh\n# safeagents-batch: the driver of batch {batch_id}\n"
                          f"exec {shlex.join(command)}\n")  # fmt: skip
        for arg in sbatch_args:
            commands.check_sbatch_args([arg])
        sbatch = [
            "sbatch", "--parsable", f"--job-name=safeagents-batch-driver-{batch_id}",
            f"--comment={COMMENT}{batch_id}:driver", f"--output={log}", "--open-mode=append",
            f"--chdir={Path.cwd()}", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
            *sbatch_args, str(script),
        ]  # fmt: skip
        return commands.submit(sbatch), log

    def _scancel(self, job_id: str) -> None:
        commands.cancel([job_id])

    def _archive(self, tag: str, batch_dir: Path) -> Path:
        """The image as a `docker save` archive in the batch's shared cache, named by its
        image id (the same image is saved once, whichever tags name it); once per tag."""

        def save() -> Path:
            api = self.local.client.api
            image_id = str(api.inspect_image(tag)["Id"]).removeprefix("sha256:")
            target = batch_dir / wire.SLURM_DIR / "images" / f"{image_id}.tar"
            os.close(wire.make_below(batch_dir, (wire.SLURM_DIR, "images")))  # no link on the way
            if target.is_file() and not target.is_symlink():
                return target
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
                try:
                    for chunk in api.get_image(tag, chunk_size=1 << 20):
                        out.write(chunk)
                except BaseException:
                    os.unlink(out.name)
                    raise
            os.replace(out.name, target)
            self._saved.append(target)
            return target

        return self._archives.get(tag, save)

    def reattach(
        self,
        batch_dir: Path,
        run_id: str,
        attempt: int,
        open_sink: Callable[[], Sink],
        cancel: threading.Event,
    ) -> AttemptOutcome | None:
        """The attempt's job, found by the id its spool keeps: followed to its end if Slurm
        still runs it, its outcome read if it ended meanwhile. None: never submitted."""
        spool = wire.spool_dir(batch_dir, run_id, attempt)
        try:
            job_id = wire.read_job_id(batch_dir, run_id, attempt)
        except OSError:  # no spool, or not one the driver made: nothing known
            return None
        if job_id is None:
            # Made, but the driver died before it knew a job id: the sweep cancels such a
            # job (by its comment); its order, env values in it, goes now.
            self._drop_spool(spool)
            return None
        result = self._follow(spool, job_id, open_sink(), cancel, now_iso())
        return result.outcome

    def sweep(self, batch_id: str) -> int:
        """The batch's jobs Slurm still runs cancelled, then its containers removed on every
        node that is up."""
        self._cancel_batch_jobs(batch_id)
        found = self._on_nodes(commands.require_cluster(), ["sweep", batch_id])
        failed = {n: a for n, a in found.items() if isinstance(a, Exception)}
        if failed and len(failed) == len(found):
            raise EngineUnavailable(
                "could not sweep the slurm nodes: "
                + "; ".join(f"{n}: {one_line(e, 200)}" for n, e in failed.items())
            )
        return sum(int(a) for a in found.values() if isinstance(a, str) and a.isdigit())

    def _cancel_batch_jobs(self, batch_id: str) -> None:
        out = commands.call(["squeue", "-h", "-u", commands.user_name(), "-o", "%i|%k"])
        ours = [
            line.split("|", 1)[0]
            for line in out.splitlines()
            if line.partition("|")[2] == f"{COMMENT}{batch_id}"
        ]
        commands.cancel(ours)

    def clean(self, request: CleanRequest) -> list[str]:
        if request.images:
            raise UsageError("clean --images works on the local engine only; drop --backend slurm")
        mode = "dry-run" if request.dry_run else "remove"
        lines = []
        for node, answer in self._on_nodes(commands.require_cluster(), ["clean", mode]).items():
            if isinstance(answer, Exception):
                raise EngineUnavailable(f"could not clean slurm node {node}: {answer}")
            lines += [f"node {node}: {line}" for line in answer.splitlines()]
        return lines

    def available(self) -> bool:
        try:
            commands.require_cluster()
        except (EngineUnavailable, SlurmError):
            return False
        return True

    def where(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "host": socket.gethostname(),
            "nodes": ",".join(self.nodes),
            "partition": self.options.partition or "",
            "engine_kind": self.engine_kind,
        }


def route_to_controller() -> str:
    """This machine's address on the way to the Slurm controller (`scontrol show config`'s
    SlurmctldHost, its address in parentheses if given)."""
    out = commands.call(["scontrol", "show", "config"])
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip().startswith("SlurmctldHost"):
            name, _, address = value.strip().partition("(")
            target = address.rstrip(")") or name
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                return str(probe.getsockname()[0])
    raise SlurmError("`scontrol show config` names no SlurmctldHost")


def ship_package(root: Path) -> Path:
    """This package's source files copied once into `root/package/<digest>/`, the digest of
    their names and contents; returns the directory to put on a node's `sys.path`."""
    files = sorted(
        p for p in PACKAGE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    digest = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(PACKAGE_DIR).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    target = root / "package" / digest.hexdigest()[:32]
    if (target / PACKAGE_DIR.name).is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".package-", dir=target.parent))
    try:
        for path in files:
            copy = staging / PACKAGE_DIR.name / path.relative_to(PACKAGE_DIR)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        staging.chmod(0o755)
        with contextlib.suppress(FileExistsError, OSError):
            staging.rename(target)  # another driver may have put the same copy first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _error(started: str, reason: str) -> AttemptOutcome:
    return AttemptOutcome(status="error", started_at=started, ended_at=now_iso(), error=reason)
