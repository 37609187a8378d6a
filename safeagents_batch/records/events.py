"""The journal's events: one typed Struct per kind of transition, tagged by its `event` field.
The writer gives each its `seq` and `at`; a reader decodes a line into exactly one of them or
gets an error naming the field that is wrong.

Version 2 of the journal (this one) embeds an attempt's outcome in the attempt, as the
manifest of version 3 does; version 1 lines (flat attempts) are read through records/legacy.py.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from safeagents_batch.records.model import Attempt, ImageRecord, Status

JOURNAL_VERSION = 2
BatchState = Literal["running", "finished", "interrupted"]


class Event(Struct, kw_only=True, tag_field="event"):
    """What every event carries: the journal's version, its place, and when it was written."""

    v: int = JOURNAL_VERSION
    seq: int = 0  # given by the writer: one more than the event before
    at: str = ""  # given by the store: when the transition happened


class AttemptEvent(Event, tag="attempt"):
    """An attempt started (`running`, no outcome yet) or ended (its outcome embedded)."""

    run_id: str
    attempt: Attempt


class UnstartedEvent(Event, tag="unstarted"):
    """A run's turn ended without starting an attempt (cancelled, no image)."""

    run_id: str
    status: Status
    reason: str


class ImageEvent(Event, tag="image"):
    image: ImageRecord


class StateEvent(Event, tag="state"):
    state: BatchState
    finished_at: str | None


AnyEvent = AttemptEvent | UnstartedEvent | ImageEvent | StateEvent


class Header(Struct):
    """What a line must hold before its version's decoder may read it."""

    v: int
    seq: int
