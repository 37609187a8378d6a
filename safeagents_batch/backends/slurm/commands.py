"""Slurm's own commands, as the driver calls them: `sbatch` to submit, `squeue` (one call for
every job the batch watches) for states, `scancel`, `srun` for a command on each node, `sinfo`
for the nodes. No scheduler of our own: Slurm decides where and when.

Each call has a timeout; a failure is one line naming the command and what Slurm said.
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from safeagents_batch.core.errors import EngineUnavailable, UsageError
from safeagents_batch.jobs.model import Resources, SlurmSettings
from safeagents_batch.jobs.placement import sbatch_arg_problem

CALL_SECONDS = 60.0
POLL_SECONDS = 1.0
TERMINAL = frozenset(
    {
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
        "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "REVOKED", "SPECIAL_EXIT",
    }
)  # fmt: skip
GONE = "GONE"  # squeue no longer knows the job (purged `MinJobAge` seconds after its end)
PURGED = "Invalid job id"  # squeue's words for a job id it no longer knows
UNALLOCATED = "Unable to allocate resources"  # srun's words when --immediate ran out
# Beyond the run's own timeout, which the node enforces: Slurm's limit is only the backstop.
TIME_MARGIN_SECONDS = 300
MEMORY_MARGIN_MIB = 256  # the node's own process beside the container


class SlurmError(RuntimeError):
    """A Slurm command failed: the message names it and Slurm's answer."""


@dataclass(frozen=True)
class SlurmOptions:
    """Where and how the attempts are submitted (the command line's `--slurm-*`)."""

    partition: str | None = None
    account: str | None = None
    sbatch_args: tuple[str, ...] = ()
    python: str | None = None  # the nodes' interpreter; None: this one (a shared venv)
    gateway_host: str | None = None  # this machine's address the nodes reach its gateway by
    ship_azure: bool = False  # copy ~/.azure to the node of each attempt that binds it


@dataclass(frozen=True)
class JobState:
    state: str
    node: str = ""
    reason: str = ""

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL or self.state == GONE


