"""The small MC-Diffusion trained on the affective world: components built from configs, saved as a pipeline.

An SD 1.5-class ``StableDiffusionPipeline`` at 32 px: a VAE with one downsampling (32 px -> 16x16x4 latents),
a UNet whose highest resolution has no attention (self-attention over 256 tokens per image is what makes a
CPU step slow; the 8x8 level has self- and cross-attention), and the tiny CLIP text encoder of
``ed_diffusion.tiny_models`` (with whole-word tokens for the world's vocabulary) trained from scratch with
the UNet.
Saved with ``save_pretrained`` so the ``world`` preset loads it through the same ``from_pretrained`` path as
SD 1.5.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from transformers import CLIPTextModel, CLIPTokenizer

from ed_common.byte_alphabet import bytes_to_unicode
from ed_common.emotions import EMOTION_NAMES
from ed_diffusion.tiny_models import TEXT_HIDDEN, _text_config

# SD 1.5's noise schedule, so the world model samples with the same scheduler code as the real one.
SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
}


@dataclass(frozen=True)
class WorldModelConfig:
    """Shapes of the world model (defaults: ~1 M UNet parameters, a CPU step of batch 32 in ~0.3 s).

    Attributes:
        image_size: pixels per side (the world's images).
        vae_channels: VAE block widths; ``len - 1`` downsamplings.
        latent_channels: VAE latent channels.
        unet_channels: UNet block widths (first block without attention).
        text_hidden: text-encoder width = the UNet's cross-attention width.
    """

    image_size: int = 32
    vae_channels: tuple[int, ...] = (16, 32)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64)
    text_hidden: int = TEXT_HIDDEN

    @property
    def latent_size(self) -> int:
        """Latent pixels per side."""
        return int(self.image_size // 2 ** (len(self.vae_channels) - 1))

    def as_dict(self) -> dict[str, Any]:
        """JSON form (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def world_words() -> list[str]:
    """Every word of the world's captions and prompts: templates, contents, emotions and "feeling"."""
    from ed_diffusion.world.spec import WorldSpec

    spec = WorldSpec()
    words = {w for t in spec.caption_templates for w in t.replace("{content}", "").split()}
    return sorted(words | set(spec.contents) | set(EMOTION_NAMES) | {"feeling"})


def build_world_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer plus one BPE token per world word (merged left to right).

    The byte fallback keeps any prompt encodable; whole-word tokens let a text encoder trained from scratch on
    a CPU budget read "fear" as one symbol instead of composing it from four characters. Merges are added
    longest word first; every world word encodes to exactly one token (tested).
    """
    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
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
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]


def build_vae(cfg: WorldModelConfig) -> AutoencoderKL:
    """A small KL autoencoder; no mid-block attention (it would attend over every latent pixel)."""
    n = len(cfg.vae_channels)
    vae: AutoencoderKL = AutoencoderKL(
        block_out_channels=list(cfg.vae_channels),
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        latent_channels=cfg.latent_channels,
        norm_num_groups=8,
        sample_size=cfg.image_size,
        mid_block_add_attention=False,
    )
    return vae


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
    )
    return unet


def build_text_encoder(cfg: WorldModelConfig) -> CLIPTextModel:
    """The tiny CLIP text encoder over ``build_world_tokenizer``'s vocabulary, random weights."""
    config = _text_config(len(build_world_tokenizer()))
    config.hidden_size = cfg.text_hidden
    return CLIPTextModel(config)


def train_scheduler() -> Any:
    """The training noise schedule (``DDPMScheduler``)."""
    return DDPMScheduler(**SCHEDULE)


def sample_scheduler() -> Any:
    """The sampling schedule (``DDIMScheduler``): the benchmark's sampler and the saved pipeline share it."""
    return DDIMScheduler(**SCHEDULE, set_alpha_to_one=False, steps_offset=1)


def assemble_pipeline(vae: AutoencoderKL, text_encoder: CLIPTextModel, unet: UNet2DConditionModel) -> Any:
    """A stock ``StableDiffusionPipeline`` around the trained parts (DDIM sampling)."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_world_tokenizer(),
        unet=unet,
        scheduler=sample_scheduler(),
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        image_encoder=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    )


def save_pretrained_atomic(model: Any, target: Path) -> Path:
    """``model.save_pretrained`` (safetensors) into ``target``, replacing it.

    Written to a temporary sibling and renamed, so a crash leaves the previous directory (or none), never half
    of one; the temporary directory is removed on failure.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
