"""Checks on what the user asks for, each failing with one line that names the value and what is allowed."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ed_agents.anchors import TokenCounter
from ed_agents.errors import InvalidInputError
from ed_common.emotions import Emotion, parse_emotion
from ed_common.text import first_control


def check_request(user_prompt: str, emotion: str | Emotion, tokens: TokenCounter, max_tokens: int) -> Emotion:
    """Validate a content prompt and an emotion name; return the parsed emotion.

    Raises:
        InvalidInputError: empty prompt, prompt over ``max_tokens`` CLIP tokens, or unknown emotion.
    """
    if not user_prompt or not user_prompt.strip():
        raise InvalidInputError("the prompt is empty; give a content prompt such as 'an angry dog'")
    if (control := first_control(user_prompt)) is not None:
        raise InvalidInputError(
            f"the prompt contains the control character {control!r}; allowed: printable text (tabs and "
            "newlines are fine)"
        )
    n = tokens.count(user_prompt)
    if n > max_tokens:
        raise InvalidInputError(
            f"the prompt is {n} CLIP tokens; the limit is {max_tokens} (the text encoder reads 75, "
            "and the rest is room for the emotion's visual details)"
        )
    return parse_emotion(emotion)


def select_personas(
    available: Sequence[str], requested: Sequence[str] | None, n: int, seed: int
) -> list[str]:
    """The explicit persona ids (validated), or ``n`` sampled reproducibly with ``seed``.

    Raises:
        InvalidInputError: an unknown id, a repeated id, or more personas asked for than exist.
    """
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise InvalidInputError(
                f"unknown persona {', '.join(repr(u) for u in unknown)}; available: {', '.join(available)}"
            )
        if len(set(requested)) != len(requested):
            raise InvalidInputError(f"persona list {list(requested)} repeats an id")
        return list(requested)
    if n > len(available):
        raise InvalidInputError(
            f"asked for {n} personas but only {len(available)} exist: {', '.join(available)}"
        )
    return sorted(random.Random(seed).sample(sorted(available), n))
