"""`LibraryPool`: several Library objects over one library folder, each used by one thread at a time."""

from __future__ import annotations

import queue
from contextlib import contextmanager
from pathlib import Path

from pixquery.server.api_errors import ServerBusy


class LibraryPool:
    """`size` Library objects over one library folder, each used by one thread at a time."""

    def __init__(self, path: Path, model: str | None, size: int = 1, timeout: float = 30.0):
        from pixquery.api import Library

        self.timeout = timeout
        self.libraries = [Library.open(path, model=model, create=False) for _ in range(max(1, size))]
        self.encoder = self.libraries[0].encoder
        for lib in self.libraries[1:]:
            # Share one encoder (its sessions and text-query cache); Library has no public setter yet.
            lib._encoder = self.encoder
        self._free: queue.Queue = queue.Queue()
        for lib in self.libraries:
            self._free.put(lib)

    @contextmanager
    def get(self):
        try:
            lib = self._free.get(timeout=self.timeout)
        except queue.Empty:
            raise ServerBusy() from None
        try:
            yield lib
        finally:
            self._free.put(lib)

    def close(self) -> None:
        for lib in self.libraries:
            lib.close()
