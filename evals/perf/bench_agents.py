"""MC-Agent benchmark against the running LLM server (a benchmark, not a test: it prints ratios).

1. Fan-out mechanism, on equal work: the 4 persona prompts (rendered as the graph renders them) sent through a
   LangGraph ``Send`` fan-out vs one call vs the same 4 in sequence. Every reply is forced to exactly
   ``--tokens`` tokens (vLLM's ``min_tokens``/``ignore_eos``), so the ratio measures concurrency, not how
   chatty a persona happened to be. Target: fan-out wall <= 1.5x one call.
2. The real graph: wall time of a full run vs the LLM time on its critical path (the stages in sequence, the
   persona stage counted at its slowest persona, repairs included). Target: overhead < 5%. Also the persona
   stage's wall time vs its slowest persona's own LLM time (fan-out cost with real, unequal replies).

Run: ``make bench`` (starts the server), or with a server up:
``OMP_NUM_THREADS=1 .venv/bin/python evals/perf/bench_agents.py [--url URL] [--repeats 3] [--tokens 48]``.
"""

from __future__ import annotations

import argparse
import operator
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Annotated, Any, TypedDict

os.environ.setdefault("OMP_NUM_THREADS", "1")

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from ed_agents.context import Context, build_context
from ed_agents.llm_server import is_reachable
from ed_agents.settings import load_settings
from ed_common.emotions import Emotion
from graphs.emotion_director import build_graph

PROMPT = "an old fisherman mending a net on the pier"
EMOTION = Emotion.AWE
PERSONAS = ["child", "war_photographer", "village_grandmother", "zen_gardener"]


def persona_messages(ctx: Context, pid: str) -> list[BaseMessage]:
    """The messages the graph sends for one persona (system = persona + task, user = the scene)."""
    task, persona = ctx.prompts.get("tasks/persona_reaction"), ctx.prompts.get(f"personas/{pid}")
    variables = {
        "emotion": EMOTION.value,
        "persona_name": persona.meta.name or pid,
        "user_prompt": PROMPT,
        "anchors": ["old fisherman", "net", "pier"],
    }
    rendered = task.render(**variables)
    return [
        SystemMessage(f"{persona.render(**variables).system}\n\n{rendered.system}"),
        HumanMessage(rendered.user),
    ]


class _FanState(TypedDict, total=False):
    done: Annotated[list[int], operator.add]


def fanout_graph(chat: ChatOpenAI, messages: dict[str, list[BaseMessage]]) -> Any:
    """A bare Send fan-out over the persona messages: the same mechanism the MC-Agent graph uses."""

    def call(task: dict[str, str]) -> dict[str, list[int]]:
        reply = chat.invoke(messages[task["pid"]])
        usage: dict[str, Any] = dict(reply.usage_metadata or {})
        return {"done": [int(usage.get("output_tokens", 0))]}

    g = StateGraph(_FanState)
    g.add_node("call", call)  # type: ignore[call-overload]
    g.add_conditional_edges(START, lambda _: [Send("call", {"pid": p}) for p in messages], ["call"])
    g.add_edge("call", END)
    return g.compile()


def bench_mechanism(url: str, model: str, ctx: Context, repeats: int, tokens: int) -> dict[str, float]:
    chat = ChatOpenAI(
        base_url=url,
        api_key="EMPTY",
        model=model,
        temperature=0.7,
        max_tokens=tokens,
        extra_body={"min_tokens": tokens, "ignore_eos": True},
        max_retries=0,
    )
    messages = {pid: persona_messages(ctx, pid) for pid in PERSONAS}
    graph = fanout_graph(chat, messages)
    chat.invoke(messages[PERSONAS[0]])  # warm-up
    one, seq, fan = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chat.invoke(messages[PERSONAS[0]])
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for pid in PERSONAS:
            chat.invoke(messages[pid])
        seq.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = graph.invoke({})
        fan.append(time.perf_counter() - t0)
        assert out["done"] == [tokens] * len(PERSONAS), out  # equal work, as claimed
    med = statistics.median
    return {"one": med(one), "seq": med(seq), "fan": med(fan)}


def bench_graph(ctx: Context, repeats: int) -> dict[str, float]:
    graph = build_graph()
    overhead, stage_ratio, walls = [], [], []
    for i in range(repeats):
        marks: dict[str, float] = {}
        final: dict[str, Any] = {}
        t0 = time.perf_counter()
        payload = {"user_prompt": PROMPT, "target_emotion": EMOTION, "personas": PERSONAS}
        for mode, data in graph.stream(
            payload, context=ctx, stream_mode=["updates", "values"], config={"configurable": {"bench": i}}
        ):
            if mode == "values":
                final = data
                continue
            for node in data:
                marks[node] = time.perf_counter()  # the last update of a node: the slowest persona
        wall = time.perf_counter() - t0
        calls = [t for t in final["trace"] if t.prompt_id]
        per_persona: dict[str, float] = defaultdict(float)
        for t in calls:
            if t.node == "react_as_persona" and t.persona_id:
                per_persona[t.persona_id] += t.latency_s
        slowest = max(per_persona.values(), default=0.0)
        critical = sum(t.latency_s for t in calls if t.node != "react_as_persona") + slowest
        overhead.append(wall / critical - 1.0)
        stage_ratio.append((marks["react_as_persona"] - marks["understand_request"]) / slowest)
        walls.append(wall)
    med = statistics.median
    return {"wall": med(walls), "overhead": med(overhead), "stage_over_slowest": med(stage_ratio)}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EMODIR_LLM_BASE_URL", "http://127.0.0.1:8765/v1"))
    parser.add_argument("--model", default=os.environ.get("EMODIR_LLM_MODEL", "smollm2"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    if not is_reachable(args.url):
        print(f"no LLM server at {args.url}; start one with `emodir llm serve --detach`", file=sys.stderr)
        return 1
    ctx = build_context(load_settings(llm_base_url=args.url, llm_model=args.model, seed=0))
    m = bench_mechanism(args.url, args.model, ctx, args.repeats, args.tokens)
    g = bench_graph(ctx, args.repeats)
    print(f"[fan-out, {len(PERSONAS)} x {args.tokens} tokens each, median of {args.repeats}]")
    print(f"  one persona call        {m['one']:.2f} s")
    print(f"  {len(PERSONAS)} in sequence           {m['seq']:.2f} s")
    print(f"  {len(PERSONAS)} fanned out (Send)     {m['fan']:.2f} s")
    print(f"  fan-out / one call      {m['fan'] / m['one']:.2f}x   (target <= 1.5x)")
    print(f"  fan-out / sequential    {m['fan'] / m['seq']:.2f}x")
    print(f"[full graph, real replies, median of {args.repeats}]")
    print(f"  wall time               {g['wall']:.2f} s")
    print(f"  graph overhead          {100 * g['overhead']:.1f}%   (target < 5%)")
    print(f"  persona stage / slowest persona's own LLM time   {g['stage_over_slowest']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
