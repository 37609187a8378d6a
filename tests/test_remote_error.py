"""Errors from elsewhere (a Ray node) as one line: type, message, where raised; the whole
traceback kept, terminal escapes removed (backends/remote_error.py)."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

from safeagents_batch.backends.ray.remote import (
    RemoteError,
    from_exception,
    from_text,
    strip_escapes,
)
from safeagents_batch.core.tarsafe import extract

# Ray's text of a streaming actor call that raised on a node (as seen with Debian's 3.11.2).
RAY_TEXT = (
    "\x1b[36mray::BootedAgent.run_attempt()\x1b[39m (pid=4242, ip=127.0.0.1, "
    "actor_id=8f3e, repr=<safeagents_batch.backends.ray.boot.BootedAgent object at 0x7f>)\n"
    '  File "/tmp/safeagents-batch-node-0/package/9ab1/safeagents_batch/backends/ray_boot.py"'
    ", line 197, in run_attempt\n"
    "    yield from self._agent.run_attempt(key, request, code_box, azure_box)\n"
    '  File "/tmp/safeagents-batch-node-0/package/9ab1/safeagents_batch/backends/ray_node.py"'
    ", line 92, in unpack\n"
    '    archive.extractall(target, filter="data")\n'
    "TypeError: TarFile.extractall() got an unexpected keyword argument 'filter'\n"
)


def test_rays_text_gives_the_cause_and_where_it_was_raised_not_the_header() -> None:
    error = from_text(RAY_TEXT)
    assert error.kind == "TypeError"
    assert error.message == "TarFile.extractall() got an unexpected keyword argument 'filter'"
    assert error.where == "safeagents_batch/backends/ray_node.py:92 in unpack"
    assert error.line() == (
        "TypeError: TarFile.extractall() got an unexpected keyword argument 'filter' "
        "(raised at safeagents_batch/backends/ray_node.py:92 in unpack)"
    )
    assert "\x1b" not in error.traceback and "pid=4242" in error.traceback


def test_the_cause_ray_handed_over_wins_over_parsing() -> None:
    error = from_text(RAY_TEXT, "OSError", "[Errno 28] No space left on device")
    assert error.line().startswith("OSError: [Errno 28] No space left on device (raised at ")


def test_a_live_exception_names_its_innermost_frame_and_the_packages_own() -> None:
    # Raised in a library's frame, called from the package's (code compiled under the paths
    # the node has: its cache's copy of the package, the standard library).
    namespace: dict[str, object] = {}
    library = "def parse(text):\n    raise ValueError(f'bad: {text}')\n"
    exec(compile(library, "/usr/lib/python3.11/tomllib/_parser.py", "exec"), namespace)
    own = "def load(text):\n    return parse(text)\n"
    exec(compile(own, "/tmp/cache/package/9a/safeagents_batch/jobs/load.py", "exec"), namespace)
    load = namespace["load"]
    assert callable(load)
    try:
        load("x")
    except ValueError as exc:
        error = from_exception(exc)
    assert error.line() == (
        "ValueError: bad: x (raised at tomllib/_parser.py:2 in parse, called from "
        "safeagents_batch/jobs/load.py:2 in load)"
    )
    assert error.traceback.startswith("Traceback (most recent call last):")


def test_where_a_tarfile_error_of_the_package_was_raised(tmp_path: Path) -> None:
    try:
        extract(io.BytesIO(b"not a tar" * 100), tmp_path)
    except tarfile.ReadError as exc:
        error = from_exception(exc)
    assert re.fullmatch(r"safeagents_batch/core/tarsafe\.py:\d+ in frombuf", error.where or "")


def test_escapes_and_control_characters_are_removed_newlines_kept() -> None:
    text = "\x1b[31mred\x1b[0m \x1b]0;title\x07ok\x9b2J\x00\x07\nnext\tline"
    assert strip_escapes(text) == "red ok\nnext\tline"


def test_one_line_is_one_line_and_bounded() -> None:
    error = RemoteError("ValueError", "a\nb " + "x" * 1000, "f.py:1 in g", "")
    line = error.line(100)
    assert "\n" not in line and len(line) == 100 and line.endswith("...")
