"""The deterministic tail: verify anchors, one LLM repair, then a guaranteed fix and the token budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime

from ed_agents.anchors import enforce_anchors, fit_budget, missing_anchors
from ed_agents.context import Context, context_of
from ed_agents.leaks import LeakChecker, leak_checker
from ed_agents.llm import LLMCallError
from ed_agents.nodes.common import current_reactions, note
from ed_agents.provenance import added_phrases, split_clauses
from ed_agents.state import HistoryEntry, PersonaReaction, RevisedPrompt, State, UsedIdea


def verify_anchors(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Record which content anchors the draft lost (the router decides what to do about it)."""
    missing = missing_anchors(state.get("draft_prompt", ""), state.get("anchors", []))
    run = state.get("run_index", 0)
    return {"missing_anchors": missing, "trace": [note(run, "verify_anchors", f"missing: {missing}")]}


def repair_prompt(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the LLM once to put the missing anchors back."""
    ctx = context_of(runtime)
    run = state.get("run_index", 0)
    repairs = state.get("anchor_repairs", 0) + 1
    try:
        result = ctx.llm.call(
            ctx.prompts.get("tasks/repair_anchors"),
            RevisedPrompt,
            node="repair_prompt",
            run_index=run,
            repair=ctx.prompts.get("tasks/repair_output"),
            variables={
                "emotion": state["target_emotion"].value,
                "user_prompt": state["user_prompt"],
                "draft_prompt": state.get("draft_prompt", ""),
                "missing_anchors": state.get("missing_anchors", []),
                "anchors": state.get("anchors", []),
            },
        )
    except LLMCallError as exc:
        return {
            "anchor_repairs": repairs,
            "trace": [
                *exc.trace,
                note(run, "repair_prompt", "fallback: deterministic fix", outcome="fallback"),
            ],
            "warnings": [f"anchor repair failed ({exc})"],
        }
    outcome = result.outcome
    update: dict[str, Any] = {
        "anchor_repairs": repairs,
        "trace": [*result.trace, note(run, "repair_prompt", outcome, outcome=outcome)],
    }
    if result.value.final_prompt.strip():
        update["draft_prompt"] = " ".join(result.value.final_prompt.split())
    return update


def source_reactions(state: State) -> list[PersonaReaction]:
    """The reactions a final prompt may come from: this run's, or for a revision the newest run's."""
    if state.get("mode", "new") == "new":
        return current_reactions(state)  # never credit personas of an earlier run
    reactions = state.get("persona_reactions", [])
    newest = max((r.run_index for r in reactions), default=None)
    return [r for r in reactions if r.run_index == newest]


def strip_leaks(
    prompt: str, user_prompt: str, checker: LeakChecker, allowed: Sequence[str] = (), *, examples: bool = True
) -> tuple[str, list[str]]:
    """Drop the clauses that leak schema words, JSON or instruction text; return the prompt and them."""
    stripped = checker.leaking_clauses(prompt, user_prompt, allowed, examples=examples)
    return ", ".join(c for c in split_clauses(prompt) if c not in stripped), stripped


def finalize_prompt(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Strip leaks, keep every anchor, fit both prompts to the budget, trace the phrases, record the run."""
    ctx = context_of(runtime)
    run = state.get("run_index", 0)
    anchors = state.get("anchors", [])
    checker = leak_checker(ctx.prompts)
    feedback = state.get("feedback", [])
    # What the user asked for in feedback ("add a lighthouse") is theirs, never a leak.
    draft, stripped = strip_leaks(state.get("draft_prompt", ""), state["user_prompt"], checker, feedback)
    draft = draft or state["user_prompt"]
    fixed = enforce_anchors(draft, state["user_prompt"], anchors)
    notes = [f"stripped leaking clauses {stripped}"] if stripped else []
    if fixed != draft:
        notes.append(f"deterministic fix restored {missing_anchors(draft, anchors)}")
    final, dropped = fit_budget(fixed, anchors, ctx.tokens, ctx.token_budget)
    if dropped:
        notes.append(f"fit to {ctx.token_budget} CLIP tokens, dropped {dropped}")
    negative, _ = strip_leaks(state.get("draft_negative", ""), "", checker, examples=False)
    negative, _ = fit_budget(negative, [], ctx.tokens, ctx.token_budget)
    phrases = added_phrases(
        final,
        state["user_prompt"],
        source_reactions(state),
        state.get("concepts"),
        known=state.get("prompt_phrases", []),
    )
    used = [UsedIdea(persona_id=p.persona_id, idea=p.phrase) for p in phrases if p.persona_id]
    mode = state.get("mode", "new")
    entry = HistoryEntry(
        run_index=run,
        kind=mode,
        user_prompt=state["user_prompt"],
        emotion=state["target_emotion"],
        feedback=feedback[-1] if mode == "feedback" and feedback else None,
        final_prompt=final,
    )
    warnings = [f"stripped {len(stripped)} clause(s) that leaked prompt text: {stripped}"] if stripped else []
    if missing_anchors(final, anchors):
        warnings.append(f"the token budget cut anchors {missing_anchors(final, anchors)}")
    return {
        "final_prompt": final,
        "negative_prompt": negative,
        "prompt_phrases": phrases,
        "used_ideas": used,
        "missing_anchors": missing_anchors(final, anchors),
        "history": [entry],
        "trace": [note(run, "finalize_prompt", "; ".join(notes) or "all anchors kept, within budget")],
        "warnings": warnings,
    }
