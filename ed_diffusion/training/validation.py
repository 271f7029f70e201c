"""Validation images during training: a fixed grid (prompts x emotions x seeds) rendered every N steps.

IP-Adapter's maintainers tell users that the loss does not say whether an adapter works: look at samples.
The grid is the same every time (fixed prompts, emotions, seeds and visual prompts), so grids of successive
steps can be compared; it is saved as ``<output_dir>/validation/step-NNNNNN.png`` and, with ``report_to =
"tensorboard"``, logged as an image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ed_common.atomic import write_bytes_atomic
from ed_diffusion.emotion_pipeline import call_with_tokens
from ed_diffusion.images import contact_sheet

VALIDATION_GUIDANCE = 5.0  # classifier-free guidance of validation images (the presets' own default)


def render_grid(
    pipe: Any,
    tokens: Sequence[torch.Tensor],
    prompts: Sequence[str],
    emotions: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int,
    res: int,
) -> tuple[Image.Image, list[Image.Image]]:
    """One row per (prompt, emotion), one column per seed; ``tokens[i]`` is row i's visual prompt ``[k, d]``.

    The pipeline's UNet is the one being trained (its adapter in place): evaluated without gradients, in
    eval mode, and put back in the mode it was in.
    """
    unet = pipe.unet
    was_training = unet.training
    pipe.set_progress_bar_config(disable=True)  # the trainer's own progress bar is on screen
    unet.eval()
    images: list[Image.Image] = []
    labels: list[str] = []
    try:
        rows = [(p, e) for p in prompts for e in emotions]
        for (prompt, emotion), pos in zip(rows, tokens, strict=True):
            pos = pos[None, None]  # [1, 1, k, d]; zeros: IP-Adapter's unconditional branch
            with torch.no_grad():
                out = call_with_tokens(
                    pipe,
                    prompt,
                    pos,
                    torch.zeros_like(pos),
                    seeds=seeds,
                    n=len(seeds),
                    guidance_scale=VALIDATION_GUIDANCE,
                    num_inference_steps=steps,
                    width=res,
                    height=res,
                )
            images += list(out.images)
            labels += [f"{emotion} s{s}" for s in seeds]
    finally:
        unet.train(was_training)
    return contact_sheet(images, labels, cols=len(seeds), min_side=64), images


def score_grid(classifier: Any, images: Sequence[Image.Image], emotions: Sequence[str]) -> dict[str, float]:
    """Emotion accuracy and mean probability of the target emotion over the grid's images.

    Args:
        classifier: an ``ed_diffusion.scoring`` emotion classifier (``probs(images)``: [n, 8], EmoSet order).
        images: the grid's images.
        emotions: each image's target emotion (a name).
    """
    from ed_common.emotions import parse_emotion

    probs = classifier.probs(list(images))  # [n, 8]
    targets = [parse_emotion(e).label_index for e in emotions]
    hits = [float(int(row.argmax()) == t) for row, t in zip(probs, targets, strict=True)]
    chosen = [float(row[t]) for row, t in zip(probs, targets, strict=True)]
    return {
        "emotion_acc": round(sum(hits) / len(hits), 6),
        "target_prob": round(sum(chosen) / len(chosen), 6),
    }


def save_grid(out_dir: Path, step: int, grid: Image.Image) -> Path:
    """``<out_dir>/validation/step-NNNNNN.png`` (atomic; a grid of the same step is replaced)."""
    target = out_dir / "validation" / f"step-{step:06d}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return write_bytes_atomic(target, buffer.getvalue())  # replaces: a resumed run re-renders its last step
