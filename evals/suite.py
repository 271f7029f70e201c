"""Eval suites: prompts x emotions, the systems, seeds and images; loaded from YAML, strictly validated.

A suite file is data. Every section is a pydantic model with ``extra="forbid"``, so a typo is an error
naming the file and the field instead of a silently ignored key. The *generation fingerprint* hashes only
what decides the samples (not the scoring section), so a run can be resumed, or re-scored, after the
scorers changed, but never after the prompts, systems or seeds did. The settings that decide the samples may
also come from flags, ``EMODIR_*`` variables or a config file, not the suite: :func:`run_identity` collects
their effective values, and together with the fingerprint they are what a resume must repeat.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from ed_agents.errors import InvalidInputError
from ed_common import bundled
from ed_common.emotions import Emotion, parse_emotion
from ed_common.errors import validation_line
from ed_common.limits import MAX_SEED
from ed_common.safe_yaml import load_yaml
from ed_common.settings import Settings
from ed_common.user_files import read_user_text
from evals.records import SampleSpec
from evals.scorers.registry import DEFAULT_SCORERS, check_scorer_names

SystemKind = Literal["full_graph", "single_llm", "plain", "emogen_baseline"]
SYSTEM_KINDS: tuple[str, ...] = ("full_graph", "single_llm", "plain", "emogen_baseline")
# Case-insensitive emotion names, with the project's one-line "allowed: ..." message on a bad one.
EmotionName = Annotated[Emotion, BeforeValidator(parse_emotion)]
_NAME = r"^[a-z0-9][a-z0-9_-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptEntry(_Strict):
    """One content prompt, optionally with its own emotions and the content noun scorers check for."""

    text: str = Field(min_length=1, description="The content prompt, as a user would type it.")
    content: str | None = Field(None, description="The content noun (e.g. 'dog') for content accuracy.")
    emotions: list[EmotionName] | None = Field(
        None, min_length=1, description="Emotions for this prompt; unset = the suite's emotions."
    )

    @model_validator(mode="after")
    def _not_blank(self) -> PromptEntry:
        if not self.text.strip():
            raise ValueError("text is blank")
        return self


class SystemEntry(_Strict):
    """A system to compare: how the final prompt is made, and whether visual prompts condition the render."""

    kind: SystemKind
    name: str = Field(
        "", pattern=rf"{_NAME}|^$", description="Unique name; default '<kind>_vp'/'<kind>_text'."
    )
    visual_prompts: bool = Field(True, description="Render with the emotion's visual prompt (else scale 0).")
    vp_scale: float = Field(1.0, gt=0, le=10, description="Visual-prompt scale when visual_prompts is on.")
    negative_vp: Literal["none", "opposite", "confusable"] = "none"
    personas: list[str] | None = Field(None, min_length=1, description="full_graph only: explicit personas.")
    template: str | None = Field(
        None,
        description="plain only: the prompt as '{prompt}' and '{emotion}' fill it, e.g. '{prompt}, feeling "
        "{emotion}' (how the world preset's text-only model names an emotion); unset = the prompt as is.",
    )

    @model_validator(mode="after")
    def _defaults(self) -> SystemEntry:
        if self.personas is not None and self.kind != "full_graph":
            raise ValueError(f"personas only applies to kind full_graph, not {self.kind}")
        if self.template is not None:
            if self.kind != "plain":
                raise ValueError(f"template only applies to kind plain, not {self.kind}")
            try:  # as str.format reads it: "{{prompt}}" is a literal, "{prompt.x}" an attribute lookup
                parsed = list(string.Formatter().parse(self.template))
            except ValueError as exc:
                raise ValueError(f"template {self.template!r} is not a format string: {exc}") from None
            fields = [(f, spec, conv) for _, f, spec, conv in parsed if f is not None]
            names = {f for f, _, _ in fields}
            plain = all(not spec and conv is None for _, spec, conv in fields)
            if "prompt" not in names or not names <= {"prompt", "emotion"} or not plain:
                raise ValueError(
                    f"template {self.template!r} must contain {{prompt}} and may contain {{emotion}}, "
                    "nothing else"
                )
        if not self.name:
            object.__setattr__(self, "name", f"{self.kind}_{'vp' if self.visual_prompts else 'text'}")
        return self


class RenderSection(_Strict):
    """Sampling overrides for every render (unset = the preset's defaults)."""

    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0, le=30)
    width: int | None = Field(None, ge=8, le=4096, multiple_of=8)
    height: int | None = Field(None, ge=8, le=4096, multiple_of=8)
    top_k: int = Field(4, ge=1, le=64)


