"""The ``tiny`` preset: every production path (from_pretrained, bank, adapter files) on random tiny weights.

Built once into the cache, in a temporary directory renamed into place, then always loaded from files:
a tiny SDXL-class pipeline, tiny CLIP text/vision encoders, a bank over a procedural toy dataset whose
emotions differ in palette, brightness and saturation, and a fresh (untrained) emotion adapter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

TINY_PRESET_VERSION = 2  # 2: the bank records its encoders relative to the preset folder
TINY_CLUSTERS = 4
TINY_TOKENS = 4


@dataclass(frozen=True)
class TinyPresetFiles:
    """Where the tiny preset's parts live."""

    root: Path
    pipeline: Path
    encoders: Path
    bank: Path
    adapter: Path


def _files(root: Path) -> TinyPresetFiles:
    # ensure_tiny_encoders_dir names its own sub-directory (it encodes the encoder config in the name).
    found = sorted((root / "encoders").glob("tiny-encoders-*"))
    encoders = found[0] if found else root / "encoders"
    return TinyPresetFiles(
        root, root / "tiny-sdxl", encoders, root / "bank.safetensors", root / "adapter.safetensors"
    )


def ensure_tiny_preset(root: Path, on_progress: Callable[[str], None] | None = None) -> TinyPresetFiles:
    """Return the tiny preset's files under ``root/v<version>``, building them first if needed."""
    final = root / f"v{TINY_PRESET_VERSION}"
    if (final / "READY").is_file():
        return _files(final)
    if on_progress is not None:
        on_progress("building the tiny preset once (random tiny SDXL, encoders, toy bank, adapter)")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        _build(tmp)
        (tmp / "READY").write_text("ok\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "READY").is_file():  # not a concurrent build that won the race
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return _files(final)


def _build(root: Path) -> None:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from ed_common.emotions import EMOTION_NAMES
    from ed_diffusion.adapter_file import save_adapter
    from ed_diffusion.bank import build_bank
    from ed_diffusion.emotion_datasets import load_jsonl_dataset, make_toy_dataset
    from ed_diffusion.encoders import FeatureEncoders, ensure_tiny_encoders_dir
    from ed_diffusion.models.adapter import install_emotion_adapter
    from ed_diffusion.models.projector import EmotionTokenProjector, EmotionTokenProjectorConfig
    from ed_diffusion.tiny_models import ensure_tiny_pipeline_dir

    files = _files(root)
    ensure_tiny_pipeline_dir(root, "sdxl")  # -> files.pipeline
    enc_dir = ensure_tiny_encoders_dir(files.encoders)
    encoders = FeatureEncoders.from_pretrained(enc_dir / "text", enc_dir / "image", kind="clip")
    jsonl = make_toy_dataset(root / "toy", n_per_emotion=3 * TINY_CLUSTERS, seed=0)
    samples, _summary = load_jsonl_dataset(jsonl)
    bank = build_bank(samples, encoders, clusters=TINY_CLUSTERS, seed=0)
    # Encoder paths relative to the preset folder: it is built in a temporary folder and renamed, so absolute
    # ones would name a folder that no longer exists (VisualPromptBank.load resolves them beside the bank).
    relative = enc_dir.relative_to(root)
    bank.metadata = replace(
        bank.metadata, text_encoder=str(relative / "text"), image_encoder=str(relative / "image")
    )
    bank.save(files.bank)
    pipe = StableDiffusionXLPipeline.from_pretrained(files.pipeline, local_files_only=True)  # type: ignore[no-untyped-call]
    config = EmotionTokenProjectorConfig(in_dim=encoders.d_v, out_dim=pipe.unet.config.cross_attention_dim)
    torch.manual_seed(0)  # the fresh projector's weights are part of the preset: make them reproducible
    install_emotion_adapter(pipe.unet, EmotionTokenProjector(config), num_tokens=TINY_TOKENS)
    save_adapter(files.adapter, pipe.unet, config, TINY_TOKENS, {"preset": "tiny"}, emotions=EMOTION_NAMES)
