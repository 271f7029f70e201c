"""Emotion classifiers for scoring, all behind one Protocol and all emitting EmoSet-ordered probabilities.

- ``ClipLinearProbe``: CLIP image embeds -> Linear(d, 8) -> softmax, the EmoGen/EmoCtrl Emo-A protocol (their
  probe is applied to the raw ``get_image_features`` output, not to normalised embeds). A probe trained in
  alphabetical label order (EmoEditor's convention) is permuted into EmoSet order once, at construction.
- ``ClipZeroShot``: softmax over ``logit_scale * cos(image, emotion prompt ensemble)``.
- ``WorldOracle``: the exact pixel oracle of the synthetic affective world (``ed_diffusion.world``).

Every ``probs`` returns float64 ``[n, 8]``, rows summing to 1, columns in ``Emotion`` (EmoSet) order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ed_common.emotions import EMOTION_NAMES, Emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.scoring.clip_models import ImageFeatures, ImageTextEmbedder, prompt_ensemble
from ed_diffusion.scoring.config import LabelOrder
from ed_diffusion.scoring.probe_files import (
    NUM_EMOTIONS,
    check_probe_dim,
    check_probe_tensors,
    load_probe_weights,
)
from ed_diffusion.world.oracle import read_image
from ed_diffusion.world.spec import WorldSpec

ALPHABETICAL_NAMES: tuple[str, ...] = tuple(sorted(EMOTION_NAMES))
# Column j of an EmoSet-ordered output is column ALPHABETICAL_TO_EMOSET[j] of an alphabetical one:
# [0, 2, 3, 5, 1, 4, 6, 7] (amusement, awe, contentment, excitement, anger, disgust, fear, sadness).
ALPHABETICAL_TO_EMOSET: tuple[int, ...] = tuple(ALPHABETICAL_NAMES.index(e.value) for e in Emotion)

# Noun templates: the category names are nouns ("awe", "sadness"); "a photo that feels awe" does not parse.
EMOTION_TEMPLATES: tuple[str, ...] = (
    "a photo that evokes {label}.",
    "an image that conveys {label}.",
    "a picture that makes people feel {label}.",
)


class EmotionClassifier(Protocol):
    """An image-emotion classifier: 8 probabilities per image, columns in EmoSet order."""

    name: str

    def probs(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Float64 ``[n, 8]``, rows summing to 1, columns in ``Emotion`` order."""
        ...


def to_emoset_order(rows: Tensor, label_order: LabelOrder) -> Tensor:
    """Reorder the leading (class) axis of per-class parameters from ``label_order`` into EmoSet order."""
    if label_order == "emoset":
        return rows
    if label_order == "alphabetical":
        return rows[list(ALPHABETICAL_TO_EMOSET)]
    raise InvalidInputError(f"probe_label_order={label_order!r} is invalid; allowed: emoset, alphabetical")


