"""Image scorers for evaluation (issue #5): emotion accuracy, content accuracy, CLIP score and diversity.

Entry point: ``score_images(records, config) -> (per_record, set_level)``. Conventions, and which peer each
follows, are in ``docs/scoring.md``. Modules: ``config`` (records, validated config), ``clip_models`` (a full
CLIPModel), ``tiny_clip`` (its offline random stand-in), ``classifiers`` (emotion), ``probe_files`` (probe
weights), ``content`` (content accuracy, CLIP score), ``lpips`` (LPIPS over a pluggable backbone),
``diversity`` (same-emotion pair distances), ``build`` (scorers from a config, provenance), ``score``.
"""

from __future__ import annotations

from ed_diffusion.scoring.build import Scorers, build_scorers, content_vocabulary, describe_scoring
from ed_diffusion.scoring.classifiers import (
    ALPHABETICAL_TO_EMOSET,
    EMOTION_TEMPLATES,
    ClipLinearProbe,
    ClipZeroShot,
    EmotionClassifier,
    WorldOracle,
)
from ed_diffusion.scoring.clip_models import CachedImageEmbeds, ClipBundle, ImageTextEmbedder
from ed_diffusion.scoring.config import ImageRecord, ImageScoringConfig
from ed_diffusion.scoring.content import (
    ClipScorer,
    ClipZeroShotContent,
    ContentScorer,
    WorldContentOracle,
    clip_score,
    content_top_k,
)
from ed_diffusion.scoring.errors import ScorerLoadError
from ed_diffusion.scoring.lpips import AlexNetFeatures, LPIPSDistance, load_lpips_alex
from ed_diffusion.scoring.probe_files import load_probe_weights
from ed_diffusion.scoring.score import score_images, score_with
from ed_diffusion.scoring.tiny_clip import build_tiny_clip, save_tiny_clip

__all__ = [
    "ALPHABETICAL_TO_EMOSET",
    "EMOTION_TEMPLATES",
    "AlexNetFeatures",
    "CachedImageEmbeds",
    "ClipBundle",
    "ClipLinearProbe",
    "ClipScorer",
    "ClipZeroShot",
    "ClipZeroShotContent",
    "ContentScorer",
    "EmotionClassifier",
    "ImageRecord",
    "ImageScoringConfig",
    "ImageTextEmbedder",
    "LPIPSDistance",
    "ScorerLoadError",
    "Scorers",
    "WorldContentOracle",
    "WorldOracle",
    "build_scorers",
    "build_tiny_clip",
    "clip_score",
    "content_top_k",
    "content_vocabulary",
    "describe_scoring",
    "load_lpips_alex",
    "load_probe_weights",
    "save_tiny_clip",
    "score_images",
    "score_with",
]
