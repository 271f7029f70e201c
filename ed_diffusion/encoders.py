"""Frozen feature encoders for the visual-prompt bank: CLIP text features and CLIP or DINO image features.

The bank (``bank.py``) clusters CLIP text features of captions and averages the paired image features per
cluster (``method.md`` §2 "Prompt bank"). On GPU machines the encoders are real checkpoints loaded by
``FeatureEncoders.from_pretrained``; offline (no hub, ``environment.md`` §5) ``ensure_tiny_encoders_dir``
saves random-weight tiny CLIP models once so that the very same ``from_pretrained`` path is what tests and
the tiny preset run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

import torch
from PIL import Image
from torch import Tensor, nn

from ed_common.errors import InvalidInputError, error_line
from ed_diffusion.errors import EncoderLoadError

logger = logging.getLogger(__name__)

ImageEncoderKind = Literal["clip", "dino"]
IMAGE_ENCODER_KINDS: tuple[str, ...] = get_args(ImageEncoderKind)

# Layout of the directory written by ``ensure_tiny_encoders_dir``.
TINY_TEXT_SUBDIR = "text"
TINY_IMAGE_SUBDIR = "image"
# Bump when the tiny configs change, so an old cached directory is not silently reused.
TINY_ENCODERS_VERSION = 1

_T = TypeVar("_T")


class FeatureEncoders:
    """A CLIP text encoder and an image encoder, frozen and in eval mode, with their tokenizer and processor.

    Text features are CLIP ``text_embeds``, L2-normalised (the bank clusters and retrieves by cosine). Image
    features are kept as the encoder emits them (CLIP ``image_embeds`` or the DINO pooled/CLS feature), not
    normalised: the bank averages them per cluster and a learnable projector consumes them, as IP-Adapter
    consumes raw CLIP ``image_embeds``; the feature norm is information a projector can use.

    Both ``encode_*`` methods return float32 tensors on the CPU, so a bank is independent of the device and
    dtype the encoders ran with.

    Attributes:
        text_model: ``CLIPTextModelWithProjection``.
        tokenizer: a CLIP tokenizer (fast or slow).
        image_model: ``CLIPVisionModelWithProjection`` (``kind="clip"``) or a DINOv2/DINOv3-style model.
        image_processor: the image processor matching ``image_model``.
        kind: ``"clip"`` or ``"dino"``: which output of ``image_model`` is the image feature.
        text_id: where the text encoder came from (hub id, local path, or a tiny-model description).
        image_id: where the image encoder came from.
    """

    def __init__(
        self,
        text_model: nn.Module,
        tokenizer: Any,
        image_model: nn.Module,
        image_processor: Any,
        *,
        kind: ImageEncoderKind,
        text_id: str,
        image_id: str,
    ) -> None:
        """Wrap already-built components (no I/O, no device or dtype change).

        Raises:
            InvalidInputError: ``kind`` is not ``"clip"`` or ``"dino"``.
        """
        if kind not in IMAGE_ENCODER_KINDS:
            raise InvalidInputError(
                f"unknown image encoder kind {kind!r}; allowed: {', '.join(IMAGE_ENCODER_KINDS)}"
            )
        self.text_model = text_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_model = image_model.eval().requires_grad_(False)
        self.image_processor = image_processor
        self.kind: ImageEncoderKind = kind
        self.text_id = text_id
        self.image_id = image_id

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        text_id_or_path: str | os.PathLike[str],
        image_id_or_path: str | os.PathLike[str],
        *,
        kind: ImageEncoderKind = "clip",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        local_files_only: bool = True,
    ) -> FeatureEncoders:
        """Load a CLIP text encoder + tokenizer and an image encoder + processor (hub ids or local dirs).

        ``text_id_or_path`` may be a full CLIP checkpoint (e.g. ``openai/clip-vit-large-patch14``): only its
        text tower is loaded. For ``kind="clip"`` the image side loads ``CLIPVisionModelWithProjection``; for
        ``kind="dino"`` it loads ``AutoModel`` (DINOv2/DINOv3 are built into transformers). Remote code is
        never trusted.

        Args:
            text_id_or_path: hub id or directory of the CLIP text encoder and its tokenizer.
            image_id_or_path: hub id or directory of the image encoder and its image processor.
            kind: ``"clip"`` (feature = ``image_embeds``) or ``"dino"`` (feature = pooled/CLS output).
            device: where the models run.
            dtype: model weights dtype (features are returned as float32 anyway).
            local_files_only: do not touch the network (the default: these machines have no hub).

        Returns:
            The loaded encoders, frozen and in eval mode.

        Raises:
            InvalidInputError: ``kind`` is not ``"clip"`` or ``"dino"``.
            EncoderLoadError: a component is missing or unreadable; the message names it and where it was
                looked for.
        """
        from transformers import (
            AutoImageProcessor,
            AutoModel,
            AutoTokenizer,
            CLIPTextModelWithProjection,
            CLIPVisionModelWithProjection,
        )

        if kind not in IMAGE_ENCODER_KINDS:
            raise InvalidInputError(
                f"unknown image encoder kind {kind!r}; allowed: {', '.join(IMAGE_ENCODER_KINDS)}"
            )
        text_id, image_id = str(text_id_or_path), str(image_id_or_path)
        common: dict[str, Any] = {"local_files_only": local_files_only, "trust_remote_code": False}
        text_model = _complete(
            "CLIP text encoder",
            text_id,
            _load(
                "CLIP text encoder",
                text_id,
                local_files_only,
                lambda: CLIPTextModelWithProjection.from_pretrained(
                    text_id, dtype=dtype, output_loading_info=True, **common
                ),
            ),
        )
        tokenizer = _load(
            "CLIP tokenizer",
            text_id,
            local_files_only,
            lambda: AutoTokenizer.from_pretrained(text_id, **common),
        )
        image_cls = CLIPVisionModelWithProjection if kind == "clip" else AutoModel
        image_model = _complete(
            f"{kind} image encoder",
            image_id,
            _load(
                f"{kind} image encoder",
                image_id,
                local_files_only,
                lambda: image_cls.from_pretrained(image_id, dtype=dtype, output_loading_info=True, **common),
            ),
        )
        image_processor = _load(
            "image processor",
            image_id,
            local_files_only,
            lambda: AutoImageProcessor.from_pretrained(image_id, **common),  # type: ignore[no-untyped-call]
        )
        return cls(
            text_model.to(device),
            tokenizer,
            image_model.to(device),
            image_processor,
            kind=kind,
            text_id=text_id,
            image_id=image_id,
        )

    # ------------------------------------------------------------------ properties

    @property
    def ids(self) -> dict[str, str]:
        """Where the encoders came from, as recorded in the bank metadata."""
        return {"text_encoder": self.text_id, "image_encoder": self.image_id, "image_kind": self.kind}

    @property
    def d_t(self) -> int:
        """Text feature dimension (CLIP projection dim)."""
        cfg: Any = self.text_model.config
        return int(cfg.projection_dim)

    @property
    def d_v(self) -> int:
        """Image feature dimension (CLIP projection dim, or the DINO hidden size)."""
        cfg: Any = self.image_model.config
        return int(cfg.projection_dim if self.kind == "clip" else cfg.hidden_size)

    @property
    def device(self) -> torch.device:
        """Device of the text encoder (both encoders are moved together)."""
        return next(self.text_model.parameters()).device

    # ------------------------------------------------------------------ encoding

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], *, batch_size: int = 32) -> Tensor:
        """CLIP text features of ``texts``, L2-normalised, float32 on the CPU.

        Args:
            texts: captions or prompts; longer than the tokenizer's limit (77 for CLIP) are truncated.
            batch_size: texts per forward pass.

        Returns:
            Tensor ``[N, d_t]``.

        Raises:
            InvalidInputError: ``batch_size`` < 1.
        """
        _check_batch_size(batch_size)
        if not texts:
            return torch.empty(0, self.d_t)
        chunks: list[Tensor] = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.tokenizer.model_max_length,
                return_tensors="pt",
            )
            out = self.text_model(
                input_ids=batch["input_ids"].to(self.device),  # [b, T]
                attention_mask=batch["attention_mask"].to(self.device),  # [b, T]
            )
            chunks.append(out.text_embeds.float().cpu())  # [b, d_t]
        feats = torch.cat(chunks)  # [N, d_t]
        return torch.nn.functional.normalize(feats, dim=-1)  # [N, d_t]

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image], *, batch_size: int = 32) -> Tensor:
        """Image features of ``images`` (converted to RGB), float32 on the CPU, not normalised.

        Args:
            images: PIL images of any size and mode; the image processor resizes and crops them.
            batch_size: images per forward pass.

        Returns:
            Tensor ``[N, d_v]``.

        Raises:
            InvalidInputError: ``batch_size`` < 1.
        """
        _check_batch_size(batch_size)
        if not images:
            return torch.empty(0, self.d_v)
        model_dtype = next(self.image_model.parameters()).dtype
        chunks: list[Tensor] = []
        for start in range(0, len(images), batch_size):
            rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images[start : start + batch_size]]
            pixels = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]  # [b, 3, H, W]
            out = self.image_model(pixel_values=pixels.to(self.device, model_dtype))
            chunks.append(self._image_feature(out).float().cpu())  # [b, d_v]
        return torch.cat(chunks)  # [N, d_v]

    def _image_feature(self, out: Any) -> Tensor:
        if self.kind == "clip":
            return out.image_embeds  # type: ignore[no-any-return]  # [b, d_v]
        # DINOv2/DINOv3 expose the layer-normed CLS token as pooler_output; fall back to the raw CLS token.
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled  # type: ignore[no-any-return]  # [b, d_v]
        return out.last_hidden_state[:, 0]  # type: ignore[no-any-return]  # [b, d_v]


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")


def _load(what: str, id_or_path: str, local_files_only: bool, loader: Callable[[], _T]) -> _T:
    """Run ``loader`` and turn a missing/offline/unreadable component into one ``EncoderLoadError`` line."""
    try:
        return loader()
    except (OSError, ValueError, KeyError) as exc:
        path = Path(id_or_path).expanduser()
        if path.is_dir():
            where = f"looked in local directory {path.resolve()}"
        else:
            from huggingface_hub.constants import HF_HUB_CACHE

            where = f"not a local directory; looked in the Hugging Face cache {HF_HUB_CACHE}"
            if local_files_only:
                where += " only (local_files_only=True, no download)"
        reason = error_line(exc, limit=240)
        raise EncoderLoadError(f"cannot load the {what} {id_or_path!r}: {where}; {reason}") from exc


def _complete(what: str, id_or_path: str, loaded: Any) -> nn.Module:
    """Refuse a checkpoint that lacks weights of the class loaded from it.

    transformers only prints a report and initialises missing weights randomly (e.g. a text-only checkpoint
    loaded as a vision model), which would silently give a bank of random features.
    """
    model, info = loaded
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise EncoderLoadError(
            f"{id_or_path!r} is not a complete {what} checkpoint for {type(model).__name__}: "
            f"{len(missing)} weight(s) missing ({shown})"
        )
    return cast(nn.Module, model)


# ---------------------------------------------------------------------- tiny random-weight encoders


def build_tiny_encoders(seed: int = 0, d_t: int = 32, d_v: int = 32) -> FeatureEncoders:
    """Random-weight tiny CLIP text and vision encoders built from configs in code (no files, no hub).

    The global torch RNG is left untouched (weights come from a forked RNG seeded with ``seed``).

    Args:
        seed: weight-initialisation seed; the same seed gives bit-identical weights.
        d_t: text projection dim (the text feature size).
        d_v: vision projection dim (the image feature size).

    Returns:
        Encoders of kind ``"clip"`` for 32×32 images.

    Raises:
        InvalidInputError: ``d_t`` or ``d_v`` < 1.
    """
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    if d_t < 1 or d_v < 1:
        raise InvalidInputError(f"tiny encoder dims must be >= 1, got d_t={d_t}, d_v={d_v}")
    from ed_diffusion.tiny_models import build_tiny_tokenizer  # one file-less tokenizer for every tiny model

    tokenizer = build_tiny_tokenizer()
    text_cfg = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        projection_dim=d_t,
        max_position_embeddings=77,
    )
    vision_cfg = CLIPVisionConfig(
        hidden_size=32,
        projection_dim=d_v,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=4,
        intermediate_size=37,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_model = CLIPTextModelWithProjection(text_cfg)
        image_model = CLIPVisionModelWithProjection(vision_cfg)
    # Without torchvision this falls back to the PIL implementation (environment.md §2), which is fine here.
    processor = CLIPImageProcessor(size=32, crop_size=32)
    return FeatureEncoders(
        text_model,
        tokenizer,
        image_model,
        processor,
        kind="clip",
        text_id=f"tiny-random-clip-text(seed={seed},d_t={d_t})",
        image_id=f"tiny-random-clip-vision(seed={seed},d_v={d_v})",
    )


def ensure_tiny_encoders_dir(
    root: str | os.PathLike[str], *, seed: int = 0, d_t: int = 32, d_v: int = 32
) -> Path:
    """Save the tiny encoders under ``root`` once and return their directory.

    The directory holds ``text/`` (model + tokenizer) and ``image/`` (model + processor); load it with
    ``FeatureEncoders.from_pretrained(d / "text", d / "image", kind="clip")``. It is written to a temporary
    directory and renamed into place, so a half-written directory is never seen and concurrent callers agree.

    Args:
        root: parent directory (created if needed), e.g. the cache dir.
        seed: weight seed (part of the directory name).
        d_t: text feature dim (part of the directory name).
        d_v: image feature dim (part of the directory name).

    Returns:
        ``root / "tiny-encoders-v<version>-s<seed>-t<d_t>-v<d_v>"``.
    """
    root_path = Path(root).expanduser()
    target = root_path / f"tiny-encoders-v{TINY_ENCODERS_VERSION}-s{seed}-t{d_t}-v{d_v}"
    if (target / TINY_TEXT_SUBDIR).is_dir() and (target / TINY_IMAGE_SUBDIR).is_dir():
        return target
    root_path.mkdir(parents=True, exist_ok=True)
    encoders = build_tiny_encoders(seed=seed, d_t=d_t, d_v=d_v)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root_path))
    try:
        encoders.text_model.save_pretrained(tmp / TINY_TEXT_SUBDIR)  # type: ignore[operator]
        encoders.tokenizer.save_pretrained(tmp / TINY_TEXT_SUBDIR)
        encoders.image_model.save_pretrained(tmp / TINY_IMAGE_SUBDIR)  # type: ignore[operator]
        encoders.image_processor.save_pretrained(tmp / TINY_IMAGE_SUBDIR)
        try:
            tmp.rename(target)
        except OSError:
            # Another process won the race: keep its directory if it is complete.
            if not ((target / TINY_TEXT_SUBDIR).is_dir() and (target / TINY_IMAGE_SUBDIR).is_dir()):
                raise
            logger.debug("tiny encoders already written to %s by another process", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
