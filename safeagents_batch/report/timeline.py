"""The timeline of a batch's attempts for the report's chart: each attempt's start and end
(seconds from the batch's start) and the lane it ran in. Pure: a manifest in, entries out.

The records say where an attempt ran (its outcome's node, on Ray) but not in which of the
node's slots: lanes are rebuilt by packing each node's attempts greedily, in order of start,
into the lowest-numbered slot free at that moment. With the tool's own times (an attempt is
recorded running after its slot's previous attempt ended) that gives back as many lanes as
the node ran attempts at once.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safeagents_batch.records.manifest import Manifest
from safeagents_batch.records.model import Attempt

LOCAL = "local"
UNKNOWN_NODE = "node unknown"  # a running attempt on a remote backend: its outcome names it
NODE_ID_SHOWN = 8  # characters of a Ray node id in a lane's name


@dataclass(frozen=True)
class Span:
    """One attempt on the batch's clock (seconds since the epoch; `end` None: running)."""

    run: str
    number: int
    status: str
    start: float
    end: float | None
    node: str  # what groups lanes: a node id or host, or LOCAL
    host: str  # how the node is named in its lanes


def attempt_lanes(manifest: Manifest) -> list[dict[str, Any]]:
    """One entry per attempt with a readable start, in the manifest's order: {"run", "n",
    "st", "t0", "t1", "lane"}; t1 is None while the attempt runs."""
    spans = list(_spans(manifest))
    if not spans:
        return []
    origin = _batch_start(manifest, spans)
    names = _node_names(spans)
    slots = _slots(spans)
    return [
        {
            "run": span.run,
            "n": span.number,
            "st": span.status,
            "t0": round(span.start - origin, 3),
            "t1": None if span.end is None else round(max(span.end, span.start) - origin, 3),
            "lane": f"{names[span.node]} · slot {slot}",
        }
        for span, slot in zip(spans, slots, strict=True)
    ]


def _spans(manifest: Manifest) -> Iterator[Span]:
    remote = any(a.outcome and a.outcome.node for r in manifest.runs.values() for a in r.attempts)
    for run_id, record in manifest.runs.items():
        for attempt in record.attempts:
            start = seconds(attempt.started_at)
            if start is None:  # a record edited by hand: no place on a time axis
                continue
            node, host = _where(attempt, remote)
            end = seconds(attempt.ended_at)
            yield Span(run_id, attempt.number, attempt.status, start, end, node, host)


def _where(attempt: Attempt, remote: bool) -> tuple[str, str]:
    """(node key, host name) of where the attempt ran. No node: a local engine, unless the
    batch ran elsewhere and the attempt still runs (only its outcome will say where)."""
    node = attempt.outcome.node if attempt.outcome is not None else None
    if node:
        key = node.get("node_id") or node.get("host") or LOCAL
        return key, node.get("host") or key[:NODE_ID_SHOWN]
    where = UNKNOWN_NODE if remote and attempt.outcome is None else LOCAL
    return where, where


def seconds(stamp: str | None) -> float | None:
    """An ISO timestamp of the records as seconds since the epoch; None if it is none."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _batch_start(manifest: Manifest, spans: list[Span]) -> float:
    """The batch's creation, or its first attempt's start if that is earlier (times of other
    clocks): no attempt starts before 0."""
    first = min(span.start for span in spans)
    created = seconds(manifest.created_at)
    return first if created is None else min(created, first)


def _node_names(spans: list[Span]) -> dict[str, str]:
    """Each node's name in its lanes: its host, with its id when two nodes share a host (a
    cluster of several nodes on one machine)."""
    hosts: dict[str, set[str]] = {}
    for span in spans:
        hosts.setdefault(span.host, set()).add(span.node)
    names = {}
    for host, nodes in hosts.items():
        for node in nodes:
            names[node] = host if len(nodes) == 1 else f"{host} {node[:NODE_ID_SHOWN]}"
    return names


def _slots(spans: list[Span]) -> list[int]:
    """Each span's slot on its node (from 1), in the order of `spans`."""
    by_node: dict[str, list[int]] = {}
    for i, span in enumerate(spans):
        by_node.setdefault(span.node, []).append(i)
    slots = [0] * len(spans)
    for indices in by_node.values():
        for i, slot in pack([(spans[i].start, spans[i].end) for i in indices]):
            slots[indices[i]] = slot
    return slots


def pack(intervals: list[tuple[float, float | None]]) -> Iterator[tuple[int, int]]:
    """(index, slot) for each (start, end) interval, slots numbered from 1: in order of start,
    each takes the lowest-numbered slot whose last interval ended by then (end None: never
    ends). Two heaps, so 10,000 intervals cost milliseconds."""
    order = sorted(range(len(intervals)), key=lambda i: intervals[i][0])
    busy: list[tuple[float, int]] = []  # (end, slot) of the slots in use
    free: list[int] = []  # slots whose interval ended
    opened = 0
    for i in order:
        start, end = intervals[i]
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            slot = heapq.heappop(free)
        else:
            opened += 1
            slot = opened
        heapq.heappush(busy, (math.inf if end is None else max(end, start), slot))
        yield i, slot
