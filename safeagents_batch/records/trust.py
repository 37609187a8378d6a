"""Whether a batch dir is one this user's tool wrote, before `rerun` runs what it says.

`rerun` runs the jobs file the batch dir holds (jobs.yaml): a batch dir received from someone
else, or edited since, may ask for a host variable, the user's ~/.azure, the host network or
root. Like git's `safe.directory`, a batch dir owned by another user is refused; and every
time the tool writes jobs.yaml it records a seal of it: an HMAC under a key only this user
holds (~/.config/safeagents-batch/batch.key, mode 0600, made on first use). A jobs.yaml
that does not match its seal (edited, or sealed under another user's key: received) is
refused until the user says, with a flag, that they looked at it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.files import read_regular

KEY_NAME = "batch.key"
KEY_BYTES = 32


def key_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "safeagents-batch" / KEY_NAME


def seal(data: bytes) -> str:
    """This user's seal of a jobs.yaml's bytes."""
    return hmac.new(_key(), b"jobs.yaml\0" + data, hashlib.sha256).hexdigest()


def sealed(data: bytes, recorded: str | None) -> bool:
    return recorded is not None and hmac.compare_digest(seal(data), recorded)


def owned_by_me(batch_dir: Path) -> bool:
    return batch_dir.stat().st_uid == os.geteuid()


def _key() -> bytes:
    path = key_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _read_key(path)
    try:
        key = secrets.token_bytes(KEY_BYTES)
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _read_key(path: Path) -> bytes:
    """The key, if it is this user's alone: a key others may read seals nothing."""
    info = path.lstat()
    private = stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
    if not private or info.st_mode & 0o077:
        raise UsageError(f"{path}: not this user's private key (mode 0600): remove it")
    try:
        key = read_regular(path, KEY_BYTES)
    except OSError as exc:
        raise UsageError(f"{path}: unreadable key: {exc.strerror or exc}") from None
    if len(key) != KEY_BYTES:
        raise UsageError(f"{path}: a damaged key ({errno.EINVAL}): remove it")
    return key
