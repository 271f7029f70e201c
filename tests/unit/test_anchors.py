from __future__ import annotations

from ed_agents.anchors import (
    contains_phrase,
    content_words,
    enforce_anchors,
    fit_budget,
    missing_anchors,
    settle_anchors,
)
from ed_agents.clip_tokens import default_counter
from ed_agents.depictability import filter_depictable, is_depictable


def test_settle_anchors_keeps_only_phrases_the_user_wrote_plus_uncovered_words() -> None:
    anchors = settle_anchors(
        "An angry dog in a snowy forest", ["an angry dog", "wolf", "snowy forest", "the"]
    )
    assert anchors == ["angry dog", "snowy forest"]
    # An LLM that finds nothing still yields every content word.
    assert settle_anchors("a red fox, two crows", []) == ["red", "fox", "two", "crows"]


def test_contains_phrase_is_case_and_plural_insensitive() -> None:
    assert contains_phrase("Three DOGS bark", "dog")
    assert contains_phrase("the puppies play", "puppy")
    assert not contains_phrase("a dogma", "dog")
    assert not contains_phrase("snow on a forest", "snowy forest")


def test_missing_and_enforced_anchors() -> None:
    anchors = ["angry dog", "red collar"]
    draft = "a furious hound in stormy light"
    assert missing_anchors(draft, anchors) == anchors
    fixed = enforce_anchors(draft, "an angry dog with a red collar", anchors)
    assert missing_anchors(fixed, anchors) == []
    assert fixed.endswith(draft)
    assert enforce_anchors("angry dog, red collar, rain", "x", anchors) == "angry dog, red collar, rain"


def test_fit_budget_drops_unanchored_clauses_last_first() -> None:
    counter = default_counter()
    long_tail = ", ".join(f"detail number {i} with many extra words" for i in range(20))
    prompt = f"an angry dog, {long_tail}"
    fitted, dropped = fit_budget(prompt, ["angry dog"], counter, 75)
    assert counter.count(fitted) <= 75
    assert fitted.startswith("an angry dog, detail number 0")
    assert dropped and dropped[-1] == "detail number 19 with many extra words"
    assert fit_budget("short, prompt", ["x"], counter, 75) == ("short, prompt", [])


def test_fit_budget_truncates_when_anchors_alone_overflow() -> None:
    counter = default_counter()
    prompt = " ".join(["giant"] * 100)
    fitted, dropped = fit_budget(prompt, ["giant"], counter, 75)
    assert counter.count(fitted) == 75
    assert dropped


def test_content_words_skip_stopwords() -> None:
    assert content_words("a photo of the old man and his dog") == ["old", "man", "dog"]


def test_depictability_filter_separates_visible_from_invisible() -> None:
    kept, dropped = filter_depictable(
        [
            "crimson storm clouds",
            "a sense of dread",
            "distant thunder sound",
            "feeling sad",
            "clenched fists",
            "crimson storm clouds",
            "nostalgia",
            "wilted flowers on an empty chair",
        ]
    )
    assert kept == ["crimson storm clouds", "clenched fists", "wilted flowers on an empty chair"]
    assert dropped == ["a sense of dread", "distant thunder sound", "feeling sad", "nostalgia"]
    assert not is_depictable("one two three four five six seven eight nine")


def test_depictability_drops_small_model_debris() -> None:
    # Loops and cut-off tokens a 135M model leaves in its phrases: nothing a painter could paint.
    debris_seen = ("iiiiiiiiiiiiiiiiiiiiiiiiiiiiiieeeeeeeeee", "aaaargh sky", "greyblackbluegreenwhitelight")
    debris_seen += ("my stomach will not escape the _*_*", "**red** light", "a `lamp`", "sky | sea")
    for debris in ("red light red red", "foam foam", "l", "a l", "ii", *debris_seen):
        assert not is_depictable(debris), debris
    for phrase in ("red", "ink black", "a torn leash", "fog", "a coffee cup", "weeping willow"):
        assert is_depictable(phrase), phrase
