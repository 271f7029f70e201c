"""The run-time Context: live objects the nodes need (not checkpointed, so clients are fine here)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime

from ed_agents.anchors import TokenCounter
from ed_agents.llm import StructuredLLM, make_chat_model
from ed_agents.prompts import PromptLibrary
from ed_common.render_contract import Renderer
from ed_common.settings import Settings, load_settings

# The CLIP text encoder reads 77 tokens: BOS + 75 content tokens + EOS.
CLIP_CONTENT_TOKENS = 75


@dataclass(frozen=True)
class Context:
    """Everything a node may use besides the state."""

    llm: StructuredLLM
    prompts: PromptLibrary
    tokens: TokenCounter
    n_personas: int = 4
    seed: int = 0
    max_prompt_tokens: int = 60
    token_budget: int = CLIP_CONTENT_TOKENS
    # The image renderer; None for agent-only runs. The protocol is the torch-free render contract, so
    # naming it here imports nothing of the diffusion side.
    renderer: Renderer | None = None
    runs_dir: Path = Path("runs")


def build_context(
    settings: Settings,
    *,
    chat_model: BaseChatModel | None = None,
    prompts: PromptLibrary | None = None,
    tokens: TokenCounter | None = None,
    renderer: Renderer | None = None,
) -> Context:
    """Build the Context from Settings (tests inject a fake chat model / token counter)."""
    if tokens is None:
        from ed_agents.clip_tokens import default_counter

        tokens = default_counter()
    llm = StructuredLLM(
        chat_model if chat_model is not None else make_chat_model(settings),
        model_name=settings.llm_model,
        structured=settings.llm_structured,
        max_retries=settings.llm_max_retries,
        backoff_s=settings.llm_backoff_s,
        concurrency=settings.llm_concurrency,
        base_url=settings.effective_llm_base_url,
        seed=settings.seed,
    )
    return Context(
        llm=llm,
        prompts=prompts if prompts is not None else PromptLibrary.load(settings.prompts_dir),
        tokens=tokens,
        n_personas=settings.n_personas,
        seed=settings.seed,
        max_prompt_tokens=settings.max_prompt_tokens,
        renderer=renderer,
        runs_dir=settings.runs_dir,
    )


@functools.cache
def _default_context() -> Context:
    # Only for hosts that cannot pass a live Context (`langgraph dev`): this is their entry point,
    # so reading the settings here is reading them once at the entry point.
    return build_context(load_settings())


def context_of(runtime: Runtime[Context]) -> Context:
    """The run's Context, or the settings-built default when the host passed none."""
    ctx = runtime.context
    return ctx if isinstance(ctx, Context) else _default_context()
