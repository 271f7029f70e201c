"""Graph state and the LLM's structured outputs.

State is small and serialisable (strings, enums, pydantic models): it is checkpointed after every step and
chat sessions resume from it in another process. Accumulating fields use ``operator.add`` so the persona
fan-out merges; entries carry ``run_index`` so a node can pick the current run's entries out of a long
chat session's history instead of resetting the list with a sentinel reducer.
"""

from __future__ import annotations

import operator
import re
from typing import Annotated, Any, Literal, Required, get_origin

from annotated_types import MaxLen
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import TypedDict

from ed_common.emotions import Emotion
from ed_common.text import strip_control

VISUAL_CHANNELS: tuple[str, ...] = (
    "color_palette",
    "lighting",
    "composition",
    "expression_pose",
    "environment",
    "material_texture",
    "symbolic_objects",
)


class _Out(BaseModel):
    """Base of LLM outputs: tolerant of the shapes small models produce."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        # Small models write "a, b" where a list is wanted (and the reverse), or one item too many.
        # Coercing those is safer than failing the call: the content is still the model's.
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, info in cls.model_fields.items():
            value = out.get(name)
            if value is None:
                continue
            is_list = get_origin(info.annotation) is list
            # The model's text is printed and becomes an image prompt: no control characters in it.
            if isinstance(value, str):
                value = strip_control(value)
            elif isinstance(value, list):
                value = [strip_control(v) if isinstance(v, str) else v for v in value]
            if is_list and isinstance(value, str):
                value = [p.strip() for p in re.split(r"[;,\n]", value) if p.strip()]
            elif info.annotation is str and isinstance(value, list):
                value = ", ".join(str(v) for v in value)
            limit = next((m.max_length for m in info.metadata if isinstance(m, MaxLen)), None)
            if limit is not None and isinstance(value, list | str) and len(value) > limit:
                value = value[:limit]
            out[name] = value
        return out


# ---------------------------------------------------------------- LLM outputs (Field descriptions instruct)
# In the schema the server enforces, not in validation: a server that enforces nothing (json_object, text)
# may leave a list empty, and the rest of its reply is still worth keeping.
_AT_LEAST_ONE: dict[str, Any] = {"minItems": 1}


class ContentAnchors(_Out):
    """The content of the user's prompt that every rewrite must keep."""

    subjects: list[str] = Field(
        description="Main subjects exactly as the user wrote them, e.g. 'dog', 'old man'.", max_length=6
    )
    scene: str | None = Field(None, description="The place or setting if the user named one, as written.")
    attributes: list[str] = Field(
        default_factory=list,
        description="Attributes the user asked for (colours, counts, styles, adjectives), as written.",
        max_length=8,
    )


class PersonaReply(_Out):
    """One persona's subjective reaction (as the LLM writes it): short phrases, bounded lists."""

    feeling_trigger: str = Field(
        description="What in this scene makes you feel the emotion, as a short phrase.", max_length=100
    )
    what_i_see: list[str] = Field(
        description="3-4 concrete things you would see: colours, light, gestures, objects, weather.",
        json_schema_extra=_AT_LEAST_ONE,
        max_length=4,
    )
    strongest_image: str = Field(
        description="The single image you would paint, in one phrase.", max_length=100
    )


class PersonaReaction(PersonaReply):
    """A persona's reaction as stored in state."""

    persona_id: str
    run_index: int = 0


class VisualConcepts(_Out):
    """Drawable visual concepts per named channel (the chain of concept's second half, as stored)."""

    color_palette: list[str] = Field(default_factory=list, description="Colours and palette.", max_length=5)
    lighting: list[str] = Field(
        default_factory=list, description="Light quality and direction.", max_length=4
    )
    composition: list[str] = Field(default_factory=list, description="Framing, camera, angle.", max_length=4)
    expression_pose: list[str] = Field(
        default_factory=list, description="The subject's expression, pose and gesture.", max_length=4
    )
    environment: list[str] = Field(
        default_factory=list, description="Weather, time, surroundings.", max_length=4
    )
    material_texture: list[str] = Field(
        default_factory=list, description="Surfaces and textures.", max_length=4
    )
    symbolic_objects: list[str] = Field(
        default_factory=list, description="Objects that carry the emotion.", max_length=4
    )

    def channel_items(self) -> dict[str, list[str]]:
        """Channel name -> phrases, in VISUAL_CHANNELS order."""
        return {c: list(getattr(self, c)) for c in VISUAL_CHANNELS}