def call(argv: Sequence[str], *, timeout: float = CALL_SECONDS) -> str:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=outside_any_job(os.environ),
        )
    except FileNotFoundError:
        raise EngineUnavailable(
            f"`{argv[0]}` not found: --backend slurm runs where Slurm's commands are "
            "(a cluster's login node)"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(argv[:2])}` did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[:400]
        raise SlurmError(f"`{' '.join(argv[:2])}` failed (exit {done.returncode}): {said}")
    return done.stdout


def outside_any_job(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for Slurm's commands without the variables of a job this process may
    run in (a detached driver): with them, `srun` would start its step inside that job's
    allocation, not a new one on the node it names. SLURM_CONF says where the cluster is."""
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}


def require_cluster() -> list[str]:
    """The nodes that answer (sinfo); a controller that does not is EngineUnavailable."""
    try:
        out = call(["sinfo", "-h", "-N", "-o", "%N|%T"])
    except SlurmError as exc:
        raise EngineUnavailable(f"the Slurm cluster does not answer: {exc}") from None
    nodes = []
    for line in out.splitlines():
        name, _, state = line.partition("|")
        if name and not state.rstrip("*~#").startswith(("down", "drain", "fail", "unk")):
            nodes.append(name)
    if not nodes:
        raise EngineUnavailable("the Slurm cluster has no node up (sinfo)")
    return sorted(set(nodes))


def sbatch_argv(
    options: SlurmOptions, *, name: str, comment: str, log: str, resources: Resources,
    timeout: int | None, job: SlurmSettings = SlurmSettings(),
) -> list[str]:  # fmt: skip
    """`sbatch` for one attempt: named after its run, its limits from the run's, the
    environment the node's own (`--export=NONE`: nothing of the driver's goes along). The
    command line's partition and account win over the job's; its arguments come last (for
    sbatch, a later option wins)."""
    argv = [
        "sbatch", "--parsable", f"--job-name={name}", f"--comment={comment}",
        f"--output={log}", "--open-mode=append", "--export=NONE", "--no-requeue",
        "--nodes=1", "--ntasks=1",
    ]  # fmt: skip
    if resources.cpus:
        argv.append(f"--cpus-per-task={max(1, math.ceil(resources.cpus))}")
    if resources.memory:
        argv.append(f"--mem={math.ceil(resources.memory / (1 << 20)) + MEMORY_MARGIN_MIB}M")
    if timeout:
        argv.append(f"--time={math.ceil((timeout + TIME_MARGIN_SECONDS) / 60)}")
    partition = options.partition or job.partition
    if partition:
        argv.append(f"--partition={partition}")
    account = options.account or job.account
    if account:
        argv.append(f"--account={account}")
    return [*argv, *job.sbatch_args, *options.sbatch_args]


def submit(argv: Sequence[str]) -> str:
    """The job id `sbatch --parsable` prints (`ID` or `ID;CLUSTER`)."""
    out = call(argv).strip()
    job_id = out.split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(f"`sbatch` printed no job id: {out[:200]!r}")
    return job_id


def cancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        call(["scancel", *job_ids])


def check_sbatch_args(args: Sequence[str]) -> None:
    """Options the backend sets itself may not be given again: they would break the wire."""
    for arg in args:
        problem = sbatch_arg_problem(arg)
        if problem is not None:
            raise UsageError(f"--slurm-arg: {problem}")


class JobWatch:
    """The states of the jobs the batch waits on, for all of them by one `squeue` a second
    (a poll per job would be hundreds of calls a second against the controller). While the
    controller does not answer, the states stay as they were (the spools still carry the
    attempts' ends), and `warn` hears of it once per outage."""

    def __init__(
        self, poll: float = POLL_SECONDS, warn: Callable[[str], None] = lambda text: None
    ) -> None:
        self.poll = poll
        self.warn = warn
        self._lock = threading.Lock()
        self._watched: set[str] = set()
        self._states: dict[str, JobState] = {}
        self._error: str | None = None
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def watch(self, job_id: str) -> None:
        with self._lock:
            self._watched.add(job_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="squeue")
                self._thread.start()

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._watched.discard(job_id)
            self._states.pop(job_id, None)

    def state(self, job_id: str) -> JobState | None:
        """The job's last known state; None until the first poll that saw it."""
        with self._lock:
            return self._states.get(job_id)

    def _loop(self) -> None:
        while True:
            with self._lock:
                ids = sorted(self._watched)
            if ids:
                self._poll(ids)
            time.sleep(self.poll)

    def _poll(self, ids: list[str]) -> None:
        try:
            found = query(ids)
        except (SlurmError, EngineUnavailable) as exc:
            if self._error is None:
                self.warn(f"squeue fails ({exc}); following the attempts' files meanwhile")
            self._error = str(exc)
            return
        if self._error is not None:
            self.warn("squeue answers again")
        self._error = None
        with self._lock:
            for job_id in ids:
                if job_id in self._watched:
                    self._states[job_id] = found.get(job_id, JobState(GONE))


def query(ids: Sequence[str]) -> dict[str, JobState]:
    """States of `ids`: squeue for those it lists (finished ones for `MinJobAge`); a job it
    does not list has left the controller's memory. Asked for jobs that are all purged,
    squeue fails saying so: then none is known (asked one by one if there were several)."""
    try:
        return parse_squeue(
            call(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%N|%r"])
        )
    except SlurmError as exc:
        if PURGED not in str(exc):
            raise
    if len(ids) == 1:
        return {}
    found: dict[str, JobState] = {}
    for job_id in ids:
        found.update(query([job_id]))
    return found


def parse_squeue(out: str) -> dict[str, JobState]:
    """`squeue -o %i|%T|%N|%r` lines by job id; a line of another shape is skipped."""
    states = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            states[parts[0]] = JobState(parts[1], parts[2], parts[3])
    return states


def node_command(node: str, argv: Sequence[str], *, wait: int = 30) -> str:
    """`argv` on one node as a one-task job step (`srun --immediate`: a node whose slots are
    all taken is skipped after `wait` seconds, not waited for)."""
    srun = [
        "srun", "--nodes=1", "--ntasks=1", f"--nodelist={node}", f"--immediate={wait}",
        "--export=NONE", "--job-name=safeagents-batch-node", "--quiet",
    ]  # fmt: skip
    return call([*srun, *argv], timeout=wait + CALL_SECONDS)


def user_name() -> str:
    return os.environ.get("USER") or str(os.getuid())
