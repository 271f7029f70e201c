"""MC-Agent benchmarks against an LLM server (a benchmark, not a test: it prints ratios).

Four parts; ``--parts`` picks them, else: ``suite`` when ``--suite``/``--limit`` is given, ``suite`` and
``concurrency`` when ``--concurrency`` is, and ``fanout`` + ``graph`` (the original two) when none is.

1. ``fanout``, the mechanism on equal work: the 4 persona prompts sent through a LangGraph ``Send`` fan-out
   vs one call vs the same 4 in sequence. Every reply is forced to exactly ``--tokens`` tokens (vLLM's
   ``min_tokens``/``ignore_eos``), so the ratio measures concurrency, not how chatty a persona happened to
   be (the fake server ignores both, so under ``--fake`` the work is not equal). Target: fan-out wall
   <= 1.5x one call.
2. ``graph``, one rewrite repeated: wall time vs the LLM time on its critical path (per super-step the
   slowest task's own LLM time, repairs included; the parallel stage of personas + chain of concept +
   anchors counts once). Target: overhead < 5%. Also the parallel stage's wall time vs its slowest branch's
   own LLM time (fan-out cost with real, unequal replies).
3. ``suite``: the full graph (``--n-personas``, 4 by default) run sequentially on the first ``--limit``
   (prompt, emotion) pairs of ``--suite``: rewrite wall time p50/p95/max; LLM calls (failed attempts and
   repairs included), repair attempts and input/output tokens per rewrite (mean); the sequential LLM depth
   (super-steps with at least one LLM call: the parallel stage counts once, so a new rewrite without a
   repair has depth 2); and per-stage outcome counts (``node/outcome`` of the trace's notes).
4. ``concurrency``: the same rewrites through a thread pool at each ``--concurrency`` level (a fresh HTTP
   client per level; ``llm_concurrency`` = 6 x the highest level, at least 48, so only the level limits):
   rewrites/s and output tokens/s. Then the server's saturated ceiling, measured in the same run: every
   chat request the graph sent at level 1, recorded byte for byte at the HTTP layer, fired at the server
   at once (one thread each), best of ``--ceiling-repeats``; each level's output tokens/s is printed as a
   ratio to that ceiling. Level 1 always runs (it is what gets recorded) and is what part 3 reports. A
   level above ``--limit`` cannot fill its threads. Target: c8 >= 0.8x the ceiling.

Parts 3 and 4 start with an untimed warm-up pass over the same pairs (at concurrency 8 or the highest level;
``--no-warmup`` skips it), so no level pays alone for cold caches. Throughput counts output (completion)
tokens, as the server reports them.

Run: ``make bench`` (starts the server, runs parts 1-2), or with a server up:
``OMP_NUM_THREADS=1 .venv/bin/python evals/perf/bench_agents.py [--url URL] [--repeats 3] [--tokens 48]``;
``... bench_agents.py --suite evals/suites/counter-stereotype.yaml --limit 12 --concurrency 1,2,4,8
[--json OUT]``. Without any LLM: add ``--fake [--fake-delay 0.05]`` (the in-process fake OpenAI server of
``tests/fakes``, sleeping per request so that concurrency shows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import operator
import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict, cast

os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx2
import openai
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from ed_agents.anchors import TokenCounter
from ed_agents.context import Context, build_context
from ed_agents.llm import make_chat_model
from ed_agents.prompts import PromptLibrary
from ed_agents.server_process import is_reachable
from ed_agents.state import TraceEntry
from ed_common.emotions import Emotion, parse_emotion
from ed_common.safe_yaml import load_yaml
from ed_common.settings import REPO_ROOT, Settings, load_settings
from graphs.emotion_director import build_graph

PROMPT = "an old fisherman mending a net on the pier"
EMOTION = Emotion.AWE
PERSONAS = ["child", "war_photographer", "village_grandmother", "zen_gardener"]
DEFAULT_SUITE = REPO_ROOT / "evals" / "suites" / "counter-stereotype.yaml"
PARTS = ("fanout", "graph", "suite", "concurrency")
PARALLEL_STAGE = "react_as_persona"  # the node that marks the parallel super-step
MAX_LLM_CONCURRENCY = 256  # the settings' upper bound
TARGET_LEVEL, TARGET_RATIO = 8, 0.8


# ---------------------------------------------------------------------------------------------- part 1
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
    # cast: a Send payload node; the overloads cannot say so, and mypy picks among them inconsistently.
    g.add_node("call", cast(Any, call))
    g.add_conditional_edges(START, lambda _: [Send("call", {"pid": p}) for p in messages], ["call"])
    g.add_edge("call", END)
    return g.compile()


def bench_mechanism(
    url: str, model: str, ctx: Context, repeats: int, tokens: int, *, equal_work: bool
) -> dict[str, float]:
    """Medians of one call, the personas in sequence and the personas fanned out (seconds)."""
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
        if equal_work:
            assert out["done"] == [tokens] * len(PERSONAS), out  # equal work, as claimed
    med = statistics.median
    return {"one": med(one), "seq": med(seq), "fan": med(fan)}


# ------------------------------------------------------------------------------------- one graph run
@dataclass(frozen=True)
class Step:
    """One super-step of a graph run."""

    index: int
    nodes: tuple[str, ...]
    wall_s: float  # first task announced -> last task result streamed
    llm_s: float  # the slowest task's own LLM time (its calls in sequence, repairs included)
    llm_calls: int


@dataclass
class Rewrite:
    """One full graph run (a new rewrite) and what its trace says."""

    prompt: str
    emotion: str
    wall_s: float
    error: str | None
    steps: list[Step]
    trace: list[TraceEntry] = field(repr=False)

    @property
    def calls(self) -> list[TraceEntry]:
        """The LLM calls (every attempt, failed ones included); notes have no model."""
        return [t for t in self.trace if t.model is not None]

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def input_tokens(self) -> int:
        return sum(t.input_tokens for t in self.calls)

    @property
    def output_tokens(self) -> int:
        return sum(t.output_tokens for t in self.calls)

    @property
    def failed_calls(self) -> int:
        """LLM attempts that failed (transport errors, unusable replies)."""
        return sum(not t.ok for t in self.calls)

    @property
    def repair_attempts(self) -> int:
        return sum(t.attempt > 1 for t in self.calls)

    @property
    def llm_depth(self) -> int:
        """Super-steps with at least one LLM call: LLM round trips in sequence."""
        return sum(s.llm_calls > 0 for s in self.steps)

    @property
    def critical_llm_s(self) -> float:
        """LLM time on the critical path: per super-step, the slowest task's."""
        return sum(s.llm_s for s in self.steps)

    @property
    def outcomes(self) -> Counter[str]:
        """``node/outcome`` of the stages' notes."""
        return Counter(f"{t.node}/{t.outcome}" for t in self.trace if t.model is None and t.outcome)

    def summary(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "emotion": self.emotion,
            "wall_s": self.wall_s,
            "error": self.error,
            "llm_calls": len(self.calls),
            "repair_attempts": self.repair_attempts,
            "failed_calls": self.failed_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "llm_depth": self.llm_depth,
            "critical_llm_s": self.critical_llm_s,
            "steps": [[s.index, list(s.nodes), s.llm_calls] for s in self.steps],
            "outcomes": dict(self.outcomes),
        }


