"""Atomic file writes: readers never see half a file, and a crash keeps the previous version.

One implementation for the files the project rewrites in place (manifests, summaries, reports, benchmark
results, server state, banks, adapters; whole directories and images have their own rename, see
``docs/design.md``). The temp file sits next to the target (same filesystem, so the rename is atomic), is
fsynced before the rename, and is removed if anything fails. No torch: both halves and the evals use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> Path:
    """``data`` to ``path`` through an fsynced temp file + rename.

    ``mode`` defaults to 0644 because ``mkstemp`` makes 0600 files and run outputs are meant to be read by
    others; pass 0o600 for private state.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str, *, mode: int = 0o644) -> Path:
    """UTF-8 ``text`` to ``path`` atomically (see ``write_bytes_atomic``)."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(
    path: str | os.PathLike[str],
    data: Any,
    *,
    mode: int = 0o644,
    default: Callable[[Any], Any] | None = str,
) -> Path:
    """``data`` as indented JSON plus a newline, atomically.

    ``default`` turns values JSON lacks into JSON (``str``: paths and dates in manifests); pass None where a
    non-JSON value is a bug to raise on (numeric results: a numpy scalar must not become a string).
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, default=default) + "\n"
    return write_text_atomic(path, text, mode=mode)
