"""Samples: what one unit of an eval run is (a spec) and what it left behind (a record, one JSON line).

A sample is one system run on one (prompt, emotion) with one seed: one rewrite and ``images_per_prompt``
images. Its id is a hash of (system, prompt, emotion, seed, index), where ``index`` counts earlier suite
entries with the same prompt text and emotion (0 unless a suite lists a pair twice). So ids do not depend on
the order of the suite, the process count or the run, which is what makes resume and sharding exact.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ed_common.emotions import Emotion

SampleStatus = Literal["ok", "error"]


def sample_id(system: str, prompt: str, emotion: str, seed: int, index: int) -> str:
    """The stable id: the first 16 hex digits of sha256 over the canonical JSON of the five fields."""
    key = json.dumps([system, prompt, str(emotion), seed, index], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class SampleSpec:
    """One planned sample."""

    system: str
    prompt: str
    content: str | None
    emotion: Emotion
    seed: int
    index: int = 0

    @property
    def id(self) -> str:
        """See ``sample_id``."""
        return sample_id(self.system, self.prompt, self.emotion.value, self.seed, self.index)


class PersonaText(BaseModel):
    """One persona's reaction, flattened to the text the diversity scorers read."""

    model_config = ConfigDict(frozen=True)

    persona_id: str
    text: str


class SampleRecord(BaseModel):
    """One line of ``samples.jsonl``: a finished sample (status ok) or a failed one (status error)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    system: str
    kind: str
    visual_prompts: bool
    prompt: str
    content: str | None = None
    emotion: Emotion
    seed: int
    index: int = 0
    status: SampleStatus
    error: str | None = None
    final_prompt: str | None = None
    negative_prompt: str = ""
    anchors: list[str] = Field(default_factory=list)
    persona_reactions: list[PersonaText] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list, description="Paths relative to the run directory.")
    visual_prompt: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)
    trace: list[dict[str, Any]] = Field(default_factory=list, description="ed_agents TraceEntry dicts.")
    prompt_phrases: list[dict[str, Any]] = Field(
        default_factory=list,
        description="ed_agents PromptPhrase dicts: clauses the final prompt adds, and their sources.",
    )
    timings: dict[str, float] = Field(default_factory=dict)
    wall_s: float = 0.0
    rank: int = 0
    finished: str = ""

    @property
    def ok(self) -> bool:
        """Finished without error."""
        return self.status == "ok"

    def to_line(self) -> str:
        """One JSON line (no newline inside: JSON escapes them)."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False)
