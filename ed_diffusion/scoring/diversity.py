"""Diversity: mean distance over pairs of images that share a target emotion, per emotion and averaged.

EmoGen and EmoCtrl average LPIPS-Alex over 10 random pairs per emotion (``metrics/other_metrics.py``,
``metrics/semantic.py``); here every distinct pair is used up to ``MAX_PAIRS_PER_EMOTION`` (then a seeded
sample of distinct pairs), which estimates the same expectation with less variance and is reproducible. The
set value is the unweighted mean over emotions with at least two images, as theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.scoring.lpips import LPIPSDistance, lpips_input

MAX_PAIRS_PER_EMOTION = 1000
PAIR_SEED = 0

Pairs = list[tuple[int, int]]


def emotion_pairs(n: int, *, max_pairs: int = MAX_PAIRS_PER_EMOTION, seed: int = PAIR_SEED) -> Pairs:
    """Distinct index pairs ``i < j`` of ``n`` items: all, or a seeded sample of ``max_pairs`` of them."""
    if n < 0 or max_pairs < 1:
        raise InvalidInputError(f"emotion_pairs needs n >= 0 and max_pairs >= 1; got {n}, {max_pairs}")
    rows, cols = np.triu_indices(n, k=1)
    if len(rows) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_pairs, replace=False))
        rows, cols = rows[keep], cols[keep]
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True)]


def cosine_distances(embeds: Tensor, pairs: Pairs) -> np.ndarray:
    """``1 - cos(embeds[i], embeds[j])`` per pair, float64 (EmoGen's Sem-D "cos" distance)."""
    if not pairs:
        return np.zeros(0)
    unit = torch.nn.functional.normalize(embeds.double(), dim=-1)  # [n, d]
    i, j = (torch.tensor(idx) for idx in zip(*pairs, strict=True))
    return (1.0 - (unit[i] * unit[j]).sum(dim=-1)).clamp(min=0.0).numpy()


@torch.inference_mode()
def lpips_distances(
    metric: LPIPSDistance,
    images: Sequence[Image.Image],
    pairs: Pairs,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """LPIPS per pair, float64; each image's features are computed once (kept on the CPU).

    Images are compared at the first image's size (others are resized to it bilinearly): LPIPS needs equal
    sizes, and the images of one evaluation normally share one size anyway.
    """
    if not pairs:
        return np.zeros(0)
    size = images[0].size
    per_image: list[list[Tensor]] = []  # [chunk][layer] -> [b, C_l, H_l, W_l]
    for start in range(0, len(images), batch_size):
        x = lpips_input(images[start : start + batch_size], size).to(device)  # [b, 3, H, W]
        per_image.append([f.float().cpu() for f in metric.features(x)])
    feats = [torch.cat(layer) for layer in zip(*per_image, strict=True)]  # [layer] -> [n, C_l, H_l, W_l]
    # The 1×1 convs as per-channel weights on the CPU, where the cached features are: same sum as lin(...).
    weights = [w.view(1, -1, 1, 1) for w in metric.channel_weights()]  # [1, C_l, 1, 1]
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        i, j = (torch.tensor(idx) for idx in zip(*chunk, strict=True))
        total = torch.zeros(len(chunk), dtype=torch.float64)
        for w, f in zip(weights, feats, strict=True):
            total += ((f[i] - f[j]).double().pow(2) * w).sum(dim=1).mean(dim=(1, 2))  # [b]
        out.append(total)
    return torch.cat(out).numpy()


def diversity_metrics(
    prefix: str,
    groups: Mapping[Emotion, Sequence[int]],
    distances: Callable[[Sequence[int], Pairs], np.ndarray],
    *,
    max_pairs: int = MAX_PAIRS_PER_EMOTION,
) -> dict[str, float]:
    """``<prefix>/<emotion>``, ``<prefix>/mean`` and ``<prefix>/n_pairs`` from a pairwise distance.

    Args:
        prefix: names the distance (``"lpips"`` or ``"clip_distance"``), so a value is never mislabelled.
        groups: record indices per target emotion.
        distances: ``(record indices of one group, pairs of positions in it) -> distance per pair``.
        max_pairs: the per-emotion pair cap.

    Returns:
        Per-emotion means for emotions with >= 2 images, their unweighted mean (absent when there are none),
        and the total number of pairs used.
    """
    out: dict[str, float] = {}
    n_pairs = 0
    for emotion in Emotion:
        members = list(groups.get(emotion, ()))
        pairs = emotion_pairs(len(members), max_pairs=max_pairs)
        if not pairs:
            continue
        values = distances(members, pairs)
        out[f"{prefix}/{emotion.value}"] = float(np.mean(values))
        n_pairs += len(pairs)
    per_emotion = list(out.values())
    if per_emotion:
        out[f"{prefix}/mean"] = float(np.mean(per_emotion))
    out[f"{prefix}/n_pairs"] = float(n_pairs)
    return out
