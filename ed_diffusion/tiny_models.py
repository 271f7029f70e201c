"""Tiny random-weight SD 1.5- and SDXL-class pipelines, built from configs in code (no downloads).

Shapes follow ``docs/environment.md`` §5 (themselves diffusers' test shapes). Use them in tests and offline
smoke runs; :func:`ensure_tiny_pipeline_dir` saves them once so the production ``from_pretrained(dir,
local_files_only=True)`` path is the one exercised.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

# Concrete module paths: the package root's lazy/dummy-object imports hide the real classes from mypy.
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ed_common.byte_alphabet import bytes_to_unicode

TinyKind = Literal["sd15", "sdxl"]
TINY_KINDS: tuple[TinyKind, ...] = ("sd15", "sdxl")
TEXT_HIDDEN = 32  # text-encoder width; SD 1.5-class cross_attention_dim = 32, SDXL-class = 32 + 32
TINY_SEED = 0  # seed of the weights ensure_tiny_pipeline_dir saves


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer needing no files: 2 specials, 256 bytes, 256 end-of-word bytes, no merges.

    Returns:
        A 514-token ``CLIPTokenizer`` with ``model_max_length`` 77.
    """
    return CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77)


def byte_vocab() -> dict[str, int]:
    """CLIP's two specials, every byte, every end-of-word byte: the byte fallback of our tokenizers."""
    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    return vocab


def _text_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        projection_dim=32,
        max_position_embeddings=77,
    )


def _vae() -> AutoencoderKL:
    vae: AutoencoderKL = AutoencoderKL(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    return vae


def build_tiny_sd15_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """An SD 1.5-class pipeline with random weights (``cross_attention_dim`` 32), deterministic for ``seed``.

    The global torch RNG is left as it was.

    Args:
        seed: Seed of the weight initialisation.

    Returns:
        The pipeline on CPU in float32, without safety checker, feature extractor or image encoder.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_tiny_tokenizer()
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN,
            norm_num_groups=32,
            attention_head_dim=4,
        )
        vae = _vae()
        text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    # SD 1.5's own scheduler settings, so the tiny run takes the same code path as the real one.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        # diffusers annotates these optional components as required.
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        image_encoder=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    )


def build_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """An SDXL-class pipeline with random weights (``cross_attention_dim`` 64 = 32 + 32), seeded by ``seed``.

    Two text encoders (the second with a 32-d projection, the pooled embedding), tuple ``attention_head_dim``
    and ``transformer_layers_per_block`` as in SDXL. The global torch RNG is left as it was.

    Args:
        seed: Seed of the weight initialisation.

    Returns:
        The pipeline on CPU in float32, without image encoder, feature extractor or watermarker.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_tiny_tokenizer()
        addition_time_embed_dim = 8
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=addition_time_embed_dim,
            transformer_layers_per_block=(1, 2),
            # 6 micro-conditioning ids (sizes, crop, target) embedded each, plus the pooled text embedding.
            projection_class_embeddings_input_dim=6 * addition_time_embed_dim + 32,
            cross_attention_dim=2 * TEXT_HIDDEN,
            norm_num_groups=32,
        )
        vae = _vae()
        text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(len(tokenizer)))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        image_encoder=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        add_watermarker=False,
    )


def ensure_tiny_pipeline_dir(root: Path, kind: TinyKind) -> Path:
    """Save the tiny pipeline of ``kind`` (seed 0) under ``root/tiny-<kind>`` once, and return that directory.

    The directory is written to a temporary sibling and renamed into place, so a crash or a concurrent caller
    never leaves a half-written pipeline behind. Load it with ``from_pretrained(dir, local_files_only=True)``.

    Args:
        root: Parent directory (created if missing).
        kind: ``"sd15"`` or ``"sdxl"``.

    Returns:
        ``root / f"tiny-{kind}"``.

    Raises:
        ValueError: ``kind`` is not one of ``TINY_KINDS``.
    """
    if kind not in TINY_KINDS:
        raise ValueError(f"kind must be one of {TINY_KINDS}, got {kind!r}")
    root = Path(root)
    target = root / f"tiny-{kind}"
    if (target / "model_index.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_sd15_pipeline(TINY_SEED) if kind == "sd15" else build_tiny_sdxl_pipeline(TINY_SEED)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tiny-{kind}-"))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race; its directory is complete because it was renamed into place too.
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
