"""Linear-probe weight files: read safely, accept the layouts peers ship, refuse everything else in one line.

``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with ``torch.load(weights_only=True)`` (a pickle holding
anything but tensors and containers is refused, never executed). EmoGen ships its CLIP-L/14 probe as the
state dict of ``emo_classifier_768`` (``fc.weight [8, 768]``, ``fc.bias [8]``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ed_common.emotions import EMOTION_NAMES
from ed_diffusion.scoring.config import PROBE_SUFFIXES
from ed_diffusion.scoring.errors import ScorerLoadError

NUM_EMOTIONS = len(EMOTION_NAMES)


def load_probe_weights(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """Read a linear probe: ``(weight [8, d], bias [8])`` in the file's own label order.

    Accepted: ``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with ``torch.load(weights_only=True)`` (no
    arbitrary pickles). The state dict may be wrapped in ``{"state_dict": ...}``, carry DataParallel's
    ``module.`` prefix, and keep the two tensors under one prefix (EmoGen's ``fc.weight``/``fc.bias``).

    Raises:
        ScorerLoadError: missing or unreadable file, unsafe pickle, or not exactly one weight/bias pair of
            the right shapes; one line naming the file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ScorerLoadError(f"probe file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix not in PROBE_SUFFIXES:
        raise ScorerLoadError(f"probe file {str(p)!r}: unknown type; allowed: {', '.join(PROBE_SUFFIXES)}")
    try:
        if suffix == ".safetensors":
            state: object = load_file(str(p), device="cpu")
        else:
            # weights_only: a pickle that is more than tensors and containers is refused, never executed.
            state = torch.load(p, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        raise ScorerLoadError(f"cannot read probe file {str(p)!r}: {_one_line(exc)}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ScorerLoadError(f"probe file {str(p)!r} is not a state dict of tensors")
    tensors = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    prefixes = [k[: -len("weight")] for k in tensors if k.endswith("weight")]
    if len(tensors) != 2 or len(prefixes) != 1 or prefixes[0] + "bias" not in tensors:
        keys = ", ".join(sorted(tensors)[:6]) + (", ..." if len(tensors) > 6 else "")
        raise ScorerLoadError(
            f"probe file {str(p)!r} must hold exactly one '<prefix>weight' [8, d] and '<prefix>bias' [8] "
            f"(e.g. EmoGen's fc.weight, fc.bias); found: {keys or 'nothing'}"
        )
    weight, bias = tensors[prefixes[0] + "weight"], tensors[prefixes[0] + "bias"]
    check_probe_tensors(weight, bias, where=f"probe file {str(p)!r}")
    return weight.float(), bias.float()


def check_probe_dim(weight: Tensor, feature_dim: int, *, source: str) -> None:
    """Refuse a probe ``weight [8, d]`` whose ``d`` is not the CLIP model's embedding size.

    Raises:
        ScorerLoadError: one line naming both sizes.
    """
    if weight.shape[1] != feature_dim:
        raise ScorerLoadError(
            f"probe {source!r} takes {weight.shape[1]}-d features but the CLIP model gives {feature_dim}-d "
            "embeds (EmoGen's probe is for CLIP-L/14, 768-d)"
        )


def check_probe_tensors(weight: Tensor, bias: Tensor, *, where: str) -> None:
    if weight.ndim != 2 or weight.shape[0] != NUM_EMOTIONS or bias.shape != (NUM_EMOTIONS,):
        raise ScorerLoadError(
            f"{where}: a probe needs weight [{NUM_EMOTIONS}, d] and bias [{NUM_EMOTIONS}]; got weight "
            f"{list(weight.shape)} and bias {list(bias.shape)}"
        )
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise ScorerLoadError(f"{where}: the probe has non-finite values")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
