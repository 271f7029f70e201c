"""From sample records to ``summary.json``: scorers per (system, emotion) group, means, counts.

Failed samples are counted (``n_failed``) but kept out of every mean. Per-sample metrics are averaged over
a group's ok samples; a system's ``all`` row pools its samples. Set-level metrics (self-BLEU / distinct-n
across prompts, image diversity) exist per emotion; a system's ``all`` row is their mean over emotions.
Image metrics are per image (``n`` counts images); a per-image key ``<x>_correct`` is reported as
``<x>_accuracy``; ``*_index`` keys (predicted labels) are not averaged. Set-level image keys
``<metric>/<emotion>`` go to that emotion's row. Every metric carries its ``n``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean
from typing import Any

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from evals.records import SampleRecord
from evals.scorers.registry import get_scorer
from evals.suite import ImageScoringSection, Suite

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class ImageItem:
    """One image to score (becomes an ``ed_diffusion.scoring.ImageRecord``)."""

    image: Path
    emotion: Emotion
    prompt: str  # the user's content prompt: CLIP score then compares systems on the same text
    content: str | None
    sample_id: str


ImageScores = tuple[list[dict[str, float]], dict[str, float]]
ImageScorer = Callable[[list[ImageItem], ImageScoringSection], ImageScores]


def image_scoring_config(section: ImageScoringSection) -> Any:
    """The ``ed_diffusion.scoring.ImageScoringConfig`` for ``section`` (validated there: call it early).

    Raises:
        InvalidInputError: a value or combination the scorers refuse, or a field this version lacks.
    """
    from ed_diffusion.scoring import ImageScoringConfig

    known = {f.name for f in dataclasses.fields(ImageScoringConfig)}
    values = section.model_dump()
    unsupported = [
        k for k, v in values.items() if k not in known and v != ImageScoringSection.model_fields[k].default
    ]
    if unsupported:
        raise InvalidInputError(f"image_scoring.{unsupported[0]} is not supported by ed_diffusion.scoring")
    return ImageScoringConfig(**{k: v for k, v in values.items() if k in known})


class DefaultImageScorer:
    """``ed_diffusion.scoring`` (imported on first call: it needs torch), its models built once per summary.

    ``summarize`` calls the scorer once per system; the CLIP model, probe and LPIPS weights are the same for
    every system (same config, same content vocabulary), so they load once and are kept for the next call.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, tuple[str, ...]] | None = None
        self._scorers: Any = None
        self.builds = 0  # how many times the models were loaded (tests check the reuse)

    def __call__(self, items: list[ImageItem], section: ImageScoringSection) -> ImageScores:
        from ed_diffusion.scoring import ImageRecord, build_scorers, content_vocabulary, score_with

        config = image_scoring_config(section)
        records = [
            ImageRecord(image=i.image, emotion=i.emotion, prompt=i.prompt, content=i.content) for i in items
        ]
        vocabulary = content_vocabulary(records, config)  # checks every record before any model loads
        if not records:
            return [], {}
        if self._key != (config, vocabulary):
            # Let the previous models go first; forget the key too, in case this build fails.
            self._key = self._scorers = None
            self._scorers = build_scorers(config, vocabulary)
            self._key = (config, vocabulary)
            self.builds += 1
        per_image, set_level = score_with(records, self._scorers, batch_size=config.batch_size)
        return list(per_image), dict(set_level)


def score_images_default(items: list[ImageItem], section: ImageScoringSection) -> ImageScores:
    """Score one set of images with fresh models (``DefaultImageScorer`` keeps them between calls)."""
    return DefaultImageScorer()(items, section)


