"""Text scorers over the rewritten prompts: distinct-n, self-BLEU and the share of visual-channel words.

Diversity is measured two ways. *Across personas*: the persona reactions inside one sample (do the
personas say different things?), a per-sample metric. *Across prompts*: the final prompts of one system for
one emotion (does the system paste the same emotion template onto every prompt? the "template-like
rewrite" problem), a set metric. A set holds one rewrite per prompt: the group is split by seed (and by the
index of a pair listed twice), each set is scored and the sets' values are averaged, so rewrites of the
*same* prompt under other seeds (identical for ``plain``) never count as template-like. Texts are tokenised
with ``ed_agents.anchors.words`` (lower case, words and numbers, punctuation dropped), the tokeniser the
content-anchor checks use.

Self-BLEU (Zhu et al. 2018, Texygen) is the mean over texts of BLEU-4 of each text against all the others
as references. BLEU is implemented here as NLTK's ``sentence_bleu`` with uniform weights and
``SmoothingFunction().method1`` (what Texygen uses): clipped n-gram precisions p_1..p_4 over
``max(1, #hypothesis n-grams)``, a precision with no match replaced by ``0.1 / #hypothesis n-grams``
(Chen & Cherry 2014, method 1, epsilon 0.1), the closest-reference-length brevity penalty, and BLEU 0 when
not even one unigram matches. So identical texts of >= 4 words score 1, and texts of fewer than 4 words
never reach 1 (their 4-gram precision is smoothed), as in NLTK.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from statistics import mean

from ed_agents.anchors import STOPWORDS, words
from ed_agents.depictability import NON_DEPICTABLE
from ed_agents.lexicon import VISUAL
from evals.records import SampleRecord
from evals.scorers.registry import GroupScore, register_scorer

BLEU_MAX_N = 4
SMOOTHING_EPSILON = 0.1


# ------------------------------------------------------------------------------------------ n-grams
def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of ``tokens`` in order."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Distinct n-grams / all n-grams, pooled over ``texts`` (Li et al. 2016); None without any n-gram."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else None


def bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = BLEU_MAX_N) -> float:
    """Sentence BLEU of token lists, as NLTK's with method-1 smoothing (see the module docstring)."""
    if not hypothesis or not references:
        return 0.0
    log_sum = 0.0
    for n in range(1, max_n + 1):
        hyp_counts = Counter(ngrams(hypothesis, n))
        max_ref: Counter[tuple[str, ...]] = Counter()
        for ref in references:
            for gram, count in Counter(ngrams(ref, n)).items():
                max_ref[gram] = max(max_ref[gram], count)
        matches = sum(min(count, max_ref[gram]) for gram, count in hyp_counts.items())
        total = max(1, sum(hyp_counts.values()))
        if n == 1 and matches == 0:
            return 0.0  # NLTK: no unigram in common, BLEU is 0 whatever the smoothing
        precision = matches / total if matches else SMOOTHING_EPSILON / total
        log_sum += math.log(precision) / max_n
    hyp_len = len(hypothesis)
    # The reference length closest to the hypothesis length; ties go to the shorter one (as NLTK).
    ref_len = min((len(r) for r in references), key=lambda r: (abs(r - hyp_len), r))
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_sum)


def self_bleu(texts: Sequence[str], max_n: int = BLEU_MAX_N) -> float | None:
    """Mean BLEU of each text against all the others; None for fewer than two texts."""
    tokenised = [words(t) for t in texts]
    if len(tokenised) < 2:
        return None
    scores = [bleu(hyp, tokenised[:i] + tokenised[i + 1 :], max_n) for i, hyp in enumerate(tokenised)]
    return mean(scores)


# ------------------------------------------------------------------------------------------ visual words
# Words the lexicon's phrases carry that describe no channel ("god rays", "golden hour", "tiny figure").
_LEXICON_NOISE = frozenset(
    "god hour even single around looking uncomfortably subject playful gentle figure landscape clouds candy "
    "branches".split()
)


def _lexicon_words(channel: str) -> set[str]:
    # The built-in chain-of-concept lexicon's phrases for this channel, over all emotions.
    found = {w for v in VISUAL.values() for phrase in getattr(v, channel) for w in words(phrase)}
    return found - _LEXICON_NOISE


_COLOUR = """red orange yellow green blue purple violet pink brown black white grey gray gold golden silver
    crimson scarlet amber teal turquoise cyan magenta beige ochre ivory navy azure emerald indigo maroon
    colour color colours colors colourful colorful palette hue hues tone tones tint pastel saturated
    desaturated muted monochrome monochromatic vivid neon sepia rainbow""".split()
_LIGHT = """light lights lighting lit glow glowing glows shadow shadows shade shaded sunlight sunlit moonlight
    moonlit backlight backlit rim dim dark darkness bright brightness luminous gloom gloomy haze hazy
    silhouette silhouetted highlight highlights contrast candlelight lamplight flare rays ray beam beams
    overcast sunbeam dusk dawn twilight spotlight chiaroscuro radiant shimmering sparkling""".split()
_TEXTURE = """texture textured textures rough smooth glossy matte grainy grain wet damp slimy cracked rusty
    rust weathered velvet silk wool wooden wood stone metallic glass soft jagged mossy dusty worn
    peeling polished gritty fuzzy furry crumbling""".split()
