"""A world split in memory: pixels, neutral captions, emotions and contents (the world is small)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ed_common.emotions import parse_emotion
from ed_diffusion.world.dataset import WorldPaths


@dataclass
class WorldBatchData:
    """One split in memory.

    Attributes:
        pixels: uint8 ``[N, H, W, 3]``.
        captions: the neutral captions (content only).
        emotions: label indices ``[N]`` (EmoSet order).
        contents: content class per row.
        latents: scaled VAE latents ``[N, C, h, w]`` (set by the benchmark's ``encode_latents``).
    """

    pixels: np.ndarray
    captions: list[str]
    emotions: Tensor
    contents: list[str]
    latents: Tensor | None = None


def load_split(world: WorldPaths, split: Literal["train", "test"]) -> WorldBatchData:
    """Read every row and image of ``split`` (rows as ``make_world`` writes them)."""
    path = world.train_jsonl if split == "train" else world.test_jsonl
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    pixels = np.stack(
        [np.asarray(Image.open(path.parent / r["image"]).convert("RGB"), dtype=np.uint8) for r in rows]
    )
    return WorldBatchData(
        pixels=pixels,
        captions=[r["caption"] for r in rows],
        emotions=torch.tensor([parse_emotion(r["emotion"]).label_index for r in rows]),
        contents=[r["content"] for r in rows],
    )