class ImageScoringSection(_Strict):
    """Maps field by field onto ``ed_diffusion.scoring.ImageScoringConfig`` (defaults: score nothing)."""

    emotion_classifier: Literal["world_oracle", "clip_probe", "clip_zero_shot", "none"] = "none"
    content_scorer: Literal["world_oracle", "clip_zero_shot", "none"] = "none"
    clip_model: str | None = None
    probe_path: str | None = None
    probe_label_order: Literal["emoset", "alphabetical"] = "emoset"
    content_vocabulary: tuple[str, ...] = Field(
        (), description="CLIP zero-shot content classes; empty = the suite's prompt `content` nouns."
    )
    clip_score: bool = False
    diversity: Literal["lpips", "clip", "none"] = "none"
    lpips_weights: str | None = None
    batch_size: int = Field(16, ge=1, le=1024)
    device: str | None = None
    world_reading: Literal["colour", "full"] = "colour"

    @property
    def enabled(self) -> bool:
        """Whether any image metric is asked for (if not, nothing image-side is imported)."""
        return (
            self.emotion_classifier != "none"
            or self.content_scorer != "none"
            or self.clip_score
            or self.diversity != "none"
        )


# What a suite is about, and all a suite may set: a suite file is shared data, so it never chooses a path,
# a server or a program to run (`prompts_dir`, `llm_server_python`, `llm_base_url`, model paths ...).
SUITE_SETTINGS = frozenset(
    {
        "preset",
        "n_personas",
        "personas",
        "seed",
        "temperature",
        "max_tokens",
        "max_prompt_tokens",
        "llm_structured",
        "llm_model",
    }
)


# The effective settings that change what a sample contains (its prompt, personas, images), wherever they
# were set. Not paths to read from, servers, devices or timeouts: those may differ between attempts of a run.
IDENTITY_SETTINGS = (
    "preset",
    "diffusion_model",
    "bank",
    "adapter",
    "llm_model",
    "llm_serve_model",
    "llm_structured",
    "temperature",
    "n_personas",
    "personas",
    "seed",
    "max_tokens",
    "max_prompt_tokens",
)


def run_identity(settings: Settings) -> dict[str, Any]:
    """The :data:`IDENTITY_SETTINGS` of ``settings`` as JSON values (as ``manifest.json`` stores them), in
    that order (the order a refused resume lists the changes in)."""
    values = settings.model_dump(mode="json", include=set(IDENTITY_SETTINGS))
    return {key: values[key] for key in IDENTITY_SETTINGS}


