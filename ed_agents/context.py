"""The run-time Context: live objects the nodes need (not checkpointed, so clients are fine here).

Two kinds of caller give a run its context:

* the CLI and tests pass a live :class:`Context` (an LLM client, the prompt library, a renderer, ...);
* a LangGraph server (``langgraph dev``, Studio, the SDK) can only send JSON. The graph's
  ``context_schema`` is therefore :class:`ContextSettings`: the few settings a client may choose per run,
  each optional ("use the server's"). :func:`context_of` turns it into a live Context from the server's
  Settings (cached per distinct ContextSettings), so an HTTP run needs no CLI.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ed_agents.anchors import TokenCounter
from ed_agents.llm import StructuredLLM, make_chat_model
from ed_agents.prompts import PromptLibrary
from ed_common.errors import InvalidInputError
from ed_common.render_contract import Renderer
from ed_common.settings import Settings, load_settings
from ed_common.text import short_repr

# The CLIP text encoder reads 77 tokens: BOS + 75 content tokens + EOS.
CLIP_CONTENT_TOKENS = 75


@dataclass(frozen=True)
class Context:
    """Everything a node may use besides the state."""

    llm: StructuredLLM
    prompts: PromptLibrary
    tokens: TokenCounter
    n_personas: int = 4
    # Persona ids for runs whose input names none (a server's context); None = sampled with the seed.
    personas: tuple[str, ...] | None = None
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


# ---------------------------------------------------------------- the context a server's client may send
_BOUND_KEYS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _bounds(name: str) -> dict[str, Any]:
    """Settings' numeric bounds of ``name`` as JSON-schema keywords (``{"minimum": 1, "maximum": 16}``)."""
    info = Settings.model_fields.get(name)
    out: dict[str, Any] = {}
    for meta in info.metadata if info is not None else ():
        for attr, keyword in _BOUND_KEYS.items():
            if getattr(meta, attr, None) is not None:
                out[keyword] = getattr(meta, attr)
    return out


# For the settings whose Field has no description of its own.
_DESCRIPTIONS = {
    "n_personas": "How many personas react when the input names none (sampled with the seed).",
    "temperature": "The LLM's sampling temperature.",
}


def _described(name: str) -> Any:
    """``Field(None, ...)`` with Settings' description and bounds of ``name`` (one source for Studio's form).

    The bounds are shown in the schema only; they are enforced by Settings itself (_check_with_settings).
    """
    info = Settings.model_fields[name]
    text = _DESCRIPTIONS.get(name) or info.description or name.replace("_", " ").capitalize() + "."
    return Field(None, description=f"{text} Unset = the server's setting.", json_schema_extra=_bounds(name))


class ContextSettings(BaseModel):
    """What a LangGraph client may choose per run (``context`` of a run); every field unset = the server's.

    Only knobs of the LLM, the agent and the render preset: never a path or a program (prompt files, run,
    data and cache directories, the LLM server's interpreter, model or bank files), so a client cannot make
    the server read, write or run files of its choosing. Each value is checked by ``Settings``' own
    validators; a bad one is one :class:`InvalidInputError` naming the field and what is allowed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    llm_base_url: str | None = _described("llm_base_url")
    llm_model: str | None = _described("llm_model")
    n_personas: int | None = _described("n_personas")
    personas: tuple[str, ...] | None = _described("personas")
    seed: int | None = _described("seed")
    temperature: float | None = _described("temperature")
    max_tokens: int | None = _described("max_tokens")
    max_prompt_tokens: int | None = _described("max_prompt_tokens")
    # Only the two small presets: each preset a client names stays loaded in the server process, and a
    # full-size one is the server's to choose (its own `preset` setting).
    preset: Literal["tiny", "world"] | None = _described("preset")

    def __init__(self, **data: Any) -> None:
        # langgraph builds the context schema from the run's dict with ``ContextSettings(**context)``:
        # turn pydantic's multi-line report into the one-line error every other bad input gets.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidInputError(_context_error(exc)) from None

    @field_validator("personas", mode="before")
    @classmethod
    def _split_personas(cls, value: Any) -> Any:
        if isinstance(value, str):  # "a,b" as Settings takes it from a flag or the environment
            return tuple(p.strip() for p in value.split(",") if p.strip()) or None
        return value

    @field_validator("llm_base_url")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        # A client may point the run at an LLM server on the server's own machine, never elsewhere: the
        # server must not become a way to reach other hosts (the request carries the server's API key
        # only when the URL is the server's own, see _settings_for).
        if value is None:
            return None
        import httpx

        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError, TypeError):
            return value  # Settings' own validator names the problem
        host = url.host
        if url.scheme not in ("http", "https") or not host:
            return value  # likewise
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"allowed: an http(s) URL on this machine (127.0.0.1, localhost or ::1), not {host!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_with_settings(self) -> ContextSettings:
        # Settings' own constraints and validators, on the given values only (model_validate reads no
        # environment or file: those are the server's, applied when the Context is built).
        try:
            Settings.model_validate(self.updates())
        except ValidationError as exc:
            raise ValueError(_context_error(exc)) from None
        return self

    def updates(self) -> dict[str, Any]:
        """The values the client chose (unset ones left out)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    @classmethod
    def parse(cls, data: dict[str, Any] | ContextSettings | None) -> ContextSettings:
        """``data`` as ContextSettings.

        Raises:
            InvalidInputError: an unknown key or a bad value, named with what is allowed.
        """
        if isinstance(data, ContextSettings):
            return data
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidInputError(f"context must be an object of settings, not {type(data).__name__}")
        return cls(**data)


