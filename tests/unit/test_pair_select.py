"""The pair-choosing rule on hand-made scores (evals.pair_select)."""

from __future__ import annotations

import pytest

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from evals.pair_select import (
    SKIP_MARGIN,
    SKIP_NO_CONTENT,
    SKIP_NO_LOSER,
    Candidate,
    ScoredGroup,
    SelectOptions,
    select_pairs,
)

FEAR, JOY = Emotion("fear"), Emotion("amusement")


def probs(emotion: Emotion, p: float) -> tuple[float, ...]:
    """``p`` on ``emotion``, the rest spread evenly."""
    rest = (1.0 - p) / 7
    return tuple(p if i == emotion.label_index else rest for i in range(8))


def cand(name: str, seed: int, emotion: Emotion, p: float, ok: bool | None = True) -> Candidate:
    return Candidate(image=f"candidates/{name}.png", seed=seed, probs=probs(emotion, p), content_ok=ok)


def group(emotion: Emotion, *cands: Candidate, index: int = 0) -> ScoredGroup:
    return ScoredGroup(
        id=f"p{index:03d}-{emotion.value}",
        prompt_index=index,
        prompt="a dog",
        caption=f"a dog, feeling {emotion.value}",
        content="dog",
        emotion=emotion,
        candidates=cands,
    )


def test_lowest_rule_takes_the_best_content_keeping_winner_and_the_lowest_loser() -> None:
    # seed 1 scores highest but lost its content: the winner is seed 2 (0.7), the loser seed 0 (0.1).
    g = group(FEAR, cand("a", 0, FEAR, 0.1), cand("b", 1, FEAR, 0.9, ok=False), cand("c", 2, FEAR, 0.7))
    sel = select_pairs([g], SelectOptions(loser="lowest", min_margin=0.1))
    assert len(sel.pairs) == 1 and not sel.skipped
    pair = sel.pairs[0]
    assert (pair.winner.seed, pair.loser.seed) == (2, 0)
    assert pair.margin == pytest.approx(0.6)
    row = pair.to_row()
    assert row["winner"] == "candidates/c.png" and row["loser"] == "candidates/a.png"
    assert row["caption"] == "a dog, feeling fear" and row["emotion"] == "fear"
    assert row["loser_emotion"] == "fear" and row["winner_score"] == pytest.approx(0.7)


def test_lowest_rule_may_pick_a_loser_that_lost_its_content() -> None:
    g = group(FEAR, cand("a", 0, FEAR, 0.8), cand("b", 1, FEAR, 0.05, ok=False))
    pair = select_pairs([g], SelectOptions()).pairs[0]
    assert (pair.winner.seed, pair.loser.seed, pair.loser.content_ok) == (0, 1, False)


def test_groups_without_content_or_margin_are_skipped_and_counted() -> None:
    no_content = group(FEAR, cand("a", 0, FEAR, 0.9, ok=False), cand("b", 1, FEAR, 0.1, ok=False))
    flat = group(JOY, cand("c", 0, JOY, 0.50), cand("d", 1, JOY, 0.45), index=1)
    sel = select_pairs([no_content, flat], SelectOptions(min_margin=0.1))
    assert sel.pairs == [] and sel.skipped == {SKIP_NO_CONTENT: 1, SKIP_MARGIN: 1}
    # The same flat group passes with a smaller margin: 0.05 >= 0.04.
    assert len(select_pairs([flat], SelectOptions(min_margin=0.04)).pairs) == 1


def test_unchecked_content_counts_as_kept() -> None:
    g = group(FEAR, cand("a", 0, FEAR, 0.9, ok=None), cand("b", 1, FEAR, 0.2, ok=None))
    assert select_pairs([g], SelectOptions()).pairs[0].winner.seed == 0


def test_other_emotion_rule_takes_the_same_prompt_under_another_emotion_same_seed_first() -> None:
    # Fear's winner is seed 1. Among the amusement renders (content kept), the two lowest fear scores tie
    # at 0.02: seed 1 (the winner's noise) is chosen over seed 0. The content-broken one (0.0) is ignored.
    fear = group(FEAR, cand("f0", 0, FEAR, 0.3), cand("f1", 1, FEAR, 0.9))
    joy = group(
        JOY,
        Candidate("candidates/j0.png", 0, probs(FEAR, 0.02), True),
        Candidate("candidates/j1.png", 1, probs(FEAR, 0.02), True),
        Candidate("candidates/j2.png", 2, probs(FEAR, 0.0), False),
    )
    sel = select_pairs([fear, joy], SelectOptions(loser="other_emotion", min_margin=0.1))
    by_emotion = {p.group.emotion: p for p in sel.pairs}
    pair = by_emotion[FEAR]
    assert (pair.winner.image, pair.loser.image, pair.loser_emotion) == (
        "candidates/f1.png",
        "candidates/j1.png",
        JOY,
    )
    assert pair.margin == pytest.approx(0.88)
    # Amusement's pair under the same rule: its winner j0 (amusement 0.98/7 = 0.14 for j0 and j1: the first
    # of equals) against the fear render with the lowest amusement probability, f1 (0.1/7 vs f0's 0.7/7).
    joy_pair = by_emotion[JOY]
    assert (joy_pair.winner.image, joy_pair.loser.image) == ("candidates/j0.png", "candidates/f1.png")
    assert joy_pair.margin == pytest.approx(0.98 / 7 - 0.1 / 7)


def test_other_emotion_rule_needs_another_emotion_of_the_prompt() -> None:
    alone = group(FEAR, cand("a", 0, FEAR, 0.9), cand("b", 1, FEAR, 0.1))
    sel = select_pairs([alone], SelectOptions(loser="other_emotion"))
    assert sel.pairs == [] and sel.skipped == {SKIP_NO_LOSER: 1}


def test_group_records_round_trip_and_damage_is_named() -> None:
    g = group(FEAR, cand("p000-fear/a", 0, FEAR, 0.1), cand("p000-fear/b", 1, FEAR, 0.9, ok=None))
    assert ScoredGroup.from_json(g.to_json(), "x.json") == g
    broken = g.to_json()
    broken["candidates"][0]["probs"] = [0.5, 0.5]
    with pytest.raises(InvalidInputError, match=r"x\.json: not a candidate group record.*2 probabilities"):
        ScoredGroup.from_json(broken, "x.json")
    for escape in ("candidates/p000-fear/../../../etc/passwd", "/etc/passwd", "candidates/p001-awe/a.png"):
        moved = g.to_json()
        moved["candidates"][0]["image"] = escape
        with pytest.raises(InvalidInputError, match=r"is not candidates/p000-fear/<file>"):
            ScoredGroup.from_json(moved, "x.json")


def test_equal_scores_never_make_a_pair() -> None:
    g = group(FEAR, cand("a", 0, FEAR, 0.5), cand("b", 1, FEAR, 0.5))
    assert select_pairs([g], SelectOptions(min_margin=0.0)).skipped == {SKIP_MARGIN: 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loser": "worst"}, r"loser rule 'worst' is unknown; allowed: lowest, other_emotion"),
        ({"min_margin": 1.0}, r"min_margin 1.0 is invalid; allowed: a number in \[0, 1\)"),
        ({"min_margin": -0.1}, r"min_margin -0.1 is invalid"),
    ],
)
def test_bad_options_name_the_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        SelectOptions(**kwargs)  # type: ignore[arg-type]
