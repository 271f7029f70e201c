"""The world benchmark's metrics: which images it draws, how the oracles score them, how seeds aggregate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ed_common.emotions import Emotion
from ed_diffusion.world.dataset import typical_pairs, unusual_pairs
from ed_diffusion.world.oracle import COLOUR_ATTRIBUTES, Reading, read_image
from ed_diffusion.world.spec import WorldSpec
from ed_diffusion.world_bench.layout import SYSTEMS

METRICS: tuple[str, ...] = (
    "emotion_acc",
    "content_acc",
    "joint_acc",
    "shortcut_rate",
    "leak_rate",
    "target_prob",
)
# Per split, not per image: of the images in a wrong emotion, the share painted in an emotion the requested
# content is typical of (the shortcut through the emotion channel), and that share if wrong emotions fell
# uniformly on the other seven (its chance level).
SPLIT_METRICS: tuple[str, ...] = ("emotion_leakage", "leakage_chance")


class _Sampled(Protocol):
    samples_per_pair: int


def eval_pairs(cfg: _Sampled, spec: WorldSpec | None = None) -> list[tuple[str, Emotion, str, int]]:
    """(content, emotion, split, sample index) of every evaluation image: unusual pairs, then typical ones."""
    rows = [(c, e, "unusual", i) for c, e in unusual_pairs(spec) for i in range(cfg.samples_per_pair)]
    rows += [(c, e, "typical", i) for c, e in typical_pairs(spec) for i in range(cfg.samples_per_pair)]
    return rows


@dataclass(frozen=True)
class TargetScore:
    """The oracles' reading of one image against the (content, emotion) it was drawn for."""

    reading: Reading
    content: str
    emotion: Emotion
    shortcut: bool  # it shows another content, one typical of the target emotion (the semantic shortcut)
    leaked: bool = False  # a wrong emotion, one the requested content is typical of (emotion leakage)
    leak_chance: float = 0.0  # P(leaked | wrong emotion) if the wrong emotion were uniform over the other 7

    @property
    def emotion_ok(self) -> bool:
        """The colour reading is the target emotion."""
        return self.reading.emotion == self.emotion

    @property
    def content_ok(self) -> bool:
        """The silhouette is the target content."""
        return self.reading.content == self.content

    @property
    def target_prob(self) -> float:
        """The posterior of the target emotion."""
        return float(self.reading.posterior[self.emotion.label_index])

    def metrics(self) -> dict[str, float]:
        """This image's value of every metric in ``METRICS`` (accuracies as 0/1)."""
        return {
            "emotion_acc": float(self.emotion_ok),
            "content_acc": float(self.content_ok),
            "joint_acc": float(self.emotion_ok and self.content_ok),
            "shortcut_rate": float(self.shortcut),
            "leak_rate": float(self.leaked),
            "target_prob": self.target_prob,
        }


def score_targets(
    images: Iterable[np.ndarray],
    targets: Sequence[tuple[str, Emotion]],
    spec: WorldSpec | None = None,
    attributes: Sequence[str] | None = COLOUR_ATTRIBUTES,
) -> list[TargetScore]:
    """Read every image with ``read_image`` and judge it against its ``(content, emotion)`` target.

    Raises:
        ValueError: ``images`` and ``targets`` differ in length.
        InvalidInputError: an image the oracle cannot read.
    """
    world = spec or WorldSpec()
    scores = []
    for img, (content, emotion) in zip(images, targets, strict=True):
        reading = read_image(img, world, attributes)
        drawn = reading.content
        shortcut = drawn is not None and drawn != content and world.is_typical(drawn, emotion)
        leaked = reading.emotion != emotion and world.is_typical(content, reading.emotion)
        others = [e for e in Emotion if e != emotion]
        chance = sum(world.is_typical(content, e) for e in others) / len(others)
        scores.append(TargetScore(reading, content, emotion, shortcut, leaked, chance))
    return scores


def metrics_by_split(
    images: np.ndarray, pairs: list[tuple[str, Emotion, str, int]], spec: WorldSpec | None = None
) -> dict[str, dict[str, float]]:
    """Mean of every metric in ``METRICS`` per split of ``pairs`` (``eval_pairs`` rows), and its ``n``."""
    scores = score_targets(images, [(content, emotion) for content, emotion, _, _ in pairs], spec)
    per: dict[str, list[dict[str, float]]] = {}
    for score, (_, _, split, _) in zip(scores, pairs, strict=True):
        per.setdefault(split, []).append(score.metrics())
    by_split: dict[str, list[TargetScore]] = {}
    for score, (_, _, split, _) in zip(scores, pairs, strict=True):
        by_split.setdefault(split, []).append(score)
    return {
        split: {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
        | leakage(by_split[split])
        | {"n": len(rows)}
        for split, rows in per.items()
    }


def leakage(scores: Sequence[TargetScore]) -> dict[str, float]:
    """``SPLIT_METRICS`` of a set of images (NaN-free: no wrong-emotion image gives 0 for both)."""
    wrong = [s for s in scores if not s.emotion_ok]
    if not wrong:
        return {"emotion_leakage": 0.0, "leakage_chance": 0.0}
    return {
        "emotion_leakage": float(np.mean([s.leaked for s in wrong])),
        "leakage_chance": float(np.mean([s.leak_chance for s in wrong])),
    }


def aggregate(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std, min and max over seeds of every system x split x metric."""
    out: dict[str, Any] = {}
    for system in SYSTEMS:
        out[system] = {}
        for split in ("unusual", "typical"):
            out[system][split] = {}
            for metric in (*METRICS, *SPLIT_METRICS, "vp_gap", "vp_win_rate"):
                vals = [s["systems"][system][split].get(metric) for s in seeds]
                vals = [v for v in vals if v is not None]
                if not vals:
                    continue
                arr = np.array(vals, dtype=np.float64)
                out[system][split][metric] = {
                    "mean": float(arr.mean()),
                    "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                    "min": float(arr.min()),
                    "max": float(arr.max()),
                    "n_seeds": len(arr),
                }
    return out