_COMPOSITION = """composition framing framed close-up closeup wide-angle angle low-angle high-angle aerial
    overhead symmetrical symmetric centred centered diagonal diagonals foreground background depth
    bokeh shot view perspective crop cropped panoramic dutch frame horizon thirds vanishing
    silhouette macro telephoto fisheye""".split()

# Channel -> vocabulary: a curated base list plus the lexicon's words for that channel, minus stopwords,
# minus words that name a feeling, sense or abstraction (those are the depictability filter's) and minus
# other channels' base words (the lexicon's "hard red rim light" must not make "red" a light word).
_CHANNELS = (
    ("colour", _COLOUR, "color_palette"),
    ("light", _LIGHT, "lighting"),
    ("texture", _TEXTURE, "material_texture"),
    ("composition", _COMPOSITION, "composition"),
)
VISUAL_VOCABULARY: dict[str, frozenset[str]] = {
    channel: frozenset(
        set(base) | (_lexicon_words(lex) - {w for other, b, _ in _CHANNELS if other != channel for w in b})
    )
    - STOPWORDS
    - NON_DEPICTABLE
    for channel, base, lex in _CHANNELS
}
ALL_VISUAL = frozenset().union(*VISUAL_VOCABULARY.values())


def content_words(text: str) -> list[str]:
    """The words of ``text`` without stopwords."""
    return [w for w in words(text) if w not in STOPWORDS]


def _in(word: str, vocabulary: frozenset[str]) -> bool:
    # A word counts if it, its singular ("-s" dropped) or one of its hyphen parts is in the vocabulary.
    forms = {word, word.removesuffix("s"), *word.split("-")}
    return bool(forms & vocabulary)


def visual_word_shares(final_prompt: str, user_prompt: str = "") -> dict[str, float]:
    """Shares of visual-channel words among the final prompt's content words (and among the added ones).

    Keys: ``visual_word_share`` and one ``<channel>_word_share`` per channel (a word may be in two
    channels, so these need not sum to the total), ``non_depictable_word_share`` (emotion names, other
    senses, abstractions: the expressive shortcut) and ``added_visual_word_share`` over the words the
    rewrite added to the user's prompt (left out when it added none).
    """
    found = content_words(final_prompt)
    if not found:
        return {}
    out = {"visual_word_share": sum(_in(w, ALL_VISUAL) for w in found) / len(found)}
    for channel, vocabulary in VISUAL_VOCABULARY.items():
        out[f"{channel}_word_share"] = sum(_in(w, vocabulary) for w in found) / len(found)
    out["non_depictable_word_share"] = sum(w in NON_DEPICTABLE for w in found) / len(found)
    given = set(words(user_prompt))
    added = [w for w in found if w not in given]
    if added:
        out["added_visual_word_share"] = sum(_in(w, ALL_VISUAL) for w in added) / len(added)
    return out


# ------------------------------------------------------------------------------------------ scorers
def _prompt_sets(samples: Sequence[SampleRecord]) -> list[list[str]]:
    # One set per (seed, index): each holds at most one rewrite of each prompt.
    sets: dict[tuple[int, int], list[str]] = {}
    for s in samples:
        if s.final_prompt:
            sets.setdefault((s.seed, s.index), []).append(s.final_prompt)
    return [sets[k] for k in sorted(sets)]


def _mean_over_sets(sets: list[list[str]], metric: Callable[[list[str]], float | None]) -> float | None:
    values = [v for v in map(metric, sets) if v is not None]
    return mean(values) if values else None


@register_scorer("distinct_n")
def score_distinct_n(samples: Sequence[SampleRecord]) -> GroupScore:
    """distinct-1/2 across each sample's persona reactions and across the group's final prompts (per seed)."""
    per_sample: list[dict[str, float]] = []
    for s in samples:
        texts = [r.text for r in s.persona_reactions]
        row = {}
        if len(texts) >= 2:
            for n in (1, 2):
                value = distinct_n(texts, n)
                if value is not None:
                    row[f"distinct_{n}_personas"] = value
        per_sample.append(row)
    group = {}
    sets = _prompt_sets(samples)
    for n in (1, 2):
        value = _mean_over_sets(sets, functools.partial(distinct_n, n=n))
        if value is not None:
            group[f"distinct_{n}_prompts"] = value
    return GroupScore(per_sample, group)


@register_scorer("self_bleu")
def score_self_bleu(samples: Sequence[SampleRecord]) -> GroupScore:
    """Self-BLEU across each sample's persona reactions and across the group's final prompts (per seed)."""
    per_sample = []
    for s in samples:
        value = self_bleu([r.text for r in s.persona_reactions])
        per_sample.append({} if value is None else {"self_bleu_personas": value})
    across = _mean_over_sets(_prompt_sets(samples), self_bleu)
    return GroupScore(per_sample, {} if across is None else {"self_bleu_prompts": across})


@register_scorer("visual_words")
def score_visual_words(samples: Sequence[SampleRecord]) -> GroupScore:
    """Visual-channel word shares of each sample's final prompt."""
    return GroupScore([visual_word_shares(s.final_prompt or "", s.prompt) for s in samples])
