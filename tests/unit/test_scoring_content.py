"""Content accuracy (world oracle, CLIP-A top-k) and the CLIP score convention."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.scoring import (
    ClipScorer,
    ClipZeroShotContent,
    WorldContentOracle,
    clip_score,
    content_top_k,
)
from ed_diffusion.world import CONTENT_CLASSES, draw_world_image, sample_attributes


def _image(k: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (10 * k, 0, 0))


def _features(images: Sequence[Image.Image]) -> torch.Tensor:
    """Image k -> mostly e_k, a little e_{k+1}: its second-best content is k + 1."""
    rows = []
    for im in images:
        k = int(np.asarray(im)[0, 0, 0]) // 10
        v = torch.zeros(6)
        v[k] = 1.0
        v[(k + 1) % 6] = 0.5
        rows.append(v)
    return torch.stack(rows)


VOCAB = ("dog", "cat", "tree", "car", "lake", "house")


@pytest.mark.parametrize(
    ("size", "k"), [(1, 1), (8, 1), (9, 1), (18, 2), (44, 4), (45, 5), (46, 5), (400, 5)]
)
def test_content_top_k_is_emoctrl_five_capped_at_chance_one_ninth(size: int, k: int) -> None:
    assert content_top_k(size) == k
    assert k / size <= 1 / 9 or k == 1


def test_zero_shot_content_top1_and_top2() -> None:
    top1 = ClipZeroShotContent(_features, VOCAB, torch.eye(6))
    assert top1.k == 1  # 6 contents: top-1 keeps chance at 1/6
    images = [_image(k) for k in range(6)]
    assert top1.matches(images, list(VOCAB)).all()
    shifted = [VOCAB[(k + 1) % 6] for k in range(6)]  # each image's second-best content
    assert not top1.matches(images, shifted).any()
    top2 = ClipZeroShotContent(_features, VOCAB, torch.eye(6), k=2)
    assert top2.matches(images, shifted).all()
    assert top2.top_k([_image(2)]) == [("tree", "car")]
    far = [VOCAB[(k + 3) % 6] for k in range(6)]
    assert not top2.matches(images, far).any()


def test_zero_shot_content_refuses_content_outside_vocabulary() -> None:
    scorer = ClipZeroShotContent(_features, VOCAB, torch.eye(6))
    with pytest.raises(InvalidInputError, match="'unicorn' is not in the content vocabulary"):
        scorer.matches([_image(0)], ["unicorn"])


def test_clip_score_is_100_times_clamped_cosine() -> None:
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    txt = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 3.0**0.5]])
    scores = clip_score(img, txt)
    torch.testing.assert_close(scores, torch.tensor([100.0, 0.0, 0.0, 50.0], dtype=torch.float64))
    assert scores[0] > scores[1]  # same direction beats orthogonal


class _Embedder:
    logit_scale = 100.0

    def image_embeds(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return _features(images)

    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.eye(6)[[VOCAB.index(t) for t in texts]]


def test_clip_scorer_prefers_the_matching_prompt() -> None:
    scorer = ClipScorer(_Embedder())
    images = [_image(k) for k in range(6)]
    right = scorer.scores(images, list(VOCAB))
    wrong = scorer.scores(images, [VOCAB[(k + 3) % 6] for k in range(6)])
    assert (right > 80).all()
    assert (wrong == 0).all()


def test_world_content_oracle_separates_right_from_wrong_contents() -> None:
    rng = np.random.default_rng(3)
    images, contents = [], []
    for i, content in enumerate(CONTENT_CLASSES):
        emotion = Emotion.from_index(i % 8)
        images.append(Image.fromarray(draw_world_image(content, sample_attributes(rng, emotion), 32, rng)))
        contents.append(content)
    oracle = WorldContentOracle()
    assert oracle.matches(images, contents).mean() >= 0.85
    rotated = contents[3:] + contents[:3]
    assert oracle.matches(images, rotated).mean() <= 0.15
