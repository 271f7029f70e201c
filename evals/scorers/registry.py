"""The scorer registry: a name in a suite's ``text_scorers`` -> a scorer.

A scorer sees the finished samples of one group (one system x one emotion) and returns a ``GroupScore``:
metrics per sample (averaged by the aggregator, so a system's row pools its samples) and metrics of the
group as a set (self-BLEU and distinct-n *across prompts* only exist for a set; a system's row is their
mean over emotions). This is the same shape ``ed_diffusion.scoring.score_images`` returns for images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ed_common.errors import InvalidInputError
from evals.records import SampleRecord

DEFAULT_SCORERS: tuple[str, ...] = ("distinct_n", "self_bleu", "visual_words", "cost", "agent_health")


@dataclass(frozen=True)
class GroupScore:
    """Per-sample metrics (aligned with the input samples) and set-level metrics of the group."""

    per_sample: list[dict[str, float]]
    group: dict[str, float] = field(default_factory=dict)


class Scorer(Protocol):
    """Scores the finished (status ok) samples of one group."""

    def __call__(self, samples: Sequence[SampleRecord]) -> GroupScore:
        """Metrics of ``samples``; a metric that is undefined for a sample or the group is left out."""
        ...


_REGISTRY: dict[str, Scorer] = {}


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Decorator: make ``fn`` available to suites as ``name``."""

    def add(fn: Scorer) -> Scorer:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"scorer {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return add


def scorer_names() -> list[str]:
    """Every registered scorer name, sorted."""
    return sorted(_REGISTRY)


def check_scorer_names(names: Sequence[str]) -> None:
    """Raise ``InvalidInputError`` (a ValueError, so pydantic reports it by field) on an unknown name."""
    unknown = [n for n in names if n not in scorer_names()]
    if unknown:
        raise InvalidInputError(
            f"unknown scorer {', '.join(repr(u) for u in unknown)}; allowed: {', '.join(scorer_names())}"
        )


def get_scorer(name: str) -> Scorer:
    """The scorer registered as ``name``.

    Raises:
        InvalidInputError: no such scorer (the message lists the registered ones).
    """
    check_scorer_names([name])
    return _REGISTRY[name]
