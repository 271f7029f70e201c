"""Training the world model on a CPU: VAE, text-only base model, adapter stages (SFT, DPO, negative VP)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ed_common.emotions import Emotion
from ed_diffusion.models.adapter import emotion_adapter_parameters
from ed_diffusion.training.losses import per_sample_mse
from ed_diffusion.training.objective import ErrorFn, NoisedBatch, ObjectiveOptions, step_loss
from ed_diffusion.world.captions import emotional_caption
from ed_diffusion.world.splits import WorldBatchData
from ed_diffusion.world_bench.model import (
    WorldModelConfig,
    build_codec,
    build_text_encoder,
    build_unet,
    train_scheduler,
)

StepFn = Callable[[int], None]  # called with the number of steps just done
AdapterStage = Literal["sft", "dpo", "dpo_neg_vp"]
_STAGE_CODE = {"codec": 1, "base": 2, "sft": 3, "dpo": 4, "dpo_neg_vp": 5, "eval": 6}


def _chunks(x: Tensor, size: int = 256) -> list[Tensor]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _gen(seed: int, stage: str, step: int) -> torch.Generator:
    """The generator of one step of one stage: every random draw of world training comes from one."""
    return torch.Generator().manual_seed((seed * 1_000_003 + _STAGE_CODE[stage]) * 1_000_033 + step)


def to_unit(pixels: np.ndarray) -> Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(images: Tensor) -> np.ndarray:
    """float ``[N, 3, H, W]`` in [-1, 1] -> uint8 ``[N, H, W, 3]``."""
    x = ((images.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def _adamw_cosine(params: Sequence[Tensor], lr: float, steps: int) -> tuple[Any, Any]:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _apply(loss: Tensor, opt: Any, sched: Any, clip: Sequence[Tensor] = ()) -> None:
    """One optimiser and schedule step on ``loss`` (gradient norm clipped to 1 over ``clip`` if given)."""
    loss.backward()  # type: ignore[no-untyped-call]
    if clip:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------- codec
def fit_codec(pixels: np.ndarray, cfg: WorldModelConfig) -> Any:
    """The pixel codec, ``scaling_factor`` = 1 / std of the folded train images (unit-variance latents)."""
    probe = build_codec(cfg)
    with torch.no_grad():
        z = torch.cat([probe.encode(c).latent_dist.mean for c in _chunks(to_unit(pixels[:1024]))])
    return build_codec(cfg, scaling_factor=float(1.0 / z.std()))


@torch.no_grad()
def encode_latents(vae: Any, pixels: np.ndarray) -> Tensor:
    """Scaled latent means of every image (the posterior mean: the data is encoded once, not per step)."""
    x = to_unit(pixels)
    z = torch.cat([vae.encode(c).latent_dist.mean for c in _chunks(x)])
    scaled: Tensor = z * vae.config.scaling_factor
    return scaled


@torch.no_grad()
def decode_latents(vae: Any, latents: Tensor) -> np.ndarray:
    """uint8 images of scaled latents."""
    return to_uint8(torch.cat([vae.decode(c / vae.config.scaling_factor).sample for c in _chunks(latents)]))


# ------------------------------------------------------------------------------------------- text cache
class TextCache:
    """Frozen text states per caption (computed once per distinct caption)."""

    def __init__(self, tokenizer: Any, text_encoder: Any) -> None:
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self._cache: dict[str, Tensor] = {}

    def __call__(self, captions: Sequence[str]) -> Tensor:
        """States ``[B, 77, d]`` of the captions."""
        missing = sorted({c for c in captions if c not in self._cache})
        if missing:
            with torch.no_grad():
                states = encode_text(self.tokenizer, self.text_encoder, missing)
            self._cache.update(zip(missing, states, strict=True))
        return torch.stack([self._cache[c] for c in captions])


def encode_text(tokenizer: Any, text_encoder: Any, captions: Sequence[str]) -> Tensor:
    """Per-token states ``[B, 77, d]``, padded as the pipeline pads."""
    ids = tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    states: Tensor = text_encoder(ids)[0]
    return states


# ------------------------------------------------------------------------------------------- base model
def pretrain_base(
    data: WorldBatchData,
    cfg: WorldModelConfig,
    tokenizer: Any,
    *,
    steps: int,
    seed: int,
    batch: int = 32,
    lr: float = 2e-3,
    caption_dropout: float = 0.1,
    emotion_dropout: float = 0.2,
    min_snr: float = 0.0,
    ema_decay: float = 0.999,
    on_step: StepFn | None = None,
) -> tuple[Any, Any]:
    """Train UNet and text encoder from scratch on emotional captions: the text-only baseline.

    Captions name content and emotion (``emotional_caption``); with ``emotion_dropout`` the emotion clause is
    left out (so content-only prompts are in distribution) and with ``caption_dropout`` the caption is empty
    (classifier-free guidance). The train split's shortcut (emotion tied to typical contents) is in the data.
    The loss is weighted by ``min_snr_weights`` (0, the default: unweighted v-loss, which measured far better
    than min-SNR-5 under zero terminal SNR, docs/world-bench.md) and the returned models are the exponential
    moving average of the trained ones (``ema_decay``; 0 = the last step's weights).
    """
    assert data.latents is not None
    torch.manual_seed(seed)
    unet, text_encoder = build_unet(cfg), build_text_encoder(cfg)
    ema = EMA([unet, text_encoder], ema_decay)
    scheduler = train_scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt, sched = _adamw_cosine(params, lr, steps)
    unet.train()
    text_encoder.train()
    for step in range(steps):
        gen = _gen(seed, "base", step)
        rows = torch.randint(0, len(data.captions), (batch,), generator=gen)
        u = torch.rand(batch, generator=gen)
        captions = []
        for r, ui in zip(rows.tolist(), u.tolist(), strict=True):
            c = data.captions[r]
            emotion = Emotion.from_index(int(data.emotions[r]))
            captions.append(
                ""
                if ui < caption_dropout
                else c
                if ui < caption_dropout + emotion_dropout
                else emotional_caption(c, emotion)
            )
        states = encode_text(tokenizer, text_encoder, captions)
        x0 = data.latents[rows]
        noisy, t, target = _noised(scheduler, x0, gen)
        pred = unet(noisy, t, encoder_hidden_states=states).sample
        loss = (min_snr_weights(scheduler, t, min_snr) * per_sample_mse(pred, target)).mean()
        _apply(loss, opt, sched, clip=params)
        ema.update(step)
        if on_step is not None:
            on_step(1)
    ema.copy_to()
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)  # type: ignore[no-untyped-call]
    return unet, text_encoder


def min_snr_weights(scheduler: Any, t: Tensor, gamma: float) -> Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023): ``min(SNR, γ) / SNR`` (ε) or ``/ (SNR + 1)`` (v); γ=0: 1.

    Low-noise (high-SNR) timesteps are down-weighted, high-noise ones keep weight 1: the timesteps' gradients
    conflict, and capping the easy low-noise ones lets the steps go to the layout and colour decided at high
    noise (the paper reports the same quality in several times fewer steps). Both forms weight the x0 error
    by ``min(SNR, γ)``; the divisor turns that into the prediction's own error.
    """
    if gamma <= 0:
        return torch.ones(t.shape, dtype=torch.float32)
    alpha = scheduler.alphas_cumprod.to(torch.float32)[t]
    snr = alpha / (1 - alpha).clamp(min=1e-12)
    capped = torch.clamp(snr, max=gamma)
    divisor = snr + 1 if scheduler.config.prediction_type == "v_prediction" else snr.clamp(min=1e-12)
    weights: Tensor = capped / divisor
    return weights


class EMA:
    """An exponential moving average of modules' parameters, warmed up as ``min(decay, (1+s)/(10+s))``.

    The warm-up lets the average follow the fast early changes instead of remembering the random start.
    """

    def __init__(self, modules: Sequence[torch.nn.Module], decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay {decay}; allowed: 0 <= decay < 1")
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    def update(self, step: int) -> None:
        """Move the average towards the current parameters (after optimiser step ``step``)."""
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params, strict=True):
                s.lerp_(p.detach(), 1.0 - d)

    def copy_to(self) -> None:
        """Put the averaged weights into the modules."""
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params, strict=True):
                p.copy_(s)


