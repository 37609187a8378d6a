"""Writing files below a batch dir so that readers never see half of one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file in the same directory + fsync + os.replace: readers see old or new, never half."""
    # Not mkstemp: its 0600 would make the manifest the one file of the batch dir that others
    # cannot read. O_EXCL with a random name is as safe, and the umask applies as for logs.
    temp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
