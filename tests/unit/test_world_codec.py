"""The world model's pixel codec: exact, and a drop-in VAE for a stock StableDiffusionPipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ed_diffusion.model_source import ModelMissingError, check_diffusers_model
from ed_diffusion.world_bench.codec import PixelShuffleAutoencoder


def test_the_codec_round_trips_pixels_exactly() -> None:
    codec = PixelShuffleAutoencoder()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    dist = codec.encode(x).latent_dist
    assert dist.mean.shape == (3, 12, 16, 16)
    assert torch.equal(dist.sample(generator=torch.Generator().manual_seed(0)), dist.mode())
    assert torch.equal(codec.decode(dist.mode()).sample, x)
    assert torch.equal(codec(x).sample, x)


def test_the_codec_refuses_a_config_whose_shapes_disagree() -> None:
    with pytest.raises(ValueError, match="latent_channels=12"):
        PixelShuffleAutoencoder(patch=2, latent_channels=4)


def _pipeline(codec: PixelShuffleAutoencoder) -> object:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from ed_diffusion.world_bench.model import (
        WorldModelConfig,
        build_text_encoder,
        build_world_tokenizer,
        sample_scheduler,
    )

    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=12,
        out_channels=12,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=WorldModelConfig().text_hidden,
        norm_num_groups=8,
        attention_head_dim=8,
    )
    return StableDiffusionPipeline(
        vae=codec,
        text_encoder=build_text_encoder(WorldModelConfig()),
        tokenizer=build_world_tokenizer(),
        unet=unet,
        scheduler=sample_scheduler(),
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        image_encoder=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    )


def test_a_stock_pipeline_saves_and_loads_with_the_codec_as_its_vae(tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(0)
    pipe = _pipeline(PixelShuffleAutoencoder(scaling_factor=2.5))
    assert pipe.vae_scale_factor == 2  # type: ignore[attr-defined]
    pipe.save_pretrained(tmp_path / "p", safe_serialization=True)  # type: ignore[attr-defined]
    check_diffusers_model(str(tmp_path / "p"))  # our codec's library is allowed
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path / "p", local_files_only=True)
    assert isinstance(loaded.vae, PixelShuffleAutoencoder)
    assert loaded.vae.config.scaling_factor == 2.5
    image = loaded("a star", num_inference_steps=2, height=32, width=32, output_type="np").images[0]
    assert image.shape == (32, 32, 3)


def test_a_model_directory_that_names_another_library_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m"
    for sub in ("unet", "vae"):
        (model / sub).mkdir(parents=True)
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    index["vae"] = ["os", "system"]
    (model / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelMissingError, match="component 'vae' names the library 'os'; allowed: diffusers"):
        check_diffusers_model(str(model))
    (model / "model_index.json").write_text("[1, 2")
    with pytest.raises(ModelMissingError, match="not readable JSON"):
        check_diffusers_model(str(model))


def test_diffusers_own_pipeline_modules_are_allowed_as_sd15_names_them(tmp_path: Path) -> None:
    model = tmp_path / "sd15"
    for sub in ("unet", "vae"):
        (model / sub).mkdir(parents=True)
    index = {
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": [None, None],
    }
    (model / "model_index.json").write_text(json.dumps(index))
    check_diffusers_model(str(model))


def test_a_fresh_process_loads_a_codec_pipeline_through_the_model_loader(tmp_path: Path) -> None:
    # diffusers only loads components from modules already imported: the loader must import our codec.
    import subprocess
    import sys

    from ed_common.settings import REPO_ROOT

    _pipeline(PixelShuffleAutoencoder()).save_pretrained(tmp_path / "p", safe_serialization=True)  # type: ignore[attr-defined]
    code = (
        "import sys; from diffusers import StableDiffusionPipeline;"
        "from ed_diffusion.model_source import load_diffusers_pipeline;"
        f"p = load_diffusers_pipeline(StableDiffusionPipeline, {str(tmp_path / 'p')!r});"
        "print(type(p.vae).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("PixelShuffleAutoencoder")