class ConceptReply(_Out):
    """The chain of concept in one reply: abstract concepts first, then the visuals they lead to.

    One generation, written in this order, is still a chain: each visual is decoded after the concepts.
    Every channel is required (the server's schema makes the model fill each), with 1-2 short phrases.
    """

    concepts: list[str] = Field(
        description="2-4 abstract concepts this emotion evokes here, e.g. anger -> hostility, tension.",
        json_schema_extra=_AT_LEAST_ONE,
        max_length=4,
    )
    color_palette: list[str] = Field(
        description="Colours and palette.", json_schema_extra=_AT_LEAST_ONE, max_length=2
    )
    lighting: list[str] = Field(
        description="Light quality and direction.", json_schema_extra=_AT_LEAST_ONE, max_length=2
    )
    composition: list[str] = Field(
        description="Framing, camera, angle.", json_schema_extra=_AT_LEAST_ONE, max_length=2
    )
    expression_pose: list[str] = Field(
        description="The subject's expression, pose and gesture.",
        json_schema_extra=_AT_LEAST_ONE,
        max_length=2,
    )
    environment: list[str] = Field(
        description="Weather, time, surroundings.", json_schema_extra=_AT_LEAST_ONE, max_length=2
    )
    material_texture: list[str] = Field(
        description="Surfaces and textures.", json_schema_extra=_AT_LEAST_ONE, max_length=2
    )
    symbolic_objects: list[str] = Field(
        description="Objects that carry the emotion.", json_schema_extra=_AT_LEAST_ONE, max_length=2
    )

    def visual(self) -> VisualConcepts:
        """The visual half, as stored."""
        return VisualConcepts(**{c: list(getattr(self, c)) for c in VISUAL_CHANNELS})


class ConceptChain(_Out):
    """The whole chain of concept for one run."""

    emotion: Emotion
    abstract: list[str]
    visual: VisualConcepts
    dropped: list[str] = Field(default_factory=list, description="Phrases the depictability filter removed.")
    source: Literal["llm", "lexicon"] = "llm"


class UsedIdea(_Out):
    """A persona idea the final prompt kept (found by matching phrases, not by the model's say-so)."""

    persona_id: str = Field(description="Id of the persona whose idea this is.")
    idea: str = Field(description="The idea, as used in the prompt.", max_length=200)


class ConsensusReply(_Out):
    """The consensus step's output: one visual detail per slot, to add to the user's own words.

    The user's prompt is the subject, unchanged, so the content is kept by construction; the model's job
    is to choose and phrase the details that carry the emotion. Named slots rather than a free list: a
    small model fills distinct slots with distinct things (a list it fills with one phrase repeated), and
    the slots cover several channels by construction.
    """

    # Empty by default: a request leaves out the slots it has no options for (see nodes/consensus.py).
    palette: str = Field("", description="The colours, as a short phrase.", max_length=120)
    light: str = Field("", description="The light, as a short phrase.", max_length=120)
    pose: str = Field("", description="The subject's pose or expression, as a short phrase.", max_length=120)
    setting: str = Field("", description="Weather, time or surroundings, as a short phrase.", max_length=120)
    texture: str = Field("", description="A surface or texture, as a short phrase.", max_length=120)
    detail: str = Field("", description="One more telling object, as a short phrase.", max_length=120)
    extra: str = Field("", description="A second telling object, as a short phrase.", max_length=120)
    avoid: list[str] = Field(
        default_factory=list, description="1-3 visual features of the opposite mood.", max_length=3
    )

    def details(self) -> list[tuple[str, str | None]]:
        """(phrase, channel the slot asks for), in prompt order."""
        return [
            (self.palette, "color_palette"),
            (self.light, "lighting"),
            (self.pose, "expression_pose"),
            (self.setting, "environment"),
            (self.texture, "material_texture"),
            (self.detail, "symbolic_objects"),
            (self.extra, "symbolic_objects"),
        ]


class RevisedPrompt(_Out):
    """A prompt revised from user feedback, or repaired to restore content anchors."""

    # Bounded near the text encoder's 77 tokens (~350 characters), so a reply fits its max_tokens: a reply
    # cut off at max_tokens is repaired, and a small model repairs by copying the worked example.
    final_prompt: str = Field(description="The revised image prompt.", max_length=400)
    negative_prompt: str = Field(default="", description="Updated negative prompt.", max_length=160)


