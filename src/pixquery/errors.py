"""Errors a user can act on. The CLI prints their message (no traceback) and exits non-zero."""


class PixqueryError(Exception):
    """Base class: the message says what went wrong and, where possible, how to fix it."""


class ModelNotAvailable(PixqueryError):
    """Weights could not be found locally nor downloaded."""


class BadImage(PixqueryError):
    """One file could not be turned into pixels; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class LibraryError(PixqueryError):
    """The library folder or catalog is missing, locked or inconsistent."""


class IndexStoreError(PixqueryError):
    """The server that holds an index's vectors (a Milvus deployment) could not be reached or refused a request."""
