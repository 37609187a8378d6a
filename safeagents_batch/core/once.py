"""Build or fetch a thing once per key, whichever threads ask at once: an image per tag, an
object in Ray's store per code digest, an image shipped per node, a push per tag."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class OncePerKey(Generic[K, V]):
    """`get(key, make)` runs `make()` for the first asker of `key`, under that key's own lock
    (asks for other keys go on meanwhile), and hands every later asker what it returned. An
    outcome that stands for a failure is remembered like any other: the batch does not try
    again per run. An exception from `make` is not remembered: the next asker tries again."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[K, threading.Lock] = {}
        self._values: dict[K, V] = {}

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            # Looked at again under the key's lock: the first asker may have made it meanwhile.
            if key not in self._values:
                self._values[key] = make()
            return self._values[key]
