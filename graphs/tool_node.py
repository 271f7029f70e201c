"""The render stage: state -> RenderRequest -> Renderer -> PNGs + manifest.json in a new run directory.

This is the graph's GPU tool node. It speaks only the torch-free render contract
(``ed_common.render_contract``); the renderer itself (``ed_diffusion.pipeline.MCDiffusion``) is built by
``graphs/renderer.py`` and handed in through the Context, so agent-only runs never import torch.

A run whose context came from settings (a LangGraph server's client, see ``ed_agents.context``) has no
renderer handed in: the first render builds one from those settings (its preset) and keeps it for the
process. A live Context without a renderer (the CLI's agent-only commands) still fails with
RendererMissingError.
"""

from __future__ import annotations

import functools
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from ed_agents.context import Context, context_of, settings_of
from ed_agents.errors import EmodirError, InvalidInputError
from ed_common.atomic import write_json_atomic
from ed_common.errors import OutputExistsError
from ed_common.git_state import git_dirty, git_sha, package_version
from ed_common.render_contract import Renderer, RenderOptions, RenderRequest, RenderResult
from ed_common.settings import REPO_ROOT, Settings
from graphs.state import GraphState

MANIFEST_VERSION = 1


class RendererMissingError(EmodirError):
    """A render was asked for but the context has no renderer."""


def new_run_dir(root: Path, emotion: str, prompt: str) -> Path:
    """A fresh run directory name under ``root``: UTC timestamp, emotion, prompt slug."""
    slug = "-".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:40] or "prompt"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    return root / f"{stamp}-{emotion}-{slug}"


def claim_run_dir(path: Path) -> Path:
    """Create ``path``; an existing path is an error (a run never writes into an old one).

    Raises:
        OutputExistsError: ``path`` exists.
    """
    try:
        path.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise OutputExistsError(f"output path {path} already exists; choose a new --out") from None
    return path


# The render-relevant part of Settings: contexts that differ only in LLM knobs share one renderer.
_RENDER_KEYS = ("preset", "diffusion_model", "bank", "adapter", "device", "dtype", "cache_dir")


_RENDERER_LOCK = threading.Lock()  # concurrent server runs load one pipeline, not one each


@functools.lru_cache(maxsize=2)  # each holds a diffusion pipeline: keep few
def _settings_renderer(settings: Settings) -> Renderer:
    from graphs.renderer import build_renderer  # imports torch: only when a settings-built run renders

    return build_renderer(settings)


def _renderer(runtime: Runtime[Any]) -> Renderer:
    ctx = context_of(runtime)
    if ctx.renderer is not None:
        return ctx.renderer
    settings = settings_of(runtime)
    if settings is None:  # a live Context without one: the CLI's agent-only commands
        raise RendererMissingError(
            "this run asks for images but no renderer is configured (emodir generate has one)"
        )
    base = Settings.model_validate(settings.model_dump(include=set(_RENDER_KEYS)))
    with _RENDERER_LOCK:
        return _settings_renderer(base)


