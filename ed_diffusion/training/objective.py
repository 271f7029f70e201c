"""The per-step training objective of every trainer: its terms, their weights, and the reference pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from ed_diffusion.models.adapter import frozen_adapter_mode, reference_mode
from ed_diffusion.training.config import DPOTrainConfig, TrainConfig
from ed_diffusion.training.losses import (
    LossOutput,
    combined_loss,
    diffusion_dpo_loss,
    negative_vp_dpo_loss,
)

_T = TypeVar("_T")

Reference = Literal["adapters_off", "frozen_adapter"]
"""The DPO reference: the UNet with its adapters off, or with a frozen copy of the adapter (e.g. SFT's)."""
ImageTerms = Literal["own_batch", "pair_winners"]
"""Where the single-image terms (SFT, negative VP) get their images; see ``ObjectiveOptions.image_terms``."""


@dataclass(frozen=True)
class NoisedBatch:
    """Rows ready for one denoising forward: what the UNet reads, and what its prediction is scored against.

    Attributes:
        noisy: the noised latents x_t, ``[B, C, h, w]``.
        t: the timesteps, ``[B]``.
        target: the regression target (ε, or v for v-prediction), ``[B, C, h, w]``.
        cond: the text conditioning, each ``[B, ...]``: ``encoder_hidden_states`` and, for SDXL,
            ``text_embeds`` and ``time_ids``.
        vp: the visual-prompt tokens, ``[B, 1, k, d_v]``.
    """

    noisy: Tensor
    t: Tensor
    target: Tensor
    cond: Mapping[str, Tensor]
    vp: Tensor

    def __len__(self) -> int:
        return int(self.noisy.shape[0])

    def with_vp(self, vp: Tensor) -> NoisedBatch:
        """The same rows under other visual-prompt tokens."""
        return replace(self, vp=vp)

    def head(self, n: int) -> NoisedBatch:
        """The first ``n`` rows (of a pair batch: its winners)."""
        return NoisedBatch(
            self.noisy[:n], self.t[:n], self.target[:n], {k: v[:n] for k, v in self.cond.items()}, self.vp[:n]
        )


def cat_batches(batches: Sequence[NoisedBatch]) -> NoisedBatch:
    """The rows of ``batches`` in order, as one batch (one forward for every branch)."""
    if len(batches) == 1:
        return batches[0]
    return NoisedBatch(
        torch.cat([b.noisy for b in batches]),
        torch.cat([b.t for b in batches]),
        torch.cat([b.target for b in batches]),
        {k: torch.cat([b.cond[k] for b in batches]) for k in batches[0].cond},
        torch.cat([b.vp for b in batches]),
    )


ErrorFn = Callable[[NoisedBatch], Tensor]
"""One UNet forward over a batch, returning each row's error ``[B]`` (``losses.per_sample_mse``)."""


@dataclass(frozen=True)
class ObjectiveOptions:
    """What one training step optimises: ``w_sft·L_sft + w_dpo·L_dpo + w_neg_vp·L_neg_vp``.

    Every DPO term is measured against the reference model on exactly the inputs of its trained forward:
    the same UNet with its adapters off (emotion scale 0, LoRA off if ``lora``), without gradient, run once
    over that forward's rows. So the negative-VP term gets ``ref⁺`` and ``ref⁻`` from the image under both
    visual prompts, as its formula reads (``docs/design.md``, "One training objective").

    Attributes:
        w_sft: weight of the denoising loss on the images under their own emotion's visual prompt.
        w_dpo: weight of image-pair Diffusion-DPO (winner vs loser under one caption and visual prompt).
        w_neg_vp: weight of DPO with a negative visual prompt (the image under its own emotion's visual
            prompt, preferred, vs under another emotion's).
        beta: the DPO strength, > 0; needed only when ``w_dpo`` or ``w_neg_vp`` is > 0.
        lora: the reference also switches LoRA layers off (a run that trains LoRA).
        reference: ``"adapters_off"`` (default; no second copy of anything, but the reference never sees a
            visual prompt, so the negative-VP term's ``ref⁺ = ref⁻``) or ``"frozen_adapter"``: the adapter
            swapped for a frozen copy given to ``step_loss`` (the stage's starting adapter, e.g. SFT's), so
            both DPO terms are measured against a model that reads the visual prompt. Its cost is one copy of
            the adapter's weights.
        image_terms: where the SFT and negative-VP terms get their images. ``"own_batch"`` (``emodir
            train``): a batch of their own, since pairs may come from a file whose images are not the
            training data; that batch runs in one forward, the pairs in another. ``"pair_winners"`` (the
            world benchmark): the pair batch's winners, which are data rows already when pairs are drawn from
            the data in memory; winners, losers and winners under the negative visual prompt then share ONE
            forward (and one reference pass), which keeps the benchmark's CPU cost down.

    A term whose weight is 0 is not computed, and its inputs may be absent.

    Raises:
        ValueError: a weight that is not a finite number >= 0, every weight 0, or a DPO term without a finite
            ``beta`` > 0.
    """

    w_sft: float = 0.0
    w_dpo: float = 0.0
    w_neg_vp: float = 0.0
    beta: float | None = None
    lora: bool = False
    image_terms: ImageTerms = "own_batch"
    reference: Reference = "adapters_off"

    def __post_init__(self) -> None:
        """Refuse weights and a beta that no step could use."""
        for name in ("w_sft", "w_dpo", "w_neg_vp"):
            weight = getattr(self, name)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}")
            if weight < 0:
                raise ValueError(f"{name} must be >= 0, got {weight}")
        if not any(self.weights().values()):
            raise ValueError("every loss weight is 0 (w_sft, w_dpo, w_neg_vp); at least one must be > 0")
        if self.w_dpo > 0 or self.w_neg_vp > 0:
            b = self.beta
            if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b) or b <= 0:
                raise ValueError(f"beta must be a finite number > 0 when a DPO term is weighted, got {b!r}")
        if self.image_terms not in ("own_batch", "pair_winners"):
            raise ValueError(f"image_terms {self.image_terms!r}; allowed: 'own_batch', 'pair_winners'")
        if self.reference not in ("adapters_off", "frozen_adapter"):
            raise ValueError(f"reference {self.reference!r}; allowed: 'adapters_off', 'frozen_adapter'")
        if self.reference == "frozen_adapter" and self.lora:
            raise ValueError(
                "reference 'frozen_adapter' freezes the emotion adapter only; with LoRA use 'adapters_off'"
            )

    def weights(self) -> dict[str, float]:
        """Term name (``losses.TERM_NAMES``) -> weight, every term."""
        return {"sft": self.w_sft, "dpo": self.w_dpo, "neg_vp": self.w_neg_vp}

    @property
    def dpo_beta(self) -> float:
        """``beta`` where a DPO term needs it (checked at construction)."""
        if self.beta is None:
            raise ValueError("no beta: this objective weights no DPO term")
        return float(self.beta)


