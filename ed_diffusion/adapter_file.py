"""Save and load the emotion adapter's own weights (projector + decoupled K/V) as safetensors.

Only what :func:`ed_diffusion.models.adapter.install_emotion_adapter` adds is stored; the base UNet is not.

Key layout (format ``emodir-emotion-adapter``, version 1):

- ``projector.<param>``: the :class:`EmotionTokenProjector` ``state_dict`` with a ``projector.`` prefix, e.g.
  ``projector.proj_in.0.weight``, ``projector.attn.in_proj_weight``, ``projector.mlp.2.bias``.
- ``attn.<processor name>.to_k_ip.weight`` and ``attn.<processor name>.to_v_ip.weight``: one pair per
  cross-attention layer, ``[hidden_size, cross_attention_dim]``, where ``<processor name>`` is the key of
  ``unet.attn_processors``, e.g.
  ``attn.down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.weight``
  (diffusers' ``to_k_ip.0.weight`` without the adapter index: there is only one adapter).

Metadata (safetensors ``__metadata__``, every value a JSON-encoded string):

- ``format``: ``"emodir-emotion-adapter"``; ``format_version``: ``1``;
- ``projector_config``: the :class:`EmotionTokenProjectorConfig` fields as an object;
- ``num_tokens``: ``k``; ``cross_attention_dim``: the UNet width the file fits;
- ``emotions``: list of emotion names, present only when given;
- ``extra.<key>``: caller metadata (``extra_metadata``), prefixed so it cannot shadow the keys above.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ed_common.atomic import write_bytes_atomic
from ed_common.errors import error_line
from ed_diffusion.errors import AdapterError
from ed_diffusion.file_kinds import ADAPTER_FORMAT, non_finite, wrong_kind
from ed_diffusion.models.adapter import (
    cross_attention_dim_of,
    emotion_attn_processors,
    get_emotion_projector,
    has_emotion_adapter,
    install_emotion_adapter,
    ip_hidden_size,
    ip_linears,
    is_cross_attention_processor,
    remove_emotion_adapter,
)
from ed_diffusion.models.projector import EmotionTokenProjector, EmotionTokenProjectorConfig

FORMAT_NAME = ADAPTER_FORMAT
FORMAT_VERSION = 1
PROJECTOR_PREFIX = "projector."
ATTN_PREFIX = "attn."
EXTRA_PREFIX = "extra."


@dataclass(frozen=True)
class AdapterInfo:
    """What :func:`load_adapter` read from a file's metadata.

    Attributes:
        path: The file.
        format_version: Layout version of the file.
        projector_config: Dimensions the projector was rebuilt with.
        num_tokens: Visual tokens per prompt (``k``).
        cross_attention_dim: UNet width the file fits.
        emotions: Emotion names in bank order, if the file records them.
        extra_metadata: The caller's ``extra_metadata`` as saved (JSON-decoded).
    """

    path: Path
    format_version: int
    projector_config: EmotionTokenProjectorConfig
    num_tokens: int
    cross_attention_dim: int
    emotions: tuple[str, ...] | None = None
    extra_metadata: Mapping[str, Any] = field(default_factory=dict)


def _attn_key(processor_name: str, which: str) -> str:
    return f"{ATTN_PREFIX}{processor_name}.{which}.weight"


def save_adapter(
    path: str | os.PathLike[str],
    unet: UNet2DConditionModel,
    projector_config: EmotionTokenProjectorConfig,
    num_tokens: int,
    extra_metadata: Mapping[str, Any] | None = None,
    *,
    emotions: Sequence[str] | None = None,
) -> Path:
    """Write the installed adapter's weights to ``path`` atomically (temp file in the same dir, then replace).

    Args:
        path: Destination ``.safetensors`` file; parent directories are created.
        unet: A UNet with the emotion adapter installed.
        projector_config: Config of the installed projector (checked against it).
        num_tokens: ``k`` the adapter was installed with (checked against the processors).
        extra_metadata: JSON-serialisable values stored under ``extra.<key>``.
        emotions: Emotion names in bank order, recorded for the loader.

    Returns:
        The written path.

    Raises:
        ValueError: No adapter installed, ``projector_config``/``num_tokens`` disagree with the installed
            adapter, or metadata is not JSON-serialisable.
    """
    path = Path(path)
    projector = get_emotion_projector(unet)
    processors = emotion_attn_processors(unet)
    if projector.config != projector_config:
        raise ValueError(
            f"projector_config {projector_config} differs from the installed projector's {projector.config}"
        )
    installed_tokens = {tuple(proc.num_tokens) for proc in processors.values()}
    if installed_tokens != {(num_tokens,)}:
        raise ValueError(
            f"num_tokens {num_tokens!r} differs from the installed adapter's {sorted(installed_tokens)}"
        )

    metadata = {
        "format": json.dumps(FORMAT_NAME),
        "format_version": json.dumps(FORMAT_VERSION),
        "projector_config": json.dumps(asdict(projector_config)),
        "num_tokens": json.dumps(num_tokens),
        "cross_attention_dim": json.dumps(cross_attention_dim_of(unet)),
    }
    if emotions is not None:
        if isinstance(emotions, str) or not all(isinstance(e, str) for e in emotions):
            raise ValueError(f"emotions must be a sequence of str, got {emotions!r}")
        metadata["emotions"] = json.dumps(list(emotions))
    for key, value in (extra_metadata or {}).items():
        try:
            metadata[f"{EXTRA_PREFIX}{key}"] = json.dumps(value)
        except TypeError as exc:
            raise ValueError(f"extra_metadata[{key!r}] is not JSON-serialisable: {exc}") from None

    # Copies on CPU: safetensors needs contiguous CPU tensors, and the file must not alias live parameters.
    tensors: dict[str, torch.Tensor] = {
        f"{PROJECTOR_PREFIX}{k}": v.detach().to("cpu", copy=True).contiguous()
        for k, v in projector.state_dict().items()
    }
    for name, proc in processors.items():
        to_k_ip, to_v_ip = ip_linears(proc)
        tensors[_attn_key(name, "to_k_ip")] = to_k_ip.weight.detach().to("cpu", copy=True)
        tensors[_attn_key(name, "to_v_ip")] = to_v_ip.weight.detach().to("cpu", copy=True)

    path.parent.mkdir(parents=True, exist_ok=True)
    # The adapter is small next to the UNet (projector + visual K/V, tens of MB for SDXL): serialise in
    # memory, then one atomic write.
    return write_bytes_atomic(path, save(tensors, metadata=metadata))


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw: dict[str, str] = f.metadata() or {}
    except FileNotFoundError:
        raise AdapterError(f"{path}: no such file") from None
    except (SafetensorError, OSError) as exc:
        reason = error_line(exc, limit=1000)
        raise AdapterError(f"{path}: not a readable safetensors file ({reason})") from None
    if (hint := wrong_kind(raw, ADAPTER_FORMAT)) is not None:
        raise AdapterError(f"{path}: {hint}")
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            raise AdapterError(f"{path}: metadata {key!r} is not JSON ({value[:40]!r})") from None
    return decoded


def _parse_info(path: Path, meta: Mapping[str, Any], unet_cross_dim: int) -> AdapterInfo:
    if meta.get("format") != FORMAT_NAME:
        raise AdapterError(f"{path}: not an emotion-adapter file (format={meta.get('format')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise AdapterError(
            f"{path}: format_version {version!r} is not supported (this code reads {FORMAT_VERSION})"
        )
    try:
        projector_config = EmotionTokenProjectorConfig(**meta["projector_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterError(f"{path}: bad projector_config metadata ({error_line(exc, limit=1000)})") from None
    num_tokens = meta.get("num_tokens")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise AdapterError(f"{path}: num_tokens metadata must be a positive int, got {num_tokens!r}")
    file_cross_dim = meta.get("cross_attention_dim")
    if file_cross_dim != unet_cross_dim:
        raise AdapterError(
            f"{path}: saved for cross_attention_dim {file_cross_dim!r}, but the UNet has {unet_cross_dim}"
        )
    if projector_config.out_dim != file_cross_dim:
        raise AdapterError(
            f"{path}: projector out_dim {projector_config.out_dim} != cross_attention_dim {file_cross_dim}"
        )
    emotions = meta.get("emotions")
    if emotions is not None and (
        not isinstance(emotions, list) or not all(isinstance(e, str) for e in emotions)
    ):
        raise AdapterError(f"{path}: emotions metadata must be a list of str, got {emotions!r}")
    extra = {k.removeprefix(EXTRA_PREFIX): v for k, v in meta.items() if k.startswith(EXTRA_PREFIX)}
    return AdapterInfo(
        path=path,
        format_version=version,
        projector_config=projector_config,
        num_tokens=num_tokens,
        cross_attention_dim=file_cross_dim,
        emotions=tuple(emotions) if emotions is not None else None,
        extra_metadata=extra,
    )


def _check_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
) -> None:
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise AdapterError(f"{path}: {len(missing)} key(s) missing, e.g. {missing[:3]}")
    unexpected = [k for k in tensors if k not in expected]
    if unexpected:
        raise AdapterError(f"{path}: {len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise AdapterError(f"{path}: {key} has shape {tuple(tensors[key].shape)}, expected {shape}")
    if (bad := non_finite(tensors)) is not None:
        raise AdapterError(
            f"{path}: {bad}; the adapter is damaged (a diverged run?), retrain or re-export it"
        )


def load_adapter(
    path: str | os.PathLike[str], unet: UNet2DConditionModel, *, scale: float = 1.0
) -> AdapterInfo:
    """Rebuild the projector from ``path``'s metadata, install the adapter into ``unet`` and load the weights.

    Everything is validated before the UNet is touched; an emotion adapter already on the UNet is replaced.

    Args:
        path: A file written by :func:`save_adapter`.
        unet: The UNet to install into (stock, or carrying an emotion adapter).
        scale: Initial visual-token scale.

    Returns:
        The file's metadata.

    Raises:
        AdapterError: The file is missing, not safetensors, not ours, of another version, for another
            ``cross_attention_dim``, or its keys/shapes do not match the UNet (a one-line message naming the
            file).
        ValueError: From :func:`install_emotion_adapter` when the UNet carries a stock IP-Adapter.
    """
    path = Path(path)
    cross_dim = cross_attention_dim_of(unet)
    info = _parse_info(path, _read_metadata(path), cross_dim)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{path}: cannot read tensors ({error_line(exc, limit=1000)})") from None

    projector = EmotionTokenProjector(info.projector_config)
    expected = {f"{PROJECTOR_PREFIX}{k}": tuple(v.shape) for k, v in projector.state_dict().items()}
    cross_names = [name for name in unet.attn_processors if is_cross_attention_processor(name)]
    for name in cross_names:
        shape = (ip_hidden_size(unet.config, name), cross_dim)
        expected[_attn_key(name, "to_k_ip")] = shape
        expected[_attn_key(name, "to_v_ip")] = shape
    _check_tensors(path, tensors, expected)

    n = len(PROJECTOR_PREFIX)
    projector.load_state_dict(
        {k[n:]: v for k, v in tensors.items() if k.startswith(PROJECTOR_PREFIX)}, strict=True
    )
    if has_emotion_adapter(unet):
        remove_emotion_adapter(unet)
    install_emotion_adapter(unet, projector, num_tokens=info.num_tokens, scale=scale)
    processors = emotion_attn_processors(unet)
    with torch.no_grad():
        for name in cross_names:
            to_k_ip, to_v_ip = ip_linears(processors[name])
            to_k_ip.weight.copy_(tensors[_attn_key(name, "to_k_ip")])  # [hidden, cross]
            to_v_ip.weight.copy_(tensors[_attn_key(name, "to_v_ip")])  # [hidden, cross]
    return info