def _writes(result: Any) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    if isinstance(result, list | tuple):  # [(channel, value), ...]
        return {k: v for k, v in result if isinstance(k, str)}
    return {}


def run_rewrite(
    graph: Any, ctx: Context, prompt: str, emotion: Emotion, personas: list[str] | None = None
) -> Rewrite:
    """Run the graph once, timing each super-step from its streamed task events."""
    payload: dict[str, Any] = {"user_prompt": prompt, "target_emotion": emotion}
    if personas:
        payload["personas"] = personas
    started: dict[int, float] = {}
    ended: dict[int, float] = {}
    tasks: dict[int, list[tuple[str, list[TraceEntry]]]] = {}
    final: dict[str, Any] = {}
    error: str | None = None
    t0 = time.perf_counter()
    try:
        for mode, data in graph.stream(payload, context=ctx, stream_mode=["debug", "values"]):
            now = time.perf_counter()
            if mode == "values":
                final = data
                continue
            step = int(data["step"])
            if data["type"] == "task":
                started.setdefault(step, now)
            elif data["type"] == "task_result":
                ended[step] = now
                trace = _writes(data["payload"].get("result")).get("trace") or []
                tasks.setdefault(step, []).append((str(data["payload"]["name"]), list(trace)))
    except Exception as exc:  # a benchmark reports a failed rewrite and goes on
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    wall = time.perf_counter() - t0
    if error is None and not final.get("final_prompt"):
        error = "no final prompt"
    steps = []
    for index in sorted(tasks):
        per_task = [(node, [t for t in trace if t.model is not None]) for node, trace in tasks[index]]
        steps.append(
            Step(
                index=index,
                nodes=tuple(node for node, _ in per_task),
                wall_s=ended.get(index, now) - started.get(index, t0),
                llm_s=max((sum(t.latency_s for t in calls) for _, calls in per_task), default=0.0),
                llm_calls=sum(len(calls) for _, calls in per_task),
            )
        )
    trace_all = [t for index in sorted(tasks) for _, trace in tasks[index] for t in trace]
    return Rewrite(prompt, emotion.value, wall, error, steps, trace_all)


