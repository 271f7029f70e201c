"""Settings: read once at an entry point (CLI, eval, langgraph), then passed down.

Precedence, highest first: explicit arguments (CLI flags) > ``EMODIR_*`` environment variables > the TOML
file > the defaults below. Nodes never read the environment; they get what they need from the Context.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_cache_dir, user_config_dir, user_data_dir
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ed_common import bundled
from ed_common.errors import InvalidInputError
from ed_common.limits import MAX_SEED
from ed_common.text import short_repr
from ed_common.user_files import read_user_text

REPO_ROOT = bundled.PACKAGES_ROOT  # the checkout (or site-packages, for a wheel)
DEFAULT_CONFIG_FILE = Path(user_config_dir("emodir")) / "config.toml"


class Settings(BaseSettings):
    """Every knob of Emotion-Director (agent, LLM server, renderer, files), with its default."""

    model_config = SettingsConfigDict(env_prefix="EMODIR_", extra="forbid", frozen=True)

    # --- LLM client (OpenAI-compatible API, e.g. vLLM) ---
    llm_base_url: str | None = Field(
        None, description="OpenAI-compatible base URL; unset = the embedded local server on llm_port."
    )
    llm_model: str = Field("smollm2", description="Model name sent to the server.")
    llm_api_key: str = Field("EMPTY", description="API key (vLLM ignores it unless started with --api-key).")
    llm_timeout_s: float = Field(
        120.0, gt=0, description="Total deadline per request in seconds (headers and body together)."
    )
    llm_max_retries: int = Field(2, ge=0, le=10, description="Retries on transport errors, with backoff.")
    llm_backoff_s: float = Field(0.5, ge=0, description="First backoff delay; doubles on each retry.")
    llm_concurrency: int = Field(8, ge=1, le=256, description="Maximum LLM requests in flight at once.")
    llm_structured: Literal["json_schema", "json_object", "text"] = Field(
        "json_schema", description="How structured outputs are requested from the server."
    )
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(384, ge=16, le=8192, description="Upper bound on tokens per LLM reply.")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed for persona sampling and for the LLM's sampler."
    )

    # --- the local server (`emodir llm serve`) ---
    llm_port: int = Field(8765, ge=1, le=65535)
    llm_serve_model: str | None = Field(
        None, description="Hub id or path to serve; unset = embedded SmolLM2."
    )
    llm_server_python: Path | None = Field(
        None,
        description="Python of the LLM server's environment; unset = `.venv-vllm` in a source checkout, "
        "else <data_dir>/venv-vllm (`emodir llm setup` builds it).",
    )
    llm_start_timeout_s: float = Field(600.0, gt=0)
    autostart: bool = Field(True, description="Start the embedded server when none is configured/running.")

    # --- MC-Agent ---
    n_personas: int = Field(4, ge=1, le=16)
    personas: tuple[str, ...] | None = Field(None, description="Explicit persona ids; unset = sampled.")
    max_prompt_tokens: int = Field(60, ge=1, le=75, description="CLIP tokens allowed in the user's prompt.")
    prompts_dir: Path = Field(default_factory=bundled.prompts_dir, description="Persona and task prompts.")

    # --- MC-Diffusion (`emodir generate`) ---
    preset: Literal["tiny", "world", "sd15", "sdxl"] = Field("tiny", description="Diffusion preset.")
    diffusion_model: str | None = Field(
        None, description="Hub id or local dir overriding the preset's model."
    )
    bank: str | None = Field(None, description="Visual-prompt bank (.safetensors) overriding the preset's.")
    adapter: str | None = Field(None, description="Emotion adapter weights (.safetensors).")
    device: str | None = Field(None, description="cuda / cpu; unset = cuda when available.")
    dtype: str | None = Field(
        None, description="float32 / bfloat16 / float16; unset = fp32 on CPU, bf16 on CUDA."
    )
    runs_dir: Path = Field(Path("runs"), description="Where new run directories are created.")

    # --- files ---
    data_dir: Path = Path(user_data_dir("emodir"))
    cache_dir: Path = Path(user_cache_dir("emodir"))

    @field_validator("llm_base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        # Checked here, not at the first request: a bad URL is a settings error, named as one.
        if value is None:
            return None
        import httpx

        try:
            url = httpx.URL(value)
            _ = url.port  # parses the port (99999 fails here)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise ValueError(f"not a URL ({' '.join(str(exc).split())[:100]})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("allowed: an http(s) URL with a host, e.g. http://127.0.0.1:8765/v1")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
            raise ValueError("allowed: cpu, cuda, cuda:N or mps")
        return value

    @field_validator("personas", mode="before")
    @classmethod
    def _split_personas(cls, value: Any) -> Any:
        # Accept "a,b,c" from env vars and CLI flags as well as a list from TOML.
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip()) or None
        return value

    @property
    def effective_llm_base_url(self) -> str:
        """The configured URL, or the embedded server's loopback URL."""
        return self.llm_base_url or f"http://127.0.0.1:{self.llm_port}/v1"

    @property
    def uses_embedded_server(self) -> bool:
        """True when no URL was configured, so the embedded server may be started on demand."""
        return self.llm_base_url is None

    @property
    def server_env(self) -> Path:
        """The LLM server's virtual environment (``llm_server_python``'s, or the default one)."""
        if self.llm_server_python is not None:
            return self.llm_server_python.parent.parent
        return bundled.default_server_env(self.data_dir)

    @property
    def server_python(self) -> Path:
        """The interpreter the local LLM server runs in."""
        if self.llm_server_python is not None:
            return self.llm_server_python
        return self.server_env / "bin" / "python"

    @property
    def sessions_db(self) -> Path:
        """SQLite file holding chat sessions (LangGraph checkpoints)."""
        return self.data_dir / "sessions.sqlite"

    @property
    def server_state_dir(self) -> Path:
        """Where `emodir llm serve` keeps its pid/state file and log."""
        return self.data_dir / "server"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (CLI flags) > env > TOML file > defaults; no dotenv, no secrets dir.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the Settings once, at an entry point.

    Args:
        config_file: TOML file; defaults to ``$EMODIR_CONFIG`` or the user config dir's ``config.toml``.
        **overrides: explicit values (CLI flags); ``None`` means "not given" and is skipped.

    Raises:
        InvalidInputError: the config file was named but does not exist, or a value is invalid.
    """
    named = config_file or (Path(os.environ["EMODIR_CONFIG"]) if os.environ.get("EMODIR_CONFIG") else None)
    path = named or (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None)
    from_file = _file_keys(path) if path is not None else set()

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return _FileSettings(**given)
    except ValueError as exc:  # pydantic.ValidationError: keep it to one readable line per error
        raise InvalidInputError(_one_line(exc, path, from_file, set(given))) from None


def _file_keys(path: Path) -> set[str]:
    """The keys ``path`` sets (read here too, so that a bad file is named with its line).

    Raises:
        InvalidInputError: the file is unreadable or not TOML.
    """
    try:
        return set(tomllib.loads(read_user_text(path, "config file")))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"config file {path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib (3.11) parses nested arrays recursively, without a limit
        raise InvalidInputError(f"config file {path}: TOML nested too deeply") from None


def _one_line(exc: ValueError, path: Path | None, from_file: set[str], given: set[str]) -> str:
    """Every problem on one line, each named by where its value came from (flag, environment or file)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        key = str(err.get("loc", ("",))[0]) if err.get("loc") else ""
        if key in given:
            source = ""
        elif os.environ.get(f"EMODIR_{key.upper()}") is not None:
            source = f"environment EMODIR_{key.upper()}: "
        elif key in from_file and path is not None:
            source = f"config file {path}: "
        else:
            source = ""
        msg = re.sub(r"^(Value|Assertion) error, ", "", str(err.get("msg")))
        parts.append(f"{source}setting {loc or '?'}={short_repr(err.get('input'))}: {msg}")
    return "; ".join(parts)
