"""Small pure helpers the nodes share: formatting state for prompts, picking the current run's entries."""

from __future__ import annotations

from collections.abc import Sequence

from ed_agents.state import ConceptChain, PersonaReaction, StageOutcome, State, TraceEntry


def current_reactions(state: State) -> list[PersonaReaction]:
    """Reactions of the current run only (the list accumulates over a chat session)."""
    run = state.get("run_index", 0)
    return [r for r in state.get("persona_reactions", []) if r.run_index == run]


def format_reactions(reactions: Sequence[PersonaReaction]) -> str:
    """Reactions as lines for a prompt's user part."""
    return "\n".join(
        f"- [{r.persona_id}] would paint: {r.strongest_image}; sees: {'; '.join(r.what_i_see)}"
        for r in reactions
    )


def format_concepts(chain: ConceptChain | None) -> str:
    """The chain of concept's visual channels as lines for a prompt's user part."""
    if chain is None:
        return ""
    return "\n".join(
        f"- {ch}: {', '.join(items)}" for ch, items in chain.visual.channel_items().items() if items
    )


def note(
    run_index: int, node: str, text: str, outcome: StageOutcome | None = None, persona_id: str | None = None
) -> TraceEntry:
    """A trace entry for a deterministic decision (no LLM call); ``outcome`` says what a stage used."""
    return TraceEntry(run_index=run_index, node=node, note=text, outcome=outcome, persona_id=persona_id)