# ---------------------------------------------------------------------------------------------- part 2
def bench_graph(ctx: Context, repeats: int) -> dict[str, float]:
    """Medians of the fixed rewrite's wall time, graph overhead and parallel stage / slowest branch."""
    graph = build_graph()
    overhead, stage_ratio, walls = [], [], []
    for _ in range(repeats):
        run = run_rewrite(graph, ctx, PROMPT, EMOTION, PERSONAS)
        if not run.ok:
            raise RuntimeError(f"the graph run failed: {run.error}")
        overhead.append(run.wall_s / run.critical_llm_s - 1.0)
        stage = next(s for s in run.steps if PARALLEL_STAGE in s.nodes)
        stage_ratio.append(stage.wall_s / stage.llm_s)
        walls.append(run.wall_s)
    med = statistics.median
    return {"wall": med(walls), "overhead": med(overhead), "stage_over_slowest": med(stage_ratio)}


# ------------------------------------------------------------------------------------- parts 3 and 4
def suite_pairs(path: Path, limit: int | None) -> list[tuple[str, Emotion]]:
    """The suite's (prompt, emotion) pairs in file order (a prompt's own emotions, else the suite's)."""
    data = load_yaml(path.read_text(encoding="utf-8"), where=str(path)) or {}
    default = data.get("emotions") or list(Emotion)
    pairs = [
        (" ".join(str(entry["text"]).split()), parse_emotion(name))
        for entry in data.get("prompts") or []
        for name in entry.get("emotions") or default
    ]
    return pairs[:limit] if limit else pairs


@dataclass(frozen=True)
class ChatRequest:
    """A chat request as it went over the wire."""

    url: str
    headers: dict[str, str]
    body: bytes


