"""Install the emotion adapter into a diffusers UNet through diffusers' own IP-Adapter plumbing.

The stock pipelines are driven, not forked: after :func:`install_emotion_adapter` the UNet looks exactly like
a UNet with an IP-Adapter loaded by ``load_ip_adapter``:

- ``unet.encoder_hid_proj = MultiIPAdapterImageProjection([projector])`` and
  ``unet.config.encoder_hid_dim_type == "ip_image_proj"``;
- every cross-attention processor (``attn2``) is an ``IPAdapterAttnProcessor2_0`` whose ``to_k_ip[0]`` /
  ``to_v_ip[0]`` start as copies of that layer's own ``to_k`` / ``to_v`` (so the visual tokens start in the
  text-key space the layer already understands); self-attention (``attn1``) keeps its processor.

Visual tokens then reach the UNet as ``pipe(..., ip_adapter_image_embeds=[torch.cat([neg, pos])])`` with shape
``[2·B, 1, k, in_dim]`` under classifier-free guidance (the pipeline splits it in two halves).
``MultiIPAdapterImageProjection`` reshapes ``[B, n, k, in_dim] -> [B·n, k, in_dim]`` for the projector.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, cast

import torch
from diffusers.models.attention_processor import (
    Attention,
    AttnProcessor,
    AttnProcessor2_0,
    IPAdapterAttnProcessor2_0,
)
from diffusers.models.embeddings import MultiIPAdapterImageProjection
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from torch import nn

from ed_diffusion.models.projector import EmotionTokenProjector

# The replaced cross-attention processors, kept on the UNet so removal restores exactly what was there.
_STOCK_PROCESSORS_ATTR = "_emodir_stock_attn_processors"
# Processors whose maths the IP-Adapter processor reproduces; anything else (LoRA-, xformers- or custom
# processors) would be silently dropped by the swap, so installing over it is refused.
_REPLACEABLE = (AttnProcessor2_0, AttnProcessor)


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValueError(f"emotion adapter scale must be a finite number, got {scale!r}")
    return float(scale)


def is_cross_attention_processor(name: str) -> bool:
    """Whether the processor ``name`` (a key of ``unet.attn_processors``) gets decoupled K/V weights.

    Args:
        name: E.g. ``"down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"``.

    Returns:
        True for cross-attention; False for self-attention (``attn1``) and motion modules, as in diffusers.
    """
    return not name.endswith("attn1.processor") and "motion_modules" not in name


# Adapted from diffusers.loaders.unet.UNet2DConditionLoadersMixin._convert_ip_adapter_attn_to_diffusers
# (v0.42.1): the hidden-size rule only.
def ip_hidden_size(config: Any, name: str) -> int:
    """Output width of ``to_k_ip`` for the processor ``name``, by diffusers' own rule.

    Args:
        config: ``unet.config`` (needs ``block_out_channels``).
        name: A key of ``unet.attn_processors``.

    Returns:
        The channel count of the block holding the layer (also its attention inner width).

    Raises:
        ValueError: ``name`` is in no down/mid/up block.
    """
    block_out_channels = list(config.block_out_channels)
    if name.startswith("mid_block"):
        return int(block_out_channels[-1])
    if name.startswith("up_blocks"):
        block_id = int(name[len("up_blocks.")])
        return int(list(reversed(block_out_channels))[block_id])
    if name.startswith("down_blocks"):
        block_id = int(name[len("down_blocks.")])
        return int(block_out_channels[block_id])
    raise ValueError(
        f"cannot place attention processor {name!r}: expected down_blocks, mid_block or up_blocks"
    )


def ip_linears(proc: IPAdapterAttnProcessor2_0) -> tuple[nn.Linear, nn.Linear]:
    """The ``(to_k_ip, to_v_ip)`` projections of the (single) adapter in ``proc``.

    Args:
        proc: A decoupled cross-attention processor installed by :func:`install_emotion_adapter`.

    Returns:
        The two bias-free ``Linear(cross_attention_dim -> hidden_size)`` layers.
    """
    return cast(nn.Linear, proc.to_k_ip[0]), cast(nn.Linear, proc.to_v_ip[0])


def cross_attention_dim_of(unet: UNet2DConditionModel) -> int:
    """``unet.config.cross_attention_dim`` as one int.

    Args:
        unet: The UNet.

    Returns:
        The text/visual token width (768 SD 1.5-class, 2048 SDXL-class).

    Raises:
        ValueError: The config holds a per-block tuple.
    """
    dim = unet.config["cross_attention_dim"]
    if not isinstance(dim, int):
        # Per-block cross_attention_dim tuples exist in diffusers but no IP-Adapter layout supports them.
        raise ValueError(
            f"unet.config.cross_attention_dim must be one int for the emotion adapter, got {dim!r}"
        )
    return dim


def has_emotion_adapter(unet: UNet2DConditionModel) -> bool:
    """Whether ``unet`` carries an emotion adapter installed by :func:`install_emotion_adapter`.

    Args:
        unet: The UNet to inspect.

    Returns:
        True when its ``encoder_hid_proj`` holds exactly one :class:`EmotionTokenProjector`.
    """
    proj = unet.encoder_hid_proj
    return (
        isinstance(proj, MultiIPAdapterImageProjection)
        and len(proj.image_projection_layers) == 1
        and isinstance(proj.image_projection_layers[0], EmotionTokenProjector)
        and unet.config["encoder_hid_dim_type"] == "ip_image_proj"
    )


def _require_adapter(unet: UNet2DConditionModel, what: str) -> None:
    if not has_emotion_adapter(unet):
        raise ValueError(f"{what}: the UNet has no emotion adapter; call install_emotion_adapter first")


def get_emotion_projector(unet: UNet2DConditionModel) -> EmotionTokenProjector:
    """The installed projector.

    Args:
        unet: A UNet with the emotion adapter installed.

    Returns:
        The :class:`EmotionTokenProjector` inside ``unet.encoder_hid_proj``.

    Raises:
        ValueError: No emotion adapter is installed.
    """
    _require_adapter(unet, "get_emotion_projector")
    proj = cast(MultiIPAdapterImageProjection, unet.encoder_hid_proj)
    return cast(EmotionTokenProjector, proj.image_projection_layers[0])


def emotion_attn_processors(unet: UNet2DConditionModel) -> dict[str, IPAdapterAttnProcessor2_0]:
    """The decoupled cross-attention processors, by processor name (``...attn2.processor``), in UNet order.

    Args:
        unet: A UNet with the emotion adapter installed.

    Returns:
        Processor name to ``IPAdapterAttnProcessor2_0``.

    Raises:
        ValueError: No emotion adapter is installed.
    """
    _require_adapter(unet, "emotion_attn_processors")
    return {
        name: proc
        for name, proc in unet.attn_processors.items()
        if isinstance(proc, IPAdapterAttnProcessor2_0)
    }


def install_emotion_adapter(
    unet: UNet2DConditionModel, projector: EmotionTokenProjector, *, num_tokens: int, scale: float = 1.0
) -> None:
    """Wire ``projector`` into ``unet`` as an IP-Adapter-style decoupled cross-attention.

    The projector is moved to the UNet's device and dtype (as diffusers does for loaded IP-Adapters) and
    becomes a submodule of the UNet, so later ``unet.to(...)`` calls move it too. New ``to_k_ip``/``to_v_ip``
    weights are copies (not ties) of each cross-attention layer's ``to_k``/``to_v``. The global RNG is not
    consumed.

    Args:
        unet: A stock SD 1.5- or SDXL-class UNet (no IP-Adapter loaded).
        projector: The token projector; ``projector.out_dim`` must equal ``unet.config.cross_attention_dim``.
        num_tokens: Visual tokens per prompt (``k``).
        scale: Weight of the visual-token attention; 0 makes the adapter an exact no-op.

    Raises:
        ValueError: Mismatched dimensions, a bad ``num_tokens`` or ``scale``, an ``encoder_hid_proj`` already
            present, or a cross-attention processor that is not a stock ``AttnProcessor(2_0)``.
    """
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}")
    scale = _check_scale(scale)
    cross_dim = cross_attention_dim_of(unet)
    if projector.out_dim != cross_dim:
        raise ValueError(
            f"projector.out_dim ({projector.out_dim}) must equal "
            f"unet.config.cross_attention_dim ({cross_dim})"
        )
    if unet.encoder_hid_proj is not None:
        kind = "an emotion adapter" if has_emotion_adapter(unet) else type(unet.encoder_hid_proj).__name__
        raise ValueError(
            f"the UNet already has an encoder_hid_proj ({kind}); remove it first "
            "(remove_emotion_adapter, or pipe.unload_ip_adapter for a stock IP-Adapter)"
        )

    # Build every processor before touching the UNet, so a refused layer leaves the UNet unchanged.
    stock = unet.attn_processors
    new_processors: dict[str, Any] = {}
    replaced: dict[str, Any] = {}
    for name, proc in stock.items():
        if not is_cross_attention_processor(name):
            new_processors[name] = proc
            continue
        if not isinstance(proc, _REPLACEABLE):
            raise ValueError(
                f"cross-attention processor {name!r} is {type(proc).__name__}; the emotion adapter can only "
                "replace AttnProcessor2_0 or AttnProcessor"
            )
        attn = unet.get_submodule(name.removesuffix(".processor"))
        if not isinstance(attn, Attention):
            raise ValueError(f"{name}: expected a diffusers Attention module, got {type(attn).__name__}")
        hidden = ip_hidden_size(unet.config, name)
        expected = (hidden, cross_dim)
        for proj_name, linear in (("to_k", attn.to_k), ("to_v", attn.to_v)):
            if tuple(linear.weight.shape) != expected or linear.bias is not None:
                raise ValueError(
                    f"{name}: {proj_name} weight is {tuple(linear.weight.shape)} "
                    f"(bias={linear.bias is not None}), expected {expected} without bias"
                )
        # Meta construction skips the random init we would overwrite anyway and leaves the global RNG alone.
        with torch.device("meta"):
            ip = IPAdapterAttnProcessor2_0(  # type: ignore[no-untyped-call]
                hidden_size=hidden, cross_attention_dim=cross_dim, num_tokens=(num_tokens,), scale=scale
            )
        ip.to_empty(device=attn.to_k.weight.device)
        ip.to(dtype=attn.to_k.weight.dtype)
        with torch.no_grad():
            to_k_ip, to_v_ip = ip_linears(ip)
            to_k_ip.weight.copy_(attn.to_k.weight)  # [hidden, cross_dim]
            to_v_ip.weight.copy_(attn.to_v.weight)  # [hidden, cross_dim]
        new_processors[name] = ip
        replaced[name] = proc

    projector.to(device=unet.device, dtype=unet.dtype)
    unet.set_attn_processor(new_processors)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([projector])
    # register_to_config rebuilds the FrozenDict; diffusers' own `config.encoder_hid_dim_type = ...` only sets
    # an attribute, leaving the dict entry (what save_config writes) stale.
    unet.register_to_config(encoder_hid_dim_type="ip_image_proj")  # type: ignore[no-untyped-call]
    setattr(unet, _STOCK_PROCESSORS_ATTR, replaced)


def remove_emotion_adapter(unet: UNet2DConditionModel) -> None:
    """Undo :func:`install_emotion_adapter`: restore the replaced processors and drop the projector.

    A UNet without any adapter is left alone (idempotent).

    Args:
        unet: The UNet.

    Raises:
        ValueError: ``unet.encoder_hid_proj`` holds something other than the emotion adapter (e.g. a stock
            IP-Adapter, which ``pipe.unload_ip_adapter()`` removes).
    """
    if unet.encoder_hid_proj is None and not any(
        isinstance(p, IPAdapterAttnProcessor2_0) for p in unet.attn_processors.values()
    ):
        return
    if not has_emotion_adapter(unet):
        raise ValueError(
            f"the UNet's encoder_hid_proj ({type(unet.encoder_hid_proj).__name__}) is not an emotion "
            "adapter; use pipe.unload_ip_adapter() for a stock IP-Adapter"
        )
    stock: dict[str, Any] = getattr(unet, _STOCK_PROCESSORS_ATTR, {})
    restored: dict[str, Any] = {}
    for name, proc in unet.attn_processors.items():
        if isinstance(proc, IPAdapterAttnProcessor2_0):
            # Falls back to diffusers' default when the record is gone (e.g. a deep copy made by older code).
            original = stock.get(name)
            restored[name] = original if original is not None else AttnProcessor2_0()  # type: ignore[no-untyped-call]
        else:
            restored[name] = proc
    unet.set_attn_processor(restored)
    unet.encoder_hid_proj = None
    unet.register_to_config(encoder_hid_dim_type=None)  # type: ignore[no-untyped-call]
    if hasattr(unet, _STOCK_PROCESSORS_ATTR):
        delattr(unet, _STOCK_PROCESSORS_ATTR)


def set_emotion_scale(unet: UNet2DConditionModel, scale: float) -> None:
    """Set the weight of the visual-token attention in every cross-attention layer.

    Args:
        unet: A UNet with the emotion adapter installed.
        scale: Any finite number; 0 makes the adapter an exact no-op (the processor skips the branch).

    Raises:
        ValueError: ``scale`` is not finite, or no emotion adapter is installed.
    """
    scale = _check_scale(scale)
    for proc in emotion_attn_processors(unet).values():
        proc.scale = [scale]


def emotion_adapter_parameters(unet: UNet2DConditionModel) -> list[nn.Parameter]:
    """The parameters a trainer optimises: the projector, then every ``to_k_ip``/``to_v_ip`` in UNet order.

    Args:
        unet: A UNet with the emotion adapter installed.

    Returns:
        The parameters (the live objects, not copies).

    Raises:
        ValueError: No emotion adapter is installed.
    """
    params = list(get_emotion_projector(unet).parameters())
    for proc in emotion_attn_processors(unet).values():
        to_k_ip, to_v_ip = ip_linears(proc)
        # nn.Linear annotates .weight as Tensor; it is the registered Parameter.
        params += [cast(nn.Parameter, to_k_ip.weight), cast(nn.Parameter, to_v_ip.weight)]
    return params


@contextlib.contextmanager
def reference_mode(unet: Any, lora: bool) -> Iterator[None]:
    """The DPO reference: the same UNet with its adapters off (emotion scale 0, LoRA disabled), no grad."""
    scales = [proc.scale for proc in emotion_attn_processors(unet).values()]
    set_emotion_scale(unet, 0.0)
    if lora:
        unet.disable_adapters()
    try:
        with torch.no_grad():
            yield
    finally:
        for proc, scale in zip(emotion_attn_processors(unet).values(), scales, strict=True):
            proc.scale = scale
        if lora:
            unet.enable_adapters()


@contextlib.contextmanager
def frozen_adapter_mode(unet: Any, frozen: list[torch.Tensor]) -> Iterator[None]:
    """A DPO reference that sees the visual prompt: the adapter's weights swapped for a frozen copy, no grad.

    ``frozen`` holds one tensor per ``emotion_adapter_parameters(unet)`` entry (e.g. the SFT adapter a DPO
    stage starts from). The swap exchanges storage (no copy), so entering and leaving cost nothing and the
    trained weights come back bit for bit.

    Raises:
        ValueError: ``frozen`` does not match the adapter's parameters in number or shape.
    """
    params = emotion_adapter_parameters(unet)
    if len(frozen) != len(params) or any(f.shape != p.shape for f, p in zip(frozen, params, strict=False)):
        raise ValueError("the frozen reference does not match the emotion adapter's parameters")
    with torch.no_grad():
        for p, f in zip(params, frozen, strict=True):
            if f.device != p.device or f.dtype != p.dtype:  # copied before the UNet moved (e.g. to CUDA)
                f.data = f.data.to(device=p.device, dtype=p.dtype)
            p.data, f.data = f.data, p.data
    try:
        with torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for p, f in zip(params, frozen, strict=True):
                p.data, f.data = f.data, p.data
