"""Stage 2: the persona fan-out. Each persona reacts to the scene in its own branch, concurrently."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from ed_agents.context import Context, context_of
from ed_agents.llm import LLMCallError
from ed_agents.nodes.common import note
from ed_agents.state import PersonaReaction, PersonaReply, PersonaTask, State


def route_to_personas(state: State) -> list[Send]:
    """One ``Send`` per chosen persona; LangGraph runs them in the same super-step, in parallel."""
    return [
        Send(
            "react_as_persona",
            PersonaTask(
                persona_id=pid,
                user_prompt=state["user_prompt"],
                target_emotion=state["target_emotion"],
                anchors=state.get("anchors", []),
                run_index=state.get("run_index", 0),
            ),
        )
        for pid in state.get("persona_ids", [])
    ]


def react_as_persona(task: PersonaTask, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask one persona what would make it feel the emotion here; a failed persona is dropped, not fatal."""
    ctx = context_of(runtime)
    pid, run = task["persona_id"], task["run_index"]
    persona = ctx.prompts.get(f"personas/{pid}")
    try:
        result = ctx.llm.call(
            ctx.prompts.get("tasks/persona_reaction"),
            PersonaReply,
            node="react_as_persona",
            run_index=run,
            repair=ctx.prompts.get("tasks/repair_output"),
            system_prefix=persona,
            variables={
                "emotion": str(task["target_emotion"]),
                "persona_name": persona.meta.name or pid,
                "user_prompt": task["user_prompt"],
                "anchors": task["anchors"],
            },
        )
    except LLMCallError as exc:
        why = "timed out" if exc.timed_out else str(exc)
        return {
            "trace": [
                *exc.trace,
                note(run, "react_as_persona", f"persona {pid} dropped: {why}", "dropped", pid),
            ],
            "warnings": [f"persona {pid} dropped: {why}"],
        }
    reaction = PersonaReaction(**result.value.model_dump(), persona_id=pid, run_index=run)
    outcome = result.outcome
    return {
        "persona_reactions": [reaction],
        "trace": [*result.trace, note(run, "react_as_persona", f"persona {pid}: {outcome}", outcome, pid)],
    }