class RequestRecorder:
    """An httpx request hook that keeps every chat-completions request, byte for byte."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx2.Request) -> None:
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        body = request.read()
        with self._lock:
            self.requests.append(ChatRequest(str(request.url), headers, body))


_CLIENT_FIELDS = frozenset(
    {"client", "async_client", "root_client", "root_async_client", "http_client", "http_async_client"}
)


def hooked_chat_model(
    settings: Settings, hook: Callable[[httpx2.Request], None] | None
) -> tuple[ChatOpenAI, httpx2.Client]:
    """The settings' chat model (``make_chat_model``'s, field for field) on a fresh client with ``hook``.

    The hook sits on the HTTP client the openai SDK uses (``httpx2``), so it sees the bytes sent.
    """
    base = make_chat_model(settings)
    if not isinstance(base, ChatOpenAI):
        raise TypeError(f"make_chat_model returned a {type(base).__name__}, not a ChatOpenAI")
    http = openai.DefaultHttpxClient(event_hooks={"request": [hook]} if hook else {})
    fields = {name: getattr(base, name) for name in base.model_fields_set - _CLIENT_FIELDS}
    chat = ChatOpenAI(**fields, http_client=http)
    same = ("_default_params", "openai_api_base", "request_timeout", "max_retries")
    if any(getattr(chat, name) != getattr(base, name) for name in same):
        raise RuntimeError("the rebuilt chat model differs from make_chat_model's")
    return chat, http


@dataclass
class Level:
    """The rewrites run at one concurrency level."""

    concurrency: int
    wall_s: float
    rewrites: list[Rewrite]

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.rewrites)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.rewrites)

    @property
    def rewrites_per_s(self) -> float:
        return len(self.rewrites) / self.wall_s

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s


def run_level(
    graph: Any,
    pairs: list[tuple[str, Emotion]],
    settings: Settings,
    prompts: PromptLibrary,
    tokens: TokenCounter,
    concurrency: int,
    recorder: RequestRecorder | None = None,
) -> Level:
    """Run every pair through a pool of ``concurrency`` threads, on a fresh client and LLM semaphore."""
    chat, http = hooked_chat_model(settings, recorder)
    ctx = build_context(settings, chat_model=chat, prompts=prompts, tokens=tokens)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            rewrites = list(pool.map(lambda pair: run_rewrite(graph, ctx, *pair), pairs))
        wall = time.perf_counter() - t0
    finally:
        http.close()
    return Level(concurrency, wall, rewrites)


@dataclass(frozen=True)
class Ceiling:
    """One batch of recorded requests fired at the server at once."""

    requests: int
    wall_s: float
    input_tokens: int
    output_tokens: int
    failed: int
    first_error: str | None = None

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0


CEILING_TIMEOUT_S = 1800.0


def fire_all(requests: list[ChatRequest], timeout_s: float) -> Ceiling:
    """Send every request at the same moment (one thread each, released by a barrier); time the batch."""
    n = len(requests)
    barrier = threading.Barrier(n + 1)
    done: list[tuple[int, int, float, bool]] = [(0, 0, 0.0, False)] * n  # out, in, finished at, ok
    errors: list[str] = []
    limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
    with httpx2.Client(timeout=timeout_s, limits=limits) as client:

        def fire(i: int, req: ChatRequest) -> None:
            barrier.wait()
            try:
                reply = client.post(req.url, content=req.body, headers=req.headers)
                reply.raise_for_status()
                usage = reply.json().get("usage") or {}
                out, inp = int(usage.get("completion_tokens", 0)), int(usage.get("prompt_tokens", 0))
                done[i] = (out, inp, time.perf_counter(), True)
            except (httpx2.HTTPError, ValueError) as exc:
                done[i] = (0, 0, time.perf_counter(), False)
                errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")

        threads = [threading.Thread(target=fire, args=(i, r), daemon=True) for i, r in enumerate(requests)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
    return Ceiling(
        requests=n,
        wall_s=max(d[2] for d in done) - t0,
        input_tokens=sum(d[1] for d in done),
        output_tokens=sum(d[0] for d in done),
        failed=sum(not d[3] for d in done),
        first_error=errors[0] if errors else None,
    )


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 1]."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def suite_report(path: Path, n_personas: int, level: Level) -> dict[str, Any]:
    """Part 3's numbers from the sequential (level 1) runs."""
    runs = level.rewrites
    mean = statistics.fmean
    walls = [r.wall_s for r in runs]
    depths = [r.llm_depth for r in runs]
    outcomes: Counter[str] = Counter()
    for r in runs:
        outcomes.update(r.outcomes)
    return {
        "suite": str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path),
        "rewrites": len(runs),
        "personas": n_personas,
        "failed": level.failed,
        "errors": sorted({r.error for r in runs if r.error}),
        "wall_s": {"p50": percentile(walls, 0.5), "p95": percentile(walls, 0.95), "max": max(walls)},
        "per_rewrite": {
            "llm_calls": mean(len(r.calls) for r in runs),
            "repair_attempts": mean(r.repair_attempts for r in runs),
            "failed_calls": mean(r.failed_calls for r in runs),
            "input_tokens": mean(r.input_tokens for r in runs),
            "output_tokens": mean(r.output_tokens for r in runs),
            "critical_llm_s": mean(r.critical_llm_s for r in runs),
        },
        "llm_depth": {"mean": mean(depths), "min": min(depths), "max": max(depths)},
        "outcomes": dict(sorted(outcomes.items())),
        "runs": [r.summary() for r in runs],
    }


