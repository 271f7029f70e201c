"""Control characters: never printed raw, never in an image prompt.

ESC/OSC sequences in a prompt or in LLM text would drive the user's terminal (retitle it, hide text,
write a hyperlink), and bidi overrides reorder what is shown. Tabs and newlines are layout, not control.
"""

from __future__ import annotations

import re
import reprlib

from rich.markup import escape as _escape_markup

# C0 (but tab and newline), DEL, C1, and the zero-width / bidi format characters.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def strip_control(text: str) -> str:
    """``text`` without control characters."""
    return _CONTROL.sub("", text)


def first_control(text: str) -> str | None:
    """The first control character in ``text``, or None."""
    found = _CONTROL.search(text)
    return found.group(0) if found else None


def esc(text: str) -> str:
    """``text`` made safe for a rich console: control characters removed, markup escaped."""
    return _escape_markup(strip_control(text))


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()  # Python 3.11: limits are attributes, not constructor arguments
    r.maxstring = r.maxother = 60
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 4
    r.maxlevel = 2
    return r


_BOUNDED = _bounded_repr()


def short_repr(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters: how an error message echoes a bad value."""
    return strip_control(_BOUNDED.repr(value))