def train_objective(cfg: TrainConfig) -> ObjectiveOptions:
    """The objective of ``emodir train``: SFT alone for an SFT config, the config's weights for a DPO one."""
    lora = cfg.lora_rank > 0
    if isinstance(cfg, DPOTrainConfig):
        return ObjectiveOptions(
            w_sft=cfg.w_sft,
            w_dpo=cfg.w_dpo,
            w_neg_vp=cfg.w_neg_vp,
            beta=cfg.beta,
            lora=lora,
            reference="frozen_adapter" if cfg.reference == "initial_adapter" else "adapters_off",
        )
    return ObjectiveOptions(w_sft=1.0, lora=lora)


def step_loss(
    options: ObjectiveOptions,
    err: ErrorFn,
    unet: Any,
    *,
    images: NoisedBatch | None = None,
    negative_vp: Tensor | None = None,
    pairs: NoisedBatch | None = None,
    frozen: list[Tensor] | None = None,
) -> LossOutput:
    """One training step's loss and metrics (``losses.combined_loss``: ``loss``, ``<term>/<metric>``).

    The caller draws the batches (rows, noise, timesteps, visual-prompt dropout, the negative emotion); this
    decides which forwards run, on which rows, and against which reference.

    Args:
        options: the terms, weights, reference and image source.
        err: one trained forward (``ErrorFn``); the reference pass calls it too, under ``reference_mode``.
        unet: the UNet whose adapters ``reference_mode`` switches off (unwrapped, if ``err`` runs a wrapper).
        images: the single-image terms' rows under their own emotion's visual prompt (``"own_batch"``; for the
            SFT term, with any visual-prompt dropout already applied).
        negative_vp: the dispreferred visual-prompt tokens ``[B, 1, k, d_v]`` for the negative-VP term's
            images (``images``, or the pair winners).
        pairs: ``2B`` rows, winners first: row ``i`` and ``B + i`` are one pair, sharing noise and timestep,
            both under the winner's caption and visual prompt.
        frozen: the reference adapter's weights (``reference="frozen_adapter"``), one tensor per
            ``emotion_adapter_parameters(unet)`` entry.

    Raises:
        ValueError: a weighted term's input is missing, or ``images`` is given with ``"pair_winners"``.
    """
    if options.reference == "frozen_adapter" and frozen is None:
        raise ValueError("reference 'frozen_adapter' needs `frozen`, the reference adapter's weights")

    def ref() -> Any:
        if options.reference == "frozen_adapter":
            return frozen_adapter_mode(unet, _required(frozen, "frozen"))
        return reference_mode(unet, options.lora)

    if options.image_terms == "pair_winners":
        terms = _pair_winner_terms(options, err, ref, images, negative_vp, pairs)
    else:
        terms = _own_batch_terms(options, err, ref, images, negative_vp, pairs)
    return combined_loss(terms, {name: w for name, w in options.weights().items() if w > 0})


