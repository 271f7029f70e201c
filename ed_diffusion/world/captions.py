"""The world model's caption language: what its text encoder was trained to read.

The world's text-only model learned from captions like "a star, feeling fear" (a content clause, then the
emotion named) over a vocabulary of a few dozen whole words. An agent's free-form prompt ("a star, blue, dim
over a bright blue sky, ...") is mostly outside that vocabulary and is cut at the encoder's 12 tokens, so
the emotion never reaches the model. ``world_caption`` condenses such a prompt into the caption form the
benchmark measures: the first world content it names, and the requested emotion.
"""

from __future__ import annotations

import re

from ed_common.emotions import Emotion
from ed_diffusion.world.spec import WorldSpec


def emotional_caption(caption: str, emotion: Emotion | str) -> str:
    """The caption with its emotion named, as the text-only model is trained and prompted."""
    return f"{caption}, feeling {Emotion(emotion).value}"


def world_content(prompt: str, spec: WorldSpec | None = None) -> str | None:
    """The first of the world's contents ``prompt`` names (a plural counts: "stars"), or None."""
    contents = (spec or WorldSpec()).contents
    pattern = r"\b(" + "|".join(re.escape(c) for c in contents) + r")s?\b"
    found = re.search(pattern, prompt.lower())
    return found.group(1) if found else None


def world_caption(prompt: str, emotion: Emotion | str, spec: WorldSpec | None = None) -> str:
    """``prompt`` in the world model's caption form: ``"a <content>, feeling <emotion>"``.

    With no world content in the prompt the caption names the emotion alone (``"feeling fear"``): the model
    then draws whichever shape it likes, in the emotion's palette.
    """
    content = world_content(prompt, spec)
    return emotional_caption(f"a {content}", emotion) if content else f"feeling {Emotion(emotion).value}"
