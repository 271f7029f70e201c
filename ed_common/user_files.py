"""Reading a text file a user hands us (a config, a suite, a prompt file): its kind and size checked first.

A 1.5 GB "config" read whole costs seconds and gigabytes before any parser can say it is not TOML, and
``/dev/zero`` never ends; so the size is checked on the open file, and at most one byte past the limit is
ever read.
"""

from __future__ import annotations

from pathlib import Path

from ed_common.errors import InvalidInputError

# Far above any real config, suite or prompt file (the largest shipped one is a few KB).
MAX_TEXT_BYTES = 1_000_000


def read_user_text(path: Path, what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``.

    Args:
        path: the file.
        what: how to name it in errors ("config file", "suite file").
        max_bytes: the largest file accepted.

    Raises:
        InvalidInputError: missing, a directory or other non-file, over ``max_bytes``, unreadable or not
            UTF-8; one line naming the file.
    """
    if not path.exists():
        raise InvalidInputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InvalidInputError(f"{what} {path} is a directory; give a file")
    if not path.is_file():
        raise InvalidInputError(f"{what} {path} is not a regular file (a device or pipe); give a file")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InvalidInputError(f"{what} {path} is over {max_bytes} bytes; allowed: at most {max_bytes}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
