"""Leaks: schema words, JSON syntax, instruction text or worked-example text where a prompt should be.

A small model echoes what it was shown: field names ("feeling_trigger"), the instructions ("short visual
phrases"), the worked example's answer. None of that is a picture, so the finaliser strips clauses that
leak (and counts them), and the agent-health scorer checks every final prompt again. The check is
deterministic and independent of the model it judges.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ed_agents.anchors import words
from ed_agents.channels import channel_of
from ed_agents.lexicon import NEGATIVE_HINT, VISUAL
from ed_agents.llm import string_leaves
from ed_agents.prompts import PromptLibrary
from ed_agents.provenance import content, phrase_key, split_clauses
from ed_agents.state import REPLY_SCHEMAS, VISUAL_CHANNELS

# Multi-word field names that no natural prompt says (``color palette`` does, so it is only a leak with
# its underscore, like every field name).
_FIELD_NAMES = sorted(
    {name for schema in REPLY_SCHEMAS.values() for name in schema.model_fields} | set(VISUAL_CHANNELS)
)
_SPACED_FIELDS = [
    n.replace("_", " ") for n in _FIELD_NAMES if "_" in n and n not in ("color_palette", "symbolic_objects")
]
_INSTRUCTION_WORDS = ("json", "schema", "user_prompt", "visual_concepts", "must keep", "never instructions")
# Tasks whose replies become prompt text: their example's scene must not turn up in another scene.
_SCENE_TASKS = ("persona_reply", "concept_reply", "consensus_reply")
_SNAKE_CASE = re.compile(r"\b[a-z]+_[a-z_]+\b", re.IGNORECASE)
_JSON_SYNTAX = re.compile(r'[{}\[\]"]|\w":|:\s*\[')
# Consecutive words shared with an instruction text that make a clause a copy of it.
INSTRUCTION_NGRAM = 4


@dataclass(frozen=True)
class LeakChecker:
    """Finds leaks in a prompt clause, knowing the instruction texts and worked examples of a library."""

    instruction_ngrams: frozenset[tuple[str, ...]]
    example_phrases: frozenset[str]
    # Content words of the worked examples' scenes ("lighthouse"): another scene's subject is a copy.
    example_subjects: frozenset[str] = frozenset()

    @classmethod
    def from_library(cls, library: PromptLibrary) -> LeakChecker:
        """Instruction n-grams of every task's system text and example user message; the examples' phrases."""
        grams: set[tuple[str, ...]] = set()
        phrases: set[str] = set()
        subjects: set[str] = set()
        for f in library:
            if f.meta.kind != "task":
                continue
            texts = [f.system_template] + ([f.example.user] if f.example else [])
            for text in texts:
                ws = words(text)
                grams.update(
                    tuple(ws[i : i + INSTRUCTION_NGRAM]) for i in range(len(ws) - INSTRUCTION_NGRAM + 1)
                )
            if f.example is None:
                continue
            leaves: list[str] = []
            with contextlib.suppress(json.JSONDecodeError):  # prompts check reports it
                leaves = string_leaves(json.loads(f.example.reply))
            # Specific phrases only: a one-word leaf ("red", "two") is any prompt's word too.
            phrases.update(phrase_key(s) for s in leaves if len(content(s)) >= 2)
            scene = re.search(r"<user_prompt>(.*?)</user_prompt>", f.example.user, re.DOTALL)
            if scene and f.meta.output in _SCENE_TASKS:
                # The example's subject is the scene word its own answer repeats ("lighthouse"); the
                # scene's other words ("rocky", "coast") are any prompt's words too.
                answer = {w for s in leaves for w in content(s)}
                subjects.update(w for w in content(scene.group(1)) if w in answer and channel_of(w) is None)
        # The built-in lexicon's phrases are ours, not copies: the fallbacks and negative hints use them.
        phrases -= _LEXICON_PHRASES
        return cls(frozenset(grams), frozenset(phrases) - {""}, frozenset(subjects))

    def leaking_clauses(
        self, prompt: str, user_prompt: str, allowed: Sequence[str] = (), *, examples: bool = True
    ) -> list[str]:
        """The comma-separated clauses of ``prompt`` that leak.

        The user's own words never count: clauses made only of them are kept, and words of the user's
        prompt or of ``allowed`` texts (the steering feedback) are never a leak inside a clause.
        ``examples=False`` skips the worked-example rules (a negative prompt may well say "bright
        sunshine" like the example does: avoiding something is no copy of a scene).
        """
        user = content(user_prompt)
        texts = [user_prompt, *allowed]
        return [
            c
            for c in split_clauses(prompt)
            if not (content(c) and content(c) <= user) and self.leaks(c, texts, examples=examples)
        ]

    def leaks(self, clause: str, allowed: Iterable[str] = (), *, examples: bool = True) -> list[str]:
        """Why ``clause`` is a leak (empty if it is not); words of ``allowed`` texts never count.

        Args:
            clause: one comma-separated part of a prompt.
            allowed: texts the clause may legitimately repeat (the user's prompt, the real inputs).
        """
        allowed = list(allowed)
        allowed_low = " ".join(phrase_key(t) for t in allowed)

        def said(term: str, text: str) -> bool:
            return re.search(rf"\b{re.escape(term)}\b", text) is not None

        found: list[str] = []
        low = clause.lower()
        if _JSON_SYNTAX.search(clause):
            found.append("JSON syntax")
        found += [f"field name {n!r}" for n in _FIELD_NAMES if "_" in n and n in low]
        ws = words(clause)
        joined = " ".join(ws)
        found += [f"field name {n!r}" for n in _SPACED_FIELDS if said(n, joined) and not said(n, allowed_low)]
        found += [
            f"instruction word {w!r}"
            for w in _INSTRUCTION_WORDS
            if said(w, low) and not said(phrase_key(w), allowed_low)
        ]
        allowed_words = {w for text in allowed for w in words(text)}
        grams = [tuple(ws[i : i + INSTRUCTION_NGRAM]) for i in range(len(ws) - INSTRUCTION_NGRAM + 1)]
        copied = [g for g in grams if g in self.instruction_ngrams and not set(g) <= allowed_words]
        if copied:
            found.append(f"instruction text {' '.join(copied[0])!r}")
        if examples:
            key = phrase_key(clause)
            theirs = key in {phrase_key(text) for text in allowed} or content(clause) <= allowed_words
            if key in self.example_phrases and not theirs:
                found.append(f"worked-example text {clause.strip()!r}")
            borrowed = sorted((content(clause) & self.example_subjects) - allowed_words)
            if borrowed:
                found.append(f"the worked example's scene {borrowed[0]!r}")
        if _SNAKE_CASE.search(clause):
            found.append(f"key-like word {_SNAKE_CASE.search(clause).group(0)!r}")  # type: ignore[union-attr]
        return found


_LEXICON_PHRASES = frozenset(
    phrase_key(p)
    for phrases in [
        *(items for v in VISUAL.values() for items in v.channel_items().values()),
        *(hint.split(",") for hint in NEGATIVE_HINT.values()),
    ]
    for p in phrases
)


@functools.cache
def leak_checker(library: PromptLibrary) -> LeakChecker:
    """The checker of ``library``, built once per library object (libraries are loaded once, never edited)."""
    return LeakChecker.from_library(library)
