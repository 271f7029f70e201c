"""CLIP-based scorers on a tiny random CLIP saved to disk and loaded back through ``from_pretrained``.

A random CLIP has no semantics, so these tests check the loading path, the plumbing and probes whose
weights are solved to map known image features to known classes; semantics are checked on constructed
embeddings in ``tests/unit/test_scoring_*.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ed_common.emotions import Emotion
from ed_diffusion.encoders import ensure_tiny_encoders_dir
from ed_diffusion.errors import EncoderLoadError
from ed_diffusion.scoring import (
    ALPHABETICAL_TO_EMOSET,
    ClipBundle,
    ClipZeroShot,
    ImageRecord,
    ImageScoringConfig,
    ScorerLoadError,
    build_tiny_clip,
    describe_scoring,
    save_tiny_clip,
    score_images,
)
from ed_diffusion.world import make_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", seed=0, dim=32)


@pytest.fixture(scope="module")
def bundle(clip_dir: Path) -> ClipBundle:
    return ClipBundle.from_pretrained(clip_dir)


@pytest.fixture(scope="module")
def one_per_emotion(tmp_path_factory: pytest.TempPathFactory) -> list[ImageRecord]:
    """One world test image per emotion, in EmoSet order."""
    root = tmp_path_factory.mktemp("world") / "w"
    paths = make_world(root, n_train=1, n_test=16, seed=0, size=32)
    rows = [json.loads(line) for line in paths.test_jsonl.read_text().splitlines()]
    first = {e: next(r for r in rows if r["emotion"] == e.value) for e in Emotion}
    return [
        ImageRecord(root / first[e]["image"], e, first[e]["caption"], first[e]["content"]) for e in Emotion
    ]


def _images(records: list[ImageRecord]) -> list[Image.Image]:
    return [Image.open(r.image).convert("RGB") for r in records]


def _solved_probe(bundle: ClipBundle, records: list[ImageRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [8, d] with weight @ f_j = 10 e_j for the CLIP embed f_j of record j (EmoSet order)."""
    feats = bundle.image_embeds(_images(records)).double()  # [8, d], linearly independent
    weight = 10.0 * torch.linalg.pinv(feats.T)  # [8, d]
    return weight.float(), torch.zeros(8)


def test_saved_tiny_clip_loads_back_with_the_same_weights(bundle: ClipBundle, one_per_emotion: list) -> None:
    built = build_tiny_clip(seed=0, dim=32)
    images = _images(one_per_emotion)
    torch.testing.assert_close(bundle.image_embeds(images), built.image_embeds(images))
    texts = ["a photo of a ring", "x" * 400]  # the second is over the 77-token limit: truncated
    torch.testing.assert_close(bundle.text_embeds(texts), built.text_embeds(texts))
    assert bundle.dim == 32
    assert bundle.logit_scale == pytest.approx(built.logit_scale)


def test_clip_load_failures_are_one_line(tmp_path: Path) -> None:
    encoders = ensure_tiny_encoders_dir(tmp_path / "enc")
    for source, message in (
        (tmp_path / "absent", "cannot load the CLIP config"),
        (encoders / "image", "'clip_vision_model' checkpoint, not a full CLIPModel"),
        ("openai/clip-vit-large-patch14", "local_files_only=True, no download"),
    ):
        with pytest.raises(EncoderLoadError) as info:
            ClipBundle.from_pretrained(source)
        assert message in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_probe_on_clip_separates_right_from_wrong_targets(
    tmp_path: Path, clip_dir: Path, bundle: ClipBundle, one_per_emotion: list[ImageRecord], suffix: str
) -> None:
    weight, bias = _solved_probe(bundle, one_per_emotion)
    path = tmp_path / f"probe{suffix}"
    state = {"fc.weight": weight, "fc.bias": bias}  # EmoGen's key names
    torch.save(state, path) if suffix == ".pth" else save_file(state, path)
    config = ImageScoringConfig(
        emotion_classifier="clip_probe", clip_model=str(clip_dir), probe_path=str(path)
    )
    good, _ = score_images(one_per_emotion, config)
    assert [r["emotion_correct"] for r in good] == [1.0] * 8
    assert min(r["target_prob"] for r in good) > 0.99
    shifted = [
        ImageRecord(r.image, Emotion.from_index((i + 1) % 8), r.prompt) for i, r in enumerate(one_per_emotion)
    ]
    bad, _ = score_images(shifted, config)
    assert [r["emotion_correct"] for r in bad] == [0.0] * 8
    assert describe_scoring(config)["probe_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_alphabetical_probe_file_is_read_in_emoset_order(
    tmp_path: Path, clip_dir: Path, bundle: ClipBundle, one_per_emotion: list[ImageRecord]
) -> None:
    weight, bias = _solved_probe(bundle, one_per_emotion)
    # Row r of an alphabetical probe is the r-th alphabetical name: invert the EmoSet-from-alphabetical map.
    alphabetical = torch.empty_like(weight)
    alphabetical[list(ALPHABETICAL_TO_EMOSET)] = weight
    path = tmp_path / "alpha.safetensors"
    save_file({"weight": alphabetical, "bias": bias}, path)
    common = {"emotion_classifier": "clip_probe", "clip_model": str(clip_dir), "probe_path": str(path)}
    right, _ = score_images(one_per_emotion, ImageScoringConfig(**common, probe_label_order="alphabetical"))
    assert [r["emotion_correct"] for r in right] == [1.0] * 8
    misread, _ = score_images(one_per_emotion, ImageScoringConfig(**common, probe_label_order="emoset"))
    # Misread, only names at the same index in both orders survive: amusement, fear, sadness.
    assert [r["emotion_correct"] for r in misread] == [1.0, 0, 0, 0, 0, 0, 1.0, 1.0]


