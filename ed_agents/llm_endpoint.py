"""Which LLM server the agents talk to: settings -> the local server's config, reachability, autostart."""

from __future__ import annotations

from ed_agents import server_process
from ed_agents.errors import LLMUnavailableError
from ed_agents.server_process import ProgressCallback, ServerConfig
from ed_common.settings import Settings


def server_config(settings: Settings, *, model: str | None = None, port: int | None = None) -> ServerConfig:
    """The local server's config from Settings (explicit ``model``/``port`` win)."""
    return ServerConfig(
        python=settings.server_python,
        state_dir=settings.server_state_dir,
        cache_dir=settings.cache_dir,
        model=model if model is not None else settings.llm_serve_model,
        served_model_name=settings.llm_model,
        port=port if port is not None else settings.llm_port,
        start_timeout_s=settings.llm_start_timeout_s,
    )


def ensure_llm(settings: Settings, *, autostart: bool, on_progress: ProgressCallback | None = None) -> str:
    """Return the base URL of a reachable LLM server, starting the embedded one if allowed.

    The embedded server is started only when no URL was configured: a configured server that is down is
    the user's to fix, and starting a different model in its place would be a surprise.

    Raises:
        LLMUnavailableError: no server answers and none may be started (one line, with the URL and a fix).
    """
    url = settings.effective_llm_base_url
    served = server_process.served_models(url)
    if served is None and settings.uses_embedded_server and autostart:
        if on_progress is not None:
            on_progress(f"no LLM server at {url}; starting the embedded one (first start takes ~1 minute)")
        url = server_process.serve(server_config(settings), detach=True, on_progress=on_progress).base_url
        served = server_process.served_models(url)
    if served is not None:
        if settings.llm_model not in served:
            raise LLMUnavailableError(
                f"the LLM server at {url} does not serve model {settings.llm_model!r}; it serves: "
                f"{', '.join(served) or 'nothing'} (set EMODIR_LLM_MODEL)"
            )
        return url
    hint = (
        "start one with `emodir llm serve --detach`"
        if settings.uses_embedded_server
        else ("check EMODIR_LLM_BASE_URL or start that server")
    )
    raise LLMUnavailableError(f"cannot reach the LLM server at {url}; {hint}")
