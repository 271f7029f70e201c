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


def held_out_pairs(spec: WorldSpec | None = None) -> list[tuple[str, Emotion]]:
    """Every other unusual pair: never in a preference set nor in the early-stopping check (transfer)."""
    return unusual_pairs(spec)[1::2]


def check_pairs(spec: WorldSpec | None = None) -> list[tuple[str, Emotion]]:
    """What the early-stopping check draws: the other unusual pairs and the typical ones."""
    return unusual_pairs(spec)[0::2] + typical_pairs(spec)


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
    images: np.ndarray,
    pairs: list[tuple[str, Emotion, str, int]],
    spec: WorldSpec | None = None,
    *,
    scores: Sequence[TargetScore] | None = None,
) -> dict[str, dict[str, float]]:
    """Mean of every metric in ``METRICS`` per split of ``pairs`` (``eval_pairs`` rows), and its ``n``.

    ``scores``: the images' ``score_targets`` if the caller has them already (they are not read twice).
    """
    if scores is None:
        scores = score_targets(images, [(content, emotion) for content, emotion, _, _ in pairs], spec)
    by_split: dict[str, list[TargetScore]] = {}
    for score, (_, _, split, _) in zip(scores, pairs, strict=True):
        by_split.setdefault(split, []).append(score)
    out = {}
    for split, group in by_split.items():
        rows = [s.metrics() for s in group]
        means = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
        out[split] = means | leakage(group) | {"n": len(rows)}
    return out


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
        for split in ("unusual", "typical", "held_out"):
            out[system][split] = {}
            for metric in (*METRICS, *SPLIT_METRICS, "vp_gap", "vp_win_rate"):
                vals = [s["systems"][system].get(split, {}).get(metric) for s in seeds]
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


# ------------------------------------------------------------------------------ confidence intervals
CI_METRICS: tuple[str, ...] = ("emotion_acc", "content_acc", "joint_acc")
# Which row each system starts from: the row it is compared with in the table's verdict.
STARTS_FROM = {"vp_sft": "text_only", "vp_dpo": "vp_sft", "vp_dpo_neg_vp": "vp_sft"}


def image_outcomes(scores: Sequence[TargetScore]) -> dict[str, list[int]]:
    """Per image (in ``eval_pairs`` order) 0/1 outcomes: what the intervals resample."""
    return {
        "emotion_acc": [int(s.emotion_ok) for s in scores],
        "content_acc": [int(s.content_ok) for s in scores],
        "joint_acc": [int(s.emotion_ok and s.content_ok) for s in scores],
    }


def _per_pair(seeds: Sequence[dict[str, Any]], system: str, split: str, metric: str) -> np.ndarray:
    """``[seeds, pairs, images]`` outcomes of one system on one split (every seed has the same pairs)."""
    out = []
    for s in seeds:
        rows = [i for i, p in enumerate(s["eval_pairs"]) if p[2] == split]
        keys = sorted({(s["eval_pairs"][i][0], s["eval_pairs"][i][1]) for i in rows})
        values = s["systems"][system]["images"][metric]
        grid = [[values[i] for i in rows if tuple(s["eval_pairs"][i][:2]) == k] for k in keys]
        out.append(grid)
    return np.asarray(out, dtype=np.float64)


def bootstrap_interval(
    seeds: Sequence[dict[str, Any]],
    system: str,
    metric: str,
    *,
    split: str = "unusual",
    baseline: str | None = None,
    n_boot: int = 2000,
    rng_seed: int = 0,
) -> dict[str, float]:
    """Mean and 95% interval of ``metric`` (or of its difference to ``baseline``'s on the same images).

    Seeds and (content, emotion) pairs are resampled with replacement (a two-level bootstrap: the noise of
    training and the choice of pairs both vary); a difference is paired, image by image, because every system
    draws each image from the same start noise.
    """
    values = _per_pair(seeds, system, split, metric)
    if baseline is not None:
        values = values - _per_pair(seeds, baseline, split, metric)
    n_seeds, n_pairs = values.shape[0], values.shape[1]
    rng = np.random.default_rng(rng_seed)
    pick_s = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    pick_p = rng.integers(0, n_pairs, size=(n_boot, n_pairs))
    means = values[pick_s[:, :, None], pick_p[:, None, :]].mean(axis=(1, 2, 3))
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"mean": float(values.mean()), "lo": float(lo), "hi": float(hi)}


def verdict(diff: dict[str, float], against: str) -> str:
    """The interval of a difference in words: beats / loses to / no clear difference from ``against``."""
    points = f"{100 * diff['mean']:+.1f} points [{100 * diff['lo']:+.1f}, {100 * diff['hi']:+.1f}]"
    if diff["lo"] > 0:
        return f"beats {against} by {points}"
    if diff["hi"] < 0:
        return f"loses to {against} by {points}"
    return f"no clear difference from {against} ({points})"


def intervals(seeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per system: the 95% interval of each ``CI_METRICS`` on unusual pairs, and its joint-accuracy
    difference to the row it starts from (``STARTS_FROM``), with the verdict in words."""
    if not all("images" in s["systems"][system] for s in seeds for system in SYSTEMS):
        return {}  # results written before per-image outcomes were kept
    out: dict[str, Any] = {}
    for system in SYSTEMS:
        row: dict[str, Any] = {m: bootstrap_interval(seeds, system, m) for m in CI_METRICS}
        if (start := STARTS_FROM.get(system)) is not None:
            diff = bootstrap_interval(seeds, system, "joint_acc", baseline=start)
            row["joint_vs_start"] = diff | {"start": start, "verdict": verdict(diff, start)}
        out[system] = row
    return out
