"""The world benchmark's metrics: which images it draws, how the oracles score them, how seeds aggregate."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ed_common.emotions import Emotion
from ed_diffusion.world.dataset import typical_pairs, unusual_pairs
from ed_diffusion.world.layout import SYSTEMS
from ed_diffusion.world.oracle import read_image
from ed_diffusion.world.spec import WorldSpec

METRICS: tuple[str, ...] = ("emotion_acc", "content_acc", "joint_acc", "shortcut_rate", "target_prob")


class _Sampled(Protocol):
    samples_per_pair: int


def eval_pairs(cfg: _Sampled, spec: WorldSpec | None = None) -> list[tuple[str, Emotion, str, int]]:
    """(content, emotion, split, sample index) of every evaluation image: unusual pairs, then typical ones."""
    rows = [(c, e, "unusual", i) for c, e in unusual_pairs(spec) for i in range(cfg.samples_per_pair)]
    rows += [(c, e, "typical", i) for c, e in typical_pairs(spec) for i in range(cfg.samples_per_pair)]
    return rows


def score_images(
    images: np.ndarray, pairs: list[tuple[str, Emotion, str, int]], spec: WorldSpec | None = None
) -> dict[str, dict[str, float]]:
    """Oracle metrics per split: emotion (colour reading), content, joint, shortcut rate, p(target)."""
    world = spec or WorldSpec()
    per: dict[str, list[dict[str, float]]] = {}
    for img, (content, emotion, split, _) in zip(images, pairs, strict=True):
        reading = read_image(img, world)
        p, drawn = reading.posterior, reading.content
        e_ok, c_ok = reading.emotion == emotion, drawn == content
        per.setdefault(split, []).append(
            {
                "emotion_acc": float(e_ok),
                "content_acc": float(c_ok),
                "joint_acc": float(e_ok and c_ok),
                "shortcut_rate": float(
                    drawn is not None and drawn != content and world.is_typical(drawn, emotion)
                ),
                "target_prob": float(p[emotion.label_index]),
            }
        )
    return {
        split: {k: float(np.mean([r[k] for r in rows])) for k in METRICS} | {"n": len(rows)}
        for split, rows in per.items()
    }


def aggregate(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample std, min and max over seeds of every system x split x metric."""
    out: dict[str, Any] = {}
    for system in SYSTEMS:
        out[system] = {}
        for split in ("unusual", "typical"):
            out[system][split] = {}
            for metric in (*METRICS, "vp_gap", "vp_win_rate"):
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