class ClipLinearProbe:
    """Softmax of a linear probe over image features (the EmoGen protocol: CLIP embeds -> Linear(d, 8))."""

    def __init__(
        self,
        features: ImageFeatures,
        weight: Tensor,
        bias: Tensor,
        *,
        label_order: LabelOrder = "emoset",
        name: str = "clip_probe",
    ) -> None:
        """Keep the probe with its outputs already permuted into EmoSet order.

        Args:
            features: images -> raw features ``[n, d]`` (e.g. ``ClipBundle.image_embeds``).
            weight: ``[8, d]`` in ``label_order``.
            bias: ``[8]`` in ``label_order``.
            label_order: the order the probe was trained in.
            name: what results record as the classifier.

        Raises:
            ScorerLoadError: wrong shapes or non-finite values.
        """
        check_probe_tensors(weight, bias, where=name)
        self.features = features
        self.weight = to_emoset_order(weight.detach().float().cpu(), label_order)  # [8, d]
        self.bias = to_emoset_order(bias.detach().float().cpu(), label_order)  # [8]
        self.label_order = label_order
        self.name = name

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        features: ImageFeatures,
        *,
        feature_dim: int,
        label_order: LabelOrder = "emoset",
        name: str = "clip_probe",
    ) -> ClipLinearProbe:
        """Load a probe from ``path`` (see ``load_probe_weights``) for features of size ``feature_dim``.

        Raises:
            ScorerLoadError: unreadable file, bad layout, or a probe for another feature size.
        """
        weight, bias = load_probe_weights(path)
        check_probe_dim(weight, feature_dim, source=os.fspath(path))
        return cls(features, weight, bias, label_order=label_order, name=name)

    def probs(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax of ``features @ weight.T + bias``: float64 ``[n, 8]`` in EmoSet order."""
        feats = self.features(images).float().cpu()  # [n, d]
        if feats.ndim != 2 or feats.shape[1] != self.weight.shape[1]:
            raise InvalidInputError(
                f"{self.name}: features of shape {tuple(feats.shape)} do not fit a probe for "
                f"{self.weight.shape[1]}-d features"
            )
        logits = feats @ self.weight.T + self.bias  # [n, 8]
        return torch.softmax(logits.double(), dim=-1).numpy()


class ClipZeroShot:
    """Zero-shot emotion: softmax over ``logit_scale * cos(image embed, class text embed)``."""

    def __init__(
        self,
        features: ImageFeatures,
        class_embeds: Tensor,
        logit_scale: float,
        *,
        name: str = "clip_zero_shot",
    ) -> None:
        """Keep unit-normalised class embeds ``[8, d]`` (EmoSet order) and the softmax temperature."""
        if class_embeds.ndim != 2 or class_embeds.shape[0] != NUM_EMOTIONS:
            raise InvalidInputError(
                f"{name}: class embeds must be [{NUM_EMOTIONS}, d]; got {tuple(class_embeds.shape)}"
            )
        if not logit_scale > 0:
            raise InvalidInputError(f"{name}: logit_scale must be > 0; got {logit_scale}")
        self.features = features
        self.class_embeds = torch.nn.functional.normalize(class_embeds.detach().float().cpu(), dim=-1)
        self.logit_scale = float(logit_scale)
        self.name = name

    @classmethod
    def from_embedder(
        cls,
        embedder: ImageTextEmbedder,
        features: ImageFeatures | None = None,
        *,
        templates: Sequence[str] = EMOTION_TEMPLATES,
        name: str = "clip_zero_shot",
    ) -> ClipZeroShot:
        """Class embeds from prompt ensembles of the 8 names in EmoSet order; CLIP's own logit scale."""
        class_embeds = prompt_ensemble(embedder, [e.value for e in Emotion], templates)  # [8, d]
        return cls(features or embedder.image_embeds, class_embeds, embedder.logit_scale, name=name)

    def probs(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Float64 ``[n, 8]`` in EmoSet order."""
        feats = torch.nn.functional.normalize(self.features(images).float().cpu(), dim=-1)  # [n, d]
        logits = self.logit_scale * feats @ self.class_embeds.T  # [n, 8]
        return torch.softmax(logits.double(), dim=-1).numpy()


class WorldOracle:
    """The synthetic world's emotion oracle: the posterior of ``read_image``, the world's one reading.

    That posterior is already under a uniform prior (a softmax of the per-emotion Gaussian log-likelihoods),
    so it is used as is.
    """

    def __init__(
        self,
        spec: WorldSpec | None = None,
        *,
        attributes: Sequence[str] | None = None,
        name: str = "world_oracle",
    ) -> None:
        """Score against ``spec`` (default ``WorldSpec()``).

        Args:
            spec: the world.
            attributes: restrict the reading to these measured attributes (e.g. the world's colour-only
                reading for generated images); ``None`` = all, and the oracle's default call.
            name: what results record as the classifier.
        """
        self.spec = spec
        self.attributes = None if attributes is None else tuple(attributes)
        self.name = name

    def probs(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Float64 ``[n, 8]`` in EmoSet order; images must be square, 24..256 px (the oracle's range)."""
        rows = [
            read_image(np.asarray(im.convert("RGB")), self.spec, self.attributes).posterior for im in images
        ]
        return np.stack(rows) if rows else np.zeros((0, NUM_EMOTIONS))