def retrieve_visual_prompt(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Retrieve the emotion's visual prompt for the final prompt (bank top-k by CLIP text cosine)."""
    options = state.get("render") or RenderOptions()
    choice = _renderer(runtime).retrieve(
        state["final_prompt"], state["target_emotion"], top_k=options.top_k, negative_vp=options.negative_vp
    )
    return {"visual_prompt": choice}


def render_image(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Render into a new run directory and write its manifest."""
    ctx = context_of(runtime)
    options = state.get("render") or RenderOptions()
    check_out_dir(options, runtime)
    renderer = _renderer(runtime)
    emotion = state["target_emotion"]
    run_dir = (
        Path(options.out_dir)
        if options.out_dir
        else new_run_dir(ctx.runs_dir, emotion.value, state["user_prompt"])
    )
    request = RenderRequest.from_options(
        options,
        prompt=state["final_prompt"],
        negative_prompt=state.get("negative_prompt", ""),
        emotion=emotion,
        out_dir=run_dir,
        visual_prompt=state.get("visual_prompt"),
        # An agent's prompt may be put in the form the preset's model reads; a prompt given as written is not.
        prompt_form="model" if state.get("agents", True) else "as_written",
    )
    claim_run_dir(run_dir)
    try:
        result = renderer.render(request)
    except BaseException as exc:  # Ctrl-C or a failure mid-run: the images so far still get a manifest
        write_json_atomic(run_dir / "manifest.json", partial_manifest(state, options, run_dir, exc))
        raise
    manifest = write_json_atomic(run_dir / "manifest.json", build_manifest(state, options, result))
    return {
        "run_dir": str(run_dir),
        "images": [str(p) for p in result.images],
        "contact_sheet": str(result.contact_sheet) if result.contact_sheet else None,
        "manifest": str(manifest),
        "model_prompt": _model_prompt(result, request.prompt),
    }


def _model_prompt(result: RenderResult, prompt: str) -> str | None:
    """The prompt the model read when the renderer changed it (the world preset's captions), else None."""
    read = result.settings.get("model_prompt")
    return str(read) if read is not None and read != prompt else None


def check_out_dir(options: RenderOptions, runtime: Runtime[Any]) -> None:
    """A server's client may not choose where the server writes: ``render.out_dir`` is the CLI's.

    Raises:
        InvalidInputError: a settings-built run (a LangGraph server's) names ``render.out_dir``.
    """
    if options.out_dir and settings_of(runtime) is not None:
        raise InvalidInputError(
            f"render.out_dir={options.out_dir!r} is not allowed in a server run; allowed: unset (a new "
            "run directory under the server's runs_dir)"
        )


def _run_record(state: GraphState, options: RenderOptions) -> dict[str, Any]:
    """What every render manifest holds, finished or not: the code, the inputs, the prompts, the options."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "emodir_version": package_version(),
        "git_sha": _git_sha(),
        "git_dirty": git_dirty(REPO_ROOT),
        "inputs": {
            "user_prompt": state["user_prompt"],
            "emotion": state["target_emotion"].value,
            "personas": state.get("persona_ids", []),
            "feedback": state.get("feedback", [])[state.get("feedback_start", 0) :],
            "agents": state.get("agents", True),
        },
        "final_prompt": state.get("final_prompt"),
        "negative_prompt": state.get("negative_prompt", ""),
        "render_options": options.model_dump(),
    }


def build_manifest(state: GraphState, options: RenderOptions, result: RenderResult) -> dict[str, Any]:
    """What reproduces a run: inputs, prompts, seeds, models and hashes, prompt files, timings."""
    run = state.get("run_index", 0)
    trace = [t for t in state.get("trace", []) if t.run_index == run]
    prompt_files = sorted({(t.prompt_id, t.prompt_version, t.prompt_sha256) for t in trace if t.prompt_id})
    llm_models = sorted({t.model for t in trace if t.model})
    return {
        **_run_record(state, options),
        "anchors": state.get("anchors", []),
        "seeds": list(result.seeds),
        "render_settings": result.settings,
        "visual_prompt": result.visual_prompt.as_dict(),
        "model": result.model,
        "llm_models": llm_models,
        "prompt_files": [{"id": i, "version": v, "sha256": h} for i, v, h in prompt_files],
        "images": [Path(p).name for p in result.images],
        "contact_sheet": Path(result.contact_sheet).name if result.contact_sheet else None,
        "timings": {
            **result.timings,
            "llm_s": round(sum(t.latency_s for t in trace), 4),
        },
        "warnings": [w for w in state.get("warnings", [])],
        "status": "finished",
    }


def partial_manifest(
    state: GraphState, options: RenderOptions, run_dir: Path, exc: BaseException
) -> dict[str, Any]:
    """The manifest of a run that stopped before its last image: its inputs, the images it left, and why."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    return {
        **_run_record(state, options),
        "status": "interrupted" if interrupted else "failed",
        "error": None if interrupted else f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
        "images": sorted(p.name for p in run_dir.glob("image_*.png")),
    }


def _git_sha() -> str | None:
    return git_sha(REPO_ROOT)
