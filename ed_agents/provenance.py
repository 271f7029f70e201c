"""Where each phrase of a final prompt came from: a persona, the LLM's chain of concept, or the lexicon.

The final prompt is the user's words plus added clauses. Each added clause is matched against the run's
inputs (persona reactions, the concept chain) by content words, so a report can say how much of the
emotion the personas and the LLM wrote, rather than the built-in fallback. Matching is by words, not by
the model's own account of what it used (a small model invents persona ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ed_agents.anchors import STOPWORDS, words
from ed_agents.channels import channel_of
from ed_agents.state import ConceptChain, PersonaReaction, PhraseSource, PromptPhrase

# Share of a clause's content words that must occur in one input phrase for the clause to come from it
# (and at least two of them when the clause has two or more).
MATCH_SHARE = 0.5


@dataclass(frozen=True)
class Candidate:
    """An input phrase a final-prompt clause may come from."""

    text: str
    source: PhraseSource
    persona_id: str | None = None
    channel: str | None = None


def phrase_key(text: str) -> str:
    """A phrase as its lower-case words, for comparing phrases regardless of case and punctuation."""
    return " ".join(words(text))


def content(text: str) -> set[str]:
    """Content words of ``text`` (stopwords dropped)."""
    return {w for w in words(text) if w not in STOPWORDS}


def candidates(reactions: Sequence[PersonaReaction], chain: ConceptChain | None) -> list[Candidate]:
    """Every input phrase, personas first (their ideas are what the consensus should carry)."""
    out = [
        Candidate(text, "persona", r.persona_id)
        for r in reactions
        for text in (r.strongest_image, *r.what_i_see, r.feeling_trigger)
    ]
    if chain is not None:
        source: PhraseSource = "concepts" if chain.source == "llm" else "lexicon"
        out += [
            Candidate(text, source, channel=channel)
            for channel, items in chain.visual.channel_items().items()
            for text in items
        ]
    return out


def trace_phrase(phrase: str, pool: Sequence[Candidate], channel: str | None = None) -> PromptPhrase:
    """The best-matching input of ``phrase`` (most shared content words), or ``consensus`` if none.

    ``channel`` is the channel the phrase was written for, if known (a consensus slot); else the matched
    input's, else the one its words name.
    """
    mine = content(phrase)
    best: Candidate | None = None
    best_share = 0.0
    needed = min(2, len(mine))  # one shared word ("soft") is not an origin for "soft light"
    for cand in pool:
        shared = len(mine & content(cand.text))
        share = shared / len(mine) if mine else 0.0
        if shared >= needed and share >= MATCH_SHARE and share > best_share:
            best, best_share = cand, share
    if best is None:
        return PromptPhrase(phrase=phrase, channel=channel or channel_of(phrase))
    return PromptPhrase(
        phrase=phrase,
        channel=channel or best.channel or channel_of(phrase),
        source=best.source,
        persona_id=best.persona_id,
    )


def split_clauses(prompt: str) -> list[str]:
    """The comma-separated clauses of a prompt, stripped, empty ones dropped."""
    return [c.strip() for c in prompt.split(",") if c.strip(" .;")]


def added_phrases(
    final_prompt: str,
    user_prompt: str,
    reactions: Sequence[PersonaReaction],
    chain: ConceptChain | None,
    known: Sequence[PromptPhrase] = (),
) -> list[PromptPhrase]:
    """The clauses ``final_prompt`` adds to the user's words, each traced to its source.

    ``known`` phrases (traced where they were written, e.g. by the consensus with its slots' channels)
    are taken as they are when they are still in the prompt.
    """
    user = content(user_prompt)
    pool = candidates(reactions, chain)
    by_text = {p.phrase: p for p in known}
    return [
        by_text.get(clause) or trace_phrase(clause, pool)
        for clause in split_clauses(final_prompt)
        if content(clause) and not content(clause) <= user
    ]