def _own_batch_terms(
    o: ObjectiveOptions,
    err: ErrorFn,
    ref: Callable[[], Any],
    images: NoisedBatch | None,
    negative_vp: Tensor | None,
    pairs: NoisedBatch | None,
) -> dict[str, LossOutput]:
    terms: dict[str, LossOutput] = {}
    if o.w_sft > 0 or o.w_neg_vp > 0:
        if images is None:
            raise ValueError("the SFT and negative-VP terms need `images` (image_terms='own_batch')")
        parts = [images]
        if o.w_neg_vp > 0:
            parts.append(images.with_vp(_required(negative_vp, "negative_vp")))
        errs, refs = _forward(err, ref, parts, reference=o.w_neg_vp > 0)
        if o.w_sft > 0:
            terms["sft"] = _sft(errs[0])
        if refs is not None:
            terms["neg_vp"] = negative_vp_dpo_loss(errs[0], errs[1], refs[0], refs[1], o.dpo_beta)
    if o.w_dpo > 0:
        pair_rows = _required(pairs, "pairs")
        (pair_err,), pair_refs = _forward(err, ref, [pair_rows], reference=True)
        assert pair_refs is not None
        err_w, err_l = pair_err.chunk(2)
        ref_w, ref_l = pair_refs[0].chunk(2)
        terms["dpo"] = diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, o.dpo_beta)
    return terms


def _pair_winner_terms(
    o: ObjectiveOptions,
    err: ErrorFn,
    ref: Callable[[], Any],
    images: NoisedBatch | None,
    negative_vp: Tensor | None,
    pairs: NoisedBatch | None,
) -> dict[str, LossOutput]:
    if images is not None:
        raise ValueError("image_terms='pair_winners' takes its images from `pairs`; `images` must be None")
    pair_rows = _required(pairs, "pairs")
    b = len(pair_rows) // 2
    winners = pair_rows.head(b)
    parts = [pair_rows if o.w_dpo > 0 else winners]  # [winners | losers] or [winners]
    if o.w_neg_vp > 0:
        parts.append(winners.with_vp(_required(negative_vp, "negative_vp")))  # | winners under p_v⁻
    errs, refs = _forward(err, ref, parts, reference=o.w_dpo > 0 or o.w_neg_vp > 0)
    err_w = errs[0][:b]
    terms: dict[str, LossOutput] = {}
    if o.w_sft > 0:
        terms["sft"] = _sft(err_w)
    if refs is not None and o.w_dpo > 0:
        terms["dpo"] = diffusion_dpo_loss(err_w, errs[0][b:], refs[0][:b], refs[0][b:], o.dpo_beta)
    if refs is not None and o.w_neg_vp > 0:
        terms["neg_vp"] = negative_vp_dpo_loss(err_w, errs[1], refs[0][:b], refs[1], o.dpo_beta)
    return terms


def _forward(
    err: ErrorFn, ref: Callable[[], Any], parts: list[NoisedBatch], *, reference: bool
) -> tuple[list[Tensor], list[Tensor] | None]:
    """Per-row errors of ``parts`` from ONE trained forward and, if asked, of those rows' reference pass."""
    rows = cat_batches(parts)
    sizes = [len(p) for p in parts]
    errs = list(torch.split(err(rows), sizes))
    if not reference:
        return errs, None
    with ref():  # the reference model, no grad; the trained one is restored afterwards
        refs = list(torch.split(err(rows), sizes))
    return errs, refs


def _sft(err: Tensor) -> LossOutput:
    loss = err.mean()  # err is already the per-sample MSE, so this is ``losses.sft_loss`` without a re-reduce
    return loss, {"mse": loss.detach()}


def _required(value: _T | None, name: str) -> _T:
    if value is None:
        raise ValueError(f"a weighted term needs `{name}`, which was not given")
    return value
