"""The world's image features for the visual-prompt bank: colour and texture statistics, no shape.

In the paper the bank pairs CLIP text features with CLIP image features of EmoSet images. The world has no
pretrained CLIP, so a fixed descriptor of global colour and texture statistics stands in for the image side:
it sees what CLIP image features also encode about style (palette, lightness, saturation, contrast, edge and
grain energy) and, by construction, nothing about the silhouette. It is *not* the oracle: no segmentation, no
per-emotion likelihoods, just pooled pixel statistics, so the generator still has to learn how a visual prompt
turns into pixels.
"""

from __future__ import annotations

import numpy as np
import torch

HUE_BINS = 8
STYLE_DIM = 3 + 3 + 2 + 4 + 3 + 2 + HUE_BINS  # see style_features


def _hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV of float RGB in [0, 1], vectorised (hue in turns)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(axis=-1)
    c = v - x.min(axis=-1)
    s = np.where(v > 0, c / np.maximum(v, 1e-8), 0.0)
    safe = np.maximum(c, 1e-8)
    h = np.where(v == r, ((g - b) / safe) % 6.0, np.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = np.where(c > 0, h / 6.0, 0.0)
    return h, s, v


def style_features(images: np.ndarray) -> torch.Tensor:
    """Colour and texture statistics of uint8 RGB images ``[N, H, W, 3]`` -> float32 ``[N, STYLE_DIM]``.

    Per image: RGB mean and std (6); saturation-weighted mean hue as (cos, sin) (2); saturation mean/std and
    value mean/std (4); value 10/50/90th percentiles (3); mean gradient magnitude and mean absolute Laplacian
    of the value channel (2: edge sharpness and fine grain); a saturation-weighted hue histogram (8).
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"style_features needs uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
    x = images.astype(np.float64) / 255.0
    n = x.shape[0]
    flat = x.reshape(n, -1, 3)
    h, s, v = _hsv(x)
    hs, ss, vs = h.reshape(n, -1), s.reshape(n, -1), v.reshape(n, -1)
    angle = 2 * np.pi * hs
    w = ss / np.maximum(ss.sum(axis=1, keepdims=True), 1e-8)
    hue_vec = np.stack([(w * np.cos(angle)).sum(1), (w * np.sin(angle)).sum(1)], axis=1)
    gy, gx = np.gradient(v, axis=(1, 2))
    grad = np.sqrt(gx**2 + gy**2).reshape(n, -1).mean(1)
    lap = (
        np.abs(4 * v[:, 1:-1, 1:-1] - v[:, :-2, 1:-1] - v[:, 2:, 1:-1] - v[:, 1:-1, :-2] - v[:, 1:-1, 2:])
        .reshape(n, -1)
        .mean(1)
    )
    bins = np.minimum((hs * HUE_BINS).astype(int), HUE_BINS - 1)
    hist = np.stack([(w * (bins == k)).sum(1) for k in range(HUE_BINS)], axis=1)
    feats = np.concatenate(
        [
            flat.mean(1),
            flat.std(1),
            hue_vec,
            np.stack([ss.mean(1), ss.std(1), vs.mean(1), vs.std(1)], axis=1),
            np.percentile(vs, [10, 50, 90], axis=1).T,
            np.stack([grad, lap], axis=1),
            hist,
        ],
        axis=1,
    )
    assert feats.shape[1] == STYLE_DIM
    return torch.from_numpy(feats.astype(np.float32))
