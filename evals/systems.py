"""The systems an eval compares, and how one sample of each is run.

* ``full_graph``: the whole Emotion-Director graph (personas, chain of concept, consensus, render stage).
* ``single_llm``: one structured LLM call (``prompts/tasks/single_rewrite.md``), no personas or chain of
  concept; then the same deterministic token-budget fit as the graph (without anchors: it has none).
* ``plain``: the user's prompt as written.
* ``emogen_baseline``: EmoGen's text baseline, ``"an image of {emotion}"`` (the content is ignored).

Every system renders through the graph's own render-stage nodes (``graphs.tool_node``): same retrieval,
same ``RenderRequest``, same per-sample ``manifest.json``. With ``visual_prompts: false`` the visual-prompt
scale is 0, which the renderer guarantees to be the stock text-only pipeline.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime

from ed_agents.anchors import TokenCounter, fit_budget
from ed_agents.context import Context, build_context
from ed_agents.errors import InvalidInputError
from ed_agents.llm import LLMCallError
from ed_agents.prompts import PromptLibrary
from ed_agents.state import PersonaReaction, RevisedPrompt, TraceEntry
from ed_agents.validation import check_request, select_personas
from ed_common.render_contract import RenderOptions
from ed_common.settings import Settings
from evals.records import PersonaText, SampleRecord, SampleSpec
from evals.suite import Suite, SystemEntry
from graphs.state import GraphState
from graphs.tool_node import render_image, retrieve_visual_prompt

ContextFactory = Callable[[int], Context]
"""seed -> the Context a sample with that seed runs in (persona sampling and LLM sampling use the seed)."""

LLM_KINDS = frozenset({"full_graph", "single_llm"})
SINGLE_REWRITE_ID = "single_rewrite"
MAX_ERROR_CHARS = 500


class SampleFailedError(Exception):
    """A sample that failed; carries the LLM trace gathered before the failure (for the record)."""

    def __init__(self, message: str, trace: list[TraceEntry]) -> None:
        super().__init__(message)
        self.trace = trace


def make_context_factory(
    settings: Settings,
    *,
    prompts: PromptLibrary,
    tokens: TokenCounter,
    chat_model: BaseChatModel | None = None,
) -> ContextFactory:
    """Contexts per seed sharing one chat model and one LLM concurrency limit (tests pass a fake model)."""
    base = build_context(settings, chat_model=chat_model, prompts=prompts, tokens=tokens)
    cache: dict[int, Context] = {}
    lock = threading.Lock()

    def for_seed(seed: int) -> Context:
        with lock:
            if seed not in cache:
                # A shallow copy shares the chat model and the semaphore that bounds requests in flight.
                llm = copy.copy(base.llm)
                llm.seed = seed
                cache[seed] = dataclasses.replace(base, llm=llm, seed=seed)
            return cache[seed]

    return for_seed


def needs_llm(suite: Suite) -> bool:
    """Whether any system of the suite calls the LLM."""
    return any(s.kind in LLM_KINDS for s in suite.systems)


def validate_suite(suite: Suite, prompts: PromptLibrary, tokens: TokenCounter, settings: Settings) -> None:
    """The cheap checks before any model loads: prompts within budget, personas known, task files present.

    Raises:
        InvalidInputError: naming the suite entry and what is allowed.
    """
    for entry in suite.prompts:
        try:
            check_request(entry.text, suite.emotions_for(entry)[0], tokens, settings.max_prompt_tokens)
        except InvalidInputError as exc:
            raise InvalidInputError(f"suite prompt {entry.text!r}: {exc}") from None
    for system in suite.systems:
        if system.kind == "full_graph":
            try:
                select_personas(prompts.ids("persona"), system.personas, settings.n_personas, 0)
            except InvalidInputError as exc:
                raise InvalidInputError(f"suite system {system.name!r}: {exc}") from None
        if system.kind == "single_llm" and SINGLE_REWRITE_ID not in prompts.ids("task"):
            raise InvalidInputError(
                f"suite system {system.name!r} needs the prompt file tasks/{SINGLE_REWRITE_ID}.md in "
                f"{prompts.root}"
            )


def render_options(suite: Suite, system: SystemEntry, spec: SampleSpec, sample_dir: Path) -> RenderOptions:
    """The sample's render settings; image seeds ``seed*n .. seed*n+n-1`` never overlap between seeds."""
    n = suite.images_per_prompt
    r = suite.render
    return RenderOptions(
        n_images=n,
        seed=spec.seed * n,
        steps=r.steps,
        guidance=r.guidance,
        width=r.width,
        height=r.height,
        vp_scale=system.vp_scale if system.visual_prompts else 0.0,
        top_k=r.top_k,
        negative_vp=system.negative_vp if system.visual_prompts else "none",
        out_dir=str(sample_dir),
    )


