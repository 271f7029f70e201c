"""One-shot runs of the graph (``emodir rewrite``) and the JSON view of a final state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic_core import to_jsonable_python

from ed_agents.context import Context
from ed_agents.state import InputState
from graphs.emotion_director import build_graph

JSON_KEYS = (
    "user_prompt",
    "target_emotion",
    "anchors",
    "persona_ids",
    "persona_reactions",
    "concepts",
    "used_ideas",
    "final_prompt",
    "negative_prompt",
    "prompt_phrases",
    "warnings",
    "trace",
)
# What `emodir generate --json` adds: where the render went and which visual prompt it used.
RENDER_JSON_KEYS = ("run_dir", "images", "contact_sheet", "manifest", "visual_prompt")


def stream_rewrite(context: Context, payload: InputState) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run the graph once, yielding ``(node, update)`` pairs, then ``("__final__", final_state)``."""
    graph = build_graph()
    final: dict[str, Any] = {}
    for chunk in graph.stream(payload, context=context, stream_mode=["updates", "values"]):
        mode, data = chunk
        if mode == "values":
            final = data
            continue
        for node, update in data.items():
            yield node, update or {}
    yield "__final__", final


def state_to_json(state: dict[str, Any], *, render: bool = False) -> dict[str, Any]:
    """The documented JSON view of a final state (``emodir rewrite --json``; ``render``: ``generate``'s)."""
    out = {k: state.get(k) for k in (*JSON_KEYS, *(RENDER_JSON_KEYS if render else ()))}
    return dict(to_jsonable_python(out))
