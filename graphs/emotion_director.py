"""The Emotion-Director graph: MC-Agent (personas, chain of concept, consensus, steering) + MC-Diffusion.

    START -> accept_request (validate; the emotion is normalised once, here) -> one of:
    understand_request -> { react_as_persona x N (Send), expand_concepts, extract_anchors }
          (one super-step, in parallel) -> write_consensus -> verify_anchors
          -> [repair_prompt -> verify_anchors] -> finalize_prompt
    revise_prompt (same request + new feedback) -> verify_anchors -> ...
    adopt_prompt (agents off: the user's prompt as written)
    retrieve_visual_prompt (a render of the prompt the thread already has)
    finalize_prompt / adopt_prompt -> [retrieve_visual_prompt -> render_image] (when a render is asked for)

A new rewrite's critical path is two LLM calls: the parallel stage, then the consensus.

This module is where the agent side and the image side meet; ``ed_diffusion`` is imported lazily by the
render nodes, so agent-only runs never import torch.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import ValidationError

from ed_agents.anchors import settle_anchors
from ed_agents.context import Context, ContextSettings
from ed_agents.errors import InvalidInputError
from ed_agents.nodes.concepts import expand_concepts
from ed_agents.nodes.consensus import write_consensus
from ed_agents.nodes.finalize import finalize_prompt, repair_prompt, verify_anchors
from ed_agents.nodes.personas import react_as_persona, route_to_personas
from ed_agents.nodes.revise import revise_prompt
from ed_agents.nodes.understand import accept_request as accept_agent_request
from ed_agents.nodes.understand import extract_anchors, request_key, understand_request
from ed_agents.routing import route_after_verify, route_start
from ed_agents.state import HistoryEntry, PersonaTask
from ed_common.render_contract import RenderOptions
from graphs.state import GraphInput, GraphOutput, GraphState
from graphs.tool_node import check_out_dir, render_image, retrieve_visual_prompt

Entry = Literal["understand_request", "revise_prompt", "adopt_prompt", "retrieve_visual_prompt"]


def accept_request(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The entry: MC-Agent's request check, plus the render options as RenderOptions.

    A LangGraph server's client sends ``render`` as JSON; it becomes RenderOptions here, once, so that
    ``{}`` (all defaults) still asks for a render and a bad option fails before any LLM call.

    Raises:
        InvalidInputError: a bad request, or a bad render option (named with what is allowed).
    """
    update = accept_agent_request(state, runtime)
    render = state.get("render")
    if render is not None:
        options = render if isinstance(render, RenderOptions) else _render_options(render)
        check_out_dir(options, runtime)  # before any LLM call
        if options is not render:
            update["render"] = options
    return update


def _render_options(value: Any) -> RenderOptions:
    try:
        return RenderOptions.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"render.{'.'.join(str(p) for p in e['loc']) or '?'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInputError(f"bad render options: {problems}") from None


def route_entry(state: GraphState) -> Entry:
    """Agents off -> adopt the prompt; a render of the prompt we already have -> straight to retrieval."""
    if state.get("agents") is False:
        return "adopt_prompt"
    route = route_start(state)
    if route == "understand_request" and state.get("render") and state.get("final_prompt"):
        same = state.get("request_key") == request_key(state["user_prompt"], state["target_emotion"])
        if same and len(state.get("feedback", [])) <= state.get("feedback_applied", 0):
            return "retrieve_visual_prompt"
    return route


def route_after_prompt(state: GraphState) -> Literal["retrieve_visual_prompt", "__end__"]:
    """Render only when asked to."""
    return "retrieve_visual_prompt" if state.get("render") else "__end__"


def adopt_prompt(state: GraphState) -> dict[str, Any]:
    """The baseline path: the user's prompt goes to the renderer unchanged (validated at the entry)."""
    emotion = state["target_emotion"]
    run = state.get("run_index", -1) + 1
    prompt = " ".join(state["user_prompt"].split())
    return {
        "target_emotion": emotion,
        "run_index": run,
        "request_key": request_key(prompt, emotion),
        "mode": "new",
        "anchors": settle_anchors(prompt, []),
        "persona_ids": [],
        "concepts": None,
        "used_ideas": [],
        "prompt_phrases": [],
        "final_prompt": prompt,
        "negative_prompt": "",
        "feedback_applied": len(state.get("feedback", [])),
        "feedback_start": len(state.get("feedback", [])),
        "history": [
            HistoryEntry(run_index=run, kind="new", user_prompt=prompt, emotion=emotion, final_prompt=prompt)
        ],
    }


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    """Compile the graph (optionally with a checkpointer for chat sessions)."""
    # The context schema is what a server's client may send (JSON settings); the CLI and tests pass a live
    # ed_agents.context.Context instead, which the nodes take as it is (context_of). So a node's
    # runtime.context is either, and the graph's context type is left open (the nodes say Runtime[Context]).
    context_schema: type[Any] = ContextSettings
    g = StateGraph(
        GraphState, input_schema=GraphInput, output_schema=GraphOutput, context_schema=context_schema
    )
    g.add_node("accept_request", accept_request)
    g.add_node("understand_request", understand_request)
    # The persona node takes a Send payload (PersonaTask), not the state; the overloads cannot say so.
    g.add_node("react_as_persona", cast(Any, react_as_persona), input_schema=PersonaTask)
    g.add_node("expand_concepts", expand_concepts)
    g.add_node("extract_anchors", extract_anchors)
    g.add_node("write_consensus", write_consensus)
    g.add_node("revise_prompt", revise_prompt)
    g.add_node("verify_anchors", verify_anchors)
    g.add_node("repair_prompt", repair_prompt)
    g.add_node("finalize_prompt", finalize_prompt)
    g.add_node("adopt_prompt", adopt_prompt)
    g.add_node("retrieve_visual_prompt", retrieve_visual_prompt)
    g.add_node("render_image", render_image)

    g.add_edge(START, "accept_request")
    g.add_conditional_edges(
        "accept_request",
        route_entry,
        ["understand_request", "revise_prompt", "adopt_prompt", "retrieve_visual_prompt"],
    )
    g.add_conditional_edges("understand_request", route_to_personas, ["react_as_persona"])
    g.add_edge("understand_request", "expand_concepts")
    g.add_edge("understand_request", "extract_anchors")
    # A join: the consensus waits for the whole parallel stage.
    g.add_edge(["react_as_persona", "expand_concepts", "extract_anchors"], "write_consensus")
    g.add_edge("write_consensus", "verify_anchors")
    g.add_edge("revise_prompt", "verify_anchors")
    g.add_conditional_edges("verify_anchors", route_after_verify, ["repair_prompt", "finalize_prompt"])
    g.add_edge("repair_prompt", "verify_anchors")
    g.add_conditional_edges("finalize_prompt", route_after_prompt, ["retrieve_visual_prompt", END])
    g.add_conditional_edges("adopt_prompt", route_after_prompt, ["retrieve_visual_prompt", END])
    g.add_edge("retrieve_visual_prompt", "render_image")
    g.add_edge("render_image", END)
    return g.compile(checkpointer=checkpointer, name="emotion_director")


# For `langgraph dev` (langgraph.json); the server supplies persistence, and each run's Context is built
# from the server's Settings plus the run's ContextSettings.
graph = build_graph()
