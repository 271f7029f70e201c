"""The pure-Python CLIP token counter agrees with the real CLIP BPE and keeps prompts within budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from ed_agents.clip_tokens import (
    CLIP_CONTENT_TOKENS,
    CLIP_CONTEXT_LENGTH,
    ClipTokenCounter,
    ClipVocabMissingError,
    default_counter,
)
from ed_common.errors import EmodirError

LONG_PROMPT = (
    "A lonely lighthouse keeper stands on a wind-battered cliff at dusk, watching a violent storm roll in "
    "over a slate-grey sea, heavy rain streaking the lantern glass, gulls scattering, waves exploding "
    "against black rocks below, a single warm light glowing in the tiny window of his cottage, muted blue "
    "and amber palette, cinematic composition, dramatic chiaroscuro lighting, melancholic yet defiant mood, "
    "highly detailed oil painting in the style of romantic era seascapes"
)


@pytest.fixture(scope="module")
def counter() -> ClipTokenCounter:
    return default_counter()


def test_budget_constants() -> None:
    assert CLIP_CONTEXT_LENGTH == 77
    assert CLIP_CONTENT_TOKENS == CLIP_CONTEXT_LENGTH - 2


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("a photo of a cat", [320, 1125, 539, 320, 2368]),
        ("a diagram", [320, 22697]),
        ("A   Diagram ", [320, 22697]),  # cleaning: whitespace collapse + lowercase
        ("a &amp;amp; b", [320, 261, 321]),  # html.unescape twice
    ],
)
def test_known_ids(counter: ClipTokenCounter, text: str, ids: list[int]) -> None:
    assert counter.encode(text) == ids


def test_counts(counter: ClipTokenCounter) -> None:
    assert counter.count("a photo of a cat") == 5
    assert counter.count("") == 0
    assert counter.count("   \n\t ") == 0


@pytest.mark.parametrize(
    "text",
    [
        "Hello, World!!! ...",
        "🙂🎨🌧️ emoji",
        "café naïve Ünïcödé 日本語の文章",
        "it's they'll I'd",
        "\x00\x07 ctrl",
        "&#x1F600;",
    ],
)
def test_odd_text_does_not_crash(counter: ClipTokenCounter, text: str) -> None:
    ids = counter.encode(text)
    assert ids
    assert all(0 <= i < 49406 for i in ids)  # never BOS/EOS among content tokens


def test_long_text_is_over_budget(counter: ClipTokenCounter) -> None:
    assert counter.count(LONG_PROMPT) > CLIP_CONTENT_TOKENS
    assert not counter.fits(LONG_PROMPT)
    assert counter.fits("a photo of a cat")
    assert counter.fits("a photo of a cat", budget=5)
    assert not counter.fits("a photo of a cat", budget=4)


@pytest.mark.parametrize("budget", [0, 1, 5, 20, CLIP_CONTENT_TOKENS])
def test_truncate_is_a_fitting_word_prefix(counter: ClipTokenCounter, budget: int) -> None:
    cut = counter.truncate(LONG_PROMPT, budget)
    assert LONG_PROMPT.startswith(cut)
    assert counter.count(cut) <= budget
    # whole words only: the cut ends at the end of the text or right before whitespace
    assert cut == "" or LONG_PROMPT[len(cut)].isspace()
    # longest: one more word would go over budget
    rest = LONG_PROMPT[len(cut) :].split()
    longer = f"{cut} {rest[0]}" if cut else rest[0]
    assert counter.count(longer) > budget


def test_truncate_keeps_casing_and_fitting_text(counter: ClipTokenCounter) -> None:
    text = "A  Photo of\tA Cat"
    assert counter.truncate(text) == text
    assert counter.truncate(text, budget=3) == "A  Photo of"


def test_default_counter_is_cached() -> None:
    first = default_counter()
    assert default_counter() is first


def test_missing_vocab_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt.gz"
    with pytest.raises(ClipVocabMissingError) as info:
        ClipTokenCounter(missing)
    assert isinstance(info.value, EmodirError)
    assert str(missing) in str(info.value)
    assert "reinstall emotion-director" in str(info.value)
