"""The validation grid's emotion score separates images of the asked emotion from images of another one
(the world oracle on real world images, whose emotions are known)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ed_common.emotions import EMOTION_NAMES
from ed_diffusion.scoring.classifiers import WorldOracle
from ed_diffusion.training.config import ConfigError, SFTTrainConfig, load_config, parse_overrides
from ed_diffusion.training.validation import score_grid
from ed_diffusion.world.dataset import make_world


def test_score_grid_reads_the_right_emotion_and_not_a_wrong_one(tmp_path: Path) -> None:
    paths = make_world(tmp_path / "w", n_train=1, n_test=24, seed=3)
    rows = [json.loads(line) for line in paths.test_jsonl.read_text().splitlines()]
    images = [Image.open(paths.root / r["image"]).convert("RGB") for r in rows]
    right = [r["emotion"] for r in rows]
    wrong = [EMOTION_NAMES[(EMOTION_NAMES.index(e) + 1) % 8] for e in right]
    good, bad = score_grid(WorldOracle(), images, right), score_grid(WorldOracle(), images, wrong)
    assert good["emotion_acc"] >= 0.9 and bad["emotion_acc"] <= 0.1
    assert good["target_prob"] > 0.8 > 0.2 > bad["target_prob"]


def test_overrides_are_toml_values_or_strings(tmp_path: Path) -> None:
    values = parse_overrides(
        ["max_steps=7", "learning_rate=2e-4", "data=runs/x.jsonl", 'validation_prompts=["a", "b"]', "x="]
    )
    assert values == {
        "max_steps": 7,
        "learning_rate": 2e-4,
        "data": "runs/x.jsonl",
        "validation_prompts": ["a", "b"],
        "x": "",
    }
    config = tmp_path / "sft.toml"
    config.write_text('output_dir = "a"\nmax_steps = 50\n')
    cfg = load_config(config, SFTTrainConfig, parse_overrides(["max_steps=3", "output_dir=b"]))
    assert (cfg.max_steps, cfg.output_dir) == (3, "b")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) nope for SFTTrainConfig"):
        load_config(config, SFTTrainConfig, parse_overrides(["nope=1"]))
    with pytest.raises(ConfigError, match=r"max_steps"):
        load_config(config, SFTTrainConfig, parse_overrides(["max_steps=zero"]))
    with pytest.raises(ConfigError, match=r"--set 'max_steps': expected KEY=VALUE"):
        parse_overrides(["max_steps"])
    # Against the config class: a string field takes the text as is; unknown keys and line breaks are named.
    assert parse_overrides(["data=2024", "output_dir=true", "max_steps=5"], SFTTrainConfig) == {
        "data": "2024",
        "output_dir": "true",
        "max_steps": 5,
    }
    with pytest.raises(ConfigError, match=r"--set max_step=\.\.\.: SFTTrainConfig has no key 'max_step'"):
        parse_overrides(["max_step=3"], SFTTrainConfig)
    with pytest.raises(ConfigError, match=r"line break"):
        parse_overrides(["max_steps=1\nlearning_rate=5"], SFTTrainConfig)


def test_validation_scorer_settings_are_checked_when_the_config_loads() -> None:
    with pytest.raises(
        ConfigError, match=r"validation_scorer = 'clip_zero_shot': .*needs validation_clip_model"
    ):
        SFTTrainConfig(validation_scorer="clip_zero_shot")
    with pytest.raises(ConfigError, match=r"validation_probe_path"):
        SFTTrainConfig(validation_scorer="clip_probe", validation_clip_model="x")
    assert (
        SFTTrainConfig(validation_scorer="world_oracle").validation_scoring().emotion_classifier
        == "world_oracle"
    )
