"""Text and cost scorers on cases whose answers are known by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from evals.records import PersonaText, SampleRecord
from evals.scorers import get_scorer, scorer_names
from evals.scorers.cost import trace_costs
from evals.scorers.text import bleu, distinct_n, self_bleu, visual_word_shares


def _record(final: str, reactions: list[str] = (), **extra: Any) -> SampleRecord:  # type: ignore[assignment]
    return SampleRecord(
        id=final[:8],
        system="s",
        kind="full_graph",
        visual_prompts=True,
        prompt=extra.pop("prompt", "a dog"),
        emotion=Emotion.FEAR,
        seed=0,
        status="ok",
        final_prompt=final,
        persona_reactions=[PersonaText(persona_id=f"p{i}", text=t) for i, t in enumerate(reactions)],
        **extra,
    )


def test_self_bleu_of_identical_texts_is_one() -> None:
    assert self_bleu(["a red dog in the rain"] * 3) == pytest.approx(1.0)


def test_self_bleu_needs_two_texts_and_is_zero_without_shared_words() -> None:
    assert self_bleu(["one text only here"]) is None
    assert self_bleu(["alpha beta gamma delta", "one two three four"]) == 0.0  # no unigram in common


def test_bleu_matches_the_hand_computed_smoothed_value() -> None:
    hyp = "the cat sat on the mat".split()
    ref = "the cat is on the mat".split()
    # p1 = 5/6, p2 = 3/5 (the cat, on the, the mat), p3 = 1/4 (on the mat), p4 = 0/3 -> 0.1/3; equal lengths.
    expected = math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 1 / 4, 0.1 / 3)) / 4)
    assert bleu(hyp, [ref]) == pytest.approx(expected)


def test_bleu_brevity_penalty_uses_the_closest_reference_length() -> None:
    hyp = "a b c d".split()
    refs = ["a b c d e f".split(), "a b c d x y z w".split()]
    assert bleu(hyp, refs) == pytest.approx(math.exp(1 - 6 / 4))  # all precisions 1, r = 6 (closest)


def test_distinct_n_of_known_strings() -> None:
    texts = ["a b c", "a b d"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # (a b) twice, (b c), (b d)
    assert distinct_n(["single"], 2) is None


def test_visual_word_shares_count_channels_and_added_words() -> None:
    shares = visual_word_shares("a dog, red light, rough texture", "a dog")
    # content words: dog, red, light, rough, texture -> 4 visual of 5
    assert shares["visual_word_share"] == pytest.approx(4 / 5)
    assert shares["colour_word_share"] == pytest.approx(1 / 5)
    assert shares["light_word_share"] == pytest.approx(1 / 5)
    assert shares["texture_word_share"] == pytest.approx(2 / 5)
    assert shares["added_visual_word_share"] == pytest.approx(1.0)
    assert shares["non_depictable_word_share"] == 0.0


def test_emotion_name_prompt_is_all_non_depictable_and_adds_no_visuals() -> None:
    shares = visual_word_shares("an image of sadness", "a dog")
    assert shares["non_depictable_word_share"] == 1.0
    assert shares["visual_word_share"] == 0.0 and shares["added_visual_word_share"] == 0.0
    assert "added_visual_word_share" not in visual_word_shares("a dog", "a dog")  # nothing added


def test_template_like_prompts_score_high_self_bleu_and_low_distinct() -> None:
    template = "dark shadows, cold grey light, dutch angle"
    samples = [
        _record(f"a {c}, {template}", ["same words said here twice"] * 2) for c in ("dog", "cat", "car")
    ]
    diverse = [_record(t) for t in ("a dog at dawn on a hill", "a cat under neon rain", "a car in fog")]
    template_score = get_scorer("self_bleu")(samples)
    assert template_score.group["self_bleu_prompts"] > 0.6
    assert get_scorer("self_bleu")(diverse).group["self_bleu_prompts"] < 0.2
    assert [row["self_bleu_personas"] for row in template_score.per_sample] == pytest.approx([1.0] * 3)
    distinct = get_scorer("distinct_n")(samples)
    assert (
        distinct.group["distinct_2_prompts"] < get_scorer("distinct_n")(diverse).group["distinct_2_prompts"]
    )
    assert distinct.per_sample[0]["distinct_1_personas"] == pytest.approx(5 / 10)


def test_cost_sums_llm_calls_per_stage_and_skips_decisions() -> None:
    trace = [
        {"node": "react_as_persona", "model": "m", "latency_s": 1.0, "input_tokens": 10, "output_tokens": 5},
        {"node": "react_as_persona", "model": "m", "latency_s": 2.0, "input_tokens": 20, "output_tokens": 5},
        {
            "node": "write_consensus",
            "model": "m",
            "latency_s": 0.5,
            "input_tokens": 7,
            "output_tokens": 3,
            "ok": False,
        },
        {"node": "verify_anchors", "model": None, "latency_s": 0.0, "note": "missing: []"},
    ]
    costs = trace_costs(trace)
    assert costs["llm_calls"] == 3 and costs["llm_failed_calls"] == 1
    assert costs["llm_latency_s"] == pytest.approx(3.5)
    assert costs["tokens"] == 50 and costs["input_tokens"] == 37
    assert costs["latency_s/react_as_persona"] == pytest.approx(3.0)
    assert costs["calls/react_as_persona"] == 2 and costs["tokens/write_consensus"] == 10
    assert not any(k.endswith("/verify_anchors") for k in costs)
    row = get_scorer("cost")([_record("x", trace=trace, wall_s=4.0, timings={"render_s": 1.5})]).per_sample[0]
    assert row["wall_s"] == 4.0 and row["render_s"] == 1.5 and row["llm_calls"] == 3


def test_registry_lists_builtin_scorers_and_names_the_allowed_ones() -> None:
    assert {"distinct_n", "self_bleu", "visual_words", "cost"} <= set(scorer_names())
    with pytest.raises(InvalidInputError, match=r"unknown scorer 'bleurt'; allowed: .*self_bleu"):
        get_scorer("bleurt")


def test_across_prompt_diversity_ignores_the_same_prompt_under_other_seeds() -> None:
    # plain under two seeds: every prompt's rewrite appears twice. That is not a template across prompts.
    texts = ("a dog at dawn on a hill", "a cat under neon rain", "a car in fog")
    one_seed = [_record(t) for t in texts]
    two_seeds = one_seed + [r.model_copy(update={"seed": 1}) for r in one_seed]
    for name, key in (("self_bleu", "self_bleu_prompts"), ("distinct_n", "distinct_2_prompts")):
        assert get_scorer(name)(two_seeds).group[key] == pytest.approx(get_scorer(name)(one_seed).group[key])
    assert get_scorer("self_bleu")(two_seeds).group["self_bleu_prompts"] < 0.2
