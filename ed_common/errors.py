"""The base of every known, user-facing error (the CLI prints its message as one line)."""

from __future__ import annotations

import re
from typing import Any

from ed_common.text import short_repr


class EmodirError(Exception):
    """A known error: its message is the whole explanation, no traceback needed."""


class InvalidInputError(EmodirError, ValueError):
    """Bad user input: an empty prompt, a prompt over the token limit, an unknown emotion or persona, ..."""


class OutputExistsError(EmodirError):
    """A file or run directory we would write already exists (nothing is ever overwritten)."""


def error_line(exc: BaseException, *, limit: int = 300, with_type: bool = False) -> str:
    """An exception's message on one bounded line (whitespace collapsed): one-line errors, manifests."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if with_type:
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SHOWN_ERRORS = 8


def validation_line(exc: Any) -> str:
    """A pydantic ``ValidationError``'s problems on one bounded line: ``field.path: message (got value)``.

    The offending values are echoed shortened and only the first few problems are listed: a hostile file
    must not turn one error message into megabytes. Anything else is returned as ``str(exc)``.
    """
    errors_of = getattr(exc, "errors", None)
    if not callable(errors_of):
        return str(exc)
    parts = []
    errors = errors_of()
    for err in errors[:_SHOWN_ERRORS]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = re.sub(r"^(Value|Assertion) error, ", "", str(err["msg"]))
        got = "" if err["type"] in ("missing", "value_error") else f" (got {short_repr(err.get('input'))})"
        parts.append(f"{loc}: {msg}{got}" if loc else f"{msg}{got}")
    if len(errors) > _SHOWN_ERRORS:
        parts.append(f"and {len(errors) - _SHOWN_ERRORS} more problem(s)")
    return "; ".join(parts)
