"""Known, user-facing errors of the image scorers (the CLI prints the message as one line)."""

from __future__ import annotations

from ed_common.errors import EmodirError


class ScorerLoadError(EmodirError):
    """A scorer's weights file is unusable: missing, unreadable, unsafe to load, or of the wrong shape."""
