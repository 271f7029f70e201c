"""The small MC-Diffusion trained on the affective world: components built from configs, saved as a pipeline.

An SD 1.5-class ``StableDiffusionPipeline`` at 32 px: the lossless pixel codec of ``codec.py`` as its VAE
(32 px -> 16x16x12), a UNet whose highest resolution has no attention (self-attention over 256 tokens per
image is what makes a CPU step slow; the 8x8 level has self- and cross-attention) and a pooled text vector
on its time embedding (diffusers' ``addition_embed_type="text"``), and a small CLIP text encoder over
whole-word tokens for the world's vocabulary, trained from scratch with the UNet. Why each choice:
``docs/design.md``, *World benchmark*.
Saved with ``save_pretrained`` so the ``world`` preset loads it through the same ``from_pretrained`` path as
SD 1.5.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from transformers import CLIPTextModel, CLIPTokenizer

from ed_common.emotions import EMOTION_NAMES
from ed_diffusion.tiny_models import TEXT_HIDDEN, _text_config, byte_vocab
from ed_diffusion.world_bench.codec import PixelShuffleAutoencoder

# SD 1.5's betas, rescaled to zero terminal SNR, with v-prediction and trailing timesteps (Lin et al. 2024,
# "Common diffusion noise schedules and sample steps are flawed"; all stock diffusers options). SD 1.5's own
# schedule keeps sqrt(alpha_bar_T) = 0.068 of the image at t = T: over a 16 x 16 latent the image's mean
# colour is then plain to see in x_T (noise in a 256-pixel mean has std 1/16), so the model learns to read it
# there, and sampling from zero-mean noise gives every image the dataset's mean colour. In this world the
# colour IS the emotion: fear (mean pixel ~30) came out at ~135 like everything else (docs/world-bench.md).
SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "rescale_betas_zero_snr": True,
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
}


@dataclass(frozen=True)
class WorldModelConfig:
    """Shapes of the world model (defaults: ~1 M UNet parameters).

    Attributes:
        image_size: pixels per side (the world's images).
        patch: pixels per side the codec folds into channels (latents are ``3 * patch**2`` channels).
        unet_channels: UNet block widths (first block without attention).
        text_hidden: text-encoder width = the UNet's cross-attention width.
        text_layers: transformer layers of the text encoder.
        text_tokens: tokens the tokenizer pads captions to (the world's captions are a few words).
        pooled_text: add an attention-pooled text vector to the UNet's time embedding.
    """

    image_size: int = 32
    patch: int = 2
    unet_channels: tuple[int, ...] = (32, 64)
    text_hidden: int = TEXT_HIDDEN
    text_layers: int = 0
    text_tokens: int = 12
    pooled_text: bool = True

    @property
    def latent_channels(self) -> int:
        """Latent channels: the codec's folded pixels."""
        return 3 * self.patch * self.patch

    @property
    def latent_size(self) -> int:
        """Latent pixels per side."""
        return self.image_size // self.patch

    def as_dict(self) -> dict[str, Any]:
        """JSON form (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def world_words() -> list[str]:
    """Every word of the world's captions and prompts: templates, contents, emotions and "feeling"."""
    from ed_diffusion.world.spec import WorldSpec

    spec = WorldSpec()
    words = {w for t in spec.caption_templates for w in t.replace("{content}", "").split()}
    return sorted(words | set(spec.contents) | set(EMOTION_NAMES) | {"feeling"})


def build_world_tokenizer(max_tokens: int = WorldModelConfig.text_tokens) -> CLIPTokenizer:
    """A byte-level CLIP tokenizer plus one BPE token per world word (merged left to right).

    The byte fallback keeps any prompt encodable; whole-word tokens let a text encoder trained from scratch on
    a CPU budget read "fear" as one symbol instead of composing it from four characters. Merges are added
    longest word first; every world word encodes to exactly one token (tested).
    """
    vocab = byte_vocab()
    merges: list[tuple[str, str]] = []
    for word in sorted(world_words(), key=lambda w: (-len(w), w)):
        parts = [*word[:-1], word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            if (current, part) not in merges:
                merges.append((current, part))
            current += part
            vocab.setdefault(current, len(vocab))
    # The tokenizers backend wants (left, right) pairs; transformers' annotation says strings.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_tokens)  # type: ignore[arg-type]


def build_codec(cfg: WorldModelConfig, scaling_factor: float = 1.0) -> PixelShuffleAutoencoder:
    """The pixel codec of ``cfg`` (``scaling_factor``: 1 / std of the folded train pixels)."""
    codec: PixelShuffleAutoencoder = PixelShuffleAutoencoder(
        patch=cfg.patch,
        latent_channels=cfg.latent_channels,
        scaling_factor=scaling_factor,
        block_out_channels=tuple([cfg.latent_channels] * cfg.patch.bit_length()),
    )
    return codec


def build_unet(cfg: WorldModelConfig) -> UNet2DConditionModel:
    """The denoiser: plain ResNet blocks at full latent resolution, attention below it."""
    n = len(cfg.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    unet: UNet2DConditionModel = UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        block_out_channels=cfg.unet_channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cfg.text_hidden,
        norm_num_groups=8,
        attention_head_dim=8,
        # The pooled caption on the time embedding tells every ResNet block what to draw, not only the
        # cross-attention of the 8x8 level.
        addition_embed_type="text" if cfg.pooled_text else None,
        addition_embed_type_num_heads=4,
    )
    return unet


def build_text_encoder(cfg: WorldModelConfig) -> CLIPTextModel:
    """A small CLIP text encoder over ``build_world_tokenizer``'s vocabulary, random weights."""
    config = _text_config(len(build_world_tokenizer(cfg.text_tokens)))
    config.hidden_size = cfg.text_hidden
    config.num_hidden_layers = cfg.text_layers
    config.max_position_embeddings = cfg.text_tokens
    return CLIPTextModel(config)


def train_scheduler() -> Any:
    """The training noise schedule (``DDPMScheduler``)."""
    return DDPMScheduler(**SCHEDULE)


def sample_scheduler() -> Any:
    """The sampling schedule (``DDIMScheduler``): the benchmark's sampler and the saved pipeline share it."""
    return DDIMScheduler(**SCHEDULE, set_alpha_to_one=False, steps_offset=1)


def assemble_pipeline(
    vae: PixelShuffleAutoencoder, text_encoder: CLIPTextModel, unet: UNet2DConditionModel
) -> Any:
    """A stock ``StableDiffusionPipeline`` around the trained parts (DDIM sampling)."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_world_tokenizer(text_encoder.config.max_position_embeddings),
        unet=unet,
        scheduler=sample_scheduler(),
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        image_encoder=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    )


def save_pretrained_atomic(model: Any, target: Path) -> Path:
    """``model.save_pretrained`` (safetensors) into ``target``, replacing it (``write_dir_atomic``)."""
    return write_dir_atomic(target, lambda tmp: model.save_pretrained(tmp, safe_serialization=True))


def copy_dir_atomic(source: Path, target: Path) -> Path:
    """Copy the directory ``source`` to ``target``, replacing it (``write_dir_atomic``)."""
    return write_dir_atomic(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))


def write_dir_atomic(target: Path, fill: Callable[[Path], object]) -> Path:
    """Let ``fill`` write a temporary sibling of ``target``, then rename it to ``target``.

    A crash leaves the previous directory (or none), never half of one; the temporary directory is removed on
    failure.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
