"""A training run's checkpoint directories: written whole, rotated, read back, resumed exactly or refused."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ed_common.atomic import write_text_atomic
from ed_common.text import short_repr
from ed_diffusion.adapter_file import ATTN_PREFIX, PROJECTOR_PREFIX, save_adapter
from ed_diffusion.models.adapter import emotion_attn_processors, get_emotion_projector, ip_linears
from ed_diffusion.training.config import ConfigError, TrainConfig, load_config, save_config

log = logging.getLogger(__name__)
_NAME = re.compile(r"^checkpoint-(\d+)$")
# Fields a resume may change: they decide how long to run and what to keep, not what is computed.
RESUME_MAY_CHANGE = frozenset({"output_dir", "max_steps", "checkpoint_every", "keep_last", "log_every"})


class ResumeMismatchError(ConfigError):
    """``output_dir`` holds another kind of run, or its config differs where a resume cannot be exact."""


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoint directories (``checkpoint-<step>`` with a ``state.json``), oldest first."""
    found = [p for p in out.glob("checkpoint-*") if _NAME.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=step_of)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint directory in ``out``, or None."""
    found = checkpoints(out)
    return found[-1] if found else None


def check_resumable(checkpoint: Path, cfg: TrainConfig) -> None:
    """Refuse to resume ``checkpoint`` with ``cfg`` unless the result would be exact.

    Raises:
        ResumeMismatchError: the checkpoint belongs to another kind of run, or ``cfg`` changed a field
            outside ``RESUME_MAY_CHANGE`` (the message names every changed field, old and new value).
        OSError, ConfigError: the checkpoint's config cannot be read (the trainer treats it as corrupt).
    """
    path = checkpoint / "config.toml"
    header = path.read_text(encoding="utf-8").splitlines()[:1]
    kind = header[0].lstrip("# ").strip() if header else "?"
    if kind != type(cfg).__name__:
        raise ResumeMismatchError(
            f"output_dir {checkpoint.parent} holds a {kind} run ({checkpoint.name}); a {type(cfg).__name__} "
            "run needs its own output_dir (point its adapter_init at that run's adapter to continue from it)"
        )
    saved = load_config(path, type(cfg))
    changed = [
        f"{f.name} {getattr(saved, f.name)!r} -> {getattr(cfg, f.name)!r}"
        for f in fields(cfg)
        if f.name not in RESUME_MAY_CHANGE and getattr(saved, f.name) != getattr(cfg, f.name)
    ]
    if changed:
        raise ResumeMismatchError(
            f"cannot resume {checkpoint} exactly: {'; '.join(changed)}; restore them, or use a new output_dir"
        )


def step_of(checkpoint: Path) -> int:
    """The step in a checkpoint's directory name (``checkpoint-<step>``)."""
    match = _NAME.match(checkpoint.name)
    if match is None:
        raise ValueError(f"{checkpoint.name} is not a checkpoint directory name (checkpoint-<step>)")
    return int(match.group(1))


def read_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``, checked against its directory.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not JSON, not an object, lacks an integer ``step`` or an ``lr_scheduler`` object,
            or its step is not the directory's (the trainer treats all of these as an unreadable checkpoint).
    """
    info = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    if not isinstance(info, dict):
        raise ValueError(f"state.json is a JSON {type(info).__name__}, not an object")
    step = info.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"state.json has step {short_repr(step)}; allowed: an integer")
    if step != step_of(checkpoint):
        raise ValueError(f"state.json says step {step} but the directory is {checkpoint.name}")
    if not isinstance(info.get("lr_scheduler"), dict):
        raise ValueError("state.json has no lr_scheduler object")
    return info


def set_aside(checkpoint: Path) -> Path:
    """Rename an unreadable checkpoint out of the way (``checkpoint-<n>.unreadable``), keeping its files."""
    target = checkpoint.with_name(f"{checkpoint.name}.unreadable")
    n = 1
    while target.exists():
        target = checkpoint.with_name(f"{checkpoint.name}.unreadable{n}")
        n += 1
    checkpoint.rename(target)
    return target


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the metrics rows up to ``step`` (the checkpoint resumed); drop later and torn rows.

    Returns:
        How many lines were dropped because they were not whole JSON rows (a kill mid-write).
    """
    if not path.is_file():
        return 0
    keep: list[str] = []
    torn = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            torn += 1
            continue
        if isinstance(row, dict) and int(row.get("step", step + 1)) <= step:
            keep.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in keep))
    return torn


# ------------------------------------------------------------------------------------------- resume
# What reading a torn or corrupt checkpoint raises (safetensors, torch.load with weights_only, json).
_UNREADABLE = (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError)


