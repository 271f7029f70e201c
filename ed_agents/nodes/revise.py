"""Steering: a run with new feedback revises the previous prompt instead of starting over."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ed_agents.context import Context, context_of
from ed_agents.llm import LLMCallError
from ed_agents.nodes.common import note
from ed_agents.state import RevisedPrompt, State


def revise_prompt(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Revise the last final prompt with the user's new feedback (all feedback so far is context)."""
    ctx = context_of(runtime)
    run = state.get("run_index", 0) + 1
    feedback = state.get("feedback", [])
    current = feedback[state.get("feedback_start", 0) :]  # only feedback given on this prompt
    previous = state.get("final_prompt", "")
    base = {
        "run_index": run,
        "mode": "feedback",
        "feedback_applied": len(feedback),
        "anchor_repairs": 0,
        "missing_anchors": [],
    }
    try:
        result = ctx.llm.call(
            ctx.prompts.get("tasks/revise"),
            RevisedPrompt,
            node="revise_prompt",
            run_index=run,
            repair=ctx.prompts.get("tasks/repair_output"),
            variables={
                "emotion": state["target_emotion"].value,
                "token_budget": ctx.token_budget,
                "user_prompt": state["user_prompt"],
                "anchors": state.get("anchors", []),
                "previous_prompt": previous,
                "feedback": current[-5:],
            },
        )
    except LLMCallError as exc:
        return {
            **base,
            "draft_prompt": previous,
            "draft_negative": state.get("negative_prompt", ""),
            "trace": [
                *exc.trace,
                note(run, "revise_prompt", "revision failed; prompt unchanged", outcome="fallback"),
            ],
            "warnings": [f"revision failed ({exc}); the prompt is unchanged"],
        }
    outcome = result.outcome
    return {
        **base,
        "draft_prompt": " ".join(result.value.final_prompt.split()) or previous,
        "draft_negative": " ".join(result.value.negative_prompt.split()) or state.get("negative_prompt", ""),
        "trace": [*result.trace, note(run, "revise_prompt", outcome, outcome=outcome)],
    }