def concurrency_report(levels: list[Level], ceiling: Ceiling | None, llm_concurrency: int) -> dict[str, Any]:
    """Part 4's numbers: per level, and each level's output tokens/s over the ceiling's."""
    top = ceiling.output_tokens_per_s if ceiling is not None and ceiling.output_tokens_per_s > 0 else None
    rows = [
        {
            "concurrency": lv.concurrency,
            "wall_s": lv.wall_s,
            "rewrites": len(lv.rewrites),
            "failed": lv.failed,
            "failed_calls": sum(r.failed_calls for r in lv.rewrites),
            "output_tokens": lv.output_tokens,
            "rewrites_per_s": lv.rewrites_per_s,
            "output_tokens_per_s": lv.output_tokens_per_s,
            "x_ceiling": lv.output_tokens_per_s / top if top else None,
            "rewrite_wall_p50_s": percentile([r.wall_s for r in lv.rewrites], 0.5),
            "x_c1_rewrites_per_s": lv.rewrites_per_s / levels[0].rewrites_per_s,
        }
        for lv in levels
    ]
    target = next((r for r in rows if r["concurrency"] == TARGET_LEVEL), rows[-1])
    return {
        "llm_concurrency": llm_concurrency,
        "levels": rows,
        "ceiling": None
        if ceiling is None
        else {
            "requests": ceiling.requests,
            "wall_s": ceiling.wall_s,
            "input_tokens": ceiling.input_tokens,
            "output_tokens": ceiling.output_tokens,
            "output_tokens_per_s": ceiling.output_tokens_per_s,
            "failed": ceiling.failed,
            "first_error": ceiling.first_error,
        },
        "target": {
            "level": target["concurrency"],
            "x_ceiling": target["x_ceiling"],
            "min": TARGET_RATIO,
            "met": target["x_ceiling"] is not None and target["x_ceiling"] >= TARGET_RATIO,
        },
    }


def bench_suite(args: argparse.Namespace, url: str, parts: set[str]) -> dict[str, Any]:
    """Parts 3 and 4: level 1 (recorded), the other levels, then the ceiling."""
    from ed_agents.clip_tokens import default_counter

    path = (Path(args.suite) if args.suite else DEFAULT_SUITE).resolve()
    pairs = suite_pairs(path, args.limit)
    if not pairs:
        raise SystemExit(f"{path}: no (prompt, emotion) pairs")
    levels = sorted({1, *args.concurrency}) if "concurrency" in parts else [1]
    llm_concurrency = min(MAX_LLM_CONCURRENCY, max(48, 6 * max(levels)))
    settings = load_settings(
        llm_base_url=url, llm_model=args.model, n_personas=args.n_personas, llm_concurrency=llm_concurrency
    )
    prompts, tokens = PromptLibrary.load(settings.prompts_dir), default_counter()
    graph = build_graph()
    if args.warmup:
        run_level(graph, pairs, settings, prompts, tokens, max(8, *levels))
    recorder = RequestRecorder()
    results = [run_level(graph, pairs, settings, prompts, tokens, 1, recorder)]
    for c in levels[1:]:
        results.append(run_level(graph, pairs, settings, prompts, tokens, c))
    out: dict[str, Any] = {"suite": suite_report(path, args.n_personas, results[0])}
    if "concurrency" in parts:
        # All requests at once queue on the server: each may wait for the whole batch, far past a normal
        # request's timeout, and a timed-out request would understate the ceiling.
        wait = max(settings.llm_timeout_s, CEILING_TIMEOUT_S)
        batches = [fire_all(recorder.requests, wait) for _ in range(args.ceiling_repeats)]
        ceiling = max(batches, key=lambda b: b.output_tokens_per_s) if recorder.requests else None
        out["concurrency"] = concurrency_report(results, ceiling, llm_concurrency)
        if ceiling is not None:
            out["concurrency"]["ceiling"]["repeats"] = args.ceiling_repeats
    return out


