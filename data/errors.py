"""The one project exception type, checked at every public entry point."""
from __future__ import annotations

from pathlib import Path


class SingrecError(Exception):
    """A problem with the user's input (a file, a catalogue, a checkpoint, an index, a query).

    Parameters
    ----------
    reason : str
        What is wrong, in words a user can act on.
    path : str or Path, optional
        The file or folder the problem is about; it is named first in the message.
    """

    def __init__(self, reason: str, path: str | Path | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path else reason)
