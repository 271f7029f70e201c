"""The fake OpenAI server speaks enough of the protocol for the real langchain-openai client."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from ed_agents.testing.fake_openai_server import BROKEN_JSON, FakeOpenAIServer, generate_from_schema


class Shot(BaseModel):
    subject: str = Field(max_length=40)
    weight: float = Field(ge=0, le=1)
    tags: list[str] = Field(min_length=1, max_length=3)


class Plan(BaseModel):
    emotion: Literal["awe", "fear", "joy"]
    mode: Literal["photo"]
    intensity: int = Field(ge=1, le=5)
    shots: list[Shot] = Field(min_length=3, max_length=4)
    note: str | None = None
    flag: bool
    final_prompt: str


def _schema_format(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema()},
    }


def _llm(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=server.base_url, api_key="EMPTY", model="smollm2", max_retries=0, **kwargs)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def test_plain_text_reply(server: FakeOpenAIServer) -> None:
    reply = _llm(server).invoke("Describe a lonely lighthouse in the storm")
    assert isinstance(reply.content, str)
    assert reply.content
    assert set(re.findall(r"\w+", reply.content)) & {"lonely", "lighthouse", "storm", "Describe"}
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == 7
    assert reply.usage_metadata["output_tokens"] == len(reply.content.split())
    assert reply.response_metadata["finish_reason"] == "stop"
    (body,) = server.requests
    assert body["messages"][-1]["content"] == "Describe a lonely lighthouse in the storm"


def test_models_endpoint_and_loopback_only(server: FakeOpenAIServer) -> None:
    models = httpx.get(f"{server.base_url}/models").json()
    assert [m["id"] for m in models["data"]] == ["smollm2"]
    assert server.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="loopback"):
        FakeOpenAIServer(host="0.0.0.0")


def test_json_schema_reply_validates(server: FakeOpenAIServer) -> None:
    llm = _llm(server).bind(response_format=_schema_format(Plan))
    reply = llm.invoke(
        [SystemMessage("You plan images."), HumanMessage("a quiet harbour at dawn with fishing boats")]
    )
    assert isinstance(reply.content, str)
    plan = Plan.model_validate_json(reply.content)
    assert len(plan.shots) == 3  # max(minItems, 2)
    assert all(1 <= len(s.tags) <= 3 for s in plan.shots)
    assert plan.note is not None  # Optional: the non-null branch is generated
    words = {"a", "quiet", "harbour", "at", "dawn", "with", "fishing", "boats"}
    assert set(plan.final_prompt.split()) <= words
    assert set(plan.shots[0].subject.split()) <= words


def test_json_schema_reply_is_deterministic_and_prompt_dependent() -> None:
    schema = Plan.model_json_schema()
    first = generate_from_schema(schema, "storm clouds over a wheat field", seed=0)
    assert first == generate_from_schema(schema, "storm clouds over a wheat field", seed=0)
    assert first != generate_from_schema(schema, "a child laughing at a birthday party", seed=0)
    assert first != generate_from_schema(schema, "storm clouds over a wheat field", seed=1)


def test_final_prompt_keeps_user_prompt(server: FakeOpenAIServer) -> None:
    llm = _llm(server).bind(response_format=_schema_format(Plan))
    text = "Make this feel like awe.\n<user_prompt>\nA red fox in deep snow\n</user_prompt>\nKeep it short."
    plan = Plan.model_validate_json(str(llm.invoke(text).content))
    assert plan.final_prompt.startswith("A red fox in deep snow, ")
    assert len(plan.final_prompt) > len("A red fox in deep snow, ")


def test_json_schema_after_marker_is_embedded_in_prose(server: FakeOpenAIServer) -> None:
    system = f"Answer in JSON.\nJSON schema:\n{json.dumps(Plan.model_json_schema())}\nNo prose please."
    for kwargs in ({}, {"model_kwargs": {"response_format": {"type": "json_object"}}}):
        reply = _llm(server, **kwargs).invoke([SystemMessage(system), HumanMessage("a foggy forest")])
        content = str(reply.content)
        match = re.search(r"```json\n(.*?)\n```", content, re.DOTALL)
        assert match is not None and content.startswith("Sure!")
        Plan.model_validate_json(match.group(1))
    no_schema = _llm(server).invoke([SystemMessage("Be brief."), HumanMessage("a foggy forest")])
    assert "```" not in str(no_schema.content)


def test_streaming(server: FakeOpenAIServer) -> None:
    chunks = list(_llm(server, stream_usage=True).stream("the sea at night"))
    text = "".join(str(c.content) for c in chunks)
    assert text.startswith("Here is a thought about")
    with httpx.stream(
        "POST",
        f"{server.base_url}/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi there"}]},
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    finals = [json.loads(e[6:]) for e in events[:-1]]
    assert finals[0]["choices"][0]["delta"]["content"]
    assert finals[-1]["choices"][0]["finish_reason"] == "stop"


def test_requests_are_served_concurrently() -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hello"}]}
    with FakeOpenAIServer(delay=0.3) as fake, httpx.Client(timeout=10) as client:
        url = f"{fake.base_url}/chat/completions"
        client.get(f"{fake.base_url}/models")  # warm up the client outside the timed part
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: client.post(url, json=body), range(4)))
    assert all(r.status_code == 200 for r in replies)
    assert fake.max_in_flight >= 2  # requests overlapped inside the server (sequential handling gives 1)
    assert len(fake.requests) == 4


def test_fail_json_first() -> None:
    with FakeOpenAIServer(fail_json_first=2) as fake:
        llm = _llm(fake).bind(response_format=_schema_format(Plan))
        contents = [str(llm.invoke("a calm lake").content) for _ in range(3)]
    assert contents[:2] == [BROKEN_JSON, BROKEN_JSON]
    Plan.model_validate_json(contents[2])


def test_runs_as_a_script() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ed_agents.testing.fake_openai_server",
            "--port",
            "0",
            "--model",
            "tiny",
            "--fail-json-first",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().split()[-1]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert httpx.get(f"{base_url}/models").json()["data"][0]["id"] == "tiny"
        body = {"messages": [{"role": "user", "content": "hi"}]}
        first = httpx.post(f"{base_url}/chat/completions", json=body).json()
        assert first["choices"][0]["message"]["content"] == BROKEN_JSON
        assert first["model"] == "tiny"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
