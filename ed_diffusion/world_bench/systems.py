"""One seed of the world benchmark: train the four systems, sample them on identical noise, score them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ed_common.emotions import EMOTION_NAMES, Emotion
from ed_diffusion.world.dataset import WorldPaths
from ed_diffusion.world_bench.layout import ADAPTER_FILES, BANK_FILE, ENCODERS_DIR, PIPELINE_DIR, SYSTEMS
from ed_diffusion.world_bench.metrics import (
    check_pairs,
    eval_pairs,
    held_out_pairs,
    image_outcomes,
    metrics_by_split,
    score_targets,
)


def train_systems(
    seed: int, cfg: Any, world: WorldPaths, base_dir: Path, seed_dir: Path, relay: Any
) -> dict[str, Any]:
    """Train, sample and score every system of ``seed`` on the shared base; the weights land in ``seed_dir``.

    Returns:
        ``{"seed", "systems": {system: {"unusual": metrics, "typical": metrics}}, "training", "timings_s"}``.
    """
    from diffusers import StableDiffusionPipeline

    from ed_diffusion.adapter_file import save_adapter
    from ed_diffusion.encoders import FeatureEncoders, ensure_tiny_encoders_dir
    from ed_diffusion.models.adapter import install_emotion_adapter, set_emotion_scale
    from ed_diffusion.models.projector import EmotionTokenProjector, EmotionTokenProjectorConfig
    from ed_diffusion.world.captions import emotional_caption
    from ed_diffusion.world.splits import load_split
    from ed_diffusion.world_bench.model import copy_dir_atomic
    from ed_diffusion.world_bench.sampling import build_world_bank, sample_images
    from ed_diffusion.world_bench.train import (
        AdapterHyper,
        AdapterStage,
        TextCache,
        adapter_state,
        encode_latents,
        load_adapter_state,
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
    base = StableDiffusionPipeline.from_pretrained(base_dir, local_files_only=True)  # type: ignore[no-untyped-call]
    vae, tokenizer = base.vae, base.tokenizer
    unet, text_encoder = base.unet.requires_grad_(False), base.text_encoder.requires_grad_(False)
    train.latents, test.latents = encode_latents(vae, train.pixels), encode_latents(vae, test.pixels)
    pipe_dir = seed_dir / PIPELINE_DIR
    if not (pipe_dir / "model_index.json").is_file():  # the seed's copy, so each seed dir is a whole model
        copy_dir_atomic(base_dir, pipe_dir)
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

    # Early stopping scores joint accuracy on pairs and noise the evaluation never draws with: another
    # caption template, its own noise seeds, and none of the held-out pairs.
    check_targets = check_pairs()
    check_prompts = [emotional_caption(f"a picture of a {c}", e) for c, e in check_targets]
    check_seeds = [seed * 100_003 + 50_000 + i for i in range(len(check_targets))]
    check_tokens = tokens[torch.tensor([e.label_index for _, e in check_targets])]

    def check() -> float:
        images = sample_images(
            unet,
            vae,
            text,
            check_prompts,
            check_tokens,
            seeds=check_seeds,
            steps=cfg.sample_steps,
            guidance=cfg.guidance,
        )
        return float(np.mean([s.emotion_ok and s.content_ok for s in score_targets(images, check_targets)]))

    held_out = set(held_out_pairs())
    allowed = torch.tensor(
        [
            i
            for i, (c, e) in enumerate(zip(train.contents, train.emotions.tolist(), strict=True))
            if (c, Emotion.from_index(int(e))) not in held_out
        ]
    )
    stop = {"check": check, "check_every": cfg.check_every} if cfg.check_every else {}

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
            **stop,
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
            rows_allowed=allowed,
            **stop,
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
        scores = score_targets(images, [(c, e) for c, e, _, _ in pairs])
        systems[system] = metrics_by_split(images, pairs, scores=scores) | {"images": image_outcomes(scores)}
        kept = [i for i, (c, e, split, _) in enumerate(pairs) if split == "unusual" and (c, e) in held_out]
        systems[system]["held_out"] = metrics_by_split(
            images[kept],
            [(c, e, "held_out", k) for c, e, _, k in (pairs[i] for i in kept)],
            scores=[scores[i] for i in kept],  # already read: not through the oracle twice
        )["held_out"]
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


def _curve(history: list[dict[str, float]]) -> dict[str, Any]:
    """Mean metrics over the first and the last tenth of a stage (does the objective move?), and the
    held-out checks of early stopping (each score, and the step whose weights the stage kept)."""
    checks = [r for r in history if "check" in r]
    kept = next((r for r in history if "check_best" in r), None)
    history = [r for r in history if "check" not in r and "check_best" not in r]
    k = max(1, len(history) // 10)
    keys = sorted({key for row in history for key in row if key != "step"})

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        return {key: round(float(np.mean([r[key] for r in rows if key in r])), 6) for key in keys}

    out: dict[str, Any] = {"first": mean(history[:k]), "last": mean(history[-k:])}
    out["steps"] = {"n": len(history)}
    if kept is not None:
        out["checks"] = {str(int(r["step"])): round(r["check"], 6) for r in checks}
        out["kept"] = {"step": kept["check_best_step"], "check": round(kept["check_best"], 6)}
    return out
