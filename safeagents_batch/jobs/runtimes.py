"""A job's `runtime` (the engine's OCI runtime: runc by default, `runsc` for gVisor) against
the keys it constrains. gVisor's constraints, each learned on this kind of machine: its
sandbox runs with `--network=none` (any other network fails to start and leaves sandbox
processes behind), and a pids limit counts the sandbox's host threads, so one below 512 kills
it."""

from __future__ import annotations

from typing import Any

GVISOR_NETWORKS = ("none",)
GVISOR_PIDS_FLOOR = 512


def is_gvisor(runtime: str | None) -> bool:
    """`runsc` as Docker's runtime is conventionally named, or a name that says gVisor."""
    if runtime is None:
        return False
    name = runtime.lower()
    return name.startswith("runsc") or "gvisor" in name


def runtime_problems(values: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """A job's keys against its runtime, as (key path within the job, message)."""
    runtime = values["runtime"]
    if not is_gvisor(runtime):
        return []
    problems: list[tuple[tuple[str, ...], str]] = []
    if values["network"] not in GVISOR_NETWORKS:
        problems.append(
            (
                ("runtime",),  # the runtime is the cause; `network` may not be written at all
                f"runtime '{runtime}' (gVisor) runs with no network: use network: none "
                f"(network '{values['network']}' fails to start and leaves sandbox processes)",
            )
        )
    pids = values["resources"].pids
    if pids is not None and pids < GVISOR_PIDS_FLOOR:
        problems.append(
            (
                ("resources", "pids"),
                f"runtime '{runtime}' (gVisor) counts its sandbox's threads as pids: "
                f"{pids} kills the sandbox; use at least {GVISOR_PIDS_FLOOR}",
            )
        )
    return problems
