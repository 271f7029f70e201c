"""The graph's state: MC-Agent's state plus the render stage's inputs and outputs (paths, not images).

The render types are the torch-free contract of ``ed_common.render_contract``.
"""

from __future__ import annotations

from ed_agents.state import InputState, OutputState, State
from ed_common.render_contract import RenderOptions, VisualPromptChoice


class GraphInput(InputState, total=False):
    """Graph input: MC-Agent's, plus whether to use the agents and whether (and how) to render."""

    agents: bool  # False = render the user's prompt as written (`emodir generate --no-agents`)
    render: RenderOptions | None


class GraphState(State, GraphInput, total=False):
    """The whole state."""

    visual_prompt: VisualPromptChoice | None
    run_dir: str | None
    images: list[str]
    contact_sheet: str | None
    manifest: str | None
    model_prompt: str | None  # what the model read, when the renderer changed the prompt (world captions)


class GraphOutput(OutputState, total=False):
    """What a caller gets back."""

    visual_prompt: VisualPromptChoice | None
    run_dir: str | None
    images: list[str]
    contact_sheet: str | None
    manifest: str | None
    model_prompt: str | None  # what the model read, when the renderer changed the prompt (world captions)
