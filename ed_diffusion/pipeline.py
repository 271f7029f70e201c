"""MC-Diffusion rendering: the stock diffusers pipelines + emotion visual prompts.

``MCDiffusion`` loads its components once per process (``get_renderer`` caches it), retrieves the visual
prompt for a (prompt, emotion) from the bank, and renders with the stock ``StableDiffusion(XL)Pipeline``,
through ``emotion_pipeline.EmotionPipeline`` (the diffusers-native layer: bank tokens as
``ip_adapter_image_embeds``, the request's images in batched calls). This layer adds the files: PNGs
written atomically, a contact sheet, paths and metadata in the result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_common.hashing import file_sha256
from ed_common.render_contract import (
    NegativeVP,
    RenderRequest,
    RenderResult,
    VisualPromptChoice,
    checked,
)
from ed_diffusion.bank import VisualPromptBank
from ed_diffusion.images import contact_sheet, save_png_atomic
from ed_diffusion.model_source import ModelMissingError, load_diffusers_pipeline
from ed_diffusion.presets import PresetSpec
from ed_diffusion.world.captions import world_caption

log = logging.getLogger(__name__)

# Images per pipeline call: a batch is several times faster per image on a GPU, but its activations grow with
# it (eight 1024 px SDXL images under guidance fit a 24 GB card in bf16); larger requests run in chunks.
MAX_BATCH = 8


def pick_device(device: str | None) -> str:
    """``cuda`` when available unless told otherwise; a named device must exist on this machine.

    Raises:
        InvalidInputError: not a torch device name, or a GPU this machine does not have.
    """
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise InvalidInputError(
            f"device {device!r} is not a device; allowed: cpu, cuda, cuda:N, mps"
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InvalidInputError(f"device {device!r} is not available: this machine has no CUDA GPU")
        if parsed.index is not None and parsed.index >= count:
            raise InvalidInputError(
                f"device {device!r} is not available: {count} GPU(s), cuda:0..{count - 1}"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"device {device!r} is not available on this machine")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"device {device!r} is not supported; allowed: cpu, cuda, cuda:N, mps")
    return device


def pick_dtype(device: str, dtype: str | None) -> torch.dtype:
    """fp32 on CPU; bf16 (or fp16 where bf16 is unsupported) on CUDA, unless told otherwise.

    Raises:
        InvalidInputError: an unknown dtype name.
    """
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype:
        if dtype not in names:
            raise InvalidInputError(f"unknown dtype {dtype!r}; allowed: {', '.join(names)}")
        return names[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class MCDiffusion:
    """The renderer: loads once, retrieves visual prompts, renders PNGs."""

    def __init__(self, preset: PresetSpec, *, device: str | None = None, dtype: str | None = None) -> None:
        self.preset = preset
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self._lock = threading.Lock()
        # render() sets the UNet's emotion scale and drives one pipeline: concurrent callers (eval runs, chat)
        # take turns instead of racing on that shared state.
        self._render_lock = threading.Lock()
        self._loaded = False
        self.emotion: Any = None  # the EmotionPipeline (emotion_pipeline.py): stock pipeline, bank, encoders
        self.load_seconds = 0.0
        self._description: dict[str, Any] = {}

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Load pipeline, bank, text encoder and adapter (once; later calls return at once).

        Raises:
            ModelMissingError: a model directory/hub id that is not available offline.
            BankError / AdapterError: a bank or adapter that is corrupt or does not fit the UNet.
        """
        with self._lock:
            if self._loaded:
                return
            start = time.perf_counter()
            from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

            from ed_diffusion.emotion_pipeline import load_emotion_adapter

            p = self.preset
            bank = VisualPromptBank.load(_existing(p.bank, "visual-prompt bank"))
            cls = StableDiffusionXLPipeline if p.kind == "sdxl" else StableDiffusionPipeline
            pipe = _load_pipeline(cls, p.model, self.dtype)
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            if p.adapter is None:
                log.warning(
                    "no adapter weights for preset %s: using a fresh, untrained adapter (train one with "
                    "`emodir train`, or pass --vp-scale 0 for the text-only baseline)",
                    p.name,
                )
            # The bank was built elsewhere (e.g. in a temp dir that was renamed): the preset says where.
            self.emotion = load_emotion_adapter(
                pipe,
                bank=bank,
                adapter=_existing(p.adapter, "adapter weights") if p.adapter is not None else None,
                encoders=p.encoders,
            )
            self._description = self._describe()  # bank/adapter files can be large: hash them once
            self.load_seconds = time.perf_counter() - start
            self._loaded = True

    @property
    def pipe(self) -> Any:
        """The stock diffusers pipeline (None until loaded)."""
        return None if self.emotion is None else self.emotion.pipe

    @property
    def bank(self) -> VisualPromptBank | None:
        """The visual-prompt bank (None until loaded)."""
        return None if self.emotion is None else self.emotion.bank

    # ------------------------------------------------------------------ retrieval
    def retrieve(
        self, prompt: str, emotion: str | Emotion, *, top_k: int = 4, negative_vp: NegativeVP = "none"
    ) -> VisualPromptChoice:
        """Encode ``prompt`` with the bank's CLIP text encoder and take the emotion's top-k clusters."""
        self.load()
        choice: VisualPromptChoice = self.emotion.retrieve(
            prompt, emotion, top_k=top_k, negative_vp=negative_vp
        )
        return choice

    # ------------------------------------------------------------------ render
    def render(self, request: RenderRequest | Mapping[str, Any]) -> RenderResult:
        """Render ``request.n_images`` images (seeds ``seed .. seed+n-1``) into ``request.out_dir``.

        A plain mapping of ``RenderRequest`` fields is accepted and validated like one.

        Raises:
            InvalidInputError: a bad request value (names it and what is allowed).
            OutputExistsError: an image file already exists (nothing is overwritten).
        """
        if not isinstance(request, RenderRequest):
            request = checked(RenderRequest, **request)
        self.load()
        with self._render_lock:
            return self._render(request)

    def _render(self, request: RenderRequest) -> RenderResult:
        p = self.preset
        steps = request.steps or p.steps
        guidance = p.guidance if request.guidance is None else request.guidance
        width, height = request.width or p.size, request.height or p.size
        request.out_dir.mkdir(parents=True, exist_ok=True)
        seeds = request.seeds
        start = time.perf_counter()
        prompt, negative = model_prompt(p, request)
        choice = request.visual_prompt or self.emotion.retrieve(
            prompt, request.emotion, top_k=request.top_k, negative_vp=request.negative_vp
        )
        images: list[Any] = []
        paths: list[Path] = []
        # Batched pipeline calls, one generator per image (emotion_pipeline.py), at most MAX_BATCH at once;
        # each batch is written as soon as it is done, so an interruption keeps the finished ones.
        for first in range(0, len(seeds), MAX_BATCH):
            batch = seeds[first : first + MAX_BATCH]
            done = self.emotion(
                prompt,
                request.emotion,
                vp_scale=request.vp_scale,
                visual_prompt=choice,
                seeds=batch,
                negative_prompt=negative or None,
                num_inference_steps=steps,
                guidance_scale=guidance,
                width=width,
                height=height,
            ).images
            for i, (image, seed) in enumerate(zip(done, batch, strict=True), start=first):
                paths.append(save_png_atomic(image, request.out_dir / f"image_{i:02d}_seed{seed}.png"))
            images += done
        render_s = time.perf_counter() - start
        sheet = None
        if len(images) > 1:
            sheet = save_png_atomic(
                contact_sheet(images, [f"seed {s}" for s in seeds], min_side=64),
                request.out_dir / "contact_sheet.png",
            )
        return RenderResult(
            images=paths,
            contact_sheet=sheet,
            seeds=seeds,
            visual_prompt=choice,
            model=self.describe(),
            settings={
                "prompt_form": request.prompt_form,
                "model_prompt": prompt,  # what the text encoder read ("model" form may change it)
                "model_negative_prompt": negative,
                "steps": steps,
                "guidance": guidance,
                "width": width,
                "height": height,
                "vp_scale": request.vp_scale,
                "top_k": request.top_k,
                "negative_vp": request.negative_vp,
                "device": self.device,
                "dtype": str(self.dtype).removeprefix("torch."),
            },
            timings={
                "load_s": round(self.load_seconds, 4),
                "render_s": round(render_s, 4),
                "per_image_s": round(render_s / len(seeds), 4),
            },
        )

    __call__ = render

    def describe(self) -> dict[str, Any]:
        """Model, bank and adapter ids with file hashes, for manifests (hashed once, at load)."""
        return dict(self._description)

    def _describe(self) -> dict[str, Any]:
        p = self.preset
        out: dict[str, Any] = {"preset": p.name, "kind": p.kind, "model": p.model}
        for key, path in (("bank", p.bank), ("adapter", p.adapter)):
            out[key] = path
            if path is not None and Path(path).is_file():
                out[f"{key}_sha256"] = file_sha256(path)
        if self.bank is not None:
            out["bank_text_encoder"] = self.bank.metadata.text_encoder
            out["bank_image_encoder"] = self.bank.metadata.image_encoder
        return out


