"""The synthetic affective world: a procedural image-text dataset where the semantic shortcut is measurable.

Content (a silhouette class named in the caption) and emotion (carried only by palette, brightness,
saturation, contrast, edge blur and texture) are independent factors of every image, and both can be read
back from the pixels exactly (``oracle``). ``make_world`` writes a train split in which emotion is tied to
typical contents on purpose (the semantic shortcut of Emotion-Director, arXiv 2512.19479) and a test split of
unusual (content, emotion) pairs only.

Modules: ``spec`` (classes, per-emotion attribute distributions, typical-content map), ``render`` (numpy
drawing), ``oracle`` (content and emotion from pixels), ``dataset`` (splits on disk, summaries), ``splits``
(a split read back into memory as arrays and tensors), ``style`` (the image features a visual-prompt bank
pairs with captions: colour and texture statistics, no shape).
"""

from __future__ import annotations

from ed_diffusion.world.dataset import (
    WorldPaths,
    WorldSummary,
    make_world,
    plan_split,
    summary,
    typical_pairs,
    unusual_pairs,
)
from ed_diffusion.world.oracle import (
    COLOUR_ATTRIBUTES,
    Measurement,
    content_of,
    content_scores,
    emotion_log_likelihoods,
    emotion_of,
    emotion_scores,
    measure,
)
from ed_diffusion.world.render import Layout, draw_world_image, sample_layout
from ed_diffusion.world.spec import (
    ATTRIBUTE_NAMES,
    CONTENT_CLASSES,
    Attributes,
    EmotionStyle,
    Gaussian,
    WorldSpec,
    default_spec,
    sample_attributes,
)

__all__ = [
    "ATTRIBUTE_NAMES",
    "COLOUR_ATTRIBUTES",
    "CONTENT_CLASSES",
    "Attributes",
    "EmotionStyle",
    "Gaussian",
    "Layout",
    "Measurement",
    "WorldPaths",
    "WorldSpec",
    "WorldSummary",
    "content_of",
    "content_scores",
    "default_spec",
    "draw_world_image",
    "emotion_log_likelihoods",
    "emotion_of",
    "emotion_scores",
    "make_world",
    "measure",
    "plan_split",
    "sample_attributes",
    "sample_layout",
    "summary",
    "typical_pairs",
    "unusual_pairs",
]