# ---------------------------------------------------------------------------------------------- output
def print_suite(s: dict[str, Any]) -> None:
    w, p, d = s["wall_s"], s["per_rewrite"], s["llm_depth"]
    print(f"[suite {s['suite']}: {s['rewrites']} rewrites, {s['personas']} personas, sequential]")
    print(f"  rewrite wall        p50 {w['p50']:.2f} s   p95 {w['p95']:.2f} s   max {w['max']:.2f} s")
    print(
        f"  per rewrite (mean)  {p['llm_calls']:.1f} LLM calls ({p['repair_attempts']:.2f} repairs, "
        f"{p['failed_calls']:.2f} failed), "
        f"{p['input_tokens']:.0f} in / {p['output_tokens']:.0f} out tokens, "
        f"critical-path LLM {p['critical_llm_s']:.2f} s"
    )
    print(f"  sequential LLM depth  mean {d['mean']:.2f}  min {d['min']}  max {d['max']}")
    by_node: dict[str, list[str]] = {}
    for key, n in s["outcomes"].items():
        node, outcome = key.split("/", 1)
        by_node.setdefault(node, []).append(f"{outcome} {n}")
    for node, items in by_node.items():
        print(f"  outcomes  {node:<20} {', '.join(items)}")
    print(
        f"  failed {s['failed']}/{s['rewrites']}" + (f"  ({'; '.join(s['errors'])})" if s["errors"] else "")
    )


def print_concurrency(c: dict[str, Any]) -> None:
    ceil = c["ceiling"]
    print(f"[agent phase by concurrency; llm_concurrency {c['llm_concurrency']}, after a warm-up pass]")
    print("  conc   wall s  rewrites/s  x c1   out tok/s  x ceiling  p50 rewrite s  failed  call errors")
    for r in c["levels"]:
        ratio = f"{r['x_ceiling']:.2f}x" if r["x_ceiling"] is not None else "n/a"
        print(
            f"  {r['concurrency']:>4}  {r['wall_s']:>7.2f}  {r['rewrites_per_s']:>10.3f}  "
            f"{r['x_c1_rewrites_per_s']:>4.2f}  {r['output_tokens_per_s']:>10.1f}  {ratio:>9}  "
            f"{r['rewrite_wall_p50_s']:>13.2f}  {r['failed']:>3}/{r['rewrites']}  {r['failed_calls']:>11}"
        )
    if ceil is None:
        print("  ceiling: no requests recorded")
        return
    print(
        f"  ceiling  {ceil['requests']} recorded level-1 requests at once: {ceil['wall_s']:.2f} s, "
        f"{ceil['output_tokens']} out tokens, {ceil['output_tokens_per_s']:.1f} out tok/s "
        f"(best of {ceil['repeats']}, {ceil['failed']} failed)"
    )
    if ceil["failed"]:
        print(
            f"  WARNING: {ceil['failed']} ceiling requests failed (the ceiling is understated): "
            f"{ceil['first_error']}"
        )
    t = c["target"]
    got = f"{t['x_ceiling']:.2f}x" if t["x_ceiling"] is not None else "n/a"
    print(f"  c{t['level']} / ceiling  {got}   (target >= {t['min']}x: {'met' if t['met'] else 'NOT met'})")


