"""``score_images``: run the configured scorers over image records; per-record and set-level metrics.

Per record (only what the config enables): ``emotion_correct``, ``polarity_correct``, ``target_prob``,
``emotion_pred_index`` (emotion classifier), ``content_correct`` (content scorer), ``joint_correct`` (both),
``clip_score``. Set level: ``lpips/<emotion>``, ``lpips/mean``, ``lpips/n_pairs`` (or the same under
``clip_distance/``) for diversity, and ``content_top_k`` when CLIP judges content. Means of the per-record
metrics are the caller's: it groups records as it likes.

Records are read in batches of ``batch_size`` images, so memory does not grow with the evaluation size (except
LPIPS diversity, which holds one emotion's images and their AlexNet features at a time); in a batch every
CLIP-based scorer shares one image forward pass (``CachedImageEmbeds``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ed_common.emotions import Emotion, Polarity
from ed_common.errors import InvalidInputError
from ed_common.image_files import read_rgb
from ed_diffusion.scoring.build import Scorers, build_scorers, content_vocabulary
from ed_diffusion.scoring.classifiers import EmotionClassifier
from ed_diffusion.scoring.config import ImageRecord, ImageScoringConfig
from ed_diffusion.scoring.content import ClipZeroShotContent
from ed_diffusion.scoring.diversity import Pairs, cosine_distances, diversity_metrics, lpips_distances
from ed_diffusion.scoring.probe_files import NUM_EMOTIONS

logger = logging.getLogger(__name__)

PerRecord = list[dict[str, float]]


def score_images(
    records: Sequence[ImageRecord], config: ImageScoringConfig
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-record metrics and set-level metrics of ``records`` under ``config``.

    Records are checked before any model loads. Nothing is downloaded: CLIP loads with
    ``local_files_only=True``, probe and LPIPS weights from local files.

    Raises:
        InvalidInputError: a record without content (or outside the vocabulary) while a content scorer is on,
            an unreadable image, or an image the world oracle cannot read.
        EncoderLoadError: the CLIP model cannot load.
        ScorerLoadError: the probe or LPIPS weights cannot load.
    """
    vocabulary = content_vocabulary(records, config)
    if not records:
        return [], {}
    scorers = build_scorers(config, vocabulary)
    logger.info(
        "scoring %d images: emotion=%s content=%s clip_score=%s diversity=%s",
        len(records),
        config.emotion_classifier,
        config.content_scorer,
        config.clip_score,
        config.diversity,
    )
    return score_with(records, scorers, batch_size=config.batch_size)


def score_with(
    records: Sequence[ImageRecord], scorers: Scorers, *, batch_size: int = 16
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Run already-built ``scorers`` over ``records`` (what ``score_images`` does after loading)."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size={batch_size!r} is invalid; allowed: an integer >= 1")
    per_record: PerRecord = [{} for _ in records]
    clip_embeds: list[torch.Tensor] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        images = [open_rgb(r.image) for r in batch]
        try:
            embeds = _score_batch(scorers, batch, images, per_record[start : start + batch_size])
        except InvalidInputError as exc:
            # Scorers see pixels, not paths: say which records they failed on.
            raise InvalidInputError(
                f"records {start}..{start + len(batch) - 1} (first: {batch[0].image}): {exc}"
            ) from exc
        if embeds is not None:
            clip_embeds.append(embeds)
    return per_record, _set_level(records, scorers, clip_embeds, batch_size)


def _score_batch(
    scorers: Scorers, batch: Sequence[ImageRecord], images: list[Image.Image], rows: PerRecord
) -> torch.Tensor | None:
    """Fill ``rows`` with the per-record metrics of one batch; return its CLIP embeds for diversity."""
    if scorers.emotion is not None:
        _emotion_metrics(scorers.emotion, images, batch, rows)
    if scorers.content is not None:
        hits = scorers.content.matches(images, [r.content or "" for r in batch])
        for row, hit in zip(rows, hits, strict=True):
            row["content_correct"] = float(hit)
            if "emotion_correct" in row:
                row["joint_correct"] = float(bool(hit) and row["emotion_correct"] == 1.0)
    if scorers.clip_score is not None:
        scores = scorers.clip_score.scores(images, [r.prompt for r in batch])
        for row, s in zip(rows, scores, strict=True):
            row["clip_score"] = float(s)
    if scorers.clip_features is not None:
        return scorers.clip_features(images).float().cpu()  # [b, d]
    return None


def open_rgb(path: Path) -> Image.Image:
    """The image at ``path`` as RGB, fully read (the file is closed).

    Raises:
        InvalidInputError: missing or unreadable file.
    """
    return read_rgb(path)


def _emotion_metrics(
    classifier: EmotionClassifier, images: list[Image.Image], batch: Sequence[ImageRecord], rows: PerRecord
) -> None:
    probs = np.asarray(classifier.probs(images), dtype=np.float64)  # [b, 8]
    if probs.shape != (len(images), NUM_EMOTIONS) or not np.all(np.isfinite(probs)):
        raise InvalidInputError(
            f"emotion classifier {classifier.name!r} returned {probs.shape}; expected finite "
            f"[{len(images)}, {NUM_EMOTIONS}]"
        )
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise InvalidInputError(f"emotion classifier {classifier.name!r} returned rows that do not sum to 1")
    pred = probs.argmax(axis=1)  # [b]
    # EmoGen's 2-class accuracy: the polarity whose summed probability is larger (ties: positive).
    positive = probs[:, :4].sum(axis=1) >= probs[:, 4:].sum(axis=1)  # [b]
    for row, r, p, k, pos in zip(rows, batch, probs, pred, positive, strict=True):
        target = r.emotion.label_index
        row["emotion_correct"] = float(k == target)
        row["polarity_correct"] = float(
            (Polarity.POSITIVE if pos else Polarity.NEGATIVE) == r.emotion.polarity
        )
        row["target_prob"] = float(p[target])
        row["emotion_pred_index"] = float(k)


def _set_level(
    records: Sequence[ImageRecord], scorers: Scorers, clip_embeds: list[torch.Tensor], batch_size: int
) -> dict[str, float]:
    # Means of per-record metrics are left to the caller, which groups records as it likes (by system, by
    # emotion); only what cannot be computed per record, and the k that content accuracy used, is here.
    out: dict[str, float] = {}
    if isinstance(scorers.content, ClipZeroShotContent):
        out["content_top_k"] = float(scorers.content.k)
    groups: dict[Emotion, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.emotion].append(i)
    if scorers.clip_features is not None and clip_embeds:
        embeds = torch.cat(clip_embeds)  # [n, d]

        def clip_distance(members: Sequence[int], pairs: Pairs) -> np.ndarray:
            return cosine_distances(embeds[list(members)], pairs)

        out |= diversity_metrics("clip_distance", groups, clip_distance)
    if scorers.lpips is not None:
        metric = scorers.lpips

        def lpips_distance(members: Sequence[int], pairs: Pairs) -> np.ndarray:
            images = [open_rgb(records[i].image) for i in members]
            return lpips_distances(metric, images, pairs, batch_size=batch_size, device=scorers.device)

        out |= diversity_metrics("lpips", groups, lpips_distance)
    return out
