"""Choosing preference pairs from scored candidates: the rule ``emodir pairs build`` and ``select`` apply.

A *group* is one (prompt, emotion) of a suite with its K rendered candidates; each candidate carries the
emotion scorer's 8 probabilities (EmoSet order) and whether the content guard saw the prompt's content
(``None`` when no content scorer runs). Pure functions over those records, so the rule is tested by hand.

Winner: the candidate of the group with the highest probability of the target emotion among those that keep
the content. Loser, by ``loser``:

- ``"lowest"``: the group's candidate with the lowest target probability (content kept or not: a candidate
  that lost its content is a fair thing to prefer against).
- ``"other_emotion"``: the same prompt rendered for another emotion, with its content kept, and the lowest
  probability of the winner's emotion; on a tie the candidate with the winner's seed (the same starting
  noise, so the pair differs in emotion and as little else as the model allows) comes first.

A pair is kept when the winner's target probability beats the loser's by at least ``min_margin``; otherwise
the group is skipped and the reason counted (nothing is dropped silently).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ed_common.emotions import EMOTION_NAMES, Emotion, parse_emotion
from ed_common.errors import InvalidInputError

LoserRule = Literal["lowest", "other_emotion"]
LOSER_RULES: tuple[str, ...] = get_args(LoserRule)
NUM_EMOTIONS = len(EMOTION_NAMES)

# Why a group gave no pair (the keys of ``Selection.skipped``).
SKIP_NO_CONTENT = "no_candidate_keeps_content"
SKIP_NO_LOSER = "no_loser_candidate"
SKIP_MARGIN = "margin_below_min"


@dataclass(frozen=True)
class Candidate:
    """One rendered candidate and its scores.

    Attributes:
        image: the image path as recorded (relative to the build directory).
        seed: the seed it was rendered with.
        probs: the emotion scorer's probabilities, EmoSet order (8 values summing to 1).
        content_ok: the content guard's verdict; ``None`` = no content scorer ran.
    """

    image: str
    seed: int
    probs: tuple[float, ...]
    content_ok: bool | None = None

    def __post_init__(self) -> None:
        """Check the probabilities' shape (a damaged group file names itself through the caller)."""
        if len(self.probs) != NUM_EMOTIONS:
            raise InvalidInputError(f"candidate {self.image}: {len(self.probs)} probabilities, expected 8")

    def prob(self, emotion: Emotion) -> float:
        """The probability the scorer gave ``emotion``."""
        return self.probs[emotion.label_index]

    @property
    def keeps_content(self) -> bool:
        """Content kept, or not checked."""
        return self.content_ok is not False


