"""Stage 2b: the chain of concept. Emotion -> abstract concepts -> drawable visuals per channel -> filter.

One LLM call writes both halves (concepts first, so each visual is decoded after them), in the same
super-step as the persona fan-out: the consensus reads both, and the critical path stays at two calls.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from ed_agents.context import Context, context_of
from ed_agents.depictability import filter_depictable, names_a_channel
from ed_agents.lexicon import ABSTRACT, VISUAL
from ed_agents.llm import LLMCallError
from ed_agents.nodes.common import note
from ed_agents.state import (
    ConceptChain,
    ConceptReply,
    StageOutcome,
    State,
    TraceEntry,
    VisualConcepts,
)


def apply_depictability(visual: VisualConcepts) -> tuple[VisualConcepts, list[str]]:
    """Filter every channel; return the filtered concepts and what was dropped."""
    kept: dict[str, list[str]] = {}
    dropped: list[str] = []
    for channel, items in visual.channel_items().items():
        echoes = [i for i in items if names_a_channel(i)]
        kept[channel], gone = filter_depictable([i for i in items if i not in echoes])
        dropped.extend(echoes + gone)
    return VisualConcepts(**kept), dropped


def expand_concepts(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run the chain of concept in one call, beside the personas; the built-in lexicon where it fails."""
    ctx = context_of(runtime)
    run = state.get("run_index", 0)
    emotion = state["target_emotion"]
    trace: list[TraceEntry] = []
    warnings: list[str] = []
    try:
        result = ctx.llm.call(
            ctx.prompts.get("tasks/concept_chain"),
            ConceptReply,
            node="expand_concepts",
            run_index=run,
            repair=ctx.prompts.get("tasks/repair_output"),
            variables={"emotion": emotion.value, "user_prompt": state["user_prompt"]},
        )
    except LLMCallError as exc:
        trace.extend(exc.trace)
        warnings.append(f"chain of concept failed ({exc}); using the built-in lexicon")
        chain = ConceptChain(
            emotion=emotion, abstract=ABSTRACT[emotion], visual=VISUAL[emotion], source="lexicon"
        )
        outcome: StageOutcome = "fallback"
    else:
        trace.extend(result.trace)
        visual, dropped = apply_depictability(result.value.visual())
        abstract = [c for c in (" ".join(c.split()) for c in result.value.concepts) if c]
        if any(visual.channel_items().values()):
            outcome = result.outcome
            chain = ConceptChain(emotion=emotion, abstract=abstract, visual=visual, dropped=dropped)
        else:
            warnings.append("no depictable visual concept survived the filter; using the built-in lexicon")
            outcome = "fallback"
            chain = ConceptChain(
                emotion=emotion,
                abstract=abstract or ABSTRACT[emotion],
                visual=VISUAL[emotion],
                dropped=dropped,
                source="lexicon",
            )
    trace.append(
        note(run, "expand_concepts", f"source={chain.source}; depictability dropped {chain.dropped}", outcome)
    )
    return {"concepts": chain, "trace": trace, "warnings": warnings}
