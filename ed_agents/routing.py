"""Routers: pure functions of the state."""

from __future__ import annotations

from typing import Literal

from ed_agents.nodes.understand import request_key
from ed_agents.state import State


def route_start(state: State) -> Literal["understand_request", "revise_prompt"]:
    """Revise when the same request already has a prompt and new feedback arrived; else start afresh."""
    has_prompt = bool(state.get("final_prompt"))
    same = state.get("request_key") == request_key(state["user_prompt"], state["target_emotion"])
    new_feedback = len(state.get("feedback", [])) > state.get("feedback_applied", 0)
    return "revise_prompt" if has_prompt and same and new_feedback else "understand_request"


def route_after_verify(state: State) -> Literal["repair_prompt", "finalize_prompt"]:
    """One LLM repair when anchors are missing; after that the deterministic fix in finalize_prompt."""
    if state.get("missing_anchors") and state.get("anchor_repairs", 0) < 1:
        return "repair_prompt"
    return "finalize_prompt"
