"""Output paths checked before the work starts: creatable, writable, room to write.

A run that fails to write its first file after minutes of agent, encoding or training work has wasted the
minutes; these checks take microseconds, so every command that writes runs them first. They cannot
promise the disk stays writable (the write itself can still fail, and the CLI reports that in one line).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ed_common.errors import InvalidInputError

# Less free space than this on the target's filesystem and a run will not get far.
MIN_FREE_BYTES = 1 << 20


def check_writable(path: Path, *, flag: str = "--out", directory: bool = True) -> None:
    """Refuse ``path`` when it cannot be created and written.

    Args:
        path: the directory (``directory=True``) or file to be written.
        flag: how the user named it, for the message.
        directory: whether ``path`` is a directory to create or fill (else a file).

    Raises:
        InvalidInputError: a component is a file, ``path`` has the wrong kind, the nearest existing
            directory is not writable, or its filesystem is (nearly) full.
    """
    if path.exists() and path.is_dir() != directory:
        kind = "a directory" if path.is_dir() else "a file"
        wanted = "directory" if directory else "file"
        raise InvalidInputError(f"{flag} {path} is {kind}; give a {wanted} path")
    base = path if directory and path.is_dir() else path.parent
    existing = base
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InvalidInputError(f"{flag} {path}: {existing} is a file, not a directory")
    try:  # a real write, not os.access: root passes every permission test but not a read-only mount
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise InvalidInputError(f"{flag} {path}: {existing} is not writable ({exc.strerror})") from None
    try:
        free = shutil.disk_usage(existing).free
    except OSError:  # some filesystems cannot say; the write will tell
        return
    if free < MIN_FREE_BYTES:
        raise InvalidInputError(f"{flag} {path}: no space left on the device of {existing}")
