"""What a node's attempt streams to the driver, one typed item at a time: output chunks as
they come, the traceback of an error raised there, the artifacts' archive in pieces (only
what the artifact rules keep) and what they did not keep, word that the node lacks the image,
and last the outcome."""

from __future__ import annotations

from msgspec import Struct

from safeagents_batch.records.model import AttemptOutcome


class Out(Struct, frozen=True):
    chunk: bytes


class Err(Struct, frozen=True):
    chunk: bytes


class Trace(Struct, frozen=True):
    """The whole traceback of an error raised on the node (the outcome has its one line)."""

    text: str


class Art(Struct, frozen=True):
    """A piece of the tar stream of /safeagents/logs."""

    chunk: bytes


class ArtDrop(Struct, frozen=True):
    """An entry of /safeagents/logs the node's artifact rules did not keep, and why (one line
    of the attempt's `dropped_artifacts`)."""

    line: str


class NoImage(Struct, frozen=True):
    """The node lacks the image: the driver ships it there and sends the attempt again."""

    tag: str


class Done(Struct, frozen=True):
    outcome: AttemptOutcome


Item = Out | Err | Trace | Art | ArtDrop | NoImage | Done
Chunk = Out | Err  # the output items that may be joined into one
