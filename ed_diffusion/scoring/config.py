"""What to score and how: one image record, and the validated configuration of the scorers.

Both are frozen dataclasses checked in ``__post_init__``: a bad value raises one ``InvalidInputError`` line
that names the value and what is allowed, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from ed_common.emotions import Emotion, parse_emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.world.spec import CONTENT_CLASSES

EmotionClassifierKind = Literal["world_oracle", "clip_probe", "clip_zero_shot", "none"]
ContentScorerKind = Literal["world_oracle", "clip_zero_shot", "none"]
LabelOrder = Literal["emoset", "alphabetical"]
DiversityKind = Literal["lpips", "clip", "none"]
WorldReading = Literal["colour", "full"]

EMOTION_CLASSIFIERS: tuple[str, ...] = get_args(EmotionClassifierKind)
CONTENT_SCORERS: tuple[str, ...] = get_args(ContentScorerKind)
LABEL_ORDERS: tuple[str, ...] = get_args(LabelOrder)
DIVERSITY_KINDS: tuple[str, ...] = get_args(DiversityKind)
PROBE_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth", ".bin")
LPIPS_SUFFIXES: tuple[str, ...] = (".safetensors",)


@dataclass(frozen=True)
class ImageRecord:
    """One generated image and what it was asked to show.

    Attributes:
        image: path of the image file (any format PIL reads; converted to RGB).
        emotion: the target emotion (a name is accepted and parsed).
        prompt: the user prompt the image was generated for; the text side of the CLIP score.
        content: the content noun the prompt is about (e.g. ``"dog"``), for content accuracy; ``None`` when
            the record has none (then no content scorer may be enabled).
    """

    image: Path
    emotion: Emotion
    prompt: str
    content: str | None = None

    def __post_init__(self) -> None:
        """Coerce ``image`` to ``Path`` and ``emotion`` to ``Emotion``; check the text fields."""
        if not isinstance(self.image, (str, Path)):
            raise InvalidInputError(f"ImageRecord.image must be a path; got {self.image!r}")
        object.__setattr__(self, "image", Path(self.image))
        object.__setattr__(self, "emotion", parse_emotion(self.emotion))
        if not isinstance(self.prompt, str):
            raise InvalidInputError(f"ImageRecord.prompt must be a string; got {self.prompt!r}")
        if self.content is not None and (not isinstance(self.content, str) or not self.content.strip()):
            raise InvalidInputError(
                f"ImageRecord.content must be a non-empty string or None; got {self.content!r}"
            )


@dataclass(frozen=True)
class ImageScoringConfig:
    """Which scorers run, and the local files they load (nothing is ever downloaded).

    Attributes:
        emotion_classifier: ``"world_oracle"`` (exact pixel oracle of the synthetic world), ``"clip_probe"``
            (CLIP image embeds -> Linear(d, 8), the EmoGen/EmoCtrl protocol), ``"clip_zero_shot"`` (cosine to
            emotion prompts) or ``"none"``.
        content_scorer: ``"world_oracle"`` (exact silhouette class), ``"clip_zero_shot"`` (content among the
            top-k of a zero-shot vocabulary, EmoCtrl CLIP-A) or ``"none"``.
        clip_model: local directory or hub id of a transformers ``CLIPModel`` (with tokenizer and image
            processor); needed by every ``clip_*`` option. Loaded with ``local_files_only=True``. Ignored
            when no option uses CLIP, so a runner may pass its configured model unconditionally.
        probe_path: linear-probe weights, ``.safetensors`` or ``.pt``/``.pth``/``.bin`` (read with
            ``torch.load(weights_only=True)``): a ``weight [8, d]`` and ``bias [8]``, optionally under one
            prefix such as EmoGen's ``fc.`` or DataParallel's ``module.``. Only with ``"clip_probe"``.
        probe_label_order: the order of the probe's 8 outputs: ``"emoset"`` (EmoGen, EmoEdit, EmoCtrl) or
            ``"alphabetical"`` (EmoEditor); columns are permuted into EmoSet order.
        content_vocabulary: candidate contents for ``content_scorer="clip_zero_shot"`` (every record's content
            must be among them; empty = the sorted distinct contents of the records, EmoCtrl's protocol). With
            the world oracle it may only name world classes (empty = ``CONTENT_CLASSES``). Ignored when no
            content scorer runs (an eval suite may always fill it with its prompts' content nouns).
        clip_score: add ``clip_score`` = 100 * max(cos(image, prompt), 0) per record.
        diversity: ``"lpips"`` (needs ``lpips_weights``), ``"clip"`` (1 - cosine of CLIP image embeds) or
            ``"none"``: mean distance over same-emotion pairs, reported per emotion.
        lpips_weights: LPIPS-Alex weights as one safetensors file (layout in ``lpips.py``). Only with
            ``diversity="lpips"``.
        batch_size: images per forward pass (>= 1).
        device: torch device; default CUDA when available, else CPU.
        world_reading: attributes the world oracle reads: ``"colour"`` (palette only, the reading for
            generated images, see ``ed_diffusion.world.oracle.COLOUR_ATTRIBUTES``) or ``"full"``.
    """

    emotion_classifier: EmotionClassifierKind = "none"
    content_scorer: ContentScorerKind = "none"
    clip_model: str | None = None
    probe_path: str | None = None
    probe_label_order: LabelOrder = "emoset"
    content_vocabulary: tuple[str, ...] = ()
    clip_score: bool = False
    diversity: DiversityKind = "none"
    lpips_weights: str | None = None
    batch_size: int = 16
    device: str | None = None
    world_reading: WorldReading = "colour"

    def __post_init__(self) -> None:
        """Check every field and the combinations; the first problem raises one line."""
        _choice("world_reading", self.world_reading, ("colour", "full"))
        _choice("emotion_classifier", self.emotion_classifier, EMOTION_CLASSIFIERS)
        _choice("content_scorer", self.content_scorer, CONTENT_SCORERS)
        _choice("probe_label_order", self.probe_label_order, LABEL_ORDERS)
        _choice("diversity", self.diversity, DIVERSITY_KINDS)
        for name in ("clip_model", "probe_path", "lpips_weights", "device"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInputError(f"{name}={value!r} is invalid; allowed: a non-empty string or None")
        if not isinstance(self.clip_score, bool):
            raise InvalidInputError(f"clip_score={self.clip_score!r} is invalid; allowed: True or False")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidInputError(f"batch_size={self.batch_size!r} is invalid; allowed: an integer >= 1")
        self._check_probe()
        self._check_clip()
        self._check_lpips()
        self._check_vocabulary()

    @property
    def uses_clip(self) -> bool:
        """Whether any enabled option needs the CLIP model."""
        return (
            self.emotion_classifier in ("clip_probe", "clip_zero_shot")
            or self.content_scorer == "clip_zero_shot"
            or self.clip_score
            or self.diversity == "clip"
        )

    def _check_probe(self) -> None:
        if self.emotion_classifier == "clip_probe":
            if self.probe_path is None:
                raise InvalidInputError(
                    "emotion_classifier='clip_probe' needs probe_path (a local .safetensors/.pt/.pth file of "
                    "a Linear(d, 8) probe); or use emotion_classifier='clip_zero_shot'"
                )
            if Path(self.probe_path).suffix.lower() not in PROBE_SUFFIXES:
                raise InvalidInputError(
                    f"probe_path={self.probe_path!r} has an unknown file type; allowed: "
                    f"{', '.join(PROBE_SUFFIXES)}"
                )
        elif self.probe_path is not None:
            raise InvalidInputError(
                f"probe_path={self.probe_path!r} is only used with emotion_classifier='clip_probe' "
                f"(got {self.emotion_classifier!r}); drop it or choose 'clip_probe'"
            )

    def _check_clip(self) -> None:
        if self.uses_clip and self.clip_model is None:
            users = [
                name
                for name, used in (
                    (
                        f"emotion_classifier={self.emotion_classifier!r}",
                        self.emotion_classifier.startswith("clip"),
                    ),
                    ("content_scorer='clip_zero_shot'", self.content_scorer == "clip_zero_shot"),
                    ("clip_score=True", self.clip_score),
                    ("diversity='clip'", self.diversity == "clip"),
                )
                if used
            ]
            raise InvalidInputError(
                f"{', '.join(users)} needs clip_model (a local CLIPModel dir or an already cached hub id)"
            )

    def _check_lpips(self) -> None:
        if self.diversity == "lpips":
            if self.lpips_weights is None:
                raise InvalidInputError(
                    "diversity='lpips' needs lpips_weights (a local safetensors file of AlexNet + LPIPS "
                    "linear weights; none can be downloaded here); use diversity='clip' instead"
                )
            if Path(self.lpips_weights).suffix.lower() not in LPIPS_SUFFIXES:
                raise InvalidInputError(
                    f"lpips_weights={self.lpips_weights!r} has an unknown file type; allowed: .safetensors"
                )
        elif self.lpips_weights is not None:
            raise InvalidInputError(
                f"lpips_weights={self.lpips_weights!r} is only used with diversity='lpips' "
                f"(got {self.diversity!r}); drop it or choose 'lpips'"
            )

    def _check_vocabulary(self) -> None:
        vocab = self.content_vocabulary
        if isinstance(vocab, str) or not all(isinstance(v, str) and v.strip() for v in vocab):
            raise InvalidInputError(
                f"content_vocabulary={vocab!r} is invalid; allowed: a tuple of non-empty strings"
            )
        vocab = tuple(vocab)  # a list (e.g. from a pydantic model_copy, which skips validation) is fine
        object.__setattr__(self, "content_vocabulary", vocab)
        duplicates = sorted({v for v in vocab if vocab.count(v) > 1})
        if duplicates:
            raise InvalidInputError(f"content_vocabulary repeats {', '.join(map(repr, duplicates))}")
        if self.content_scorer == "world_oracle":
            unknown = [v for v in vocab if v not in CONTENT_CLASSES]
            if unknown:
                raise InvalidInputError(
                    f"content_vocabulary has {', '.join(map(repr, unknown))}, which the world oracle cannot "
                    f"recognise; allowed: {', '.join(CONTENT_CLASSES)}"
                )


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"{name}={value!r} is invalid; allowed: {', '.join(allowed)}")