@contextlib.contextmanager
def llm_endpoint(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(base URL, label): the fake server while in the block, under ``--fake``."""
    if not args.fake:
        yield args.url, "LLM server"
        return
    from ed_agents.testing import fake_openai_server
    from ed_agents.testing.fake_openai_server import FakeOpenAIServer

    # The fake's listen backlog is socketserver's default, 5: a burst of new connections past it (the
    # ceiling's batch, the higher levels) gets reset. A real server's is in the thousands.
    fake_openai_server._Server.request_queue_size = 1024
    with FakeOpenAIServer(delay=args.fake_delay, model=args.model or "smollm2") as server:
        yield server.base_url, f"fake server ({args.fake_delay * 1000:.0f} ms per request)"


def choose_parts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> set[str]:
    if args.parts:
        parts = {p.strip() for p in args.parts.split(",") if p.strip()}
        if parts - set(PARTS):
            parser.error(f"--parts: unknown {', '.join(sorted(parts - set(PARTS)))}; choose from {PARTS}")
        return parts
    if args.concurrency_given:
        return {"suite", "concurrency"}
    if args.suite or args.limit:
        return {"suite"}
    return {"fanout", "graph"}


def levels_arg(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.replace(" ", ",").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want levels like 1,2,4,8") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: levels must be >= 1")
    return levels


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EMODIR_LLM_BASE_URL", "http://127.0.0.1:8765/v1"))
    parser.add_argument("--model", default=None, help="model name (default: the settings')")
    parser.add_argument("--parts", help=f"comma list of {', '.join(PARTS)} (default: from the other flags)")
    parser.add_argument("--repeats", type=int, default=3, help="fanout/graph: repeats (median)")
    parser.add_argument("--tokens", type=int, default=48, help="fanout: tokens per forced reply")
    parser.add_argument("--suite", help=f"suite YAML (default: {DEFAULT_SUITE.relative_to(REPO_ROOT)})")
    parser.add_argument(
        "--limit", type=int, default=None, help="first N (prompt, emotion) pairs (default: all)"
    )
    parser.add_argument("--n-personas", type=int, default=4, help="suite/concurrency: personas per rewrite")
    parser.add_argument("--concurrency", type=levels_arg, default=None, help="levels, e.g. 1,2,4,8")
    parser.add_argument("--ceiling-repeats", type=int, default=3, help="ceiling batches; the best is kept")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the warm-up pass")
    parser.add_argument("--json", metavar="OUT", help="also write the numbers to this JSON file")
    parser.add_argument("--fake", action="store_true", help="use an in-process fake OpenAI server (no LLM)")
    parser.add_argument("--fake-delay", type=float, default=0.05, help="--fake: seconds per request")
    args = parser.parse_args()
    args.concurrency_given = args.concurrency is not None
    args.concurrency = args.concurrency or [1, 2, 4, 8]
    if (args.limit is not None and args.limit < 1) or args.repeats < 1 or args.ceiling_repeats < 1:
        parser.error("--limit, --repeats and --ceiling-repeats must be >= 1")
    parts = choose_parts(args, parser)
    data: dict[str, Any] = {}
    with llm_endpoint(args) as (url, label):
        if not is_reachable(url):
            print(f"no LLM server at {url}; start one with `emodir llm serve --detach`", file=sys.stderr)
            return 1
        settings = load_settings(llm_base_url=url, llm_model=args.model, seed=0)
        data |= {"server": label, "url": url, "model": settings.llm_model, "parts": sorted(parts)}
        print(f"[{label} at {url}, model {settings.llm_model}]")
        if parts & {"fanout", "graph"}:
            ctx = build_context(settings)
        if "fanout" in parts:
            m = bench_mechanism(
                url, settings.llm_model, ctx, args.repeats, args.tokens, equal_work=not args.fake
            )
            data["fanout"] = m
            work = "" if not args.fake else "; fake server: replies NOT forced to equal length"
            print(f"[fan-out, {len(PERSONAS)} x {args.tokens} tokens each, median of {args.repeats}{work}]")
            print(f"  one persona call        {m['one']:.2f} s")
            print(f"  {len(PERSONAS)} in sequence           {m['seq']:.2f} s")
            print(f"  {len(PERSONAS)} fanned out (Send)     {m['fan']:.2f} s")
            print(f"  fan-out / one call      {m['fan'] / m['one']:.2f}x   (target <= 1.5x)")
            print(f"  fan-out / sequential    {m['fan'] / m['seq']:.2f}x")
        if "graph" in parts:
            g = bench_graph(ctx, args.repeats)
            data["graph"] = g
            print(f"[full graph, real replies, median of {args.repeats}]")
            print(f"  wall time               {g['wall']:.2f} s")
            print(f"  graph overhead          {100 * g['overhead']:.1f}%   (target < 5%)")
            print(f"  parallel stage / its slowest branch's own LLM time   {g['stage_over_slowest']:.2f}x")
        if parts & {"suite", "concurrency"}:
            data |= bench_suite(args, url, parts)
            print_suite(data["suite"])
            if "concurrency" in data:
                print_concurrency(data["concurrency"])
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