@dataclass(frozen=True)
class ScoredGroup:
    """One (prompt, emotion) and its scored candidates.

    Attributes:
        id: stable id within the build (``p003-fear``).
        prompt_index: the prompt's position in the suite.
        prompt: the user prompt as the suite gives it.
        caption: the text the candidates were rendered from (the system's template filled in): the caption a
            DPO trainer conditions the pair on.
        content: the content noun the guard checks, or ``None``.
        emotion: the target emotion.
        candidates: in seed order.
    """

    id: str
    prompt_index: int
    prompt: str
    caption: str
    content: str | None
    emotion: Emotion
    candidates: tuple[Candidate, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The group as its ``groups/<id>.json`` stores it."""
        return {
            "id": self.id,
            "prompt_index": self.prompt_index,
            "prompt": self.prompt,
            "caption": self.caption,
            "content": self.content,
            "emotion": self.emotion.value,
            "candidates": [
                {"image": c.image, "seed": c.seed, "probs": list(c.probs), "content_ok": c.content_ok}
                for c in self.candidates
            ],
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> ScoredGroup:
        """Read a group file's content back.

        Raises:
            InvalidInputError: not a group record (names ``where``).
        """
        try:
            candidates = tuple(
                Candidate(
                    image=str(c["image"]),
                    seed=int(c["seed"]),
                    probs=tuple(float(p) for p in c["probs"]),
                    content_ok=None if c["content_ok"] is None else bool(c["content_ok"]),
                )
                for c in data["candidates"]
            )
            group_id = str(data["id"])
            for c in candidates:  # a group's images are its own files: never a path out of the build
                parts = c.image.split("/")
                if len(parts) != 3 or parts[:2] != ["candidates", group_id] or parts[2] in ("", ".", ".."):
                    raise ValueError(f"image {c.image!r} is not candidates/{group_id}/<file>")
            return cls(
                id=group_id,
                prompt_index=int(data["prompt_index"]),
                prompt=str(data["prompt"]),
                caption=str(data["caption"]),
                content=None if data["content"] is None else str(data["content"]),
                emotion=parse_emotion(data["emotion"]),
                candidates=candidates,
            )
        except (KeyError, TypeError, ValueError, InvalidInputError) as exc:
            raise InvalidInputError(f"{where}: not a candidate group record ({exc})") from None


@dataclass(frozen=True)
class SelectOptions:
    """How pairs are chosen (may change between selections of one build: nothing is re-rendered)."""

    loser: LoserRule = "lowest"
    min_margin: float = 0.1

    def __post_init__(self) -> None:
        """One-line errors for a bad rule or margin."""
        if self.loser not in LOSER_RULES:
            allowed = ", ".join(LOSER_RULES)
            raise InvalidInputError(f"loser rule {self.loser!r} is unknown; allowed: {allowed}")
        margin = self.min_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
            raise InvalidInputError(f"min_margin {margin!r} is invalid; allowed: a number in [0, 1)")


@dataclass(frozen=True)
class ChosenPair:
    """A winner and a loser for one group."""

    group: ScoredGroup
    winner: Candidate
    loser: Candidate
    loser_emotion: Emotion  # the emotion the loser was rendered for

    @property
    def margin(self) -> float:
        """Target-emotion probability, winner minus loser."""
        e = self.group.emotion
        return self.winner.prob(e) - self.loser.prob(e)

    def to_row(self) -> dict[str, Any]:
        """The pair as a line of ``pairs.jsonl`` (what ``emodir train dpo`` reads, plus the scores)."""
        g, e = self.group, self.group.emotion
        return {
            "caption": g.caption,
            "emotion": e.value,
            "winner": self.winner.image,
            "loser": self.loser.image,
            "winner_score": round(self.winner.prob(e), 6),
            "loser_score": round(self.loser.prob(e), 6),
            "margin": round(self.margin, 6),
            "winner_seed": self.winner.seed,
            "loser_seed": self.loser.seed,
            "loser_emotion": self.loser_emotion.value,
            "winner_content_ok": self.winner.content_ok,
            "loser_content_ok": self.loser.content_ok,
            "prompt": g.prompt,
            "content": g.content,
            "group": g.id,
        }


@dataclass
class Selection:
    """The pairs chosen, and how many groups gave none, by reason."""

    pairs: list[ChosenPair]
    skipped: Counter[str]


def _best(candidates: Sequence[Candidate], emotion: Emotion) -> Candidate | None:
    # max() keeps the first of equals: ties go to the lower seed (candidates are in seed order).
    kept = [c for c in candidates if c.keeps_content]
    return max(kept, key=lambda c: c.prob(emotion)) if kept else None


def _lowest_loser(
    group: ScoredGroup, winner: Candidate, siblings: Sequence[ScoredGroup], rule: LoserRule
) -> tuple[Candidate, Emotion] | None:
    e = group.emotion
    if rule == "lowest":
        pool = [(c, e) for c in group.candidates if c is not winner]
    else:
        pool = [(c, g.emotion) for g in siblings if g.emotion != e for c in g.candidates if c.keeps_content]
    if not pool:
        return None
    # Lowest target probability; then the winner's seed first (matched noise); then pool order.
    return min(pool, key=lambda ce: (ce[0].prob(e), ce[0].seed != winner.seed))


def select_pairs(groups: Sequence[ScoredGroup], options: SelectOptions) -> Selection:
    """One pair per group where the rule finds one (in ``groups`` order), and the skip counts."""
    by_prompt: dict[int, list[ScoredGroup]] = {}
    for g in groups:
        by_prompt.setdefault(g.prompt_index, []).append(g)
    pairs: list[ChosenPair] = []
    skipped: Counter[str] = Counter()
    for g in groups:
        winner = _best(g.candidates, g.emotion)
        if winner is None:
            skipped[SKIP_NO_CONTENT] += 1
            continue
        found = _lowest_loser(g, winner, by_prompt[g.prompt_index], options.loser)
        if found is None:
            skipped[SKIP_NO_LOSER] += 1
            continue
        pair = ChosenPair(g, winner, found[0], found[1])
        if pair.margin < options.min_margin or pair.margin <= 0:  # equal scores carry no preference
            skipped[SKIP_MARGIN] += 1
            continue
        pairs.append(pair)
    return Selection(pairs, skipped)
