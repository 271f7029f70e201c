"""Shared fixtures: fake chat models, the prompt library, contexts, a fake OpenAI server."""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before anything imports a numeric library (environment.md §1)

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ed_agents.clip_tokens import default_counter
from ed_agents.context import Context, build_context
from ed_agents.prompts import PromptLibrary
from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.settings import REPO_ROOT, Settings, load_settings
from tests.fakes.fake_chat import SchemaFakeChatModel

PROMPTS_DIR = REPO_ROOT / "prompts"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing a developer has in their environment or config may leak into a test.
    for key in list(os.environ):
        if key.startswith("EMODIR_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EMODIR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EMODIR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("ed_common.settings.DEFAULT_CONFIG_FILE", tmp_path / "no-config.toml")
    monkeypatch.setenv("COLUMNS", "200")  # a wide non-TTY console for rich output


@pytest.fixture(scope="session")
def prompt_library() -> PromptLibrary:
    return PromptLibrary.load(PROMPTS_DIR)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", llm_backoff_s=0.0)


@pytest.fixture
def fake_chat() -> SchemaFakeChatModel:
    return SchemaFakeChatModel()


@pytest.fixture
def make_context(settings: Settings, prompt_library: PromptLibrary) -> Any:
    def make(chat: SchemaFakeChatModel | None = None, renderer: Any = None, **overrides: Any) -> Context:
        s = settings.model_copy(update=overrides) if overrides else settings
        return build_context(
            s,
            chat_model=chat or SchemaFakeChatModel(),
            prompts=prompt_library,
            tokens=default_counter(),
            renderer=renderer,
        )

    return make


def cli_env(**values: str) -> dict[str, str]:
    """The environment for an `emodir` subprocess: ours without EMODIR_*, one thread, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMODIR_")}
    return env | {"OMP_NUM_THREADS": "1", "COLUMNS": "200"} | values


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server
