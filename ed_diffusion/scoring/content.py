"""Content accuracy (did the image keep what the prompt was about?) and the CLIP score.

- ``WorldContentOracle``: exact, the world's silhouette class read from the pixels must equal the content.
- ``ClipZeroShotContent``: EmoCtrl's CLIP-A for element contents: the content must be among the top-k of a
  zero-shot classification over the content vocabulary with the template ``"a photo of a {content}"``.
- ``clip_score``: 100 * max(cos(image, text), 0), the torchmetrics ``CLIPScore`` convention (Hessel et al.'s
  CLIPScore uses a factor 2.5 instead of 100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ed_common.errors import InvalidInputError
from ed_diffusion.scoring.clip_models import ImageFeatures, ImageTextEmbedder, prompt_ensemble
from ed_diffusion.world.oracle import read_image
from ed_diffusion.world.spec import WorldSpec

CONTENT_TEMPLATES: tuple[str, ...] = ("a photo of a {label}",)  # EmoCtrl metrics/joint.py
EMOCTRL_TOP_K = 5
# EmoCtrl's top-5 over its 45 test elements puts chance at 5/45 = 1/9; k is capped so chance never exceeds
# that on a smaller vocabulary (top-5 of the world's 8 classes would be right 62% of the time by luck).
MAX_CHANCE_DIVISOR = 9


def content_top_k(vocabulary_size: int) -> int:
    """k of the zero-shot content test: EmoCtrl's 5, lowered so that chance (k / size) stays <= 1/9.

    ``min(5, max(1, size // 9))``: 45 contents -> 5 (EmoCtrl's exact setting), 8 -> 1, 20 -> 2.
    """
    if vocabulary_size < 1:
        raise InvalidInputError(f"content vocabulary size must be >= 1; got {vocabulary_size}")
    return min(EMOCTRL_TOP_K, max(1, vocabulary_size // MAX_CHANCE_DIVISOR))


class ContentScorer(Protocol):
    """Decides, per image, whether it shows the content it was asked for."""

    name: str

    def matches(self, images: Sequence[Image.Image], contents: Sequence[str]) -> np.ndarray:
        """Bool ``[n]``: image i shows ``contents[i]``."""
        ...


class WorldContentOracle:
    """Exact content check in the synthetic world: ``read_image``'s silhouette must be the content."""

    def __init__(self, spec: WorldSpec | None = None, *, name: str = "world_oracle") -> None:
        """Score against ``spec`` (default ``WorldSpec()``)."""
        self.spec = spec
        self.name = name

    def matches(self, images: Sequence[Image.Image], contents: Sequence[str]) -> np.ndarray:
        """Bool ``[n]``; images must be square, 24..256 px (the oracle's range)."""
        _check_lengths(images, contents)
        found = [read_image(np.asarray(im.convert("RGB")), self.spec).content for im in images]
        return np.array([f == c for f, c in zip(found, contents, strict=True)], dtype=bool)


class ClipZeroShotContent:
    """EmoCtrl CLIP-A: the content is among the ``k`` vocabulary entries most similar to the image."""

    def __init__(
        self,
        features: ImageFeatures,
        vocabulary: Sequence[str],
        vocabulary_embeds: Tensor,
        *,
        k: int | None = None,
        name: str = "clip_zero_shot",
    ) -> None:
        """Keep unit-normalised vocabulary embeds ``[V, d]``; ``k`` defaults to ``content_top_k(V)``."""
        if len(vocabulary) == 0 or vocabulary_embeds.shape[0] != len(vocabulary):
            raise InvalidInputError(
                f"{name}: need one embed per vocabulary entry; got {len(vocabulary)} entries and embeds "
                f"{tuple(vocabulary_embeds.shape)}"
            )
        self.k = content_top_k(len(vocabulary)) if k is None else k
        if not 1 <= self.k <= len(vocabulary):
            raise InvalidInputError(f"{name}: k={self.k} is invalid; allowed: 1..{len(vocabulary)}")
        self.features = features
        self.vocabulary = tuple(vocabulary)
        self.vocabulary_embeds = torch.nn.functional.normalize(
            vocabulary_embeds.detach().float().cpu(), dim=-1
        )
        self.name = name

    @classmethod
    def from_embedder(
        cls,
        embedder: ImageTextEmbedder,
        vocabulary: Sequence[str],
        features: ImageFeatures | None = None,
        *,
        k: int | None = None,
        templates: Sequence[str] = CONTENT_TEMPLATES,
    ) -> ClipZeroShotContent:
        """Embed the vocabulary with ``templates`` (EmoCtrl's single ``"a photo of a {content}"``)."""
        embeds = prompt_ensemble(embedder, list(vocabulary), templates)  # [V, d]
        return cls(features or embedder.image_embeds, vocabulary, embeds, k=k)

    def top_k(self, images: Sequence[Image.Image]) -> list[tuple[str, ...]]:
        """The ``k`` most similar vocabulary entries per image, best first."""
        feats = torch.nn.functional.normalize(self.features(images).float().cpu(), dim=-1)  # [n, d]
        sims = feats @ self.vocabulary_embeds.T  # [n, V]
        idx = torch.topk(sims, self.k, dim=-1).indices  # [n, k]
        return [tuple(self.vocabulary[int(j)] for j in row) for row in idx]

    def matches(self, images: Sequence[Image.Image], contents: Sequence[str]) -> np.ndarray:
        """Bool ``[n]``: ``contents[i]`` is in image i's top-k."""
        _check_lengths(images, contents)
        unknown = sorted({c for c in contents if c not in self.vocabulary})
        if unknown:
            raise InvalidInputError(
                f"{self.name}: content {', '.join(map(repr, unknown))} is not in the content vocabulary"
            )
        return np.array([c in top for c, top in zip(contents, self.top_k(images), strict=True)], dtype=bool)


def clip_score(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """Row-wise 100 * max(cos(image_i, text_i), 0), float64 ``[n]`` (torchmetrics ``CLIPScore``)."""
    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise InvalidInputError(
            f"clip_score needs equal [n, d] embeds; got {tuple(image_embeds.shape)} and "
            f"{tuple(text_embeds.shape)}"
        )
    cos = torch.nn.functional.cosine_similarity(image_embeds.double(), text_embeds.double(), dim=-1)  # [n]
    return 100.0 * cos.clamp(min=0.0)


class ClipScorer:
    """CLIP score of images against their prompts with one CLIP model."""

    def __init__(self, embedder: ImageTextEmbedder, features: ImageFeatures | None = None) -> None:
        """Text embeds from ``embedder``; image embeds from ``features`` (default: the embedder's)."""
        self.embedder = embedder
        self.features = features or embedder.image_embeds

    def scores(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Float64 ``[n]`` in [0, 100]."""
        _check_lengths(images, texts)
        return clip_score(self.features(images), self.embedder.text_embeds(texts)).numpy()


def _check_lengths(images: Sequence[Image.Image], labels: Sequence[str]) -> None:
    if len(images) != len(labels):
        raise InvalidInputError(f"got {len(images)} images but {len(labels)} texts/contents")
