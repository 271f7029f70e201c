"""score_images end to end on the synthetic world (oracle, LPIPS), and score_with's metric conventions."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.scoring import (
    AlexNetFeatures,
    ImageRecord,
    ImageScoringConfig,
    LPIPSDistance,
    ScorerLoadError,
    Scorers,
    score_images,
    score_with,
)
from ed_diffusion.scoring.diversity import MAX_PAIRS_PER_EMOTION, diversity_metrics, emotion_pairs
from ed_diffusion.world import CONTENT_CLASSES, make_world

ORACLES = ImageScoringConfig(emotion_classifier="world_oracle", content_scorer="world_oracle")


@pytest.fixture(scope="module")
def world_records(tmp_path_factory: pytest.TempPathFactory) -> list[ImageRecord]:
    root = tmp_path_factory.mktemp("world") / "w"
    paths = make_world(root, n_train=1, n_test=32, seed=0, size=32)
    rows = [json.loads(line) for line in paths.test_jsonl.read_text().splitlines()]
    return [ImageRecord(root / r["image"], Emotion(r["emotion"]), r["caption"], r["content"]) for r in rows]


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def test_world_oracle_scores_right_targets_high_and_wrong_targets_low(
    world_records: list[ImageRecord],
) -> None:
    good, set_level = score_images(world_records, ORACLES)
    assert set(good[0]) == {
        "emotion_correct",
        "polarity_correct",
        "target_prob",
        "emotion_pred_index",
        "content_correct",
        "joint_correct",
    }
    assert set_level == {}  # no diversity asked for
    assert _mean(good, "emotion_correct") >= 0.9
    assert _mean(good, "polarity_correct") >= 0.9
    assert _mean(good, "target_prob") >= 0.8
    assert _mean(good, "content_correct") >= 0.9
    assert _mean(good, "joint_correct") >= 0.8
    # Same images, each target moved 4 places: the other polarity, so every emotion and polarity is wrong.
    wrong = [
        ImageRecord(
            r.image,
            Emotion.from_index((r.emotion.label_index + 4) % 8),
            r.prompt,
            CONTENT_CLASSES[(CONTENT_CLASSES.index(r.content or "") + 3) % len(CONTENT_CLASSES)],
        )
        for r in world_records
    ]
    bad, _ = score_images(wrong, ORACLES)
    assert _mean(bad, "emotion_correct") <= 0.1
    assert _mean(bad, "polarity_correct") <= 0.1
    assert _mean(bad, "target_prob") <= 0.1
    assert _mean(bad, "content_correct") <= 0.1
    assert _mean(bad, "joint_correct") <= 0.1
    # The predicted index is the same whatever the target.
    assert [g["emotion_pred_index"] for g in good] == [b["emotion_pred_index"] for b in bad]


def test_records_are_checked_before_any_model_loads(world_records: list[ImageRecord]) -> None:
    config = ImageScoringConfig(content_scorer="clip_zero_shot", clip_model="/no/such/clip")
    no_content = [ImageRecord(world_records[0].image, Emotion.AWE, "p")]
    with pytest.raises(InvalidInputError, match=r"record 0 .* has no content"):
        score_images(no_content, config)
    outside = [ImageRecord(world_records[0].image, Emotion.AWE, "p", "dog")]
    with pytest.raises(InvalidInputError, match="'dog', which is not in the content vocabulary"):
        score_images(outside, ImageScoringConfig(content_scorer="world_oracle"))


def test_a_bad_probe_file_fails_before_the_clip_model_loads(
    tmp_path: Path, world_records: list[ImageRecord]
) -> None:
    config = ImageScoringConfig(
        emotion_classifier="clip_probe",
        clip_model=str(tmp_path / "no-clip"),
        probe_path=str(tmp_path / "absent.pth"),
    )
    with pytest.raises(ScorerLoadError, match=r"absent\.pth' does not exist"):
        score_images(world_records[:1], config)


def test_unreadable_or_unsupported_images_name_the_file(
    tmp_path: Path, world_records: list[ImageRecord]
) -> None:
    text = tmp_path / "not_an_image.png"
    text.write_text("hello")
    with pytest.raises(InvalidInputError, match=r"cannot read image .*not_an_image\.png"):
        score_images([ImageRecord(text, Emotion.AWE, "p", "circle")], ORACLES)
    big = tmp_path / "big.png"
    Image.new("RGB", (512, 512), "red").save(big)
    with pytest.raises(
        InvalidInputError, match=r"records 0\.\.0 \(first: .*big.png\).*not supported"
    ) as info:
        score_images([ImageRecord(big, Emotion.AWE, "p", "circle")], ORACLES)
    assert "\n" not in str(info.value)


def test_empty_records_give_empty_results() -> None:
    assert score_images([], ORACLES) == ([], {})


class _FixedProbs:
    """An emotion classifier that returns the same probabilities for every image."""

    name = "fixed"

    def __init__(self, probs: list[float]) -> None:
        self.row = np.array(probs)

    def probs(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.tile(self.row, (len(images), 1))


class _AlwaysContent:
    name = "always"

    def __init__(self, answer: bool) -> None:
        self.answer = answer

    def matches(self, images: Sequence[Image.Image], contents: Sequence[str]) -> np.ndarray:
        return np.full(len(images), self.answer)


def _flat_records(tmp_path: Path, emotions: Sequence[Emotion]) -> list[ImageRecord]:
    records = []
    for i, e in enumerate(emotions):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (32, 32), (20 * i, 40, 200 - 20 * i)).save(path)
        records.append(ImageRecord(path, e, f"prompt {i}", "x"))
    return records


def test_polarity_follows_summed_probability_mass_as_emogen(tmp_path: Path) -> None:
    # argmax is amusement (positive) but the negative half holds 0.7 of the mass: polarity is negative.
    probs = [0.3, 0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.1]
    records = _flat_records(tmp_path, [Emotion.ANGER, Emotion.AMUSEMENT])
    rows, _ = score_with(records, Scorers(emotion=_FixedProbs(probs)))
    assert rows[0] == {
        "emotion_correct": 0.0,
        "polarity_correct": 1.0,
        "target_prob": pytest.approx(0.2),
        "emotion_pred_index": 0.0,
    }
    assert rows[1]["emotion_correct"] == 1.0 and rows[1]["polarity_correct"] == 0.0


def test_joint_needs_both_emotion_and_content(tmp_path: Path) -> None:
    records = _flat_records(tmp_path, [Emotion.AMUSEMENT, Emotion.FEAR])
    certain = [1.0] + [0.0] * 7
    rows, _ = score_with(records, Scorers(emotion=_FixedProbs(certain), content=_AlwaysContent(True)))
    assert [r["joint_correct"] for r in rows] == [1.0, 0.0]
    rows, _ = score_with(records, Scorers(emotion=_FixedProbs(certain), content=_AlwaysContent(False)))
    assert [r["joint_correct"] for r in rows] == [0.0, 0.0]
    rows, _ = score_with(records, Scorers(content=_AlwaysContent(True)))
    assert rows[0] == {"content_correct": 1.0}


def test_a_classifier_with_bad_output_is_refused(tmp_path: Path) -> None:
    records = _flat_records(tmp_path, [Emotion.AWE])
    with pytest.raises(InvalidInputError, match="do not sum to 1"):
        score_with(records, Scorers(emotion=_FixedProbs([0.5] * 8)))
    with pytest.raises(InvalidInputError, match=r"expected finite \[1, 8\]"):
        score_with(records, Scorers(emotion=_FixedProbs([1.0] * 7)))


def _mean_colour(images: Sequence[Image.Image]) -> torch.Tensor:
    return torch.stack(
        [torch.tensor(np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) + 1.0) for im in images]
    )


def test_clip_distance_diversity_is_zero_for_copies_and_positive_for_distinct(tmp_path: Path) -> None:
    records = _flat_records(tmp_path, [Emotion.AWE, Emotion.AWE, Emotion.FEAR, Emotion.FEAR, Emotion.ANGER])
    shutil.copy(records[0].image, records[1].image)  # the two awe images are identical
    _, set_level = score_with(records, Scorers(clip_features=_mean_colour), batch_size=2)
    assert set(set_level) == {
        "clip_distance/awe",
        "clip_distance/fear",
        "clip_distance/mean",
        "clip_distance/n_pairs",
    }
    assert set_level["clip_distance/awe"] == pytest.approx(0.0, abs=1e-12)
    assert set_level["clip_distance/fear"] > 0
    assert set_level["clip_distance/mean"] == pytest.approx(set_level["clip_distance/fear"] / 2)
    assert set_level["clip_distance/n_pairs"] == 2.0  # anger has one image: no pair


def test_lpips_diversity_from_a_weights_file(tmp_path: Path, world_records: list[ImageRecord]) -> None:
    torch.manual_seed(0)
    metric = LPIPSDistance(AlexNetFeatures((4, 8, 8, 8, 8)), (4, 8, 8, 8, 8))
    weights = tmp_path / "lpips_tiny.safetensors"
    save_file({k.removeprefix("backbone."): v for k, v in metric.state_dict().items() if "." in k}, weights)
    awe = [r for r in world_records if r.emotion is Emotion.AWE][:3]
    copies = [ImageRecord(awe[0].image, Emotion.FEAR, "p") for _ in range(3)]  # one image three times
    config = ImageScoringConfig(diversity="lpips", lpips_weights=str(weights))
    rows, set_level = score_images(awe + copies, config)
    assert rows == [{} for _ in rows]
    assert set_level["lpips/fear"] == 0.0
    assert set_level["lpips/awe"] > 0
    assert set_level["lpips/n_pairs"] == 6.0
    assert not any(k.startswith(("diversity/", "clip_distance/")) for k in set_level)


def test_pairs_are_all_distinct_pairs_up_to_the_cap() -> None:
    assert emotion_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert emotion_pairs(1) == []
    capped = emotion_pairs(100, max_pairs=50)
    assert len(set(capped)) == 50 and all(i < j for i, j in capped)
    assert capped == emotion_pairs(100, max_pairs=50)  # seeded
    assert len(emotion_pairs(60)) == min(MAX_PAIRS_PER_EMOTION, 60 * 59 // 2)


def test_diversity_mean_is_over_emotions_not_pairs() -> None:
    groups = {Emotion.AWE: [0, 1], Emotion.FEAR: [2, 3, 4]}
    values = {Emotion.AWE: 1.0, Emotion.FEAR: 0.0}

    def distance(members: Sequence[int], pairs: list[tuple[int, int]]) -> np.ndarray:
        emotion = Emotion.AWE if members[0] < 2 else Emotion.FEAR
        return np.full(len(pairs), values[emotion])

    out = diversity_metrics("lpips", groups, distance)
    assert out == {"lpips/awe": 1.0, "lpips/fear": 0.0, "lpips/mean": 0.5, "lpips/n_pairs": 4.0}
