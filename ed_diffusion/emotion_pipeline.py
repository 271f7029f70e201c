"""The diffusers-native entry point: put the emotion adapter and bank onto a stock pipeline, get ``.images``.

The way IP-Adapter users work, in one call::

    pipe = StableDiffusionXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0")
    emo = load_emotion_adapter(pipe, bank="bank.safetensors", adapter="adapter.safetensors")
    images = emo("a dog in the snow", emotion="fear", num_images_per_prompt=4, seeds=[0, 1, 2, 3]).images

``load_emotion_adapter`` installs the adapter through diffusers' own IP-Adapter plumbing
(``models/adapter.py``) and keeps the pipeline stock: ``emo.pipe`` is the user's object, still callable on
its own. A call retrieves the emotion's visual prompt from the bank (top-k clusters by CLIP text cosine),
passes it as ``ip_adapter_image_embeds`` and renders **all images of the call in one batched pipeline
call**, one generator per image, so image ``i`` has seed ``seeds[i]`` whether it is rendered alone or in a
batch.
``MCDiffusion`` (the CLI's renderer) is a thin layer over this: it adds files, a manifest and a contact sheet.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ed_common.emotions import Emotion, parse_emotion
from ed_common.errors import InvalidInputError
from ed_common.limits import MAX_SEED
from ed_common.render_contract import MAX_IMAGES, NegativeVP, VisualPromptChoice
from ed_diffusion.bank import VisualPromptBank

__all__ = ["EmotionPipeline", "EmotionPipelineOutput", "load_emotion_adapter"]

DEFAULT_NUM_TOKENS = 4  # visual tokens of a fresh (untrained) adapter: the bank's default top-k
_NEGATIVE_VP = ("none", "opposite", "confusable")


@dataclass
class EmotionPipelineOutput:
    """What a call returns: the pipeline's PIL images, the visual prompt used, and the seeds (if given)."""

    images: list[Any]
    visual_prompt: VisualPromptChoice
    seeds: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EmotionPipeline:
    """A stock ``StableDiffusion(XL)Pipeline`` with the emotion adapter installed and a bank beside it.

    Build it with :func:`load_emotion_adapter`. Attributes: ``pipe`` (the stock pipeline), ``bank``,
    ``encoders`` (the bank's CLIP text encoder, for retrieval).
    """

    def __init__(self, pipe: Any, bank: VisualPromptBank, encoders: Any) -> None:
        self.pipe, self.bank, self.encoders = pipe, bank, encoders

    # ------------------------------------------------------------------ retrieval
    def retrieve(
        self, prompt: str, emotion: str | Emotion, *, top_k: int = 4, negative_vp: NegativeVP = "none"
    ) -> VisualPromptChoice:
        """The emotion's top-k visual-prompt clusters for ``prompt`` (and a negative emotion's, if asked)."""
        target = parse_emotion(emotion)
        if negative_vp not in _NEGATIVE_VP:
            raise InvalidInputError(f"negative_vp {negative_vp!r}: allowed {', '.join(_NEGATIVE_VP)}")
        query = self.encoders.encode_text([prompt])[0]  # [d_t]
        hit = self.bank.retrieve(query, target, k=top_k)
        negative: dict[str, Any] = {}
        if negative_vp != "none":
            neg = self.bank.retrieve_negative(query, target, k=top_k, strategy=negative_vp)
            negative = {"negative_emotion": neg.emotions[0], "negative_indices": neg.indices[0].tolist()}
        return VisualPromptChoice(
            emotion=target,
            indices=hit.indices[0].tolist(),
            scores=[round(float(s), 6) for s in hit.scores[0]],
            **negative,
        )

    def tokens_for(self, choice: VisualPromptChoice) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) visual tokens ``[1, 1, k, d_v]`` for ``ip_adapter_image_embeds``.

        The negative is the negative emotion's clusters if chosen, else zeros (IP-Adapter's unconditional).
        """
        centres = self.bank.visual_centres  # [E, L, d_v]
        pos = centres[choice.emotion.label_index, choice.indices]  # [k, d_v]
        if choice.negative_emotion is not None:
            neg = centres[choice.negative_emotion.label_index, choice.negative_indices]  # [k, d_v]
        else:
            neg = torch.zeros_like(pos)
        return pos[None, None], neg[None, None]  # [1, 1, k, d_v] each

    # ------------------------------------------------------------------ rendering
    def __call__(
        self,
        prompt: str,
        emotion: str | Emotion,
        *,
        vp_scale: float = 1.0,
        top_k: int = 4,
        negative_vp: NegativeVP = "none",
        visual_prompt: VisualPromptChoice | dict[str, Any] | None = None,
        seeds: Sequence[int] | None = None,
        num_images_per_prompt: int | None = None,
        guidance_scale: float = 7.5,
        **pipe_kwargs: Any,
    ) -> EmotionPipelineOutput:
        """Render ``prompt`` so it feels ``emotion``; every other keyword goes to the stock pipeline.

        Args:
            prompt: the content prompt (one string: one request; its images come in one batch).
            emotion: one of the 8 EmoSet emotions (case-insensitive).
            vp_scale: the visual tokens' weight in the decoupled cross-attention (0 = text only).
            top_k: visual-prompt clusters retrieved from the bank.
            negative_vp: ``"opposite"`` / ``"confusable"``: another emotion's clusters on the unconditional
                branch of classifier-free guidance instead of zeros.
            visual_prompt: a choice made before (e.g. by the graph); skips retrieval.
            seeds: one seed per image (``generator`` is then built here, one per image); their count is the
                number of images unless ``num_images_per_prompt`` says the same.
            num_images_per_prompt: images to make (default: ``len(seeds)``, else 1).
            guidance_scale: classifier-free guidance (<= 1 turns it off, as in diffusers).
            **pipe_kwargs: ``num_inference_steps``, ``negative_prompt``, ``width``, ``height``,
                ``generator`` (instead of ``seeds``), ... as the stock pipeline takes them.

        Raises:
            InvalidInputError: a bad emotion, seed, count or scale (the message names it and what is allowed).
        """
        from ed_diffusion.models.adapter import set_emotion_scale

        n = _image_count(seeds, num_images_per_prompt, pipe_kwargs.get("generator"))
        if not isinstance(vp_scale, int | float) or isinstance(vp_scale, bool) or not math.isfinite(vp_scale):
            raise InvalidInputError(f"vp_scale {vp_scale!r}: allowed a finite number (0 = text only)")
        if isinstance(visual_prompt, dict):
            visual_prompt = VisualPromptChoice.model_validate(visual_prompt)
        choice = visual_prompt or self.retrieve(prompt, emotion, top_k=top_k, negative_vp=negative_vp)
        if choice.emotion != parse_emotion(emotion):
            raise InvalidInputError(
                f"visual_prompt is for {choice.emotion.value}, the request for {parse_emotion(emotion).value}"
            )
        pos, neg = self.tokens_for(choice)
        set_emotion_scale(self.pipe.unet, float(vp_scale))
        out = call_with_tokens(
            self.pipe, prompt, pos, neg, seeds=seeds, n=n, guidance_scale=guidance_scale, **pipe_kwargs
        )
        return EmotionPipelineOutput(
            images=list(out.images), visual_prompt=choice, seeds=None if seeds is None else list(seeds)
        )


def call_with_tokens(
    pipe: Any,
    prompt: str,
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    seeds: Sequence[int] | None,
    n: int,
    guidance_scale: float,
    **pipe_kwargs: Any,
) -> Any:
    """One stock pipeline call of ``n`` images under visual tokens ``pos`` / ``neg`` (``[1, 1, k, d_v]``).

    The one place the tokens become ``ip_adapter_image_embeds`` and seeds become generators (one per image):
    the renderer and the trainers' validation grids both call it. Returns the pipeline's output.
    """
    unet = pipe.unet
    # diffusers runs classifier-free guidance (chunking the embeds into neg, pos) only when guidance > 1.
    pairs = [neg, pos] if guidance_scale > 1.0 else [pos]
    embeds = torch.cat(pairs).to(pipe.device, unet.dtype)  # [2 or 1, 1, k, d_v]
    if seeds is not None:
        pipe_kwargs["generator"] = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    return pipe(
        prompt=prompt,
        ip_adapter_image_embeds=[embeds],
        num_images_per_prompt=n,
        guidance_scale=guidance_scale,
        **pipe_kwargs,
    )


def _image_count(seeds: Sequence[int] | None, n: int | None, generator: Any) -> int:
    if seeds is not None:
        if generator is not None:
            raise InvalidInputError("give seeds or generator, not both")
        seeds = list(seeds)
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
        if bad:
            raise InvalidInputError(f"seed {bad[0]!r}: allowed whole numbers from 0 to {MAX_SEED}")
        if not seeds:
            raise InvalidInputError("seeds is empty: give one seed per image")
        if n is not None and n != len(seeds):
            raise InvalidInputError(
                f"num_images_per_prompt {n} but {len(seeds)} seed(s): give one seed per image"
            )
        n = len(seeds)
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise InvalidInputError(f"num_images_per_prompt {n!r}: allowed 1 to {MAX_IMAGES}")
    return n


def load_emotion_adapter(
    pipe: Any,
    *,
    bank: str | os.PathLike[str] | VisualPromptBank,
    adapter: str | os.PathLike[str] | None = None,
    encoders: str | os.PathLike[str] | Any | None = None,
    scale: float = 1.0,
) -> EmotionPipeline:
    """Install the emotion adapter on a stock SD1.5/SDXL-class pipeline and attach a visual-prompt bank.

    Args:
        pipe: a diffusers ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (on its device).
        bank: a bank file (``emodir bank build``) or a loaded ``VisualPromptBank``.
        adapter: adapter weights (``emodir train``); None installs a fresh, untrained adapter (its visual
            tokens then carry the bank's features through copies of the UNet's own key/value weights).
        encoders: the bank's text/image encoders: a folder with ``text/`` and ``image/``, loaded
            ``FeatureEncoders``, or None for the ids the bank recorded when it was built.
        scale: the initial visual-token scale (each call sets its own ``vp_scale``).

    Raises:
        BankError / AdapterError / EncoderLoadError: one-line errors naming the file that is wrong.
    """
    from ed_diffusion.adapter_file import load_adapter
    from ed_diffusion.encoders import FeatureEncoders
    from ed_diffusion.models.adapter import install_emotion_adapter, set_emotion_scale
    from ed_diffusion.models.projector import EmotionTokenProjector, EmotionTokenProjectorConfig

    the_bank = bank if isinstance(bank, VisualPromptBank) else VisualPromptBank.load(bank)
    unet = pipe.unet
    if adapter is not None:
        info = load_adapter(adapter, unet, scale=scale)
        the_bank.check_compatible(info.projector_config.in_dim)
    else:
        config = EmotionTokenProjectorConfig(in_dim=the_bank.d_v, out_dim=unet.config.cross_attention_dim)
        install_emotion_adapter(unet, EmotionTokenProjector(config), num_tokens=DEFAULT_NUM_TOKENS)
        set_emotion_scale(unet, scale)
    if encoders is None or isinstance(encoders, str | os.PathLike):
        meta = the_bank.metadata
        text_id, image_id = meta.text_encoder, meta.image_encoder
        if encoders is not None:
            text_id, image_id = str(Path(encoders) / "text"), str(Path(encoders) / "image")
        encoders = FeatureEncoders.from_pretrained(
            text_id, image_id, kind="dino" if meta.image_kind == "dino" else "clip", device=pipe.device
        )
    return EmotionPipeline(pipe, the_bank, encoders)
