"""The accelerate loop of ``emodir train sft|dpo``: setup, optimiser, each step's batches, resume."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ed_common.atomic import write_bytes_atomic
from ed_common.emotions import Emotion, parse_emotion
from ed_common.errors import EmodirError
from ed_diffusion.adapter_file import load_adapter
from ed_diffusion.bank import VisualPromptBank
from ed_diffusion.emotion_datasets import EmotionSample, load_emotion_dataset
from ed_diffusion.encoders import FeatureEncoders
from ed_diffusion.model_source import check_diffusers_model, load_diffusers_pipeline
from ed_diffusion.models.adapter import (
    emotion_adapter_parameters,
    emotion_attn_processors,
    get_emotion_projector,
    install_emotion_adapter,
    ip_linears,
)
from ed_diffusion.models.projector import EmotionTokenProjector, EmotionTokenProjectorConfig
from ed_diffusion.presets import resolve_preset
from ed_diffusion.training.checkpoints import (
    latest_checkpoint,
    load_weights,
    resume_latest,
    rotate,
    save_checkpoint,
    truncate_metrics,
)
from ed_diffusion.training.config import (
    TINY_PRESET,
    WORLD_PRESET,
    ConfigError,
    DPOTrainConfig,
    TrainConfig,
    save_config,
)
from ed_diffusion.training.datasets import (
    PreferencePair,
    PreferencePairs,
    SFTDataset,
    collate_pairs,
    collate_sft,
    load_preference_pairs,
)
from ed_diffusion.training.losses import per_sample_mse
from ed_diffusion.training.manifest import RunManifest, Status
from ed_diffusion.training.objective import NoisedBatch, step_loss, train_objective

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int, dict[str, float]], None]


class TrainingDivergedError(EmodirError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainResult:
    """Where a run ended and what it wrote."""

    output_dir: Path
    step: int
    last_checkpoint: Path | None
    metrics_file: Path
    losses: list[float]


# ------------------------------------------------------------------------------------------- model setup
@dataclass
class _Models:
    pipe: Any
    unet: Any
    vae: Any
    scheduler: Any
    is_xl: bool
    bank: VisualPromptBank
    bank_param: torch.nn.Parameter | None  # trainable visual centres [E, L, d_v], if train_bank
    forward: Any = None  # the UNet as accelerate prepared it (DDP-wrapped on several GPUs); None = unet


def _resolve_paths(cfg: TrainConfig, cache_dir: Path) -> tuple[str, str, str | None, str, str | None]:
    """(model dir, bank, adapter init, data, encoders dir) for the config."""
    if cfg.pretrained == TINY_PRESET:
        spec = resolve_preset("tiny", cache_dir)
        toy = Path(str(spec.bank)).parent / "toy" / "toy_emotions.jsonl"
        return (
            spec.model,
            cfg.bank or str(spec.bank),
            cfg.adapter_init or spec.adapter,
            cfg.data or str(toy),
            spec.encoders,
        )
    if cfg.pretrained == WORLD_PRESET:  # the shipped preset (or one `world bench` installed in the cache)
        spec = resolve_preset("world", cache_dir)
        if cfg.data is None:
            raise ConfigError("pretrained='world' needs `data` (e.g. `emodir world make`'s train.jsonl)")
        return (
            spec.model,
            cfg.bank or str(spec.bank),
            cfg.adapter_init or spec.adapter,
            cfg.data,
            spec.encoders,
        )
    if cfg.bank is None or cfg.data is None:
        raise ConfigError(f"pretrained={cfg.pretrained!r} needs `bank` and `data` (only 'tiny' has defaults)")
    return cfg.pretrained, cfg.bank, cfg.adapter_init, cfg.data, None


def check_inputs(cfg: TrainConfig, cache_dir: Path) -> None:
    """Refuse a config whose model, bank or data is not there, before any work (and any progress bar).

    Raises:
        ModelMissingError: ``pretrained`` is not a preset, a complete local directory or a cached hub id.
        ConfigError: a ``bank``, ``adapter_init``, ``data`` or ``pairs`` path that does not exist, or a bank
            with fewer clusters than ``num_tokens``.
        BankError: ``bank`` is not a readable bank file.
    """
    if cfg.pretrained not in (TINY_PRESET, WORLD_PRESET):
        check_diffusers_model(cfg.pretrained, "pretrained")
    if cfg.report_to == "tensorboard":
        import importlib.util

        if (
            importlib.util.find_spec("tensorboard") is None
            and importlib.util.find_spec("tensorboardX") is None
        ):
            raise ConfigError(
                "report_to = 'tensorboard' needs the tensorboard package: pip install tensorboard"
            )
    for name in ("bank", "adapter_init", "data", "pairs"):
        value = getattr(cfg, name, None)
        if value is not None and not Path(value).expanduser().exists():
            raise ConfigError(f"{name} {value!r} does not exist")
    if cfg.bank is not None:  # the tiny preset's own bank is checked where it is loaded
        _check_bank(cfg, VisualPromptBank.load(cfg.bank), cfg.bank)


def _check_bank(cfg: TrainConfig, bank: VisualPromptBank, path: str) -> None:
    """Refuse a bank that cannot give ``num_tokens`` visual-prompt tokens (its clusters per emotion)."""
    if cfg.num_tokens > bank.clusters:
        raise ConfigError(
            f"num_tokens = {cfg.num_tokens} but the bank {path} has {bank.clusters} clusters per emotion; "
            f"allowed: num_tokens <= {bank.clusters}, or a bank built with --clusters >= {cfg.num_tokens}"
        )


def _load_models(cfg: TrainConfig, model_dir: str, bank_path: str, adapter_init: str | None) -> _Models:
    from diffusers import DDPMScheduler, DiffusionPipeline

    pipe = load_diffusers_pipeline(DiffusionPipeline, model_dir, "pretrained")
    is_xl = type(pipe).__name__.startswith("StableDiffusionXL")
    for part in ("vae", "text_encoder", "text_encoder_2", "unet"):
        module = getattr(pipe, part, None)
        if module is not None:
            module.requires_grad_(False)
    unet = pipe.unet
    bank = VisualPromptBank.load(bank_path)
    _check_bank(cfg, bank, bank_path)
    if adapter_init is not None:
        info = load_adapter(adapter_init, unet)
        bank.check_compatible(info.projector_config.in_dim)
        if info.num_tokens != cfg.num_tokens:
            raise ConfigError(
                f"num_tokens={cfg.num_tokens} but the adapter {adapter_init} was made for {info.num_tokens}; "
                f"set num_tokens = {info.num_tokens} or start from a fresh adapter"
            )
    else:
        config = EmotionTokenProjectorConfig(in_dim=bank.d_v, out_dim=unet.config.cross_attention_dim)
        install_emotion_adapter(unet, EmotionTokenProjector(config), num_tokens=cfg.num_tokens)
    if cfg.lora_rank > 0:
        from peft import LoraConfig

        unet.add_adapter(
            LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha or cfg.lora_rank,
                init_lora_weights="gaussian",
                target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            )
        )
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    bank_param = torch.nn.Parameter(bank.visual_centres.clone()) if cfg.train_bank else None
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # type: ignore[no-untyped-call]
    return _Models(pipe, unet, pipe.vae, scheduler, is_xl, bank, bank_param)


def _trainable(cfg: TrainConfig, m: _Models) -> list[torch.nn.Parameter]:

    params: list[torch.nn.Parameter] = []
    if cfg.train_projector:
        params += list(get_emotion_projector(m.unet).parameters())
    if cfg.train_ip_kv:
        for proc in emotion_attn_processors(m.unet).values():
            for linear in ip_linears(proc):
                params += list(linear.parameters())
    if cfg.lora_rank > 0:
        params += [p for n, p in m.unet.named_parameters() if "lora_" in n]
    if m.bank_param is not None:
        params.append(m.bank_param)
    for p in params:
        p.requires_grad_(True)
    return params


# ---------------------------------------------------------------------------------------- visual prompts
def _retrieve_indices(
    m: _Models,
    encoders_dir: str | None,
    samples: Sequence[tuple[str, Emotion]],
    k: int,
    negative: str,
    seed: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample: positive cluster indices [N, k], negative emotion [N] and its indices [N, k]."""

    meta = m.bank.metadata
    text_id, image_id = meta.text_encoder, meta.image_encoder
    if encoders_dir is not None:
        text_id, image_id = str(Path(encoders_dir) / "text"), str(Path(encoders_dir) / "image")
    enc = FeatureEncoders.from_pretrained(
        text_id, image_id, kind="dino" if meta.image_kind == "dino" else "clip"
    )
    queries = enc.encode_text([caption for caption, _ in samples])  # [N, d_t]
    pos, neg_e, neg = [], [], []
    rng = random.Random(seed)
    for q, (_, emotion) in zip(queries, samples, strict=True):
        pos.append(m.bank.retrieve(q, emotion, k=k).indices[0])
        if negative == "random":
            other = rng.choice([e for e in Emotion if e != emotion])
            hit = m.bank.retrieve(q, other, k=k)
            neg_e.append(other.label_index)
            neg.append(hit.indices[0])
        else:
            hit_n = m.bank.retrieve_negative(q, emotion, k=k, strategy=negative)  # type: ignore[arg-type]
            neg_e.append(hit_n.emotions[0].label_index)
            neg.append(hit_n.indices[0])
    return torch.stack(pos), torch.tensor(neg_e), torch.stack(neg)


