"""Training configs: defaults, __post_init__ checks, TOML round trip and file errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ed_common.errors import InvalidInputError
from ed_diffusion.training.config import (
    ConfigError,
    DPOTrainConfig,
    SFTTrainConfig,
    TrainConfig,
    load_config,
    save_config,
)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("cls", [TrainConfig, SFTTrainConfig, DPOTrainConfig])
def test_defaults_are_valid_and_every_field_has_help(cls: type[TrainConfig]) -> None:
    config = cls()
    assert config.pretrained == "tiny"
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_dpo_defaults() -> None:
    config = DPOTrainConfig()
    assert config.beta == 2500.0
    assert (config.w_sft, config.w_dpo, config.w_neg_vp) == (0.0, 1.0, 1.0)
    assert config.negative_strategy == "opposite"
    assert config.vp_dropout == 0.0  # a dropped prompt would make both branches of L_neg_vp identical
    assert config.learning_rate < SFTTrainConfig().learning_rate


def test_int_for_float_field_becomes_float() -> None:
    config = DPOTrainConfig(beta=5000, learning_rate=1)  # type: ignore[arg-type]
    assert isinstance(config.beta, float) and isinstance(config.learning_rate, float)


@pytest.mark.parametrize(
    ("cls", "kwargs", "needle"),
    [
        (TrainConfig, {"max_steps": 0}, "max_steps = 0 is invalid; allowed: >= 1"),
        (TrainConfig, {"batch_size": 0}, "batch_size"),
        (TrainConfig, {"grad_accum": -1}, "grad_accum"),
        (TrainConfig, {"learning_rate": 0.0}, "learning_rate = 0.0"),
        (TrainConfig, {"learning_rate": float("nan")}, "learning_rate"),
        (TrainConfig, {"max_grad_norm": -1.0}, "max_grad_norm"),
        (TrainConfig, {"weight_decay": -0.1}, "weight_decay"),
        (TrainConfig, {"keep_last": -1}, "keep_last"),
        (TrainConfig, {"checkpoint_every": -5}, "checkpoint_every"),
        (TrainConfig, {"mixed_precision": "fp8"}, "mixed_precision must be one of 'no', 'fp16', 'bf16'"),
        (TrainConfig, {"resolution": 100}, "resolution = 100 is invalid; allowed: a multiple of 8"),
        (TrainConfig, {"num_tokens": 0}, "num_tokens"),
        (TrainConfig, {"lora_rank": -1}, "lora_rank"),
        (TrainConfig, {"lora_rank": 4, "lora_alpha": 0}, "lora_alpha"),
        (TrainConfig, {"vp_dropout": 1.0}, "vp_dropout = 1.0 is invalid; allowed: in [0, 1)"),
        (TrainConfig, {"min_timestep": -1}, "min_timestep"),
        (TrainConfig, {"min_timestep": 500, "max_timestep": 500}, "max_timestep = 500 is invalid"),
        (TrainConfig, {"output_dir": " "}, "output_dir"),
        (
            TrainConfig,
            {"train_projector": False, "train_ip_kv": False, "train_bank": False},
            "nothing would be trained",
        ),
        (TrainConfig, {"pretrained": "sd15", "data": "d.jsonl"}, "bank = None is invalid"),
        (TrainConfig, {"pretrained": "sd15", "bank": "b.safetensors"}, "data = None is invalid"),
        (TrainConfig, {"max_steps": "10"}, "max_steps must be an integer, got str '10'"),
        (TrainConfig, {"max_steps": True}, "max_steps must be an integer, got bool True"),
        (TrainConfig, {"gradient_checkpointing": 1}, "gradient_checkpointing must be a boolean"),
        (TrainConfig, {"bank": 3}, "bank must be a string or unset, got int 3"),
        (SFTTrainConfig, {"seed": -1}, "SFTTrainConfig.seed"),
        (DPOTrainConfig, {"beta": 0.0}, "DPOTrainConfig.beta = 0.0 is invalid; allowed: finite, > 0"),
        (DPOTrainConfig, {"beta": float("inf")}, "beta"),
        (DPOTrainConfig, {"w_dpo": -1.0}, "w_dpo = -1.0 is invalid; allowed: >= 0"),
        (DPOTrainConfig, {"w_sft": 0.0, "w_dpo": 0.0, "w_neg_vp": 0.0}, "every loss weight is 0"),
        (DPOTrainConfig, {"negative_strategy": "worst"}, "negative_strategy must be one of"),
        (
            DPOTrainConfig,
            {"pretrained": "sdxl", "bank": "b.safetensors", "data": "d.jsonl"},
            "pairs = None is invalid; allowed: set when w_dpo > 0",
        ),
    ],
)
def test_post_init_rejects_bad_values(cls: type[TrainConfig], kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        cls(**kwargs)
    assert needle in _one_line(exc)
    assert isinstance(exc.value, InvalidInputError) and isinstance(exc.value, ValueError)


def test_non_tiny_dpo_without_pairs_is_fine_when_w_dpo_is_zero() -> None:
    config = DPOTrainConfig(pretrained="/models/sdxl", bank="b.safetensors", data="d.jsonl", w_dpo=0.0)
    assert config.pairs is None


def test_toml_round_trip(tmp_path: Path) -> None:
    config = DPOTrainConfig(
        output_dir=str(tmp_path / 'run "1" \\ ü 🎨'),
        pretrained="sdxl",
        bank="banks/emo\tset.safetensors",
        data="data/emoset\nroot\x7f",
        pairs="pairs.jsonl",
        learning_rate=1e-5,
        beta=5000.0,
        w_sft=0.25,
        negative_strategy="random",
        mixed_precision="bf16",
        gradient_checkpointing=True,
        lora_rank=8,
        resolution=1024,
    )
    path = save_config(config, tmp_path / "ckpt" / "config.toml")
    assert path == tmp_path / "ckpt" / "config.toml"
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left behind
    loaded = load_config(path, DPOTrainConfig)
    assert loaded == config
    assert loaded.adapter_init is None and loaded.lora_alpha is None  # None fields are left out of the file
    assert "adapter_init" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("cls", [TrainConfig, SFTTrainConfig, DPOTrainConfig])
def test_defaults_round_trip(tmp_path: Path, cls: type[TrainConfig]) -> None:
    assert load_config(save_config(cls(), tmp_path / "config.toml"), cls) == cls()


def test_save_overwrites_an_older_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_config(SFTTrainConfig(max_steps=5), path)
    save_config(SFTTrainConfig(max_steps=7), path)
    assert load_config(path, SFTTrainConfig).max_steps == 7


def test_partial_file_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "sft.toml"
    path.write_text('max_steps = 20\nlearning_rate = 3e-4\noutput_dir = "runs/x"\n', encoding="utf-8")
    config = load_config(path, SFTTrainConfig)
    assert (config.max_steps, config.learning_rate, config.output_dir) == (20, 3e-4, "runs/x")
    assert config.batch_size == SFTTrainConfig().batch_size


def test_unknown_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("max_steps = 5\nbeta = 2000.0\nlr = 1e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path, SFTTrainConfig)  # beta is a DPO field
    msg = _one_line(exc)
    assert "unknown key(s) beta, lr for SFTTrainConfig" in msg
    allowed = msg.split("allowed: ", 1)[1].split(", ")
    assert allowed == [f.name for f in dataclasses.fields(SFTTrainConfig)]
    assert str(path) in msg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('max_steps = "10"\n', "max_steps must be an integer, got str '10'"),
        ("learning_rate = true\n", "learning_rate must be a number, got bool True"),
        ("beta = -3.0\n", "beta = -3.0 is invalid"),
        (
            'negative_strategy = "hardest"\n',
            "negative_strategy must be one of 'opposite', 'confusable', 'random'",
        ),
        ("max_steps = [1, 2]\n", "max_steps must be an integer, got list [1, 2]"),
        ("max_steps = \n", "is not valid TOML"),
    ],
)
def test_bad_values_in_a_file_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path, DPOTrainConfig)
    msg = _one_line(exc)
    assert needle in msg and str(path) in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", TrainConfig)


@pytest.mark.parametrize("cls", [SFTTrainConfig, DPOTrainConfig])
def test_the_commented_default_loads_as_the_defaults(tmp_path: Path, cls: type[TrainConfig]) -> None:
    from ed_diffusion.training.config import commented_config

    text = commented_config(cls)
    path = tmp_path / "default.toml"
    path.write_text(text)
    assert load_config(path, cls) == cls()
    for f in dataclasses.fields(cls):  # every key is there, with its help above it
        assert f"{f.name} = " in text
        assert str(f.metadata["help"]).split()[0] in text


def test_every_shipped_example_loads_and_validates() -> None:
    from ed_diffusion.training.config import EXAMPLES_DIR

    examples = sorted(EXAMPLES_DIR.glob("*.toml"))
    wanted = {f"{kind}-{model}" for kind in ("sft", "dpo") for model in ("tiny", "world", "sd15", "sdxl")}
    assert {p.stem for p in examples} >= wanted
    for path in examples:
        cfg = load_config(path, SFTTrainConfig if path.stem.startswith("sft") else DPOTrainConfig)
        assert cfg.output_dir.startswith("runs/train/")


def test_train_config_command(capsys: pytest.CaptureFixture[str]) -> None:
    from cli import main

    assert main(["train", "config", "dpo"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# DPOTrainConfig") and "beta = 2500.0" in text and "dpo-tiny.toml" in text
    assert main(["train", "config", "ppo"]) == 2
    assert "allowed sft or dpo" in capsys.readouterr().err
    from ed_diffusion.training.config import EXAMPLES_DIR

    assert main(["train", "config", "sft", "--example", "world"]) == 0
    assert capsys.readouterr().out == (EXAMPLES_DIR / "sft-world.toml").read_text()
    assert main(["train", "config", "sft", "--example", "sd14"]) == 2
    assert "'sd14': allowed sd15, sdxl, tiny, world" in capsys.readouterr().err