def _noised(scheduler: Any, x0: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(x_t, t, the regression target): the target is ε or, for v-prediction, v (``_target``)."""
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen)
    return scheduler.add_noise(x0, noise, t), t, _target(scheduler, x0, noise, t)


def _target(scheduler: Any, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        target: Tensor = scheduler.get_velocity(x0, noise, t)
        return target
    return noise


# ------------------------------------------------------------------------------------------- adapters
@dataclass(frozen=True)
class AdapterHyper:
    """Hyper-parameters of one adapter stage."""

    steps: int
    lr: float = 1e-3
    batch: int = 32
    beta: float = 500.0
    w_sft: float = 1.0  # SFT term kept in the DPO stages (regularises towards the data)
    w_neg_vp: float = 1.0  # weight of the negative-visual-prompt term in ``dpo_neg_vp``
    vp_dropout: float = 0.1
    emotion_dropout: float = 0.2


def adapter_state(unet: Any) -> list[Tensor]:
    """A copy of the adapter's weights (to start the DPO stages from SFT, and to switch systems).

    In ``emotion_adapter_parameters`` order: the projector and the visual key/value projections, which is
    exactly what ``train_adapter`` optimises (the UNet and text encoder stay frozen).
    """
    return [p.detach().clone() for p in emotion_adapter_parameters(unet)]


def load_adapter_state(unet: Any, state: list[Tensor]) -> None:
    """Put ``adapter_state`` weights back."""
    with torch.no_grad():
        for p, v in zip(emotion_adapter_parameters(unet), state, strict=True):
            p.copy_(v)


def stage_objective(stage: AdapterStage, hp: AdapterHyper) -> ObjectiveOptions:
    """The shared objective (``training.objective``) of one adapter stage.

    The world differs from ``emodir train`` only where its data path does: its pairs are drawn from the data
    in memory, so the DPO stages' SFT and negative-VP terms use the pair winners
    (``image_terms="pair_winners"``: one forward for every branch) rather than a batch of their own. The
    terms, the reference and how its pass is run are the same.
    """
    if stage == "sft":
        return ObjectiveOptions(w_sft=1.0)
    w_neg_vp = hp.w_neg_vp if stage == "dpo_neg_vp" else 0.0
    return ObjectiveOptions(
        w_sft=hp.w_sft, w_dpo=1.0, w_neg_vp=w_neg_vp, beta=hp.beta, image_terms="pair_winners"
    )


def train_adapter(
    stage: AdapterStage,
    unet: Any,
    data: WorldBatchData,
    text: TextCache,
    bank_tokens: Tensor,
    hp: AdapterHyper,
    *,
    seed: int,
    on_step: StepFn | None = None,
    rows_allowed: Tensor | None = None,
    check: Callable[[], float] | None = None,
    check_every: int = 0,
) -> list[dict[str, float]]:
    """Train the installed adapter for one stage; returns per-step metrics (``objective.step_loss``'s).

    With ``check`` (a held-out score, higher is better) the stage keeps its best state: ``check`` runs before
    the first step, every ``check_every`` steps and after the last, and the adapter ends with the weights
    that scored best, so a stage can at worst return where it started (early stopping). ``rows_allowed``
    (row indices) limits the rows a preference pair is drawn from (pairs held out of the preference set).

    - ``sft``: denoising loss with the image's own emotion visual prompt (dropped with ``vp_dropout``).
    - ``dpo``: image-pair Diffusion-DPO: winner = an image of emotion e, loser = an image of the same content
      with another emotion, both under e's caption and visual prompt, sharing noise and timestep, plus
      ``w_sft`` x SFT on the winners.
    - ``dpo_neg_vp``: ``dpo`` plus ``w_neg_vp`` x the negative-visual-prompt term: the winner image and
      caption denoised under its emotion's visual prompt (preferred) and a random other emotion's
      (dispreferred), the paper's full objective as we read it (``docs/design.md``).

    Args:
        bank_tokens: visual tokens per emotion ``[E, k, d_v]`` (the bank's retrieved clusters).
    """
    assert data.latents is not None
    scheduler = train_scheduler()
    params = emotion_adapter_parameters(unet)
    for p in params:
        p.requires_grad_(True)
    opt, sched = _adamw_cosine(params, hp.lr, hp.steps)
    objective = stage_objective(stage, hp)
    err = _error_fn(unet)
    by_content = _rows_by_content(data)
    history: list[dict[str, float]] = []
    pool = rows_allowed if rows_allowed is not None and stage != "sft" else torch.arange(len(data.captions))
    best = _Best(unet, check)
    for step in range(hp.steps):
        gen = _gen(seed, stage, step)
        if check_every and step % check_every == 0:
            best.consider(step)
        rows = pool[torch.randint(0, len(pool), (hp.batch,), generator=gen)]
        emotions = data.emotions[rows]
        keep_emotion = torch.rand(hp.batch, generator=gen) >= hp.emotion_dropout
        captions = [
            emotional_caption(data.captions[r], Emotion.from_index(int(e))) if k else data.captions[r]
            for r, e, k in zip(rows.tolist(), emotions.tolist(), keep_emotion.tolist(), strict=True)
        ]
        states = text(captions)
        pos = bank_tokens[emotions][:, None]  # [B, 1, k, d_v]
        if stage == "sft":
            keep = (torch.rand(hp.batch, generator=gen) >= hp.vp_dropout).float()[:, None, None, None]
            noisy, t, target = _noised(scheduler, data.latents[rows], gen)
            images = NoisedBatch(noisy, t, target, {"encoder_hidden_states": states}, pos * keep)
            loss, metrics = step_loss(objective, err, unet, images=images)
        else:
            # Winners (emotion e) and losers (same content, another emotion) share noise and t under e's
            # caption and visual prompt; the negative VP is a random other emotion's.
            losers = _losers(rows, data, by_content, gen)
            noise = torch.randn(data.latents[rows].shape, generator=gen)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (hp.batch,), generator=gen)
            x0 = torch.cat([data.latents[rows], data.latents[losers]])
            noisy = scheduler.add_noise(x0, _two(noise), _two(t))
            pairs = NoisedBatch(
                noisy,
                _two(t),
                _target(scheduler, x0, _two(noise), _two(t)),
                {"encoder_hidden_states": _two(states)},
                _two(pos),
            )
            negative = None
            if objective.w_neg_vp > 0:
                others = (emotions + torch.randint(1, len(Emotion), (hp.batch,), generator=gen)) % len(
                    Emotion
                )
                negative = bank_tokens[others][:, None]
            loss, metrics = step_loss(objective, err, unet, pairs=pairs, negative_vp=negative)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"world {stage} loss became {float(loss)} at step {step + 1}")
        _apply(loss, opt, sched, clip=params)
        history.append({"step": step + 1, **{k: float(v) for k, v in metrics.items()}})
        if on_step is not None:
            on_step(1)
    best.consider(hp.steps)
    best.restore()
    if best.scores:
        history.append({"step": hp.steps, "check_best_step": float(best.step), "check_best": best.score})
        history.extend({"step": s, "check": v} for s, v in best.scores)
    for p in params:
        p.requires_grad_(False)
    return history


class _Best:
    """The best-scoring adapter state seen so far (early stopping on a held-out check)."""

    def __init__(self, unet: Any, check: Callable[[], float] | None) -> None:
        self.unet, self.check = unet, check
        self.score, self.step = float("-inf"), 0
        self.state: list[Tensor] | None = None
        self.scores: list[tuple[int, float]] = []

    def consider(self, step: int) -> None:
        if self.check is None or any(s == step for s, _ in self.scores):
            return
        score = float(self.check())
        self.scores.append((step, score))
        if score > self.score:  # ties keep the earlier (less trained) state
            self.score, self.step, self.state = score, step, adapter_state(self.unet)

    def restore(self) -> None:
        if self.state is not None:
            load_adapter_state(self.unet, self.state)


def _two(x: Tensor) -> Tensor:
    return torch.cat([x, x])


def _error_fn(unet: Any) -> ErrorFn:
    """``objective.ErrorFn`` of the world's UNet (text states only: no SDXL conditioning)."""
    return lambda b: _err(unet, b.noisy, b.t, b.cond["encoder_hidden_states"], b.vp, b.target)


def _err(unet: Any, noisy: Tensor, t: Tensor, states: Tensor, tokens: Tensor, target: Tensor) -> Tensor:
    pred = unet(noisy, t, encoder_hidden_states=states, added_cond_kwargs={"image_embeds": [tokens]}).sample
    return per_sample_mse(pred, target)  # [B]


def _rows_by_content(data: WorldBatchData) -> dict[str, Tensor]:
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(data.contents):
        groups.setdefault(c, []).append(i)
    return {c: torch.tensor(v) for c, v in groups.items()}


def _losers(
    rows: Tensor, data: WorldBatchData, by_content: dict[str, Tensor], gen: torch.Generator
) -> Tensor:
    """Per winner: a random image of the same content whose emotion differs."""
    out = []
    for r in rows.tolist():
        same = by_content[data.contents[r]]
        other = same[data.emotions[same] != data.emotions[r]]
        pick = other if len(other) else same
        out.append(int(pick[int(torch.randint(0, len(pick), (1,), generator=gen))]))
    return torch.tensor(out)


@torch.no_grad()
def vp_preference(
    unet: Any, data: WorldBatchData, text: TextCache, bank_tokens: Tensor, *, seed: int, n: int = 256
) -> dict[str, float]:
    """How much better the model denoises an image with its own emotion's visual prompt than with another's.

    On ``n`` fixed rows (fixed noise, timesteps and negative emotions from ``seed``), returns the mean
    ``err(other VP) - err(own VP)`` (``vp_gap``, > 0 = the visual prompt is used for the emotion) and the
    fraction of rows where the own VP wins (``vp_win_rate``; 0.5 = ignored). The same numbers for every
    system, so SFT, DPO and DPO + negative VP are compared on one yardstick; on the test split the images
    are held out and the pairs unusual (rare in training, not absent).
    """
    assert data.latents is not None
    gen = _gen(seed, "eval", 0)
    scheduler = train_scheduler()
    rows = torch.randint(0, len(data.captions), (n,), generator=gen)
    emotions = data.emotions[rows]
    others = (emotions + torch.randint(1, len(Emotion), (n,), generator=gen)) % len(Emotion)
    noisy, t, target = _noised(scheduler, data.latents[rows], gen)
    captions = [
        emotional_caption(data.captions[r], Emotion.from_index(int(data.emotions[r]))) for r in rows.tolist()
    ]
    states = text(captions)
    gaps = []
    for sl in _chunks(torch.arange(n), 64):
        pos, neg = bank_tokens[emotions[sl]][:, None], bank_tokens[others[sl]][:, None]
        e_pos, e_neg = _err(
            unet, _two(noisy[sl]), _two(t[sl]), _two(states[sl]), torch.cat([pos, neg]), _two(target[sl])
        ).chunk(2)
        gaps.append(e_neg - e_pos)
    gap = torch.cat(gaps)
    return {"vp_gap": float(gap.mean()), "vp_win_rate": float((gap > 0).float().mean())}
