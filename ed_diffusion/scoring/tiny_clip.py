"""A random-weight tiny CLIP built from a config: the offline stand-in for a real CLIP (no semantics).

``save_tiny_clip`` writes it like a real checkpoint, so tests and offline runs exercise the production
``ClipBundle.from_pretrained`` path (``environment.md`` §5: no model can be downloaded here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ed_common.errors import InvalidInputError
from ed_diffusion.scoring.clip_models import ClipBundle


def build_tiny_clip(seed: int = 0, dim: int = 32) -> ClipBundle:
    """A random-weight tiny ``CLIPModel`` for 32×32 images, built from a config (no files, no hub).

    Its embeds carry no semantics: it exercises the plumbing only. The global torch RNG is left untouched.

    Args:
        seed: weight seed; the same seed gives bit-identical weights.
        dim: joint embedding size (``projection_dim``).
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from ed_diffusion.tiny_models import build_tiny_tokenizer

    if dim < 1:
        raise InvalidInputError(f"tiny CLIP dim must be >= 1, got {dim}")
    tokenizer = build_tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 4,
        },
        projection_dim=dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    # Without torchvision this falls back to the PIL processor (environment.md §2), which is fine here.
    processor = CLIPImageProcessor(size=32, crop_size=32)
    return ClipBundle(model, tokenizer, processor, source=f"tiny-random-clip(seed={seed},dim={dim})")


def save_tiny_clip(path: str | os.PathLike[str], *, seed: int = 0, dim: int = 32) -> Path:
    """Save ``build_tiny_clip(seed, dim)`` (model, tokenizer, processor) to ``path`` and return it.

    Load it back with ``ClipBundle.from_pretrained(path)``, the production path.
    """
    out = Path(path).expanduser()
    bundle = build_tiny_clip(seed=seed, dim=dim)
    m: Any = bundle.model
    m.save_pretrained(out)
    bundle.tokenizer.save_pretrained(out)
    bundle.image_processor.save_pretrained(out)
    return out
