"""What a node's attempt streams to the driver, one typed item at a time: output chunks as
they come, the traceback of an error raised there, the artifacts' archive in pieces (or word
that it went over the cap), word that the node lacks the image, and last the outcome."""

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


class ArtOver(Struct, frozen=True):
    """The archive passed `cap` bytes on the node: nothing more of it is sent."""

    cap: int


class NoImage(Struct, frozen=True):
    """The node lacks the image: the driver ships it there and sends the attempt again."""

    tag: str


class Done(Struct, frozen=True):
    outcome: AttemptOutcome


Item = Out | Err | Trace | Art | ArtOver | NoImage | Done
Chunk = Out | Err  # the output items that may be joined into one
