"""A full transformers ``CLIPModel`` for scoring: image and text embeds in one space, and the logit scale.

The bank's ``FeatureEncoders`` loads the two towers separately and drops ``logit_scale``, which zero-shot
classification needs; scoring therefore loads the whole ``CLIPModel`` (same loading rules and error helpers:
``local_files_only``, no remote code, a checkpoint missing weights is refused). Offline, ``save_tiny_clip``
writes a random-weight tiny CLIP built from a config so that the very same ``from_pretrained`` path is tested.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from PIL import Image
from torch import Tensor, nn

from ed_common.errors import InvalidInputError
from ed_diffusion.encoders import _complete, _load
from ed_diffusion.errors import EncoderLoadError

# images -> raw features [n, d]; what the CLIP-based scorers consume (a ClipBundle's image_embeds, a cache, or
# a fake in tests).
ImageFeatures = Callable[[Sequence[Image.Image]], Tensor]


class ImageTextEmbedder(Protocol):
    """What the CLIP-based scorers need: raw image and text embeds in a joint space, and the logit scale."""

    @property
    def logit_scale(self) -> float:
        """Multiplier of cosine similarities before a softmax (CLIP's learnt temperature, exp'd)."""
        ...

    def image_embeds(self, images: Sequence[Image.Image]) -> Tensor:
        """Raw (not normalised) image embeds ``[n, d]``, float32 on the CPU."""
        ...

    def text_embeds(self, texts: Sequence[str]) -> Tensor:
        """Raw (not normalised) text embeds ``[n, d]``, float32 on the CPU."""
        ...


class ClipBundle:
    """A frozen ``CLIPModel`` with its tokenizer and image processor (implements ``ImageTextEmbedder``).

    Embeds are ``visual_projection(vision pooler)`` and ``text_projection(text pooler)``, i.e. what
    ``get_image_features`` / ``get_text_features`` return in transformers 4 (in 5 they return an output
    object whose ``pooler_output`` holds them); computing them explicitly keeps one meaning across versions.
    They are returned raw: the EmoGen probe was trained on unnormalised features.

    Attributes:
        model: the ``CLIPModel``.
        tokenizer: its tokenizer (texts over the 77-token limit are truncated).
        image_processor: its image processor (resize, centre crop, CLIP normalisation).
        source: where it came from (hub id, local path or a tiny-model description).
        batch_size: images or texts per forward pass.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, image_processor: Any, *, source: str, batch_size: int = 16
    ) -> None:
        """Wrap already-built components (no I/O, no device or dtype change)."""
        if batch_size < 1:
            raise InvalidInputError(f"batch_size={batch_size!r} is invalid; allowed: an integer >= 1")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.source = source
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
        local_files_only: bool = True,
    ) -> ClipBundle:
        """Load a ``CLIPModel``, tokenizer and image processor from a local directory or the local hub cache.

        Raises:
            EncoderLoadError: a component is missing or unreadable, or the checkpoint lacks CLIP weights
                (e.g. a vision-only checkpoint); the message names it and where it was looked for.
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, CLIPModel

        source = str(id_or_path)
        common: dict[str, Any] = {"local_files_only": local_files_only, "trust_remote_code": False}
        # Check the checkpoint's type first: transformers would build a default-size CLIP around a one-tower
        # checkpoint (e.g. a CLIPVisionModel) and fail with a multi-page size-mismatch report.
        config = _load(
            "CLIP config", source, local_files_only, lambda: AutoConfig.from_pretrained(source, **common)
        )
        if getattr(config, "model_type", None) != "clip":
            raise EncoderLoadError(
                f"{source!r} is a {getattr(config, 'model_type', '?')!r} checkpoint, not a full CLIPModel "
                "('clip': text and vision towers and logit_scale)"
            )

        def load_model() -> Any:
            try:
                return CLIPModel.from_pretrained(source, dtype=dtype, output_loading_info=True, **common)
            except RuntimeError as exc:  # e.g. tensor size mismatches: reported like any unreadable file
                raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

        model = _complete("CLIP model", source, _load("CLIP model", source, local_files_only, load_model))
        tokenizer = _load(
            "CLIP tokenizer",
            source,
            local_files_only,
            lambda: AutoTokenizer.from_pretrained(source, **common),
        )
        processor = _load(
            "CLIP image processor",
            source,
            local_files_only,
            lambda: AutoImageProcessor.from_pretrained(source, **common),  # type: ignore[no-untyped-call]
        )
        return cls(model.to(device), tokenizer, processor, source=source, batch_size=batch_size)

    @property
    def dim(self) -> int:
        """Joint embedding size (``projection_dim``: 768 for CLIP-L/14, 512 for B/32)."""
        cfg: Any = self.model.config
        return int(cfg.projection_dim)

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return next(self.model.parameters()).device

    @property
    def logit_scale(self) -> float:
        """``exp(logit_scale)``: 100 for the released CLIP checkpoints (clamped there in training)."""
        param: Any = self.model.logit_scale
        return float(param.detach().float().exp().cpu())

    @torch.inference_mode()
    def image_embeds(self, images: Sequence[Image.Image]) -> Tensor:
        """Raw image embeds ``[n, d]`` of ``images`` (converted to RGB), float32 on the CPU."""
        if not images:
            return torch.empty(0, self.dim)
        m: Any = self.model
        dtype = next(m.parameters()).dtype
        chunks = []
        for start in range(0, len(images), self.batch_size):
            rgb = [
                im if im.mode == "RGB" else im.convert("RGB")
                for im in images[start : start + self.batch_size]
            ]
            pixels = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]  # [b, 3, H, W]
            pooled = m.vision_model(pixel_values=pixels.to(self.device, dtype)).pooler_output  # [b, hidden]
            chunks.append(m.visual_projection(pooled).float().cpu())  # [b, d]
        return torch.cat(chunks)  # [n, d]

    @torch.inference_mode()
    def text_embeds(self, texts: Sequence[str]) -> Tensor:
        """Raw text embeds ``[n, d]`` of ``texts`` (truncated to the token limit), float32 on the CPU."""
        if not texts:
            return torch.empty(0, self.dim)
        m: Any = self.model
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.tokenizer.model_max_length,
                return_tensors="pt",
            )
            pooled = m.text_model(
                input_ids=batch["input_ids"].to(self.device),  # [b, T]
                attention_mask=batch["attention_mask"].to(self.device),  # [b, T]
            ).pooler_output  # [b, hidden]
            chunks.append(m.text_projection(pooled).float().cpu())  # [b, d]
        return torch.cat(chunks)  # [n, d]


class CachedImageEmbeds:
    """Memoises the image embeds of the current batch, so every CLIP scorer of a batch shares one forward.

    The cache key is the identity of the batch's image objects; the batch is kept referenced while cached,
    so an id cannot be reused by another image in the meantime.
    """

    def __init__(self, embedder: ImageTextEmbedder) -> None:
        """Wrap ``embedder``; nothing is computed yet."""
        self.embedder = embedder
        self._images: list[Image.Image] = []
        self._embeds: Tensor | None = None

    def __call__(self, images: Sequence[Image.Image]) -> Tensor:
        """Raw image embeds ``[n, d]``: computed once per distinct batch of image objects."""
        if self._embeds is None or [id(i) for i in images] != [id(i) for i in self._images]:
            self._images = list(images)
            self._embeds = self.embedder.image_embeds(self._images)
        return self._embeds


def prompt_ensemble(embedder: ImageTextEmbedder, labels: Sequence[str], templates: Sequence[str]) -> Tensor:
    """One unit-norm text embed per label: the mean of its normalised template embeds, renormalised.

    This is CLIP's prompt ensembling (Radford et al. 2021, §3.1.4). Each template holds ``{label}``.

    Returns:
        Tensor ``[len(labels), d]``, rows of unit norm, in ``labels`` order.
    """
    if not labels or not templates:
        raise InvalidInputError("prompt_ensemble needs at least one label and one template")
    texts = [t.format(label=label) for label in labels for t in templates]
    embeds = torch.nn.functional.normalize(embedder.text_embeds(texts).float(), dim=-1)  # [L*T, d]
    per_label = embeds.reshape(len(labels), len(templates), -1).mean(dim=1)  # [L, d]
    return torch.nn.functional.normalize(per_label, dim=-1)  # [L, d]