class Suite(_Strict):
    """A whole eval suite."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    emotions: list[EmotionName] = Field(default_factory=lambda: list(Emotion), min_length=1)
    prompts: list[PromptEntry] = Field(min_length=1)
    systems: list[SystemEntry] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    images_per_prompt: int = Field(1, ge=0, le=64, description="0 = agents only: no renderer, no torch.")
    render: RenderSection = Field(default_factory=lambda: RenderSection())
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Settings overrides (below CLI flags)."
    )
    text_scorers: list[str] = Field(default_factory=lambda: list(DEFAULT_SCORERS))
    image_scoring: ImageScoringSection = Field(default_factory=lambda: ImageScoringSection())

    @model_validator(mode="after")
    def _consistent(self) -> Suite:
        names = [s.name for s in self.systems]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"system names must be unique; repeated: {', '.join(dupes)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a value")
        n = max(1, self.images_per_prompt)
        top = (MAX_SEED - n + 1) // n  # sample seed s renders images s*n .. s*n+n-1 (evals/systems.py)
        too_big = [s for s in self.seeds if s > top]
        if too_big:
            raise ValueError(f"seeds {too_big} are too large; allowed: 0..{top} with {n} image(s) per prompt")
        unknown = sorted(set(self.settings) - set(Settings.model_fields))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}; see ed_common/settings.py for the keys"
            )
        refused = sorted(set(self.settings) - SUITE_SETTINGS)
        if refused:
            raise ValueError(
                f"setting(s) {', '.join(refused)} may not be set by a suite; a suite may set only "
                f"{', '.join(sorted(SUITE_SETTINGS))} (paths, servers and programs come from your own "
                "config, flags or environment)"
            )
        check_scorer_names(self.text_scorers)
        if self.image_scoring.content_scorer != "none":
            missing = [p.text for p in self.prompts if not p.content]
            if missing:
                raise ValueError(
                    f"image_scoring.content_scorer needs a `content` on every prompt; missing: {missing}"
                )
        return self

    def emotions_for(self, prompt: PromptEntry) -> list[Emotion]:
        """The emotions a prompt is paired with."""
        return list(prompt.emotions or self.emotions)

    @property
    def content_nouns(self) -> tuple[str, ...]:
        """Sorted distinct ``content`` nouns of the prompts."""
        return tuple(sorted({p.content for p in self.prompts if p.content}))

    def plan(self) -> list[SampleSpec]:
        """Every sample of the suite, in run order: prompt, emotion, seed, then system (interleaved, so a
        partial run still compares the systems on the same prompts)."""
        seen: dict[tuple[str, Emotion], int] = {}
        specs: list[SampleSpec] = []
        for entry in self.prompts:
            text = " ".join(entry.text.split())
            for emotion in self.emotions_for(entry):
                index = seen.get((text, emotion), 0)
                seen[(text, emotion)] = index + 1
                for seed in self.seeds:
                    for system in self.systems:
                        specs.append(SampleSpec(system.name, text, entry.content, emotion, seed, index))
        return specs

    def system(self, name: str) -> SystemEntry:
        """The system entry called ``name``.

        Raises:
            KeyError: no such system.
        """
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(name)

    def fingerprint(self) -> str:
        """sha256 over everything in the suite that decides the samples (not the scoring sections; settings
        from elsewhere are :func:`run_identity`'s)."""
        data = self.model_dump(
            mode="json", include={"emotions", "prompts", "systems", "seeds", "images_per_prompt", "render"}
        )
        data["settings"] = self.settings
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def resolve_suite_path(arg: Path) -> Path:
    """A suite file as given, or a shipped suite by name (``smoke`` -> ``evals/suites/smoke.yaml``).

    A path that exists always wins, so a local file named like a shipped suite is the one read.

    Raises:
        InvalidInputError: neither a file nor the name of a shipped suite (the message lists the names).
    """
    if arg.exists() or len(arg.parts) != 1:
        return arg
    shipped = bundled.bundled_suite(arg.name)
    if shipped is not None:
        return shipped
    names = ", ".join(bundled.suite_names())
    raise InvalidInputError(f"suite {arg}: no such file, and not a shipped suite (shipped: {names})")


def load_suite(path: Path) -> Suite:
    """Read and validate a suite file (bounded, ``ed_common.safe_yaml``: plain data only).

    Raises:
        InvalidInputError: missing, not a file, too large, bad YAML (with its line), or every schema
            problem at once, each named by file and field.
    """
    raw = load_yaml(read_user_text(path, "suite file"), where=str(path))
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{path}: a suite is a mapping of keys (name, prompts, systems, ...)")
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError(f"{path}: {validation_line(exc)}") from None
