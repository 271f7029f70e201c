"""Checkpoint directories on disk: which exist, which may be resumed, and the metrics log that goes with them.

A resume is exact or refused: a checkpoint is resumed only by a run of the same kind (SFT or DPO) whose
config differs in nothing but the fields that cannot change the trajectory (``RESUME_MAY_CHANGE``); a
checkpoint that cannot be read is set aside (renamed, never deleted) and the one before it is tried, and so
is one whose ``state.json`` names another step than its directory (resuming it would skip or redo steps);
a torn last line of ``metrics.jsonl`` (a kill mid-write) is dropped like the rows past the checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from ed_common.atomic import write_text_atomic
from ed_common.text import short_repr
from ed_diffusion.training.config import ConfigError, TrainConfig, load_config

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