class _Acc:
    """Values per metric name for one row."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)

    def add(self, metrics: dict[str, float], rename: bool = False) -> None:
        for key, value in metrics.items():
            if key.endswith("_index"):
                continue  # a predicted class index is a label, not a quantity to average
            name = key.removesuffix("_correct") + "_accuracy" if rename and key.endswith("_correct") else key
            self.values[name].append(float(value))

    def row(self) -> tuple[dict[str, float], dict[str, int]]:
        return (
            {k: mean(v) for k, v in sorted(self.values.items()) if v},
            {k: len(v) for k, v in sorted(self.values.items()) if v},
        )


def summarize(
    suite: Suite,
    out: Path,
    records: Sequence[SampleRecord],
    *,
    image_scorer: ImageScorer | None = None,
) -> dict[str, Any]:
    """The run's summary: per system, per emotion and ``all``, metric means with their ``n``."""
    planned: dict[tuple[str, Emotion], int] = defaultdict(int)
    for spec in suite.plan():
        planned[(spec.system, spec.emotion)] += 1
    by_group: dict[tuple[str, Emotion], list[SampleRecord]] = defaultdict(list)
    for r in records:
        by_group[(r.system, r.emotion)].append(r)

    sample_acc: dict[tuple[str, Emotion | None], _Acc] = defaultdict(_Acc)  # per-sample + per-image metrics
    group_metrics: dict[tuple[str, Emotion], dict[str, float]] = defaultdict(dict)  # set-level
    for (name, emotion), group in by_group.items():
        ok = [r for r in group if r.ok]
        for scorer in suite.text_scorers:
            scored = get_scorer(scorer)(ok)
            for metrics in scored.per_sample:
                sample_acc[(name, emotion)].add(metrics)
                sample_acc[(name, None)].add(metrics)
            group_metrics[(name, emotion)].update(scored.group)

    section = suite.image_scoring
    provenance: dict[str, Any] | None = None
    if section.enabled:
        # CLIP zero-shot ranks among a vocabulary: the suite's nouns, so every system gets the same classes
        # (the scorers' own default, the contents of one call's records, would differ with failed samples).
        if (
            section.content_scorer == "clip_zero_shot"
            and not section.content_vocabulary
            and suite.content_nouns
        ):
            section = section.model_copy(update={"content_vocabulary": suite.content_nouns})
        _score_images(
            suite, out, records, section, image_scorer or DefaultImageScorer(), sample_acc, group_metrics
        )
        if image_scorer is None:  # the real scorers: record which models, files and conventions scored
            from ed_diffusion.scoring import describe_scoring

            provenance = describe_scoring(image_scoring_config(section))

    systems: dict[str, Any] = {}
    for system in suite.systems:
        emotions = sorted({e for (s, e) in planned if s == system.name}, key=lambda e: e.label_index)
        rows = {}
        across: dict[str, list[float]] = defaultdict(list)
        for e in emotions:
            key = (system.name, e)
            set_level = group_metrics[key]
            rows[e.value] = _row(
                by_group[key], planned[key], sample_acc[key], {k: (v, 1) for k, v in set_level.items()}
            )
            for metric, value in set_level.items():
                across[metric].append(value)
        pooled = [r for e in emotions for r in by_group[(system.name, e)]]
        n_planned = sum(planned[(system.name, e)] for e in emotions)
        macro = {k: (mean(v), len(v)) for k, v in across.items()}
        systems[system.name] = {
            "kind": system.kind,
            "visual_prompts": system.visual_prompts,
            "all": _row(pooled, n_planned, sample_acc[(system.name, None)], macro),
            "emotions": rows,
        }
    return {
        "summary_version": SUMMARY_VERSION,
        "suite": suite.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_planned": sum(planned.values()),
        "n_recorded": len(records),
        "n_failed": sum(1 for r in records if not r.ok),
        "complete": len(records) >= sum(planned.values()),
        "image_scoring": provenance,
        "systems": systems,
    }


def _row(
    group: Sequence[SampleRecord], planned: int, acc: _Acc, set_level: dict[str, tuple[float, int]]
) -> dict[str, Any]:
    metrics, counts = acc.row()
    for key, (value, n) in set_level.items():
        metrics[key], counts[key] = value, n
    errors = sorted({r.error or "" for r in group if not r.ok})
    return {
        "n_planned": planned,
        "n_samples": sum(1 for r in group if r.ok),
        "n_failed": sum(1 for r in group if not r.ok),
        "n_missing": max(0, planned - len(group)),
        "n_images": sum(len(r.images) for r in group if r.ok),
        "metrics": dict(sorted(metrics.items())),
        "n": dict(sorted(counts.items())),
        "errors": errors[:5],
    }


def _score_images(
    suite: Suite,
    out: Path,
    records: Sequence[SampleRecord],
    section: ImageScoringSection,
    scorer: ImageScorer,
    sample_acc: dict[tuple[str, Emotion | None], _Acc],
    group_metrics: dict[tuple[str, Emotion], dict[str, float]],
) -> None:
    # One call per system: set-level metrics (diversity) are then per system and emotion.
    for system in suite.systems:
        items = [
            ImageItem(out / rel, r.emotion, r.prompt, r.content, r.id)
            for r in records
            if r.ok and r.system == system.name
            for rel in r.images
        ]
        if not items:
            continue
        per_image, set_level = scorer(items, section)
        if len(per_image) != len(items):
            raise ValueError(f"image scorer returned {len(per_image)} rows for {len(items)} images")
        for item, metrics in zip(items, per_image, strict=True):
            sample_acc[(system.name, item.emotion)].add(metrics, rename=True)
            sample_acc[(system.name, None)].add(metrics, rename=True)
        for key, value in set_level.items():
            name, _, suffix = key.rpartition("/")
            emotion = next((e for e in Emotion if e.value == suffix), None)
            if name and emotion is not None:
                group_metrics[(system.name, emotion)][name] = float(value)
            else:  # a set metric of the whole system: only its `all` row has it
                sample_acc[(system.name, None)].add({key: float(value)})
