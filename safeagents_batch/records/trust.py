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

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.files import NotAFile, open_regular, read_fd

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
    """This user's key, made on first use: written whole under a temp name, then linked into
    place, so a second process starting at the same time, or a crash, never sees half a key
    (the first link wins; the loser reads the winner's)."""
    path = key_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        temp = path.with_name(f".{KEY_NAME}.{secrets.token_hex(8)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
            os.close(fd)
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            temp.unlink()
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    """The key, if it is this user's alone: a key others may read seals nothing."""
    try:
        fd = open_regular(path, os.O_RDONLY | os.O_NONBLOCK)
    except NotAFile as exc:
        raise UsageError(f"{path}: {exc}; not this user's private key: remove it") from None
    except OSError as exc:
        raise UsageError(f"{path}: unreadable key: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise UsageError(f"{path}: not this user's private key (mode 0600): remove it")
        key = read_fd(fd, KEY_BYTES, path)
    except OSError as exc:
        raise UsageError(f"{path}: unreadable key: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise UsageError(f"{path}: a damaged key ({len(key)} bytes, not {KEY_BYTES}): remove it")
    return key
