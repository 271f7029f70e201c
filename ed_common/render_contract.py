"""The render contract: what the graph asks of a renderer and gets back; torch-free, validated once.

The agent side (graph state, the CLI, eval systems) and the image side (``ed_diffusion.pipeline.MCDiffusion``)
both speak these types, so neither needs the other's imports: ``ed_agents`` can type its ``Context.renderer``
as ``Renderer`` without pulling in torch. ``RenderOptions`` is the one place render settings are bounded;
``RenderRequest`` extends it with what one render needs, so a request is as valid as the options it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ed_common.emotions import Emotion, parse_emotion
from ed_common.errors import InvalidInputError, validation_line
from ed_common.limits import MAX_SEED

NegativeVP = Literal["none", "opposite", "confusable"]

# An emotion field accepts a name in any case ("Fear ") and stores the Emotion: parsed here, trusted after.
EmotionField = Annotated[Emotion, BeforeValidator(parse_emotion)]

MAX_IMAGES = 64
PromptForm = Literal["as_written", "model"]


class RenderOptions(BaseModel):
    """Per-run render settings (serialisable: they live in the checkpointed graph state)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_images: int = Field(1, ge=1, le=MAX_IMAGES)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0, le=30, allow_inf_nan=False)
    width: int | None = Field(None, ge=8, le=4096, multiple_of=8)
    height: int | None = Field(None, ge=8, le=4096, multiple_of=8)
    vp_scale: float = Field(1.0, ge=0, le=10, allow_inf_nan=False)
    top_k: int = Field(4, ge=1, le=64)
    negative_vp: NegativeVP = "none"
    out_dir: str | None = None  # the run directory; None = a new one under runs/

    @model_validator(mode="after")
    def _seeds_fit(self) -> RenderOptions:
        # Image i uses seed + i: the last one must still be a valid seed (checked before any image).
        if self.seed + self.n_images - 1 > MAX_SEED:
            raise ValueError(
                f"seed {self.seed} + {self.n_images} images passes {MAX_SEED}; allowed: seed <= "
                f"{MAX_SEED - self.n_images + 1}"
            )
        return self

    @property
    def seeds(self) -> list[int]:
        """The seed of each image: ``seed .. seed + n_images - 1``."""
        return [self.seed + i for i in range(self.n_images)]


class VisualPromptChoice(BaseModel):
    """The bank clusters retrieved for an emotion (and for its negative, with a negative visual prompt)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    emotion: EmotionField
    indices: list[int]
    scores: list[float]
    negative_emotion: EmotionField | None = None
    negative_indices: list[int] = Field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (manifests, ``--json``)."""
        return self.model_dump(mode="json")


class RenderRequest(RenderOptions):
    """One render: the options plus the prompts, the emotion, the visual prompt and where to write."""

    prompt: str
    emotion: EmotionField
    out_dir: Path  # type: ignore[assignment]  # a request always has its directory; options may leave it open
    negative_prompt: str = ""
    visual_prompt: VisualPromptChoice | None = None  # None = the renderer retrieves it
    # "model": an agent wrote the prompt, so the renderer may put it in the form its model was trained to
    # read (the world preset's captions); "as_written": untouched (a suite's templates, --no-agents).
    prompt_form: PromptForm = "as_written"

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"prompt {value!r} is empty")
        return value

    @classmethod
    def from_options(
        cls,
        options: RenderOptions,
        *,
        prompt: str,
        emotion: Emotion | str,
        out_dir: Path,
        negative_prompt: str = "",
        visual_prompt: VisualPromptChoice | None = None,
        prompt_form: PromptForm = "as_written",
    ) -> RenderRequest:
        """The request that renders ``prompt`` under ``options`` into ``out_dir``."""
        return checked(
            cls,
            **options.model_dump(exclude={"out_dir"}),
            prompt=prompt,
            emotion=emotion,
            out_dir=out_dir,
            negative_prompt=negative_prompt,
            visual_prompt=visual_prompt,
            prompt_form=prompt_form,
        )


class RenderResult(BaseModel):
    """Paths and metadata of a finished render (what the manifest records)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: list[Path]
    contact_sheet: Path | None
    seeds: list[int]
    visual_prompt: VisualPromptChoice
    model: dict[str, Any]
    settings: dict[str, Any]
    timings: dict[str, float]


@runtime_checkable
class Renderer(Protocol):
    """What the graph's render stage needs: ``ed_diffusion.pipeline.MCDiffusion`` (tests use a fake)."""

    def retrieve(
        self, prompt: str, emotion: Emotion, *, top_k: int = 4, negative_vp: NegativeVP = "none"
    ) -> VisualPromptChoice:
        """The visual-prompt choice for ``prompt`` under ``emotion``."""
        ...

    def render(self, request: RenderRequest) -> RenderResult:
        """Render ``request.n_images`` images into ``request.out_dir``."""
        ...


ModelT = TypeVar("ModelT", bound=BaseModel)


def checked(cls: type[ModelT], /, **values: Any) -> ModelT:
    """Build a contract type from user values; a bad value is one ``InvalidInputError`` line naming it.

    Raises:
        InvalidInputError: a value out of range or of the wrong kind (the message names it and the bounds).
    """
    try:
        return cls(**values)
    except ValidationError as exc:
        raise InvalidInputError(validation_line(exc)) from None
