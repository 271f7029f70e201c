"""Fixtures for tests against the real local LLM server that `make test` starts."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ed_agents.context import Context, build_context
from ed_agents.prompts import PromptLibrary
from ed_agents.server_process import is_reachable
from ed_common.settings import load_settings

# Read before the autouse fixture clears EMODIR_* (these tests target the server `make test` started).
LLM_URL = (
    os.environ.get("EMODIR_LLM_BASE_URL")
    or f"http://127.0.0.1:{os.environ.get('EMODIR_LLM_PORT', '8765')}/v1"
)
LLM_MODEL = os.environ.get("EMODIR_LLM_MODEL", "smollm2")


@pytest.fixture
def llm_url() -> str:
    if not is_reachable(LLM_URL):
        pytest.fail(
            f"no LLM server at {LLM_URL}: run `make test` (it starts one) or `emodir llm serve --detach`"
        )
    return LLM_URL


@pytest.fixture
def real_context(llm_url: str, prompt_library: PromptLibrary) -> Any:
    def make(**overrides: Any) -> Context:
        settings = load_settings(llm_base_url=llm_url, llm_model=LLM_MODEL, **overrides)
        return build_context(settings, prompts=prompt_library)

    return make
