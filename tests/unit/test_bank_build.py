"""What `bank build` decides before any encoder loads: options, the encoders and their feature kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ed_common.errors import InvalidInputError, OutputExistsError
from ed_diffusion.bank_build import (
    EncoderChoice,
    check_image_kind,
    choose_encoders,
    image_kind_of,
    prepare_bank_build,
)
from ed_diffusion.emotion_datasets import LoadSummary, make_toy_dataset
from ed_diffusion.errors import BankError

OPTIONS = {
    "text_encoder": "openai/clip-vit-large-patch14",
    "image_encoder": "facebook/dinov2-base",
    "image_kind": None,
    "clusters": 2,
    "seed": 0,
    "device": "cpu",
}


def test_the_image_kind_comes_from_the_encoder_name_unless_given(tmp_path: Path) -> None:
    assert image_kind_of("facebook/dinov2-base") == "dino"
    assert image_kind_of("/models/DINOv3-small") == "dino"
    assert image_kind_of("openai/clip-vit-large-patch14") == "clip"
    chosen = choose_encoders("openai/clip-vit-base-patch32", "facebook/dinov2-base", None, cache_dir=tmp_path)
    assert chosen == EncoderChoice("openai/clip-vit-base-patch32", "facebook/dinov2-base", "dino")
    given = choose_encoders(
        "openai/clip-vit-base-patch32", "facebook/dinov2-base", "clip", cache_dir=tmp_path
    )
    assert given.kind == "clip"
    assert not any(tmp_path.iterdir())  # only "tiny" writes encoders into the cache


def test_an_unknown_image_kind_is_refused_naming_the_flag() -> None:
    assert check_image_kind(None) is None
    assert check_image_kind("dino") == "dino"
    with pytest.raises(InvalidInputError, match="--image-kind 'vit' is unknown; allowed: clip, dino"):
        check_image_kind("vit")


def test_prepare_bank_build_refuses_an_existing_bank_before_reading_the_data(tmp_path: Path) -> None:
    out = tmp_path / "bank.safetensors"
    out.write_bytes(b"")
    with pytest.raises(OutputExistsError, match="refusing to overwrite"):
        prepare_bank_build(tmp_path / "absent.jsonl", out, **OPTIONS, cache_dir=tmp_path)


def test_prepare_bank_build_reports_skipped_rows_before_refusing_short_emotions(tmp_path: Path) -> None:
    jsonl = make_toy_dataset(tmp_path / "toy", n_per_emotion=1)
    with jsonl.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"image": "missing.png", "caption": "a fox", "emotion": "awe"}) + "\n")
    seen: list[LoadSummary] = []
    with pytest.raises(BankError, match="too few samples for clusters=2"):
        prepare_bank_build(
            jsonl, tmp_path / "b.safetensors", **OPTIONS, cache_dir=tmp_path, on_loaded=seen.append
        )
    assert [s.num_skipped for s in seen] == [1]


def test_prepare_bank_build_reads_the_samples_and_chooses_the_encoders(tmp_path: Path) -> None:
    jsonl = make_toy_dataset(tmp_path / "toy", n_per_emotion=2)
    build = prepare_bank_build(jsonl, tmp_path / "b.safetensors", **OPTIONS, cache_dir=tmp_path / "cache")
    assert len(build.samples) == 16 and build.summary.num_skipped == 0
    assert build.encoders.kind == "dino" and build.device == "cpu" and build.clusters == 2
    assert not (tmp_path / "b.safetensors").exists()  # nothing is written until run()
