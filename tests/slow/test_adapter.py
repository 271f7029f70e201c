"""The emotion adapter on tiny SD 1.5- and SDXL-class pipelines loaded with from_pretrained (no downloads)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file, save_file
from transformers.utils import logging as transformers_logging

from ed_common.errors import EmodirError
from ed_diffusion.adapter_file import AdapterInfo, load_adapter, save_adapter
from ed_diffusion.errors import AdapterError
from ed_diffusion.models import (
    EmotionTokenProjector,
    EmotionTokenProjectorConfig,
    emotion_adapter_parameters,
    has_emotion_adapter,
    install_emotion_adapter,
    remove_emotion_adapter,
    set_emotion_scale,
)
from ed_diffusion.models.adapter import emotion_attn_processors, get_emotion_projector, ip_linears
from ed_diffusion.tiny_models import TINY_KINDS, build_tiny_sd15_pipeline, ensure_tiny_pipeline_dir

pytestmark = pytest.mark.slow

K = 4  # visual tokens per prompt
IN_DIM = 24  # bank token width (the real one is ~2792)
PROMPT = "a joyful red fox"
PIPELINE_CLASSES: dict[str, Any] = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}


@pytest.fixture(scope="module", autouse=True)
def _quiet_single_thread() -> Iterator[None]:
    torch.set_num_threads(1)  # environment.md §1: one thread is fast and stable on the 2-core machine
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    yield
    diffusers_logging.enable_progress_bar()
    transformers_logging.enable_progress_bar()


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-pipelines")
    return {kind: ensure_tiny_pipeline_dir(root, kind) for kind in TINY_KINDS}


@pytest.fixture(params=TINY_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def load_pipe(tiny_dirs: dict[str, Path], kind: str) -> Any:
    pipe = PIPELINE_CLASSES[kind].from_pretrained(tiny_dirs[kind], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def pipe(tiny_dirs: dict[str, Path], kind: str) -> Any:
    return load_pipe(tiny_dirs, kind)


def generate(pipe: Any, embeds: list[torch.Tensor] | None = None) -> np.ndarray:
    out = pipe(
        PROMPT,
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(0),
        ip_adapter_image_embeds=embeds,
    )
    return np.asarray(out.images)  # [1, 64, 64, 3]


def visual_embeds(seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator("cpu").manual_seed(seed)
    positive = torch.randn(1, 1, K, IN_DIM, generator=gen)  # [B, 1, k, d]
    negative = torch.zeros_like(positive)  # [B, 1, k, d]
    return [torch.cat([negative, positive])]  # [2B, 1, k, d]: the pipeline chunks it into (neg, pos)


def make_projector(out_dim: int) -> EmotionTokenProjector:
    torch.manual_seed(0)
    return EmotionTokenProjector(EmotionTokenProjectorConfig(in_dim=IN_DIM, out_dim=out_dim, num_heads=4))


def install(pipe: Any, scale: float = 1.0) -> EmotionTokenProjector:
    projector = make_projector(pipe.unet.config.cross_attention_dim)
    install_emotion_adapter(pipe.unet, projector, num_tokens=K, scale=scale)
    return projector


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# --- tiny pipelines ----------------------------------------------------------------------------------------


def test_ensure_tiny_pipeline_dir_builds_once(tiny_dirs: dict[str, Path]) -> None:
    index = tiny_dirs["sd15"] / "model_index.json"
    before = index.stat().st_mtime_ns
    assert ensure_tiny_pipeline_dir(tiny_dirs["sd15"].parent, "sd15") == tiny_dirs["sd15"]
    assert index.stat().st_mtime_ns == before
    assert not [p for p in tiny_dirs["sd15"].parent.iterdir() if p.name.startswith(".tiny-")]
    with pytest.raises(ValueError, match=r"kind must be one of \('sd15', 'sdxl'\), got 'sd3'"):
        ensure_tiny_pipeline_dir(tiny_dirs["sd15"].parent, "sd3")  # type: ignore[arg-type]


def test_tiny_pipeline_weights_are_deterministic_per_seed() -> None:
    a, b, c = (build_tiny_sd15_pipeline(seed).unet.state_dict() for seed in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# --- projector ---------------------------------------------------------------------------------------------


def test_projector_maps_tokens_to_out_dim_with_expected_param_count() -> None:
    cfg = EmotionTokenProjectorConfig(in_dim=IN_DIM, out_dim=32, num_heads=4, mlp_ratio=4)
    projector = EmotionTokenProjector(cfg)
    out = projector(torch.randn(3, K, IN_DIM))  # [N, k, in]
    assert out.shape == (3, K, 32)
    assert torch.isfinite(out).all()

    i, o, h = IN_DIM, 32, 4 * 32
    proj_in = (i * h + h) + 2 * h + (h * o + o) + 2 * o  # Linear, LN, Linear, LN
    attn = 2 * o + (3 * o * o + 3 * o) + (o * o + o)  # LN, fused q/k/v in-projection, out-projection
    mlp = 2 * o + (o * h + h) + (h * o + o)  # LN, Linear, Linear
    assert sum(p.numel() for p in projector.parameters()) == proj_in + attn + mlp
    assert (projector.in_dim, projector.out_dim) == (IN_DIM, 32)


def test_projector_rejects_wrong_token_shape() -> None:
    projector = EmotionTokenProjector(EmotionTokenProjectorConfig(in_dim=IN_DIM, out_dim=32, num_heads=4))
    with pytest.raises(ValueError, match=rf"\[N, k, {IN_DIM}\].*\[3, 4, 7\]"):
        projector(torch.randn(3, 4, 7))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_dim": 0, "out_dim": 32}, "in_dim must be a positive int, got 0"),
        ({"in_dim": 8, "out_dim": 30}, r"out_dim \(30\) must be divisible by num_heads \(8\)"),
        ({"in_dim": 8, "out_dim": 32, "mlp_ratio": True}, "mlp_ratio must be a positive int, got True"),
        ({"in_dim": 8, "out_dim": 32, "eps": 0.0}, "eps must be a positive finite float, got 0.0"),
    ],
)
def test_projector_config_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmotionTokenProjectorConfig(**kwargs)


# --- install / scale / remove ------------------------------------------------------------------------------


def test_adapter_scale_zero_matches_baseline_and_nonzero_scale_differs(pipe: Any) -> None:
    baseline = generate(pipe)
    install(pipe, scale=0.0)
    embeds = visual_embeds()

    assert max_diff(generate(pipe, embeds), baseline) == 0.0

    set_emotion_scale(pipe.unet, 1.0)
    at_one = generate(pipe, embeds)
    set_emotion_scale(pipe.unet, 5.0)
    at_five = generate(pipe, embeds)
    assert max_diff(at_one, baseline) > 1e-3
    assert max_diff(at_five, baseline) > 1e-3
    assert max_diff(at_five, at_one) > 1e-3
    # Different visual tokens must change the image too: the adapter is not a constant offset.
    assert max_diff(generate(pipe, visual_embeds(seed=2)), at_five) > 1e-4


def test_adapter_ip_weights_start_as_copies_of_text_kv(pipe: Any) -> None:
    stock_self_attn = {n: p for n, p in pipe.unet.attn_processors.items() if n.endswith("attn1.processor")}
    projector = install(pipe)
    unet = pipe.unet

    processors = emotion_attn_processors(unet)
    assert processors and all(name.endswith("attn2.processor") for name in processors)
    for name, proc in processors.items():
        attn = unet.get_submodule(name.removesuffix(".processor"))
        to_k_ip, to_v_ip = ip_linears(proc)
        assert torch.equal(to_k_ip.weight, attn.to_k.weight)
        assert torch.equal(to_v_ip.weight, attn.to_v.weight)
        # Copies, not ties: training the visual path must not move the text keys.
        assert to_k_ip.weight.data_ptr() != attn.to_k.weight.data_ptr()
        assert proc.num_tokens == (K,) and proc.scale == [1.0]
    for name, proc in unet.attn_processors.items():
        if name.endswith("attn1.processor"):
            assert proc is stock_self_attn[name]

    assert has_emotion_adapter(unet)
    assert get_emotion_projector(unet) is projector
    assert unet.config["encoder_hid_dim_type"] == "ip_image_proj"
    params = emotion_adapter_parameters(unet)
    assert len(params) == len(list(projector.parameters())) + 2 * len(processors)
    assert len({id(p) for p in params}) == len(params)
    unet_param_ids = {id(p) for p in unet.parameters()}
    assert all(id(p) in unet_param_ids for p in params)  # registered in the UNet, so unet.to() moves them


def test_remove_emotion_adapter_restores_stock_output_exactly(pipe: Any) -> None:
    baseline = generate(pipe)
    stock = dict(pipe.unet.attn_processors)
    install(pipe, scale=1.0)
    assert max_diff(generate(pipe, visual_embeds()), baseline) > 1e-3

    remove_emotion_adapter(pipe.unet)

    assert not has_emotion_adapter(pipe.unet)
    assert pipe.unet.encoder_hid_proj is None
    assert pipe.unet.config["encoder_hid_dim_type"] is None
    restored = pipe.unet.attn_processors
    assert all(restored[n] is stock[n] for n in stock)
    assert all(isinstance(p, AttnProcessor2_0) for p in restored.values())
    assert max_diff(generate(pipe), baseline) == 0.0
    remove_emotion_adapter(pipe.unet)  # idempotent
    install(pipe)  # and installable again
    assert has_emotion_adapter(pipe.unet)


def test_install_rejects_mismatched_projector_out_dim(pipe: Any) -> None:
    cross_dim = pipe.unet.config.cross_attention_dim
    wrong = EmotionTokenProjector(EmotionTokenProjectorConfig(in_dim=IN_DIM, out_dim=48, num_heads=4))
    with pytest.raises(ValueError, match=rf"out_dim \(48\).*cross_attention_dim \({cross_dim}\)"):
        install_emotion_adapter(pipe.unet, wrong, num_tokens=K)
    assert not has_emotion_adapter(pipe.unet)
    assert not any(isinstance(p, IPAdapterAttnProcessor2_0) for p in pipe.unet.attn_processors.values())


def test_install_and_scale_reject_bad_arguments() -> None:
    unet = build_tiny_sd15_pipeline().unet
    with pytest.raises(ValueError, match="num_tokens must be a positive int, got 0"):
        install_emotion_adapter(unet, make_projector(32), num_tokens=0)
    with pytest.raises(ValueError, match="scale must be a finite number, got nan"):
        install_emotion_adapter(unet, make_projector(32), num_tokens=K, scale=math.nan)
    with pytest.raises(ValueError, match="no emotion adapter"):
        set_emotion_scale(unet, 1.0)
    install_emotion_adapter(unet, make_projector(32), num_tokens=K)
    with pytest.raises(ValueError, match="already has an encoder_hid_proj"):
        install_emotion_adapter(unet, make_projector(32), num_tokens=K)


# --- save / load -------------------------------------------------------------------------------------------


def _perturb_adapter(unet: Any) -> None:
    # Move every adapter weight off its initial value so the round trip proves something.
    gen = torch.Generator("cpu").manual_seed(7)
    with torch.no_grad():
        for p in emotion_adapter_parameters(unet):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def _adapter_state(unet: Any) -> dict[str, torch.Tensor]:
    state = {f"projector.{k}": v for k, v in get_emotion_projector(unet).state_dict().items()}
    for name, proc in emotion_attn_processors(unet).items():
        to_k_ip, to_v_ip = ip_linears(proc)
        state[f"{name}.k"], state[f"{name}.v"] = to_k_ip.weight, to_v_ip.weight
    return state


def test_save_load_round_trip_is_bit_identical(pipe: Any, tiny_dirs: dict[str, Path], kind: str) -> None:
    tmp = tiny_dirs[kind].parent / f"roundtrip-{kind}"
    projector = install(pipe)
    _perturb_adapter(pipe.unet)
    expected_image = generate(pipe, visual_embeds())
    path = save_adapter(
        tmp / "adapter.safetensors",
        pipe.unet,
        projector.config,
        K,
        extra_metadata={"step": 3},
        emotions=["amusement", "anger"],
    )
    assert [p.name for p in tmp.iterdir()] == ["adapter.safetensors"]  # no temp file left behind
    keys = load_file(path).keys()
    assert any(k.startswith("projector.proj_in.0.") for k in keys)
    assert any(k.startswith("attn.") and k.endswith("attn2.processor.to_k_ip.weight") for k in keys)

    fresh = load_pipe(tiny_dirs, kind)
    info = load_adapter(path, fresh.unet)

    assert info == AdapterInfo(
        path=path,
        format_version=1,
        projector_config=projector.config,
        num_tokens=K,
        cross_attention_dim=pipe.unet.config.cross_attention_dim,
        emotions=("amusement", "anger"),
        extra_metadata={"step": 3},
    )
    saved, loaded = _adapter_state(pipe.unet), _adapter_state(fresh.unet)
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert max_diff(generate(fresh, visual_embeds()), expected_image) == 0.0


def _assert_one_line_adapter_error(path: Path, unet: Any, *fragments: str) -> None:
    with pytest.raises(AdapterError) as excinfo:
        load_adapter(path, unet)
    message = str(excinfo.value)
    assert isinstance(excinfo.value, EmodirError)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert not has_emotion_adapter(unet)  # a refused file leaves the UNet untouched


def test_load_adapter_rejects_bad_files_with_one_line_error(tiny_dirs: dict[str, Path]) -> None:
    tmp = tiny_dirs["sd15"].parent / "bad-files"
    tmp.mkdir()
    sd15, sdxl = load_pipe(tiny_dirs, "sd15"), load_pipe(tiny_dirs, "sdxl")
    projector = install(sd15)
    good = save_adapter(tmp / "good.safetensors", sd15.unet, projector.config, K)
    target = load_pipe(tiny_dirs, "sd15").unet
    tensors = load_file(good)
    with open(good, "rb") as f:  # keep the metadata of the good file for the tampered copies
        header_len = int.from_bytes(f.read(8), "little")
        metadata = json.loads(f.read(header_len))["__metadata__"]

    _assert_one_line_adapter_error(tmp / "missing.safetensors", target, "no such file")

    garbage = tmp / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    _assert_one_line_adapter_error(garbage, target, "not a readable safetensors file")

    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    _assert_one_line_adapter_error(truncated, target, "safetensors")

    foreign = tmp / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    _assert_one_line_adapter_error(foreign, target, "not an emotion-adapter file")

    some_key = next(k for k in tensors if k.endswith("to_k_ip.weight"))
    wrong_shape = tmp / "wrong-shape.safetensors"
    save_file({**tensors, some_key: torch.zeros(3, 5)}, wrong_shape, metadata=metadata)
    _assert_one_line_adapter_error(wrong_shape, target, some_key, "(3, 5)")

    missing_key = tmp / "missing-key.safetensors"
    save_file({k: v for k, v in tensors.items() if k != some_key}, missing_key, metadata=metadata)
    _assert_one_line_adapter_error(missing_key, target, "1 key(s) missing", some_key)

    _assert_one_line_adapter_error(good, sdxl.unet, "cross_attention_dim 32", "UNet has 64")


def test_frozen_adapter_mode_renders_with_the_frozen_weights_and_restores_the_trained_ones(pipe: Any) -> None:
    from ed_diffusion.models.adapter import frozen_adapter_mode

    install(pipe)
    params = emotion_adapter_parameters(pipe.unet)
    frozen = [p.detach().clone() for p in params]  # the adapter at the start of a stage (e.g. SFT's)
    kept = [f.clone() for f in frozen]
    start = generate(pipe, visual_embeds())
    with torch.no_grad():  # training moves the adapter
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    trained = [p.detach().clone() for p in params]
    moved = generate(pipe, visual_embeds())
    assert max_diff(moved, start) > 1e-4
    with frozen_adapter_mode(pipe.unet, frozen):
        assert max_diff(generate(pipe, visual_embeds()), start) == 0.0  # the reference is the frozen adapter
        assert not torch.is_grad_enabled()
    assert all(torch.equal(p, t) for p, t in zip(params, trained, strict=True))  # restored bit for bit
    assert all(torch.equal(f, k) for f, k in zip(frozen, kept, strict=True))  # and the frozen copy too
    assert max_diff(generate(pipe, visual_embeds()), moved) == 0.0
    with pytest.raises(ValueError, match="does not match"), frozen_adapter_mode(pipe.unet, frozen[:-1]):
        pass
    # A copy made before the UNet moved (here: another dtype, as CPU vs CUDA) follows it at the first swap.
    other = [f.double() for f in kept]
    with frozen_adapter_mode(pipe.unet, other):
        assert max_diff(generate(pipe, visual_embeds()), start) < 1e-6
    assert all(o.dtype == p.dtype for o, p in zip(other, params, strict=True))
