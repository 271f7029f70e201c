"""ImageRecord and ImageScoringConfig: coercion, and one-line errors naming the bad value and the choices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ed_common.emotions import Emotion, UnknownEmotionError
from ed_common.errors import InvalidInputError
from ed_diffusion.scoring import ImageRecord, ImageScoringConfig

CLIP = "/models/clip"


def test_record_coerces_path_and_emotion_name() -> None:
    r = ImageRecord("a/b.png", "Awe ", "a calm lake", "lake")  # type: ignore[arg-type]
    assert r.image == Path("a/b.png")
    assert r.emotion is Emotion.AWE


def test_record_rejects_unknown_emotion_and_empty_content() -> None:
    with pytest.raises(UnknownEmotionError, match="allowed: amusement"):
        ImageRecord(Path("x.png"), "joy", "p")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="content"):
        ImageRecord(Path("x.png"), Emotion.FEAR, "p", "  ")


def test_default_config_scores_nothing_and_needs_no_clip() -> None:
    config = ImageScoringConfig()
    assert not config.uses_clip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"emotion_classifier": "resnet"}, "emotion_classifier='resnet' is invalid; allowed: world_oracle"),
        ({"content_scorer": "blip"}, "content_scorer='blip' is invalid"),
        ({"diversity": "fid"}, "diversity='fid' is invalid; allowed: lpips, clip, none"),
        ({"probe_label_order": "random"}, "probe_label_order='random' is invalid"),
        ({"emotion_classifier": "clip_probe", "clip_model": CLIP}, "needs probe_path"),
        (
            {"emotion_classifier": "clip_probe", "probe_path": "p.safetensors"},
            "emotion_classifier='clip_probe' needs clip_model",
        ),
        ({"emotion_classifier": "clip_zero_shot"}, "emotion_classifier='clip_zero_shot' needs clip_model"),
        ({"content_scorer": "clip_zero_shot"}, "content_scorer='clip_zero_shot' needs clip_model"),
        ({"clip_score": True}, "clip_score=True needs clip_model"),
        ({"diversity": "clip"}, "diversity='clip' needs clip_model"),
        ({"diversity": "lpips"}, "use diversity='clip' instead"),
        ({"diversity": "lpips", "lpips_weights": "alex.pth"}, "lpips_weights='alex.pth' has an unknown file"),
        ({"lpips_weights": "a.safetensors"}, "only used with diversity='lpips'"),
        ({"probe_path": "p.pt"}, "only used with emotion_classifier='clip_probe'"),
        (
            {"emotion_classifier": "clip_probe", "clip_model": CLIP, "probe_path": "p.onnx"},
            "probe_path='p.onnx' has an unknown file type",
        ),
        ({"batch_size": 0}, "batch_size=0 is invalid; allowed: an integer >= 1"),
        ({"clip_score": "yes"}, "clip_score='yes' is invalid"),
        ({"clip_model": ""}, "clip_model='' is invalid"),
        ({"content_scorer": "world_oracle", "content_vocabulary": ("dog",)}, "'dog', which the world oracle"),
        ({"content_scorer": "world_oracle", "content_vocabulary": ("ring", "ring")}, "repeats 'ring'"),
        ({"content_vocabulary": "dog"}, "content_vocabulary='dog' is invalid"),
    ],
)
def test_config_rejects_bad_values_in_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        ImageScoringConfig(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_clip_model_is_ignored_when_nothing_uses_it() -> None:
    # A runner may pass its configured CLIP model with every config.
    config = ImageScoringConfig(emotion_classifier="world_oracle", clip_model=CLIP)
    assert not config.uses_clip


def test_vocabulary_list_becomes_a_tuple_and_is_ignored_without_content_scorer() -> None:
    config = ImageScoringConfig(content_vocabulary=["dog", "cat"])  # type: ignore[arg-type]
    assert config.content_vocabulary == ("dog", "cat")


def test_full_clip_config_is_valid() -> None:
    config = ImageScoringConfig(
        emotion_classifier="clip_probe",
        content_scorer="clip_zero_shot",
        clip_model=CLIP,
        probe_path="emogen.pth",
        probe_label_order="alphabetical",
        content_vocabulary=("dog", "cat"),
        clip_score=True,
        diversity="clip",
    )
    assert config.uses_clip


def test_world_reading_defaults_to_colour_and_picks_the_oracle_attributes() -> None:
    from ed_diffusion.scoring.build import build_scorers
    from ed_diffusion.world.oracle import COLOUR_ATTRIBUTES

    with pytest.raises(InvalidInputError, match="world_reading"):
        ImageScoringConfig(world_reading="smell")  # type: ignore[arg-type]
    colour = build_scorers(ImageScoringConfig(emotion_classifier="world_oracle"))
    full = build_scorers(ImageScoringConfig(emotion_classifier="world_oracle", world_reading="full"))
    assert colour.emotion.attributes == COLOUR_ATTRIBUTES  # type: ignore[union-attr]
    assert full.emotion.attributes is None  # type: ignore[union-attr]
