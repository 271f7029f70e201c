"""Small pure helpers the nodes share: picking the current run's entries, writing a trace note."""

from __future__ import annotations

from ed_agents.state import PersonaReaction, StageOutcome, State, TraceEntry


def current_reactions(state: State) -> list[PersonaReaction]:
    """Reactions of the current run only (the list accumulates over a chat session)."""
    run = state.get("run_index", 0)
    return [r for r in state.get("persona_reactions", []) if r.run_index == run]


def note(
    run_index: int, node: str, text: str, outcome: StageOutcome | None = None, persona_id: str | None = None
) -> TraceEntry:
    """A trace entry for a deterministic decision (no LLM call); ``outcome`` says what a stage used."""
    return TraceEntry(run_index=run_index, node=node, note=text, outcome=outcome, persona_id=persona_id)
