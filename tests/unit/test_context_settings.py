"""The context a LangGraph server's client may send (ContextSettings) and how runs turn it into a Context."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.runtime import Runtime
from pydantic import TypeAdapter

from ed_agents import context as context_mod
from ed_agents.context import Context, ContextSettings, context_of, settings_of
from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.errors import InvalidInputError
from ed_common.render_contract import RenderOptions
from ed_common.settings import REPO_ROOT, Settings
from graphs.emotion_director import build_graph
from graphs.session import STATE_TYPES
from graphs.state import GraphState
from graphs.tool_node import RendererMissingError
from tests.fakes.fake_chat import SchemaFakeChatModel
from tests.fakes.fake_renderer import FakeRenderer


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    # Settings-built contexts are cached per process; each test has its own environment (tmp dirs).
    context_mod._settings_for.cache_clear()
    context_mod._context_for.cache_clear()
    yield
    context_mod._settings_for.cache_clear()
    context_mod._context_for.cache_clear()


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"n_personas": 0}, ["n_personas=0", "greater than or equal to 1", "allowed: 1 to 16"]),
        ({"n_personas": "many"}, ["n_personas='many'", "valid integer"]),
        ({"temperature": 3}, ["temperature=3", "allowed: 0 to 2"]),
        ({"seed": -1}, ["seed=-1"]),
        ({"max_tokens": 1}, ["max_tokens=1", "allowed: 16 to 8192"]),
        ({"max_prompt_tokens": 80}, ["max_prompt_tokens=80", "allowed: 1 to 75"]),
        ({"llm_base_url": "ftp://x"}, ["llm_base_url='ftp://x'", "http(s) URL"]),
        ({"llm_base_url": "http://"}, ["llm_base_url='http://'"]),
        ({"preset": "huge"}, ["preset='huge'", "'tiny'", "'world'"]),
        ({"preset": "sdxl"}, ["preset='sdxl'"]),  # full-size presets are the server's own choice
        ({"llm_base_url": "http://10.0.0.7:8000/v1"}, ["llm_base_url=", "on this machine", "'10.0.0.7'"]),
    ],
)
def test_a_bad_value_is_one_error_naming_the_field(value: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(InvalidInputError) as info:
        ContextSettings(**value)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("context setting ")
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "key", ["prompts_dir", "runs_dir", "llm_server_python", "data_dir", "cache_dir", "bank", "adapter"]
)
def test_paths_and_programs_are_not_context_settings(key: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"{key}=.*not a context setting; allowed: llm_base_url"):
        ContextSettings(**{key: "/etc/passwd"})


def test_no_context_field_is_a_path_or_a_program() -> None:
    for name in ContextSettings.model_fields:
        annotation = Settings.model_fields[name].annotation  # every field is a Settings field
        assert Path not in (annotation, *typing.get_args(annotation)), name
    assert "llm_api_key" not in ContextSettings.model_fields


def test_good_values_are_kept_and_unset_ones_left_to_the_server() -> None:
    ctx = ContextSettings(llm_base_url="http://127.0.0.1:9/v1", personas="child, zen_gardener", seed=3)
    assert ctx.personas == ("child", "zen_gardener")
    assert ctx.updates() == {
        "llm_base_url": "http://127.0.0.1:9/v1",
        "personas": ("child", "zen_gardener"),
        "seed": 3,
    }
    assert ContextSettings().updates() == {}
    assert ContextSettings.parse(None) == ContextSettings()
    assert ContextSettings.parse({"seed": 3}) == ContextSettings(seed=3)
    with pytest.raises(InvalidInputError, match="context must be an object"):
        ContextSettings.parse([1, 2])  # type: ignore[arg-type]


def test_model_validate_checks_the_same_rules() -> None:
    # langgraph calls ContextSettings(**dict); model_validate (no __init__) must still apply Settings' rules.
    with pytest.raises(ValueError, match="n_personas=0"):
        ContextSettings.model_validate({"n_personas": 0})


def test_context_schema_shows_the_bounds_and_descriptions() -> None:
    schema = ContextSettings.model_json_schema()
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert set(props) == {
        "llm_base_url",
        "llm_model",
        "n_personas",
        "personas",
        "seed",
        "temperature",
        "max_tokens",
        "max_prompt_tokens",
        "preset",
    }
    assert (props["n_personas"]["minimum"], props["n_personas"]["maximum"]) == (1, 16)
    assert all("server's setting" in p["description"] for p in props.values())


# ---------------------------------------------------------------- context_of
def test_a_live_context_is_used_unchanged(make_context: Any) -> None:
    live = make_context()
    assert context_of(Runtime(context=live)) is live
    assert settings_of(Runtime(context=live)) is None


@pytest.mark.parametrize("given", [None, {}, ContextSettings()])
def test_no_context_builds_one_from_the_server_settings(given: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMODIR_N_PERSONAS", "2")
    monkeypatch.setenv("EMODIR_SEED", "5")
    ctx = context_of(Runtime(context=given))
    assert isinstance(ctx, Context)
    assert (ctx.n_personas, ctx.seed, ctx.renderer) == (2, 5, None)
    assert ctx.llm.base_url == "http://127.0.0.1:8765/v1"
    assert context_of(Runtime(context=None)) is ctx  # one Context per distinct settings
    settings = settings_of(Runtime(context=given))
    assert settings is not None and settings.n_personas == 2


def test_a_dict_context_overrides_the_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMODIR_SEED", "5")
    ctx = context_of(
        Runtime(context={"llm_base_url": "http://127.0.0.1:9/v1", "n_personas": 3, "personas": ["child"]})
    )
    assert ctx.llm.base_url == "http://127.0.0.1:9/v1"
    assert (ctx.n_personas, ctx.seed, ctx.personas) == (3, 5, ("child",))
    assert context_of(Runtime(context=ContextSettings(llm_base_url="http://127.0.0.1:9/v1"))) is not ctx


def test_a_bad_dict_context_fails_naming_the_field() -> None:
    with pytest.raises(InvalidInputError, match="context setting n_personas=0"):
        context_of(Runtime(context={"n_personas": 0}))


def test_a_server_value_made_bad_by_the_client_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMODIR_LLM_TIMEOUT_S", "-1")  # the server's own setting is bad
    with pytest.raises(InvalidInputError, match="llm_timeout_s"):
        context_of(Runtime(context={"seed": 1}))


def test_the_cache_is_bounded() -> None:
    for seed in range(context_mod._CACHE_SIZE + 4):
        context_of(Runtime(context={"seed": seed, "llm_base_url": "http://127.0.0.1:9/v1"}))
    assert context_mod._context_for.cache_info().currsize == context_mod._CACHE_SIZE


# ---------------------------------------------------------------- the graph over settings-built contexts
def test_graph_runs_from_a_dict_context(fake_server: FakeOpenAIServer) -> None:
    out = build_graph().invoke(
        {"user_prompt": "a birthday cake on a table", "target_emotion": "fear"},
        context={"llm_base_url": fake_server.base_url, "personas": ["child", "zen_gardener"]},
    )
    assert "a birthday cake on a table" in out["final_prompt"]
    assert out["persona_ids"] == ["child", "zen_gardener"]  # the context's personas, none in the input
    assert fake_server.requests


def test_a_bad_dict_context_fails_the_graph_before_any_node() -> None:
    with pytest.raises(InvalidInputError, match="context setting n_personas=0"):
        build_graph().invoke({"user_prompt": "a cake", "target_emotion": "fear"}, context={"n_personas": 0})


def test_a_settings_built_run_builds_its_renderer_from_the_settings(
    fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from graphs import tool_node

    built: list[Settings] = []
    renderer = FakeRenderer()

    def fake_build(settings: Settings, on_progress: Any = None) -> FakeRenderer:
        built.append(settings)
        return renderer

    monkeypatch.setattr("graphs.renderer.build_renderer", fake_build)
    monkeypatch.setenv("EMODIR_RUNS_DIR", str(tmp_path / "runs"))
    tool_node._settings_renderer.cache_clear()
    graph = build_graph()
    payload = {"user_prompt": "a birthday cake on a table", "target_emotion": "fear", "render": {}}
    try:
        out = graph.invoke(payload, context={"llm_base_url": fake_server.base_url, "preset": "world"})
        again = graph.invoke(payload, context={"llm_base_url": fake_server.base_url, "preset": "world"})
    finally:
        tool_node._settings_renderer.cache_clear()
    assert [s.preset for s in built] == ["world"]  # built once, from the run's preset
    assert len(renderer.requests) == 2 and out["images"] and again["images"]
    assert Path(out["run_dir"]).parent == tmp_path / "runs"  # under the server's runs_dir


def test_a_settings_built_run_may_not_choose_the_output_dir(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"render.out_dir=.* is not allowed in a server run"):
        build_graph().invoke(
            {"user_prompt": "a cake", "target_emotion": "fear", "render": {"out_dir": str(tmp_path / "x")}},
            context={"llm_base_url": "http://127.0.0.1:9/v1"},
        )
    assert not (tmp_path / "x").exists()


def test_bad_render_options_from_a_client_are_named() -> None:
    with pytest.raises(InvalidInputError, match=r"render.n_images"):
        build_graph().invoke(
            {"user_prompt": "a cake", "target_emotion": "fear", "render": {"n_images": 0}},
            context={"llm_base_url": "http://127.0.0.1:9/v1"},
        )


def test_a_live_context_without_renderer_still_refuses_to_render(make_context: Any) -> None:
    with pytest.raises(RendererMissingError):
        build_graph().invoke(
            {"user_prompt": "a cake", "target_emotion": "fear", "agents": False, "render": RenderOptions()},
            context=make_context(SchemaFakeChatModel()),
        )


# ---------------------------------------------------------------- schemas and the serializer's list
def test_graph_schemas_can_be_drawn() -> None:
    # What `GET /assistants/{id}/schemas` answers: pydantic must describe every schema (a typing.TypedDict
    # it refuses on Python < 3.12; the state's TypedDicts are typing_extensions').
    graph = build_graph()
    for schema in (
        graph.get_input_jsonschema(),
        graph.get_output_jsonschema(),
        graph.get_context_jsonschema(),
        TypeAdapter(GraphState).json_schema(),
    ):
        assert schema["properties"]
        json.dumps(schema)
    inputs = set(graph.get_input_jsonschema()["properties"])
    assert {"user_prompt", "target_emotion", "render", "feedback"} <= inputs


def test_langgraph_json_allows_exactly_the_state_types() -> None:
    config = json.loads((REPO_ROOT / "langgraph.json").read_text())
    allowed = config["checkpointer"]["serde"]["allowed_msgpack_modules"]
    assert [tuple(entry) for entry in allowed] == list(STATE_TYPES)


def test_a_client_chosen_llm_url_never_gets_the_servers_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from ed_agents.context import _settings_for

    monkeypatch.setenv("EMODIR_LLM_API_KEY", "server-secret")
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", "http://127.0.0.1:8765/v1")
    _settings_for.cache_clear()
    own = _settings_for('{"seed": 1}')
    assert own.llm_api_key == "server-secret"  # the server's own LLM keeps its key
    chosen = _settings_for('{"llm_base_url": "http://127.0.0.1:9/v1"}')
    assert chosen.llm_base_url == "http://127.0.0.1:9/v1" and chosen.llm_api_key == "EMPTY"
    _settings_for.cache_clear()
