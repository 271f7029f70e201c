"""The graph behind `langgraph dev` (what Studio and the SDK talk to): schemas, runs, a resumed thread.

Starts the installed CLI on a free loopback port (no browser, no reload) with an isolated data and cache
dir, and points the run's context at the in-process fake OpenAI server: no real LLM, no CLI of ours.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.settings import REPO_ROOT

pytestmark = pytest.mark.slow

GRAPH = "emotion_director"
PROMPT = "a birthday cake on a table"
START_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 120.0


def _langgraph_cli() -> str | None:
    beside = Path(sys.executable).parent / "langgraph"  # the venv's own, even when PATH lacks the venv
    return str(beside) if beside.is_file() else shutil.which("langgraph")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ok(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ok", timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"langgraph dev did not answer /ok in {START_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server_llm() -> Iterator[FakeOpenAIServer]:
    """The LLM the server's own settings name (EMODIR_LLM_BASE_URL): what a run without context uses."""
    with FakeOpenAIServer() as llm:
        yield llm


@pytest.fixture
def server(tmp_path: Path, server_llm: FakeOpenAIServer) -> Iterator[tuple[str, Path]]:
    """``(url, log file)`` of a `langgraph dev` serving this repo's langgraph.json."""
    cli = _langgraph_cli()
    if cli is None:
        pytest.skip("the `langgraph` CLI is not installed (pip install 'langgraph-cli[inmem]')")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMODIR_")} | {
        "EMODIR_AUTOSTART": "false",
        "EMODIR_LLM_BASE_URL": server_llm.base_url,
        "EMODIR_DATA_DIR": str(tmp_path / "data"),
        "EMODIR_CACHE_DIR": str(tmp_path / "cache"),
        "EMODIR_RUNS_DIR": str(tmp_path / "runs"),
        "OMP_NUM_THREADS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    log = tmp_path / "langgraph-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [cli, "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server's workers go with it
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ok(url, proc, log)
        yield url, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)


def _client(url: str) -> Any:
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=url, timeout=RUN_TIMEOUT_S)


def test_schemas_runs_and_a_resumed_thread(
    server: tuple[str, Path], fake_server: FakeOpenAIServer, server_llm: FakeOpenAIServer
) -> None:
    url, log = server
    client = _client(url)
    (assistant,) = [a for a in client.assistants.search(graph_id=GRAPH) if a["graph_id"] == GRAPH][:1]

    # What Studio draws its forms from.
    schemas = httpx.get(f"{url}/assistants/{assistant['assistant_id']}/schemas", trust_env=False, timeout=30)
    assert schemas.status_code == 200, schemas.text
    body = schemas.json()
    for key in ("input_schema", "output_schema", "state_schema", "context_schema"):
        assert body[key] and body[key].get("properties"), key
    assert {"user_prompt", "target_emotion", "render"} <= set(body["input_schema"]["properties"])
    assert "n_personas" in body["context_schema"]["properties"]
    assert "prompts_dir" not in body["context_schema"]["properties"]

    context = {"llm_base_url": fake_server.base_url}
    thread = client.threads.create()
    first = client.runs.wait(
        thread["thread_id"], GRAPH, input={"user_prompt": PROMPT, "target_emotion": "fear"}, context=context
    )
    assert PROMPT in first["final_prompt"], first
    # The run's context reached the nodes: its LLM calls went to the client's server, not the default.
    assert fake_server.requests and not server_llm.requests

    second = client.runs.wait(
        thread["thread_id"],
        GRAPH,
        input={"user_prompt": PROMPT, "target_emotion": "fear", "feedback": ["darker, more shadows"]},
        context=context,
    )
    assert PROMPT in second["final_prompt"], second
    state = client.threads.get_state(thread["thread_id"])["values"]
    history = state["history"]
    assert [h["kind"] for h in history] == ["new", "feedback"]
    assert history[1]["feedback"] == "darker, more shadows"
    assert history[0]["final_prompt"] == first["final_prompt"]
    assert history[1]["final_prompt"] == second["final_prompt"] == state["final_prompt"]

    # No context at all: the server's own settings.
    plain = client.runs.wait(
        client.threads.create()["thread_id"], GRAPH, input={"user_prompt": PROMPT, "target_emotion": "fear"}
    )
    assert PROMPT in plain["final_prompt"] and server_llm.requests

    # A bad context value: a failed run whose error names the field.
    bad = client.threads.create()
    with pytest.raises(Exception, match=r"n_personas") as info:
        client.runs.wait(
            bad["thread_id"],
            GRAPH,
            input={"user_prompt": PROMPT, "target_emotion": "fear"},
            context={"n_personas": 0},
        )
    assert "allowed: 1 to 16" in str(info.value)
    (run,) = client.runs.list(bad["thread_id"])
    assert run["status"] == "error"

    text = log.read_text(errors="replace")
    assert "Context.__init__() missing" not in text
