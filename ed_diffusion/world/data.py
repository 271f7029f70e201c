"""A world split in memory: pixels, neutral captions, emotions and contents (the world is small)."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ed_common.emotions import parse_emotion
from ed_diffusion.world.dataset import WorldPaths
from ed_diffusion.world.train import WorldBatchData


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
