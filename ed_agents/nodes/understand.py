"""Stage 1: validate the request (the graph's entry), pick the personas, settle the content anchors.

``understand_request`` is deterministic, so the persona fan-out starts at once with the prompt's content
words as anchors. ``extract_anchors`` asks the LLM for the phrases (subjects, scene, attributes) in the
same super-step as the personas, off the critical path; its phrases refine the anchors for the stages
after it, and when it fails the content words stand.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ed_agents.anchors import settle_anchors
from ed_agents.context import Context, context_of
from ed_agents.llm import LLMCallError
from ed_agents.nodes.common import note
from ed_agents.state import ContentAnchors, State
from ed_agents.validation import check_request, select_personas
from ed_common.emotions import Emotion


def request_key(user_prompt: str, emotion: Emotion) -> str:
    """Identity of a request: a new key means a fresh run, the same key plus feedback means a revision."""
    return f"{emotion.value}|{' '.join(user_prompt.split())}"


def accept_request(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The graph's entry: validate the request and normalise the emotion once ("Fear " -> Emotion.FEAR).

    Every node after this one trusts ``target_emotion`` to be an ``Emotion``; a client of the LangGraph API
    that sends a plain name gets it normalised here, whatever path the run then takes.
    """
    ctx = context_of(runtime)
    emotion = check_request(state["user_prompt"], state["target_emotion"], ctx.tokens, ctx.max_prompt_tokens)
    return {"target_emotion": emotion}


def understand_request(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Choose the personas and take the prompt's content words as first anchors (the request is valid)."""
    ctx = context_of(runtime)
    emotion = state["target_emotion"]
    run_index = state.get("run_index", -1) + 1
    requested = state.get("personas") or ctx.personas  # the input's ids, else the context's default
    persona_ids = select_personas(ctx.prompts.ids("persona"), requested, ctx.n_personas, ctx.seed)
    anchors = settle_anchors(state["user_prompt"], [])
    return {
        "target_emotion": emotion,
        "run_index": run_index,
        "request_key": request_key(state["user_prompt"], emotion),
        "mode": "new",
        "anchors": anchors,
        "persona_ids": persona_ids,
        "concepts": None,
        "draft_prompt": "",
        "draft_negative": "",
        "used_ideas": [],
        "prompt_phrases": [],
        "missing_anchors": [],
        "anchor_repairs": 0,
        "feedback_applied": len(state.get("feedback", [])),
        "feedback_start": len(state.get("feedback", [])),
        "trace": [note(run_index, "understand_request", f"anchors: {anchors}; personas: {persona_ids}")],
    }


def extract_anchors(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the LLM for the prompt's content phrases; keep those that really occur in it."""
    ctx = context_of(runtime)
    run = state.get("run_index", 0)
    try:
        result = ctx.llm.call(
            ctx.prompts.get("tasks/understand"),
            ContentAnchors,
            node="extract_anchors",
            run_index=run,
            repair=ctx.prompts.get("tasks/repair_output"),
            variables={"user_prompt": state["user_prompt"]},
        )
    except LLMCallError as exc:
        return {
            "trace": [
                *exc.trace,
                note(run, "extract_anchors", "fallback: content words", outcome="fallback"),
            ],
            "warnings": [f"anchor extraction failed ({exc}); using the prompt's content words"],
        }
    found = result.value
    proposed = [*found.subjects, *([found.scene] if found.scene else []), *found.attributes]
    anchors = settle_anchors(state["user_prompt"], proposed)
    outcome = result.outcome
    return {
        "anchors": anchors,
        "trace": [*result.trace, note(run, "extract_anchors", f"anchors: {anchors}", outcome=outcome)],
    }