def _render(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    # The graph's own render-stage nodes, called directly: identical retrieval, request and manifest.
    runtime = Runtime(context=ctx)
    state = state | retrieve_visual_prompt(cast(GraphState, state), runtime)
    return state | render_image(cast(GraphState, state), runtime)


def _single_llm(ctx: Context, spec: SampleSpec) -> tuple[str, str, list[TraceEntry]]:
    try:
        result = ctx.llm.call(
            ctx.prompts.get(f"tasks/{SINGLE_REWRITE_ID}"),
            RevisedPrompt,
            node="single_rewrite",
            run_index=0,
            repair=ctx.prompts.get("tasks/repair_output"),
            variables={
                "emotion": spec.emotion.value,
                "token_budget": ctx.token_budget,
                "user_prompt": spec.prompt,
            },
        )
    except LLMCallError as exc:
        raise SampleFailedError(str(exc), exc.trace) from None
    draft = " ".join(result.value.final_prompt.split())
    if not draft:
        raise SampleFailedError("single_rewrite: the LLM returned an empty prompt", result.trace)
    final, _ = fit_budget(draft, [], ctx.tokens, ctx.token_budget)
    negative, _ = fit_budget(" ".join(result.value.negative_prompt.split()), [], ctx.tokens, ctx.token_budget)
    return final, negative, result.trace


def run_system(
    system: SystemEntry, spec: SampleSpec, ctx: Context, graph: Any, options: RenderOptions | None
) -> dict[str, Any]:
    """Run one sample of ``system``; returns a final state (graph output keys)."""
    if system.kind == "full_graph":
        payload = {
            "user_prompt": spec.prompt,
            "target_emotion": spec.emotion,
            "personas": system.personas,
            "render": options,
        }
        return dict(graph.invoke(payload, context=ctx))
    trace: list[TraceEntry] = []
    if system.kind == "single_llm":
        final, negative, trace = _single_llm(ctx, spec)
    elif system.kind == "plain":
        template = system.template or "{prompt}"
        final, negative = template.format(prompt=spec.prompt, emotion=spec.emotion.value), ""
    else:
        final, negative = f"an image of {spec.emotion.value}", ""
    state: dict[str, Any] = {
        "user_prompt": spec.prompt,
        "target_emotion": spec.emotion,
        "final_prompt": final,
        "negative_prompt": negative,
        "agents": False,
        "run_index": 0,
        "trace": trace,
        "render": options,
    }
    return _render(ctx, state) if options is not None else state


def reaction_text(r: PersonaReaction) -> str:
    """A persona reaction as one text: trigger, what it sees, the image it would paint."""
    return " ".join([r.feeling_trigger, "; ".join(r.what_i_see), r.strongest_image])


def run_sample(
    spec: SampleSpec, suite: Suite, ctx: Context, graph: Any, out: Path, *, rank: int = 0
) -> SampleRecord:
    """Run one sample into ``out/images/<id>``; a failure becomes an error record, never an exception."""
    system = suite.system(spec.system)
    sample_dir = out / "images" / spec.id
    base: dict[str, Any] = {
        **dataclasses.asdict(spec),
        "id": spec.id,
        "kind": system.kind,
        "visual_prompts": system.visual_prompts,
        "rank": rank,
    }
    start = time.perf_counter()
    try:
        if sample_dir.exists():  # left by an interrupted attempt at this very sample: never recorded
            shutil.rmtree(sample_dir)
        options = render_options(suite, system, spec, sample_dir) if suite.images_per_prompt else None
        state = run_system(system, spec, ctx, graph, options)
        # Inside the try: reading the render manifest or validating the record can fail too.
        return _ok_record(base, state, out, start)
    except Exception as exc:  # one failed sample is data, not the end of the run
        trace = exc.trace if isinstance(exc, SampleFailedError | LLMCallError) else []
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:MAX_ERROR_CHARS]
        return SampleRecord(
            **base,
            status="error",
            error=message,
            trace=[t.model_dump(mode="json") for t in trace],
            wall_s=time.perf_counter() - start,
            finished=_now(),
        )


def _ok_record(base: dict[str, Any], state: dict[str, Any], out: Path, start: float) -> SampleRecord:
    return SampleRecord(
        **base,
        status="ok",
        final_prompt=state.get("final_prompt"),
        negative_prompt=state.get("negative_prompt") or "",
        anchors=list(state.get("anchors") or []),
        persona_reactions=[
            PersonaText(persona_id=r.persona_id, text=reaction_text(r))
            for r in state.get("persona_reactions") or []
        ],
        images=[os.path.relpath(p, out) for p in state.get("images") or []],
        visual_prompt=vp.as_dict() if (vp := state.get("visual_prompt")) else None,
        warnings=list(state.get("warnings") or []),
        trace=[t.model_dump(mode="json") for t in state.get("trace") or []],
        prompt_phrases=[p.model_dump(mode="json") for p in state.get("prompt_phrases") or []],
        timings=_render_timings(state.get("manifest")),
        wall_s=time.perf_counter() - start,
        finished=_now(),
    )


def _render_timings(manifest: str | None) -> dict[str, float]:
    if not manifest:
        return {}
    timings = json.loads(Path(manifest).read_text(encoding="utf-8")).get("timings", {})
    return {k: float(v) for k, v in timings.items() if isinstance(v, int | float)}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