# Reply schemas by the name a task file's ``output`` gives (``emodir prompts check`` validates its example).
REPLY_SCHEMAS: dict[str, type[_Out]] = {
    "content_anchors": ContentAnchors,
    "persona_reply": PersonaReply,
    "concept_reply": ConceptReply,
    "consensus_reply": ConsensusReply,
    "revised_prompt": RevisedPrompt,
}

PhraseSource = Literal["persona", "concepts", "lexicon", "consensus"]


class PromptPhrase(BaseModel):
    """One clause the final prompt adds to the user's words, with the channel it fills and where it came from.

    ``source`` is ``persona`` or ``concepts`` when the phrase matches a persona's reaction or the LLM's
    chain of concept, ``lexicon`` when it matches the built-in fallback chain, and ``consensus`` when the
    consensus model wrote it without a traceable origin.
    """

    model_config = ConfigDict(frozen=True)

    phrase: str
    channel: str | None = None
    source: PhraseSource = "consensus"
    persona_id: str | None = None


# ---------------------------------------------------------------- trace
# used: the LLM's output as written; repaired: after one repair turn; topped_up: used, with deterministic
# additions to meet a floor; fallback: replaced by the built-in path; dropped: a persona left out.
StageOutcome = Literal["used", "repaired", "topped_up", "fallback", "dropped"]


class TraceEntry(BaseModel):
    """One step of a run: an LLM call (with its prompt file) or a deterministic decision."""

    model_config = ConfigDict(frozen=True)

    run_index: int
    node: str
    persona_id: str | None = None
    prompt_id: str | None = None
    prompt_version: int | None = None
    prompt_sha256: str | None = None
    model: str | None = None
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    attempt: int = 1
    ok: bool = True
    error: str | None = None
    note: str | None = None
    # What a stage did with the LLM's output; set on the stage's one deterministic note entry.
    outcome: StageOutcome | None = None


class HistoryEntry(BaseModel):
    """One finished run of a session: what was asked and what came out."""

    model_config = ConfigDict(frozen=True)

    run_index: int
    kind: Literal["new", "feedback"]
    user_prompt: str
    emotion: Emotion
    feedback: str | None = None
    final_prompt: str


# ---------------------------------------------------------------- graph state
class InputState(TypedDict, total=False):
    """What a caller gives the graph."""

    user_prompt: Required[str]
    target_emotion: Required[Emotion]
    personas: list[str] | None  # explicit persona ids; None/absent = sampled with the seed
    feedback: Annotated[list[str], operator.add]  # steering messages, oldest first


class State(InputState, total=False):
    """The whole graph state."""

    run_index: int
    request_key: str  # "<emotion>|<prompt>" of the run that produced final_prompt
    mode: Literal["new", "feedback"]
    anchors: list[str]
    persona_ids: list[str]
    persona_reactions: Annotated[list[PersonaReaction], operator.add]
    concepts: ConceptChain | None
    draft_prompt: str
    draft_negative: str
    used_ideas: list[UsedIdea]
    missing_anchors: list[str]
    anchor_repairs: int
    feedback_applied: int
    feedback_start: int  # index in `feedback` where the current prompt's feedback begins
    final_prompt: str
    negative_prompt: str
    prompt_phrases: list[PromptPhrase]  # what the final prompt adds to the user's words, and from where
    warnings: Annotated[list[str], operator.add]
    trace: Annotated[list[TraceEntry], operator.add]
    history: Annotated[list[HistoryEntry], operator.add]


class OutputState(TypedDict, total=False):
    """What a caller gets back."""

    user_prompt: str
    target_emotion: Emotion
    run_index: int
    anchors: list[str]
    persona_ids: list[str]
    persona_reactions: list[PersonaReaction]
    concepts: ConceptChain | None
    used_ideas: list[UsedIdea]
    final_prompt: str
    negative_prompt: str
    prompt_phrases: list[PromptPhrase]
    feedback: list[str]
    warnings: list[str]
    trace: list[TraceEntry]
    history: list[HistoryEntry]


class PersonaTask(TypedDict):
    """The payload a ``Send`` gives one persona node."""

    persona_id: str
    user_prompt: str
    target_emotion: Emotion
    anchors: list[str]
    run_index: int