def _tokens(m: _Models, emotions: Tensor, indices: Tensor) -> Tensor:
    """Visual tokens [B, 1, k, d_v] (through the trainable bank if there is one, so it gets gradients)."""
    centres = m.bank_param if m.bank_param is not None else m.bank.visual_centres  # [E, L, d_v]
    return centres[emotions[:, None], indices][:, None]  # [B, 1, k, d_v]


# ------------------------------------------------------------------------------------------- one step
def _encode(
    m: _Models, captions: list[str], sizes: Tensor, crops: Tensor, res: int, device: Any
) -> dict[str, Any]:
    with torch.no_grad():
        if m.is_xl:
            embeds, _, pooled, _ = m.pipe.encode_prompt(
                captions, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            proj_dim = m.pipe.text_encoder_2.config.projection_dim
            time_ids = torch.stack(
                [
                    m.pipe._get_add_time_ids(
                        tuple(s.tolist()),
                        tuple(c.tolist()),
                        (res, res),
                        dtype=embeds.dtype,
                        text_encoder_projection_dim=proj_dim,
                    )[0]
                    for s, c in zip(sizes, crops, strict=True)
                ]
            ).to(device)  # [B, 6]
            return {"encoder_hidden_states": embeds, "text_embeds": pooled, "time_ids": time_ids}
        embeds, _ = m.pipe.encode_prompt(
            captions, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds}


def _unet_err(m: _Models, batch: NoisedBatch) -> Tensor:
    """Per-sample error ``[B]`` of one trained forward (``objective.ErrorFn``), through the prepared UNet."""
    added: dict[str, Any] = {"image_embeds": [batch.vp]}
    if m.is_xl:
        added |= {"text_embeds": batch.cond["text_embeds"], "time_ids": batch.cond["time_ids"]}
    unet = m.forward if m.forward is not None else m.unet
    pred = unet(
        batch.noisy,
        batch.t,
        encoder_hidden_states=batch.cond["encoder_hidden_states"],
        added_cond_kwargs=added,
    ).sample
    return per_sample_mse(pred.float(), batch.target.float())  # [B]


def _shard(run: _Run, full: Tensor) -> Tensor:
    """This process's rows of a draw made for the whole global batch (rows ``rank::world``).

    Every process draws the global batch's noise, timesteps and dropout from the same ``(seed, step)``
    generator and keeps its own rows: N processes then see exactly the draws one process would, so they give
    the same loss sequence as one process at the same global batch.
    """
    return full[run.rank :: run.world] if run.world > 1 else full


def _noise(
    run: _Run, latents: Tensor, cfg: TrainConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    m, n = run.m, latents.shape[0] * run.world
    noise = _shard(run, torch.randn((n, *latents.shape[1:]), generator=gen)).to(latents)
    t = _shard(
        run,
        torch.randint(
            cfg.min_timestep,
            min(cfg.max_timestep, m.scheduler.config.num_train_timesteps),
            (n,),
            generator=gen,
        ),
    ).to(latents.device)
    noisy = m.scheduler.add_noise(latents, noise, t)
    target = (
        m.scheduler.get_velocity(latents, noise, t)
        if m.scheduler.config.prediction_type == "v_prediction"
        else noise
    )
    return noisy, t, target


def _latents(run: _Run, pixels: Tensor, gen: torch.Generator, *, blocks: int = 1) -> Tensor:
    """VAE samples of this process's rows; ``pixels`` holds ``blocks`` equal blocks (pairs: winners, losers).

    The VAE's noise is drawn for the whole global batch, stacked as one process would hold it (block by
    block), and each block keeps this process's rows (``_shard``).
    """
    m = run.m
    with torch.no_grad():
        dist = m.vae.encode(pixels.to(m.vae.device, m.vae.dtype)).latent_dist
        rows = dist.mean.shape[0] // blocks * run.world  # one block's global rows
        eps = torch.randn((blocks * rows, *dist.mean.shape[1:]), generator=gen)
        mine = torch.cat([_shard(run, block) for block in torch.split(eps, rows)]).to(dist.mean)
        scaled: Tensor = (dist.mean + dist.std * mine) * m.vae.config.scaling_factor
        return scaled


# ------------------------------------------------------------------------------------------- the loop
@dataclass
class _Run:
    """Everything a step needs, built once by ``_setup``."""

    cfg: TrainConfig
    m: _Models
    sft_data: SFTDataset
    pairs: PreferencePairs | None
    pos_idx: Tensor  # [N, k] clusters of each sample's own emotion
    neg_emotion: Tensor  # [N] the negative emotion of each sample
    neg_idx: Tensor  # [N, k] its clusters
    pair_pos: Tensor | None  # [P, k] clusters for each pair's target emotion
    res: int
    device: Any
    world: int = 1
    rank: int = 0
    inputs: dict[str, str | None] = field(default_factory=dict)  # the input files, for the manifest
    # The validation grid's rows (prompt x emotion): their emotions [R] and bank clusters [R, k].
    val_emotions: Tensor | None = None
    val_idx: Tensor | None = None
    val_scorer: Any = None  # the validation grid's emotion classifier, once loaded
    # The DPO reference adapter (reference = "initial_adapter"): the starting adapter's weights, frozen.
    frozen: list[Tensor] | None = None


def _setup(cfg: TrainConfig, cache_dir: Path, device: Any, world: int = 1, rank: int = 0) -> _Run:
    model_dir, bank_path, adapter_init, data_path, encoders_dir = _resolve_paths(cfg, cache_dir)
    torch.manual_seed(cfg.seed)
    m = _load_models(cfg, model_dir, bank_path, adapter_init)
    res = cfg.resolution or int(m.unet.config.sample_size * m.pipe.vae_scale_factor)
    samples, _ = load_emotion_dataset(data_path)  # logs skipped rows; raises DatasetError when none is usable
    dpo_cfg = cfg if isinstance(cfg, DPOTrainConfig) else None
    pairs = _pairs(dpo_cfg, samples, res) if dpo_cfg is not None and dpo_cfg.w_dpo > 0 else None
    strategy = dpo_cfg.negative_strategy if dpo_cfg is not None else "opposite"
    pos_idx, neg_emotion, neg_idx = _retrieve_indices(
        m, encoders_dir, [(s.caption, s.emotion) for s in samples], cfg.num_tokens, strategy, cfg.seed
    )
    pair_pos = None
    if pairs is not None:
        pair_pos, _, _ = _retrieve_indices(
            m, encoders_dir, [(p.caption, p.emotion) for p in pairs.pairs], cfg.num_tokens, strategy, cfg.seed
        )
    m.vae.to(device)
    m.pipe.text_encoder.to(device)
    if m.is_xl:
        m.pipe.text_encoder_2.to(device)
    run = _Run(cfg, m, SFTDataset(samples, res), pairs, pos_idx, neg_emotion, neg_idx, pair_pos, res, device)
    run.world, run.rank = world, rank
    run.inputs = {"bank": bank_path, "adapter_init": adapter_init, "data": data_path}
    if dpo_cfg is not None and dpo_cfg.reference == "initial_adapter":  # before any resume moves the adapter
        run.frozen = [p.detach().clone() for p in emotion_adapter_parameters(m.unet)]
    if cfg.validation_every:  # retrieved once: the grid is the same at every step
        rows = [(p, parse_emotion(e)) for p in cfg.validation_prompts for e in cfg.validation_emotions]
        run.val_idx, _, _ = _retrieve_indices(m, encoders_dir, rows, cfg.num_tokens, strategy, cfg.seed)
        run.val_emotions = torch.tensor([e.label_index for _, e in rows])
    if dpo_cfg is not None and dpo_cfg.w_dpo > 0:
        run.inputs["pairs"] = dpo_cfg.pairs
    return run


def _step_loss(run: _Run, step: int, seed: int, *, training: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """The objective (``objective.step_loss``) on one step's batches; every draw comes from ``(seed, step)``.

    The draws come in a fixed order (data rows, VAE sample, noise, timesteps, then the SFT run's visual-prompt
    dropout, then the pair batch's), which is what makes a resumed run's losses equal the uninterrupted one's.
    """
    cfg, m = run.cfg, run.m
    objective = train_objective(cfg)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    rows = _batch_rows(step, cfg.batch_size * run.world, len(run.sft_data), seed)[run.rank :: run.world]
    batch = collate_sft([run.sft_data[i] for i in rows])
    idx = torch.tensor(rows)
    cond = _encode(
        m, batch["captions"], batch["original_sizes"], batch["crop_top_lefts"], run.res, run.device
    )
    latents = _latents(run, batch["pixel_values"], gen)
    noisy, t, target = _noise(run, latents, cfg, gen)
    pos = _tokens(m, batch["emotions"], run.pos_idx[idx]).to(run.device)
    if not isinstance(cfg, DPOTrainConfig):  # visual-prompt dropout is SFT's (the DPO terms compare VPs)
        drop = cfg.vp_dropout if training else 0.0
        keep = (_shard(run, torch.rand(len(rows) * run.world, generator=gen)) >= drop).to(pos)[
            :, None, None, None
        ]
        pos = pos * keep
    negative = None
    if objective.w_neg_vp > 0:
        negative = _tokens(m, run.neg_emotion[idx], run.neg_idx[idx]).to(run.device)
    pairs = _pair_batch(run, step, seed, gen) if objective.w_dpo > 0 else None
    return step_loss(
        objective,
        lambda b: _unet_err(m, b),  # looked up per call, so a test may replace it
        m.unet,
        images=NoisedBatch(noisy, t, target, cond, pos),
        negative_vp=negative,
        pairs=pairs,
        frozen=run.frozen,
    )


def train(
    cfg: TrainConfig,
    *,
    cache_dir: Path,
    resume: bool = True,
    progress: ProgressFn | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train the emotion adapter (SFT for ``SFTTrainConfig``, DPO terms for ``DPOTrainConfig``).

    One CPU or GPU as is; several GPUs or nodes through ``accelerate launch`` with no code change (batches are
    sharded by process rank; rank 0 logs and checkpoints). A resumed run's losses equal the uninterrupted
    run's: every draw of a step is seeded by ``(seed, step)`` and checkpoints hold the optimiser's state.

    Args:
        cfg: the run's configuration (saved next to every checkpoint).
        cache_dir: where the tiny preset lives.
        resume: continue from the newest checkpoint in ``cfg.output_dir`` if there is one.
        progress: ``(step, max_steps, metrics)`` after each optimiser step (rank 0).
        stop_after: stop after this many steps of *this* call (tests interrupt and resume with it).

    Raises:
        TrainingDivergedError: NaN/Inf loss (the last good checkpoint stays).
        ConfigError: inconsistent paths or settings.
    """
    from accelerate import Accelerator

    # Gradient accumulation is done by hand below: micro-steps derive their randomness from the step index,
    # which keeps resume exact, and checkpoints only ever fall on optimizer steps.
    # cpu=True on a machine without an accelerator: only then does accelerate run `torchrun` / `accelerate
    # launch` processes as one gloo group (MULTI_CPU); without it every process thinks it is rank 0 of 1.
    out = Path(cfg.output_dir)
    tracker = cfg.report_to if cfg.report_to != "none" else None
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        cpu=not torch.accelerator.is_available(),
        log_with=tracker,
        project_dir=str(out / "logs") if tracker else None,
    )
    run = _setup(cfg, cache_dir, accelerator.device, accelerator.num_processes, accelerator.process_index)
    m = run.m
    params = _trainable(cfg, m)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.warmup_steps)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm))
    # The wrapped module (DDP on several GPUs) runs the forward; helpers that reach into the UNet's
    # processors, projector or LoRA layers keep using the unwrapped one.
    m.forward, optimizer = accelerator.prepare(m.unet, optimizer)

    start_step = 0
    last = latest_checkpoint(out)
    if last is not None and not resume:
        raise ConfigError(
            f"output_dir {out} already has checkpoints ({last.name}); resume, or choose a new output_dir"
        )
    if last is not None:
        start_step = resume_latest(
            out, cfg, m.unet, m.bank_param, optimizer, lr_sched, accelerator.is_main_process
        )
    metrics_file = out / "metrics.jsonl"
    manifest = None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.toml")
        if start_step == 0:  # rows of an attempt killed before its first checkpoint are all redone
            truncate_metrics(metrics_file, 0)
        manifest = RunManifest.start(out, cfg, run.inputs, start_step)
    if tracker:
        accelerator.init_trackers("emodir-train", config=_tracker_config(cfg))
    state = _State(step=start_step, last_ckpt=latest_checkpoint(out))
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, start_step + stop_after)
    try:
        _steps(run, accelerator, params, optimizer, lr_sched, state, end, progress)
        accelerator.wait_for_everyone()
    except Exception as exc:
        if manifest is not None:
            manifest.end("failed", state.step, state.last_ckpt, exc)
        raise
    except BaseException:  # Ctrl-C, SystemExit: the run can be resumed from its last checkpoint
        if manifest is not None:
            manifest.end("interrupted", state.step, state.last_ckpt)
        raise
    finally:
        if tracker:  # flushed and closed whatever happened: a failed run's logs are still worth reading
            accelerator.end_training()
    if manifest is not None:  # stop_after ends a run early, as an interrupt would
        status: Status = "finished" if state.step >= cfg.max_steps else "interrupted"
        if status == "finished" and state.last_ckpt is not None:
            publish_final_adapter(out, state.last_ckpt)
        manifest.end(status, state.step, state.last_ckpt)
    return TrainResult(out, state.step, state.last_ckpt, metrics_file, state.losses)


FINAL_ADAPTER = "adapter.safetensors"


def publish_final_adapter(out: Path, checkpoint: Path) -> Path:
    """Copy the last checkpoint's adapter to ``<output_dir>/adapter.safetensors``, where the next command of
    the loop (``--adapter``, ``adapter_init``) finds it without knowing the step count (as diffusers' training
    scripts save the finished weights at the output directory's top). Atomic; a resumed run that trains on
    replaces it with its own newer final weights (the checkpoints keep every step's)."""
    return write_bytes_atomic(out / FINAL_ADAPTER, (checkpoint / FINAL_ADAPTER).read_bytes())


@dataclass
class _State:
    """Where the loop is: kept outside it so that a failure still knows the last step and checkpoint."""

    step: int
    last_ckpt: Path | None
    losses: list[float] = field(default_factory=list)


def _steps(
    run: _Run,
    accelerator: Any,
    params: list[torch.nn.Parameter],
    optimizer: Any,
    lr_sched: Any,
    state: _State,
    end: int,
    progress: ProgressFn | None,
) -> None:
    """Optimiser steps from ``state.step`` up to ``end``; rank 0 logs, reports and checkpoints."""
    cfg, m = run.cfg, run.m
    out = Path(cfg.output_dir)
    metrics_file = out / "metrics.jsonl"
    t_start = time.perf_counter()
    while state.step < end:
        value, metrics = 0.0, dict[str, float]()
        for micro in range(cfg.grad_accum):
            loss, micro_metrics = _step_loss(run, state.step * cfg.grad_accum + micro, cfg.seed)
            finite = bool(torch.isfinite(loss))
            if accelerator.num_processes > 1:  # every rank stops together: one leaving alone hangs the rest
                bad = accelerator.reduce(
                    torch.tensor([0.0 if finite else 1.0], device=accelerator.device), "sum"
                )
                finite = float(bad[0]) == 0.0
            if not finite:
                raise TrainingDivergedError(
                    f"loss became {loss.item()} at step {state.step + 1}; stopped. The last good checkpoint "
                    f"({state.last_ckpt or 'none yet'}) is kept; lower the learning rate or beta"
                )
            accelerator.backward(loss / cfg.grad_accum)
            value += float(loss.detach()) / cfg.grad_accum
            for k, v in micro_metrics.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / cfg.grad_accum
        if accelerator.num_processes > 1:  # each process saw its shard: log the global batch's means
            packed = accelerator.reduce(
                torch.tensor([value, *metrics.values()], device=accelerator.device), "mean"
            )
            value, metrics = float(packed[0]), dict(zip(metrics, packed[1:].tolist(), strict=True))
        bank = run.m.bank_param
        if accelerator.num_processes > 1 and bank is not None and bank.grad is not None:
            # The trainable bank is outside the DDP-wrapped UNet: average its gradient by hand, or the ranks'
            # banks (and, through the clipping norm, their UNet steps) drift apart.
            bank.grad = accelerator.reduce(bank.grad, "mean")
        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        step = state.step
        state.losses.append(value)
        row: dict[str, float] = {
            "step": step,
            "loss": value,
            "lr": float(lr_sched.get_last_lr()[0]),
            **{k: float(v) for k, v in metrics.items() if k != "loss"},
            "elapsed_s": round(time.perf_counter() - t_start, 3),
        }
        if accelerator.is_main_process:
            if step % cfg.log_every == 0 or step == end:
                _append_jsonl(metrics_file, row)
                if cfg.report_to != "none":
                    accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
            if progress is not None:
                progress(step, cfg.max_steps, row)
            periodic = cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0
            if periodic or step == cfg.max_steps:
                state.last_ckpt = save_checkpoint(out, step, cfg, m.unet, m.bank_param, optimizer, lr_sched)
                rotate(out, cfg.keep_last)
            if cfg.validation_every and (step % cfg.validation_every == 0 or step == cfg.max_steps):
                _validate(run, accelerator, step)


def _validate(run: _Run, accelerator: Any, step: int) -> Path:
    """Render and save the validation grid (rank 0), and log it to the tracker if there is one."""
    from ed_diffusion.training.validation import render_grid, save_grid

    cfg, m = run.cfg, run.m
    assert run.val_idx is not None and run.val_emotions is not None
    with torch.no_grad():
        tokens = _tokens(m, run.val_emotions, run.val_idx)[:, 0].float()  # [R, k, d]
    grid, images = render_grid(
        m.pipe,
        list(tokens),
        cfg.validation_prompts,
        cfg.validation_emotions,
        cfg.validation_seeds,
        steps=cfg.validation_steps,
        res=run.res,
    )
    path = save_grid(Path(cfg.output_dir), step, grid)
    if cfg.validation_scorer != "none":
        from ed_diffusion.training.validation import score_grid

        if run.val_scorer is None:  # loaded once per run (a CLIP model takes seconds)
            from ed_diffusion.scoring import build_scorers

            run.val_scorer = build_scorers(cfg.validation_scoring()).emotion
        # Rows are prompts x emotions, each with one image per seed (render_grid's order).
        targets = [
            e for _ in cfg.validation_prompts for e in cfg.validation_emotions for _ in cfg.validation_seeds
        ]
        scores = score_grid(run.val_scorer, images, targets)
        _append_jsonl(Path(cfg.output_dir) / "validation" / "scores.jsonl", {"step": step, **scores})
        if cfg.report_to != "none":
            accelerator.log({f"validation/{k}": v for k, v in scores.items()}, step=step)
    if cfg.report_to == "tensorboard":
        import numpy as np

        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        writer.add_image("validation/grid", np.asarray(grid.convert("RGB")), step, dataformats="HWC")
    return path


def _tracker_config(cfg: TrainConfig) -> dict[str, Any]:
    # Trackers take scalars and strings; lists (the validation grid's) are joined.
    return {
        k: ", ".join(map(str, v)) if isinstance(v, tuple) else v
        for k, v in asdict(cfg).items()
        if v is not None
    }


def evaluate(
    cfg: TrainConfig, *, cache_dir: Path, checkpoint: Path | None = None, batches: int = 8
) -> dict[str, float]:
    """Mean loss metrics over ``batches`` fixed evaluation batches (no dropout, no grad).

    The batches, noise and timesteps come from a seed no training step uses, and are the same for every
    checkpoint, so before/after numbers are comparable: this is how a test shows that a trainer learns.
    """
    run = _setup(cfg, cache_dir, "cpu")
    if checkpoint is not None:
        load_weights(checkpoint, run.m.unet, run.m.bank_param)
    sums: dict[str, float] = {}
    with torch.no_grad():
        for b in range(batches):
            _, metrics = _step_loss(run, b, cfg.seed + 7_777_777, training=False)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) / batches
    return sums


def _pair_batch(run: _Run, step: int, seed: int, gen: torch.Generator) -> NoisedBatch:
    """The step's image pairs as ``2B`` rows, winners first, sharing noise and timestep."""
    cfg, m = run.cfg, run.m
    if run.pairs is None or run.pair_pos is None:
        raise ValueError("the image-pair DPO term needs preference pairs")
    rows = _batch_rows(step, cfg.batch_size * run.world, len(run.pairs), seed + 1)[run.rank :: run.world]
    batch = collate_pairs([run.pairs[i] for i in rows])
    b = batch["num_pairs"]
    cond = _encode(
        m, batch["captions"], batch["original_sizes"], batch["crop_top_lefts"], run.res, run.device
    )
    latents = _latents(run, batch["pixel_values"], gen, blocks=2)  # [2B, ...] winners first
    n = b * run.world
    noise = _shard(run, torch.randn((n, *latents.shape[1:]), generator=gen)).to(latents)
    high = min(cfg.max_timestep, m.scheduler.config.num_train_timesteps)
    t = _shard(run, torch.randint(cfg.min_timestep, high, (n,), generator=gen)).to(latents.device)
    noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])  # winner and loser share noise and timestep
    noisy = m.scheduler.add_noise(latents, noise2, t2)
    v_pred = m.scheduler.config.prediction_type == "v_prediction"
    target = m.scheduler.get_velocity(latents, noise2, t2) if v_pred else noise2
    tokens = _tokens(m, batch["emotions"], torch.cat([run.pair_pos[torch.tensor(rows)]] * 2)).to(run.device)
    return NoisedBatch(noisy, t2, target, cond, tokens)


def _batch_rows(step: int, size: int, n: int, seed: int) -> list[int]:
    """Rows of the global batch at ``step``: an epoch-wise permutation seeded by (seed, epoch)."""
    rows: list[int] = []
    pos = step * size
    while len(rows) < size:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        take = perm[offset : offset + size - len(rows)]
        rows += take
        pos += len(take)
    return rows


def _pairs(cfg: DPOTrainConfig, samples: Sequence[EmotionSample], res: int) -> PreferencePairs:
    if cfg.pairs is not None:
        pairs, _ = load_preference_pairs(cfg.pairs)  # logs skipped rows itself
        return PreferencePairs(pairs, res)
    return PreferencePairs(pairs_from_samples(samples, cfg.seed), res)


def pairs_from_samples(samples: Sequence[EmotionSample], seed: int) -> list[PreferencePair]:
    """Image pairs with the same content (the caption's last word) and different emotions.

    Winner: a sample of emotion e; loser: a sample of the same content from the opposite polarity. The pair is
    scored under e with the winner's caption. This is how the tiny preset gets pairs without a pairs file.
    """
    rng = random.Random(seed)
    by_content: dict[str, list[EmotionSample]] = {}
    for s in samples:
        by_content.setdefault(s.caption.split()[-1].lower(), []).append(s)
    pairs = []
    for s in samples:
        losers = [
            o for o in by_content[s.caption.split()[-1].lower()] if o.emotion.polarity != s.emotion.polarity
        ]
        if losers:
            pairs.append(
                PreferencePair(s.caption, s.emotion, Path(s.image_path), Path(rng.choice(losers).image_path))
            )
    if not pairs:
        raise ConfigError(
            "no preference pair can be built from the data (no shared content across polarities)"
        )
    return pairs


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
