"""LPIPS (Zhang et al. 2018; the ``lpips`` package, v0.1) over a pluggable backbone, weights from a file.

For images ``x0, x1`` in [-1, 1]: shift/scale the input (``ScalingLayer``), take the backbone's feature maps
``f^l``, unit-normalise each over channels, square the difference, weight channels with the non-negative
linear layer ``w^l`` (a bias-free 1×1 conv), average over space and sum over layers:

    d(x0, x1) = sum_l mean_{h,w} sum_c w^l_c (f^l_0 / |f^l_0| - f^l_1 / |f^l_1|)^2_{c,h,w}

The real metric needs ImageNet AlexNet weights plus the LPIPS linear weights, which cannot be downloaded on
this machine (no torchvision, no hub), so they come from one local safetensors file. Accepted key layouts:

- ours: ``features.{0,3,6,8,10}.{weight,bias}`` (torchvision ``alexnet().features``'s own indices) and
  ``lin.{0..4}.weight`` ``[1, C_l, 1, 1]``;
- the ``lpips`` package's ``LPIPS(net="alex").state_dict()`` as is: ``net.slice{1..5}.{i}.{weight,bias}``
  (same indices ``i``), ``lin{k}.model.1.weight`` (``model.0`` without dropout); ``scaling_layer.*`` is
  ignored (constants).

Conversion on a machine with ``lpips`` and torchvision::

    import lpips, safetensors.torch
    safetensors.torch.save_file(lpips.LPIPS(net="alex").state_dict(), "lpips_alex.safetensors")
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from ed_common.errors import InvalidInputError
from ed_diffusion.scoring.errors import ScorerLoadError

LPIPS_ALEX_CHANNELS: tuple[int, ...] = (64, 192, 384, 256, 256)
ALEX_CONV_INDICES: tuple[int, ...] = (0, 3, 6, 8, 10)
ALEX_TAPS: tuple[int, ...] = (1, 4, 7, 9, 11)  # the ReLUs ending lpips' slices relu1..relu5
# Smallest side AlexNet's three 3×3/2 max-pools still fit: conv1 must give >= 7 px, i.e. (s - 7) // 4 >= 6.
ALEX_MIN_SIDE = 31
# lpips.ScalingLayer (v0.1): maps [-1, 1] inputs onto the ImageNet normalisation AlexNet was trained with.
LPIPS_SHIFT: tuple[float, float, float] = (-0.030, -0.088, -0.188)
LPIPS_SCALE: tuple[float, float, float] = (0.458, 0.448, 0.450)
_EPS = 1e-10  # lpips.normalize_tensor's


class AlexNetFeatures(nn.Module):
    """torchvision's ``alexnet().features`` stack (same module indices), returning relu1..relu5.

    Written out here because torchvision cannot be installed beside CPU torch 2.13 (``environment.md`` §2);
    the key names match, so ``features.*`` of a torchvision AlexNet state dict loads unchanged.
    """

    def __init__(self, channels: Sequence[int] = LPIPS_ALEX_CHANNELS) -> None:
        """Build the stack; ``channels`` other than AlexNet's make tiny test backbones."""
        super().__init__()
        if len(channels) != 5 or min(channels) < 1:
            raise InvalidInputError(f"AlexNetFeatures needs 5 positive channel counts; got {list(channels)}")
        c = list(channels)
        self.channels: tuple[int, ...] = tuple(c)
        self.min_side = ALEX_MIN_SIDE
        self.features = nn.Sequential(
            nn.Conv2d(3, c[0], kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c[0], c[1], kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c[1], c[2], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c[2], c[3], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c[3], c[4], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # index 12: kept for the key layout, never run
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps after relu1..relu5 of ``x`` ``[n, 3, H, W]``."""
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in ALEX_TAPS:
                taps.append(x)  # [n, C_l, H_l, W_l]
            if i == ALEX_TAPS[-1]:
                break
        return taps


class LPIPSDistance(nn.Module):
    """The LPIPS distance over any backbone returning a list of feature maps with ``channels`` channels."""

    def __init__(self, backbone: nn.Module, channels: Sequence[int]) -> None:
        """One bias-free 1×1 conv (the per-channel weights ``w^l``) per backbone layer; weights start at 1."""
        super().__init__()
        self.backbone = backbone
        convs = [nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in channels]
        for conv in convs:
            nn.init.ones_(conv.weight)  # all ones = lpips' uncalibrated baseline (lpips=False)
        self.lin = nn.ModuleList(convs)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.min_side = int(getattr(backbone, "min_side", 1))

    def features(self, x: Tensor) -> list[Tensor]:
        """Channel-unit-normalised feature maps of ``x`` ``[n, 3, H, W]`` in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < self.min_side:
            raise InvalidInputError(
                f"LPIPS needs [n, 3, H, W] images with sides >= {self.min_side}; got {tuple(x.shape)}"
            )
        maps = self.backbone((x - self.get_buffer("shift")) / self.get_buffer("scale"))
        if len(maps) != len(self.lin):
            raise InvalidInputError(f"LPIPS backbone gave {len(maps)} feature maps; expected {len(self.lin)}")
        return [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS) for f in maps]

    def channel_weights(self) -> list[Tensor]:
        """The linear layers' per-channel weights ``w^l``, one ``[C_l]`` float64 CPU tensor per layer."""
        return [p.detach().double().cpu().flatten() for p in self.lin.parameters()]

    def distance_from_features(self, f0: Sequence[Tensor], f1: Sequence[Tensor]) -> Tensor:
        """LPIPS ``[n]`` between two lists of normalised feature maps (as ``features`` returns)."""
        total: Tensor | None = None
        for lin, a, b in zip(self.lin, f0, f1, strict=True):
            layer = lin((a - b).pow(2)).mean(dim=(2, 3)).squeeze(1)  # [n]
            total = layer if total is None else total + layer
        if total is None:
            raise InvalidInputError("LPIPS needs at least one feature layer")
        return total

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        """LPIPS ``[n]`` between ``x0`` and ``x1``, both ``[n, 3, H, W]`` in [-1, 1]."""
        return self.distance_from_features(self.features(x0), self.features(x1))


def lpips_input(images: Sequence[Image.Image], size: tuple[int, int] | None = None) -> Tensor:
    """PIL images -> ``[n, 3, H, W]`` float32 in [-1, 1] (RGB; resized bilinearly to ``size`` = (W, H))."""
    arrays = []
    for im in images:
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        if size is not None and rgb.size != size:
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        arrays.append(np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0)  # [H, W, 3]
    if not arrays:
        raise InvalidInputError("lpips_input needs at least one image")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # [n, 3, H, W]


def load_lpips_alex(path: str | os.PathLike[str]) -> LPIPSDistance:
    """LPIPS-Alex from one safetensors file in either key layout of the module docstring.

    Channel counts are read from the conv weights, so a tiny AlexNet-shaped test file loads as well.

    Raises:
        ScorerLoadError: missing or unreadable file, or keys/shapes that are not an AlexNet + 5 linear layers.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ScorerLoadError(f"LPIPS weights file {str(p)!r} does not exist")
    try:
        raw = load_file(str(p), device="cpu")
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        raise ScorerLoadError(f"cannot read LPIPS weights {str(p)!r}: {' '.join(str(exc).split())}") from exc
    state = _canonical_keys(raw)
    missing = [f"features.{i}.weight" for i in ALEX_CONV_INDICES if f"features.{i}.weight" not in state]
    if missing:
        raise ScorerLoadError(
            f"LPIPS weights {str(p)!r} lack {', '.join(missing)}; expected torchvision AlexNet 'features.*' "
            "(or lpips 'net.slice*') and LPIPS 'lin.*' keys"
        )
    channels = [int(state[f"features.{i}.weight"].shape[0]) for i in ALEX_CONV_INDICES]
    model = LPIPSDistance(AlexNetFeatures(channels), channels)
    wanted = {k.removeprefix("backbone.") for k in model.state_dict() if k not in ("shift", "scale")}
    absent, extra = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if absent or extra:
        raise ScorerLoadError(
            f"LPIPS weights {str(p)!r} do not fit LPIPS-Alex: missing {_few(absent)}; "
            f"unexpected {_few(extra)}"
        )
    try:
        model.load_state_dict(
            {(f"backbone.{k}" if k.startswith("features.") else k): v for k, v in state.items()}, strict=False
        )
    except RuntimeError as exc:  # shape mismatches
        raise ScorerLoadError(f"LPIPS weights {str(p)!r}: {' '.join(str(exc).split())[:200]}") from exc
    return model.eval().requires_grad_(False)


_LPIPS_NET = re.compile(r"^net\.slice\d+\.(\d+)\.(weight|bias)$")
_LPIPS_LIN = re.compile(r"^lin(\d+)\.model\.[01]\.weight$")


def _canonical_keys(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the ``lpips`` package's keys to ours; drop its constant scaling buffers."""
    out: dict[str, Tensor] = {}
    for key, value in raw.items():
        if key.startswith("scaling_layer."):
            continue
        if m := _LPIPS_NET.match(key):
            key = f"features.{m.group(1)}.{m.group(2)}"
        elif m := _LPIPS_LIN.match(key):
            key = f"lin.{m.group(1)}.weight"
        out[key] = value.float()
    return out


def _few(keys: Sequence[str]) -> str:
    return (", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")) or "none"
