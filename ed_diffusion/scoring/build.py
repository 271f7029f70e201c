"""Build the scorers an ``ImageScoringConfig`` enables, and record where they came from.

One CLIP model is loaded and shared by every CLIP option (probe, zero-shot emotion and content, CLIP score,
CLIP distance), with one image forward per batch (``CachedImageEmbeds``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ed_common.errors import InvalidInputError
from ed_common.hashing import file_sha256
from ed_diffusion.scoring.classifiers import (
    EMOTION_TEMPLATES,
    ClipLinearProbe,
    ClipZeroShot,
    EmotionClassifier,
    WorldOracle,
)
from ed_diffusion.scoring.clip_models import CachedImageEmbeds, ClipBundle, ImageFeatures
from ed_diffusion.scoring.config import ImageRecord, ImageScoringConfig
from ed_diffusion.scoring.content import (
    CONTENT_TEMPLATES,
    ClipScorer,
    ClipZeroShotContent,
    ContentScorer,
    WorldContentOracle,
)
from ed_diffusion.scoring.diversity import MAX_PAIRS_PER_EMOTION
from ed_diffusion.scoring.lpips import LPIPSDistance, load_lpips_alex
from ed_diffusion.scoring.probe_files import check_probe_dim, load_probe_weights
from ed_diffusion.world.spec import CONTENT_CLASSES

logger = logging.getLogger(__name__)


@dataclass
class Scorers:
    """Built scorers (``None`` = off). Tests and callers with their own models may build one directly.

    Attributes:
        emotion: the emotion classifier.
        content: the content scorer.
        clip_score: the image-prompt CLIP scorer.
        clip_features: image features for ``clip_distance`` diversity.
        lpips: the LPIPS metric for ``lpips`` diversity.
        device: where LPIPS runs.
    """

    emotion: EmotionClassifier | None = None
    content: ContentScorer | None = None
    clip_score: ClipScorer | None = None
    clip_features: ImageFeatures | None = None
    lpips: LPIPSDistance | None = None
    device: str = "cpu"


def content_vocabulary(records: Sequence[ImageRecord], config: ImageScoringConfig) -> tuple[str, ...]:
    """The content vocabulary, after checking every record has a content in it (empty if content is off).

    Empty ``config.content_vocabulary`` means ``CONTENT_CLASSES`` for the world oracle and the sorted distinct
    record contents for CLIP zero-shot (EmoCtrl ranks among exactly its test elements).
    """
    return vocabulary_for([r.content for r in records], config, lambda i: f"record {i} ({records[i].image})")


def vocabulary_for(
    contents: Sequence[str | None], config: ImageScoringConfig, name: Callable[[int], str]
) -> tuple[str, ...]:
    """``content_vocabulary`` over bare contents (an eval's records, a suite's prompts before rendering);
    ``name(i)`` says which item a message is about.

    Raises:
        InvalidInputError: an item without a content, or one outside the vocabulary, while content is on.
    """
    if config.content_scorer == "none":
        return ()
    for i, c in enumerate(contents):
        if c is None:
            raise InvalidInputError(
                f"{name(i)} has no content, but content_scorer={config.content_scorer!r} needs one"
            )
    present = [c for c in contents if c is not None]
    default = CONTENT_CLASSES if config.content_scorer == "world_oracle" else tuple(sorted(set(present)))
    vocabulary = config.content_vocabulary or default
    for i, c in enumerate(present):
        if c not in vocabulary:
            raise InvalidInputError(
                f"{name(i)} has content {c!r}, which is not in the content vocabulary "
                f"({', '.join(vocabulary[:8])}{', ...' if len(vocabulary) > 8 else ''})"
            )
    return vocabulary


def build_scorers(config: ImageScoringConfig, vocabulary: Sequence[str] = ()) -> Scorers:
    """Load what ``config`` enables (one CLIP model shared by every CLIP option).

    The small weight files are read before the CLIP model, so a bad file fails before a slow load.
    """
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scorers = Scorers(device=device)
    probe = None
    if config.emotion_classifier == "clip_probe" and config.probe_path is not None:
        probe = load_probe_weights(config.probe_path)
    if config.diversity == "lpips" and config.lpips_weights is not None:
        scorers.lpips = load_lpips_alex(config.lpips_weights).to(device)
    clip = features = None
    if config.uses_clip and config.clip_model is not None:
        clip = ClipBundle.from_pretrained(config.clip_model, device=device, batch_size=config.batch_size)
        features = CachedImageEmbeds(clip)
    if config.emotion_classifier == "world_oracle":
        from ed_diffusion.world.oracle import COLOUR_ATTRIBUTES

        colour = config.world_reading == "colour"
        scorers.emotion = WorldOracle(attributes=COLOUR_ATTRIBUTES if colour else None)
    elif clip is not None and features is not None:
        if probe is not None and config.probe_path is not None:
            check_probe_dim(probe[0], clip.dim, source=config.probe_path)
            scorers.emotion = ClipLinearProbe(
                features, *probe, label_order=config.probe_label_order, name="clip_probe"
            )
        elif config.emotion_classifier == "clip_zero_shot":
            scorers.emotion = ClipZeroShot.from_embedder(clip, features)
    if config.content_scorer == "world_oracle":
        scorers.content = WorldContentOracle()
    elif config.content_scorer == "clip_zero_shot" and clip is not None:
        content = ClipZeroShotContent.from_embedder(clip, vocabulary, features)
        if content.k / len(vocabulary) > 1 / 9:
            logger.warning(
                "content accuracy over %d content(s) with top-%d: chance is already %.0f%%; "
                "pass a larger content_vocabulary for a meaningful CLIP-A",
                len(vocabulary),
                content.k,
                100 * content.k / len(vocabulary),
            )
        scorers.content = content
    if config.clip_score and clip is not None:
        scorers.clip_score = ClipScorer(clip, features)
    if config.diversity == "clip":
        scorers.clip_features = features
    return scorers


def describe_scoring(config: ImageScoringConfig) -> dict[str, Any]:
    """Provenance of the scorers, for eval results: models, file hashes, label order and conventions."""
    out: dict[str, Any] = {
        "emotion_classifier": config.emotion_classifier,
        "content_scorer": config.content_scorer,
        "clip_model": config.clip_model if config.uses_clip else None,
        "clip_score": "100*max(cos,0) (torchmetrics CLIPScore)" if config.clip_score else None,
        "diversity": config.diversity,
        "diversity_max_pairs_per_emotion": MAX_PAIRS_PER_EMOTION,
    }
    if config.emotion_classifier == "clip_probe" and config.probe_path is not None:
        out["probe_path"] = config.probe_path
        out["probe_sha256"] = file_sha256(config.probe_path)
        out["probe_label_order"] = config.probe_label_order
    if config.emotion_classifier == "clip_zero_shot":
        out["emotion_templates"] = list(EMOTION_TEMPLATES)
    if config.content_scorer == "clip_zero_shot":
        out["content_templates"] = list(CONTENT_TEMPLATES)
        out["content_vocabulary"] = list(config.content_vocabulary) or "distinct record contents"
    if config.diversity == "lpips" and config.lpips_weights is not None:
        out["lpips_weights"] = config.lpips_weights
        out["lpips_sha256"] = file_sha256(config.lpips_weights)
    return out
