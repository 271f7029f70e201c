"""The graph's state: MC-Agent's state plus the render stage's inputs and outputs (paths, not images)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ed_agents.state import InputState, OutputState, State
from ed_common.limits import MAX_SEED


class RenderOptions(BaseModel):
    """Per-run render settings (serialisable: they live in the checkpointed state)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_images: int = Field(1, ge=1, le=64)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0, le=30)
    width: int | None = Field(None, ge=8, le=4096, multiple_of=8)
    height: int | None = Field(None, ge=8, le=4096, multiple_of=8)
    vp_scale: float = Field(1.0, ge=0, le=10)
    top_k: int = Field(4, ge=1, le=64)
    negative_vp: Literal["none", "opposite", "confusable"] = "none"
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


class GraphInput(InputState, total=False):
    """Graph input: MC-Agent's, plus whether to use the agents and whether (and how) to render."""

    agents: bool  # False = render the user's prompt as written (`emodir generate --no-agents`)
    render: RenderOptions | None


class GraphState(State, GraphInput, total=False):
    """The whole state."""

    visual_prompt: dict[str, Any] | None
    run_dir: str | None
    images: list[str]
    contact_sheet: str | None
    manifest: str | None


class GraphOutput(OutputState, total=False):
    """What a caller gets back."""

    visual_prompt: dict[str, Any] | None
    run_dir: str | None
    images: list[str]
    contact_sheet: str | None
    manifest: str | None