def resume_latest(
    out: Path,
    cfg: TrainConfig,
    unet: Any,
    bank_param: torch.nn.Parameter | None,
    optimizer: Any,
    lr_sched: Any,
    main: bool,
) -> int:
    """Load the newest readable checkpoint in ``out`` that ``cfg`` can resume exactly; return its step.

    A resume is exact or refused: a checkpoint is resumed only by a run of the same kind (SFT or DPO) whose
    config differs in nothing but ``RESUME_MAY_CHANGE`` (``check_resumable``). A checkpoint that cannot be
    read (torn files, or a ``state.json`` naming another step than its directory: resuming it would skip or
    redo steps) is set aside, never deleted, and the one before it tried, so one torn write does not make a
    run unresumable. On ``main`` (rank 0), ``metrics.jsonl`` is cut back to the checkpoint's step, torn last
    line included.

    Raises:
        ResumeMismatchError: the newest readable checkpoint cannot be resumed exactly with ``cfg``.
        ConfigError: no checkpoint could be read.
    """
    unreadable: list[Path] = []
    for ckpt in reversed(checkpoints(out)):
        try:
            check_resumable(ckpt, cfg)
            step = _load_checkpoint(ckpt, unet, bank_param, optimizer, lr_sched)
        except ResumeMismatchError:
            raise  # the user's choice to undo, never skipped over
        except (*_UNREADABLE, ConfigError) as exc:  # torn or corrupt files, its config included
            log.warning("checkpoint %s is unreadable (%s); trying the one before", ckpt.name, exc)
            unreadable.append(ckpt)
            continue
        if main:
            # Set aside only once one was chosen: every rank reads the same list first (a later save of
            # the same step would otherwise collide with the torn directory).
            for bad in unreadable:
                set_aside(bad)
            torn = truncate_metrics(out / "metrics.jsonl", step)  # rows past the checkpoint are redone
            if torn:
                log.warning("dropped %d torn line(s) of metrics.jsonl", torn)
        log.info("resumed from %s at step %d", ckpt, step)
        return step
    raise ConfigError(f"no checkpoint in {out} could be read; move them away to start over")


def _load_checkpoint(
    path: Path, unet: Any, bank_param: torch.nn.Parameter | None, optimizer: Any, lr_sched: Any
) -> int:
    info = read_state(path)  # first: a state that disagrees with its directory must load nothing
    load_weights(path, unet, bank_param)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    lr_sched.load_state_dict(info["lr_scheduler"])
    step: int = info["step"]
    return step


def load_weights(path: Path, unet: Any, bank_param: torch.nn.Parameter | None) -> None:
    """A checkpoint's adapter, trained bank and LoRA weights, copied in place (optimizer refs stay valid)."""
    with torch.no_grad():
        for p, v in _adapter_state(path / "adapter.safetensors", unet):
            p.copy_(v)
        extra = path / "extra.safetensors"
        if extra.is_file():
            tensors = load_file(str(extra))
            if bank_param is not None and "bank.visual_centres" in tensors:
                bank_param.copy_(tensors["bank.visual_centres"])
            named = dict(unet.named_parameters())
            for key, value in tensors.items():
                if key.startswith("lora."):
                    named[key.removeprefix("lora.")].copy_(value)


def _adapter_state(path: Path, unet: Any) -> list[tuple[Tensor, Tensor]]:
    """(live parameter, saved value) for every adapter weight of ``unet``."""
    tensors = load_file(str(path))
    out: list[tuple[Tensor, Tensor]] = []
    for name, p in get_emotion_projector(unet).named_parameters():
        out.append((p, tensors[PROJECTOR_PREFIX + name]))
    for name, proc in emotion_attn_processors(unet).items():
        k_ip, v_ip = ip_linears(proc)
        out.append((k_ip.weight, tensors[f"{ATTN_PREFIX}{name}.to_k_ip.weight"]))
        out.append((v_ip.weight, tensors[f"{ATTN_PREFIX}{name}.to_v_ip.weight"]))
    return out


# ------------------------------------------------------------------------------------------- writing
def save_checkpoint(
    out: Path,
    step: int,
    cfg: TrainConfig,
    unet: Any,
    bank_param: torch.nn.Parameter | None,
    optimizer: Any,
    lr_sched: Any,
) -> Path:
    """Write ``checkpoint-<step>`` (adapter, trained bank and LoRA, optimizer, LR schedule, config, step).

    It is written under a temporary name and renamed when complete, so a checkpoint directory exists only
    whole.
    """
    final = out / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}-", dir=out))
    try:
        _write_checkpoint(tmp, step, cfg, unet, bank_param, optimizer, lr_sched)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_checkpoint(
    tmp: Path,
    step: int,
    cfg: TrainConfig,
    unet: Any,
    bank_param: torch.nn.Parameter | None,
    optimizer: Any,
    lr_sched: Any,
) -> None:
    projector = get_emotion_projector(unet)
    save_adapter(tmp / "adapter.safetensors", unet, projector.config, cfg.num_tokens, {"step": step})
    tensors: dict[str, Tensor] = {}
    if bank_param is not None:
        tensors["bank.visual_centres"] = bank_param.detach().cpu().contiguous()
    if cfg.lora_rank > 0:
        tensors |= {
            f"lora.{n}": p.detach().cpu().contiguous() for n, p in unet.named_parameters() if "lora_" in n
        }
    if tensors:
        save_file(tensors, str(tmp / "extra.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")  # read back with weights_only=True
    save_config(cfg, tmp / "config.toml")
    (tmp / "state.json").write_text(json.dumps({"step": step, "lr_scheduler": lr_sched.state_dict()}))


def rotate(out: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (``keep_last`` 0: keep every one)."""
    found = checkpoints(out)
    for old in found[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
