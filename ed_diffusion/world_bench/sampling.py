"""Batched DDIM sampling of the world model and its visual-prompt bank.

``sample_images`` runs the same maths as ``StableDiffusionPipeline`` with ``ip_adapter_image_embeds``
(classifier-free guidance over [empty caption + zero visual tokens] vs [prompt + visual tokens], DDIM with SD
1.5's schedule), batched over different prompts and visual prompts, which the stock pipeline cannot do in one
call. Every image's start noise comes from its own seed, so systems are compared on identical noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ed_common.emotions import EMOTION_NAMES, Emotion
from ed_diffusion.bank import BankMetadata, VisualPromptBank, cluster_centres
from ed_diffusion.world.splits import WorldBatchData
from ed_diffusion.world.style import style_features
from ed_diffusion.world_bench.model import sample_scheduler
from ed_diffusion.world_bench.train import TextCache, decode_latents

STYLE_ENCODER_ID = "emodir-world-style-v1"


@torch.no_grad()
def sample_images(
    unet: Any,
    vae: Any,
    text: TextCache,
    prompts: Sequence[str],
    tokens: Tensor | None,
    *,
    seeds: Sequence[int],
    steps: int = 25,
    guidance: float = 3.0,
    batch: int = 64,
) -> np.ndarray:
    """uint8 images ``[N, H, W, 3]`` for ``prompts`` (and visual tokens ``[N, k, d_v]``, or None = text only).

    Text-only sampling needs a UNet without an adapter or one whose emotion scale is 0.
    """
    if len(prompts) != len(seeds) or (tokens is not None and len(tokens) != len(prompts)):
        raise ValueError("prompts, seeds and tokens must have the same length")
    out = []
    for start in range(0, len(prompts), batch):
        sl = slice(start, start + batch)
        p, s = list(prompts[sl]), list(seeds[sl])
        b = len(p)
        sched = sample_scheduler()
        sched.set_timesteps(steps)
        shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        lat = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(x)) for x in s])
        lat = lat * sched.init_noise_sigma
        states = torch.cat([text([""] * b), text(p)])
        added = None
        if tokens is not None:
            vt = tokens[sl][:, None]  # [b, 1, k, d_v]
            added = {"image_embeds": [torch.cat([torch.zeros_like(vt), vt])]}
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([lat, lat]), t)
            eps = unet(inp, t, encoder_hidden_states=states, added_cond_kwargs=added).sample
            e_u, e_c = eps.chunk(2)
            lat = sched.step(e_u + guidance * (e_c - e_u), t, lat).prev_sample
        out.append(decode_latents(vae, lat))
    return np.concatenate(out)


def build_world_bank(
    data: WorldBatchData, encoders: Any, *, clusters: int, seed: int, fingerprint: str
) -> VisualPromptBank:
    """Per emotion, K-means over the captions' CLIP text features; visual centre = mean style features.

    ``encoders`` gives the text side (the retrieval encoder the ``world`` preset loads at render time); the
    image side is ``style_features`` (see ``world/style.py`` for why).
    """
    text = torch.nn.functional.normalize(encoders.encode_text(data.captions), dim=-1)  # [N, d_t]
    style = style_features(data.pixels)  # [N, d_v]
    d_t, d_v = text.shape[1], style.shape[1]
    # Captions repeat (templates x contents), so members share features; kmeans refills empty clusters.
    groups = {e: torch.nonzero(data.emotions == e.label_index).flatten() for e in Emotion}
    text_c, visual_c, counts = cluster_centres(text, style, groups, clusters=clusters, seed=seed)
    meta = BankMetadata(
        emotions=EMOTION_NAMES,
        clusters=clusters,
        d_t=d_t,
        d_v=d_v,
        text_encoder=encoders.text_id,
        image_encoder=STYLE_ENCODER_ID,
        image_kind="clip",
        dataset_fingerprint=fingerprint,
        num_samples=len(data.captions),
        seed=seed,
        max_iter=100,
    )
    return VisualPromptBank(text_c, visual_c, counts, meta)
