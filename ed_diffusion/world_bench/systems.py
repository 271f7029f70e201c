"""One seed of the world benchmark: train the four systems, sample them on identical noise, score them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ed_common.emotions import EMOTION_NAMES
from ed_diffusion.world.dataset import WorldPaths
from ed_diffusion.world_bench.layout import ADAPTER_FILES, BANK_FILE, ENCODERS_DIR, PIPELINE_DIR, SYSTEMS
from ed_diffusion.world_bench.metrics import eval_pairs, metrics_by_split


def train_systems(
    seed: int, cfg: Any, world: WorldPaths, vae_dir: Path, seed_dir: Path, relay: Any
) -> dict[str, Any]:
    """Train, sample and score every system of ``seed``; the weights land in ``seed_dir``.

    Returns:
        ``{"seed", "systems": {system: {"unusual": metrics, "typical": metrics}}, "training", "timings_s"}``.
    """
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    from ed_diffusion.adapter_file import save_adapter
    from ed_diffusion.encoders import FeatureEncoders, ensure_tiny_encoders_dir
    from ed_diffusion.models.adapter import install_emotion_adapter, set_emotion_scale
    from ed_diffusion.models.projector import EmotionTokenProjector, EmotionTokenProjectorConfig
    from ed_diffusion.world.splits import load_split
    from ed_diffusion.world_bench.model import (
        WorldModelConfig,
        assemble_pipeline,
        build_world_tokenizer,
        save_pretrained_atomic,
    )
    from ed_diffusion.world_bench.sampling import build_world_bank, sample_images
    from ed_diffusion.world_bench.train import (
        AdapterHyper,
        AdapterStage,
        TextCache,
        adapter_state,
        emotional_caption,
        encode_latents,
        load_adapter_state,
        pretrain_base,
        train_adapter,
        vp_preference,
    )

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    def stepper(stage: str) -> Any:
        return lambda n: relay(n, f"seed {seed}: {stage}")

    train, test = load_split(world, "train"), load_split(world, "test")
    vae = AutoencoderKL.from_pretrained(vae_dir)
    vae.eval().requires_grad_(False)
    train.latents, test.latents = encode_latents(vae, train.pixels), encode_latents(vae, test.pixels)
    tokenizer = build_world_tokenizer()
    mcfg = WorldModelConfig()
    pipe_dir = seed_dir / PIPELINE_DIR
    if (pipe_dir / "model_index.json").is_file():
        # A killed run left a finished base model: reuse it (the adapters are cheap to redo).
        from diffusers import StableDiffusionPipeline

        base = StableDiffusionPipeline.from_pretrained(pipe_dir, local_files_only=True)  # type: ignore[no-untyped-call]
        unet, text_encoder = base.unet.requires_grad_(False), base.text_encoder.requires_grad_(False)
        relay(cfg.base_steps, f"seed {seed}: base model (reused)")
    else:
        unet, text_encoder = pretrain_base(
            train,
            mcfg,
            tokenizer,
            steps=cfg.base_steps,
            seed=seed,
            batch=cfg.batch,
            lr=cfg.base_lr,
            on_step=stepper("base model"),
        )
        save_pretrained_atomic(assemble_pipeline(vae, text_encoder, unet), pipe_dir)
    lap("base")
    enc_dir = ensure_tiny_encoders_dir(seed_dir.parent / ENCODERS_DIR)
    encoders = FeatureEncoders.from_pretrained(enc_dir / "text", enc_dir / "image")
    bank = build_world_bank(
        train, encoders, clusters=cfg.clusters, seed=seed, fingerprint=f"world-{cfg.world_seed}"
    )
    bank.save(seed_dir / BANK_FILE)
    tokens = bank.visual_centres  # [E, L, d_v]: k = L, so retrieval returns every cluster of the emotion
    proj_cfg = EmotionTokenProjectorConfig(in_dim=bank.d_v, out_dim=unet.config.cross_attention_dim)
    torch.manual_seed(seed)
    install_emotion_adapter(unet, EmotionTokenProjector(proj_cfg), num_tokens=cfg.clusters)
    text = TextCache(tokenizer, text_encoder)
    lap("bank")

    def hyper(steps: int, lr: float) -> AdapterHyper:
        return AdapterHyper(steps=steps, batch=cfg.batch, lr=lr, beta=cfg.beta)

    histories = {
        "vp_sft": train_adapter(
            "sft",
            unet,
            train,
            text,
            tokens,
            hyper(cfg.sft_steps, cfg.adapter_lr),
            seed=seed,
            on_step=stepper("VP SFT"),
        )
    }
    states = {"vp_sft": adapter_state(unet)}
    lap("sft")
    stages: tuple[tuple[str, AdapterStage], ...] = (("vp_dpo", "dpo"), ("vp_dpo_neg_vp", "dpo_neg_vp"))
    for system, stage in stages:
        load_adapter_state(unet, states["vp_sft"])
        histories[system] = train_adapter(
            stage,
            unet,
            train,
            text,
            tokens,
            hyper(cfg.dpo_steps, cfg.dpo_lr),
            seed=seed,
            on_step=stepper(stage.replace("_", " ")),
        )
        states[system] = adapter_state(unet)
        lap(stage)
    for system, state in states.items():
        load_adapter_state(unet, state)
        save_adapter(
            seed_dir / ADAPTER_FILES[system],
            unet,
            proj_cfg,
            cfg.clusters,
            {"system": system, "seed": seed},
            emotions=EMOTION_NAMES,
        )

    pairs = eval_pairs(cfg)
    prompts = [emotional_caption(f"a {c}", e) for c, e, _, _ in pairs]
    noise_seeds = [seed * 100_003 + i for i in range(len(pairs))]  # identical noise for every system
    eval_tokens = tokens[torch.tensor([e.label_index for _, e, _, _ in pairs])]
    systems: dict[str, Any] = {}
    for system in SYSTEMS:
        if system == "text_only":
            set_emotion_scale(unet, 0.0)  # bit-exact the base model; the tokens are ignored
            load_adapter_state(unet, states["vp_sft"])
        else:
            set_emotion_scale(unet, 1.0)
            load_adapter_state(unet, states[system])
        images = sample_images(
            unet,
            vae,
            text,
            prompts,
            eval_tokens,
            seeds=noise_seeds,
            steps=cfg.sample_steps,
            guidance=cfg.guidance,
        )
        np.savez_compressed(seed_dir / f"samples_{system}.npz", images=images)
        systems[system] = metrics_by_split(images, pairs)
        if system != "text_only":
            systems[system]["unusual"] |= vp_preference(unet, test, text, tokens, seed=seed)
        relay(1, f"seed {seed}: sampling")
    set_emotion_scale(unet, 1.0)
    lap("eval")
    return {
        "seed": seed,
        "systems": systems,
        "training": {name: _curve(h) for name, h in histories.items()},
        "eval_pairs": [[c, e.value, split, i] for c, e, split, i in pairs],
        "timings_s": timings,
    }


def _curve(history: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean metrics over the first and the last tenth of a stage (does the objective move?)."""
    k = max(1, len(history) // 10)
    keys = sorted({key for row in history for key in row if key != "step"})

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        return {key: round(float(np.mean([r[key] for r in rows if key in r])), 6) for key in keys}

    return {"first": mean(history[:k]), "last": mean(history[-k:]), "steps": {"n": len(history)}}