def model_prompt(preset: PresetSpec, request: RenderRequest) -> tuple[str, str]:
    """(prompt, negative prompt) as the preset's model reads them.

    A prompt in ``"model"`` form on a world-caption preset becomes ``world_caption`` (the form the world
    benchmark measures) and loses its negative prompt: the world model was trained on no negatives, and its
    guidance contrasts with the empty caption as in the benchmark. Every other request is rendered as written.
    """
    if request.prompt_form == "model" and preset.captions == "world":
        return world_caption(request.prompt, request.emotion), ""
    return request.prompt, request.negative_prompt


def _existing(path: str | None, what: str) -> str:
    if path is None or not Path(path).is_file():
        raise ModelMissingError(f"{what} not found at {path!r}")
    return path


def _load_pipeline(cls: Any, model: str, dtype: torch.dtype) -> Any:
    # local_files_only: no hub at run time here; on a connected GPU machine pre-download with `hf download`.
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cls.__name__ == "StableDiffusionPipeline":
        kwargs["safety_checker"] = None  # research tool; users judge their own outputs
    return load_diffusers_pipeline(cls, model, "model", **kwargs)


_RENDERERS: dict[tuple[PresetSpec, str | None, str | None], MCDiffusion] = {}


def get_renderer(preset: PresetSpec, *, device: str | None = None, dtype: str | None = None) -> MCDiffusion:
    """The process-wide renderer for a preset (components load once per process and are reused)."""
    key = (preset, device, dtype)
    if key not in _RENDERERS:
        _RENDERERS[key] = MCDiffusion(preset, device=device, dtype=dtype)
    return _RENDERERS[key]