def _context_error(exc: ValidationError) -> str:
    """Every problem on one line: ``context setting NAME=VALUE: what is allowed``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if not loc:  # a model-level error: already formatted by _check_with_settings
            parts.append(msg)
            continue
        if err.get("type") == "extra_forbidden":
            msg = f"not a context setting; allowed: {', '.join(ContextSettings.model_fields)}"
        elif bounds := _bounds(loc):
            low, high = bounds.get("minimum", bounds.get("exclusiveMinimum")), bounds.get("maximum")
            msg += f" (allowed: {low} to {high})" if low is not None and high is not None else ""
        parts.append(f"context setting {loc}={short_repr(err.get('input'))}: {msg}")
    return "; ".join(parts)


# Bounded: one entry per distinct client context (each holds an LLM client and the prompt library).
_CACHE_SIZE = 16
# The persona fan-out runs nodes in threads: one build per key, so a run's nodes share one Context (and
# its LLM concurrency limit).
_BUILD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _settings_for(key: str) -> Settings:
    # The server's settings (environment, TOML file) with the client's choices on top, validated again as
    # a whole by load_settings (read here, at the server's entry point for this context). The server's API
    # key goes only to the server's own LLM URL: a client-chosen URL gets none.
    updates = json.loads(key)
    settings = load_settings(**updates)
    if "llm_base_url" in updates and updates["llm_base_url"] != load_settings().llm_base_url:
        settings = load_settings(**updates, llm_api_key="EMPTY")
    return settings


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _context_for(key: str) -> Context:
    settings = _settings_for(key)
    return dataclass_replace(build_context(settings), personas=settings.personas)


def _client_key(runtime: Runtime[Any]) -> str | None:
    """The cache key of a settings-built run's context; None when the host passed a live Context."""
    ctx = runtime.context
    if isinstance(ctx, Context):
        return None
    return json.dumps(ContextSettings.parse(ctx).updates(), sort_keys=True)


def settings_of(runtime: Runtime[Any]) -> Settings | None:
    """The Settings a settings-built context came from; None for a live Context (the CLI, tests).

    Raises:
        InvalidInputError: the run's context is not valid ContextSettings.
    """
    key = _client_key(runtime)
    if key is None:
        return None
    with _BUILD_LOCK:
        return _settings_for(key)


def context_of(runtime: Runtime[Any]) -> Context:
    """The run's live Context: the one the host passed, or one built from ContextSettings / dict / None.

    Raises:
        InvalidInputError: the run's context is not valid ContextSettings.
    """
    key = _client_key(runtime)
    if key is None:
        return runtime.context  # type: ignore[no-any-return]
    with _BUILD_LOCK:
        return _context_for(key)
