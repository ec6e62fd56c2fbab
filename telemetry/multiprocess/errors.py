"""The multi-process store's error: a directory it cannot work in."""

from __future__ import annotations


class MultiprocessError(ValueError):
    """The multi-process directory is missing, not a directory, or not writable. The message names the
    directory; the caller adds the setting it came from."""