def test_probe_for_clip_l14_is_refused_on_a_32d_clip(
    tmp_path: Path, clip_dir: Path, one_per_emotion: list
) -> None:
    path = tmp_path / "emogen.pth"
    torch.save({"fc.weight": torch.zeros(8, 768), "fc.bias": torch.zeros(8)}, path)
    config = ImageScoringConfig(
        emotion_classifier="clip_probe", clip_model=str(clip_dir), probe_path=str(path)
    )
    with pytest.raises(ScorerLoadError, match="takes 768-d features but the CLIP model gives 32-d"):
        score_images(one_per_emotion, config)


def test_every_clip_option_together_shares_one_image_forward_per_batch(
    clip_dir: Path,
    one_per_emotion: list[ImageRecord],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    original = ClipBundle.image_embeds

    def counting(self: ClipBundle, images: list[Image.Image]) -> torch.Tensor:
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(ClipBundle, "image_embeds", counting)
    config = ImageScoringConfig(
        emotion_classifier="clip_zero_shot",
        content_scorer="clip_zero_shot",
        clip_model=str(clip_dir),
        clip_score=True,
        diversity="clip",
        batch_size=3,
    )
    rows, set_level = score_images(one_per_emotion, config)
    assert calls == [3, 3, 2]  # 8 records in batches of 3, one forward each
    assert set(rows[0]) == {
        "emotion_correct",
        "polarity_correct",
        "target_prob",
        "emotion_pred_index",
        "content_correct",
        "joint_correct",
        "clip_score",
    }
    assert all(0.0 <= r["clip_score"] <= 100.0 for r in rows)
    assert all(0.0 < r["target_prob"] < 1.0 for r in rows)
    # Vocabulary = the records' distinct contents; k keeps chance at most 1/9 (or k = 1).
    assert set_level["content_top_k"] == 1.0
    assert "chance is already" in caplog.text  # a handful of contents: CLIP-A is nearly meaningless
    assert set_level["clip_distance/n_pairs"] == 0.0  # one image per emotion: no same-emotion pair


def test_zero_shot_on_tiny_clip_gives_probability_rows(bundle: ClipBundle, one_per_emotion: list) -> None:
    zs = ClipZeroShot.from_embedder(bundle)
    probs = zs.probs(_images(one_per_emotion))
    assert probs.shape == (8, 8)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert zs.logit_scale == pytest.approx(bundle.logit_scale)


def test_clip_score_and_clip_diversity_on_copies(
    tmp_path: Path, clip_dir: Path, bundle: ClipBundle, one_per_emotion: list[ImageRecord]
) -> None:
    first = one_per_emotion[0]
    copies = [ImageRecord(first.image, Emotion.AWE, first.prompt) for _ in range(3)]
    distinct = [ImageRecord(r.image, Emotion.FEAR, r.prompt) for r in one_per_emotion[:3]]
    config = ImageScoringConfig(clip_model=str(clip_dir), clip_score=True, diversity="clip")
    rows, set_level = score_images(copies + distinct, config)
    assert set_level["clip_distance/awe"] == pytest.approx(0.0, abs=1e-6)
    assert set_level["clip_distance/fear"] > 1e-4
    image = bundle.image_embeds(_images([first]))
    text = bundle.text_embeds([first.prompt])
    expected = 100 * max(torch.nn.functional.cosine_similarity(image, text).item(), 0.0)
    assert rows[0]["clip_score"] == pytest.approx(expected, abs=1e-3)
