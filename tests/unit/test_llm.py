from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from ed_agents.errors import LLMUnavailableError
from ed_agents.llm import LLMCallError, StructuredLLM, copies_example, extract_json_object, parse_structured
from ed_agents.prompts import PromptLibrary
from ed_agents.state import ContentAnchors, PersonaReply
from tests.fakes.fake_chat import SchemaFakeChatModel

GOOD = '{"subjects": ["dog"], "scene": null, "attributes": ["angry"]}'


def _llm(chat: SchemaFakeChatModel, sleeps: list[float] | None = None, **kw: object) -> StructuredLLM:
    return StructuredLLM(
        chat,
        model_name="smollm2",
        base_url="http://127.0.0.1:1/v1",
        sleep=(sleeps.append if sleeps is not None else (lambda s: None)),
        **kw,  # type: ignore[arg-type]
    )


def _call(llm: StructuredLLM, lib: PromptLibrary):  # type: ignore[no-untyped-def]
    return llm.call(
        lib.get("tasks/understand"),
        ContentAnchors,
        node="understand_request",
        run_index=0,
        repair=lib.get("tasks/repair_output"),
        variables={"emotion": "fear", "user_prompt": "an angry dog"},
    )


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        f"Sure! ```json\n{GOOD}\n``` hope it helps",
        f"noise {{ not json }} then {GOOD} trailing",
    ],
)
def test_extract_json_tolerates_prose_and_fences(text: str) -> None:
    assert parse_structured(text, ContentAnchors).subjects == ["dog"]


def test_extract_json_without_object_fails() -> None:
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json_object("[1, 2] and words")


def test_structured_call_records_trace_with_prompt_hash(prompt_library: PromptLibrary) -> None:
    chat = SchemaFakeChatModel(script={"ContentAnchors": GOOD})
    result = _call(_llm(chat), prompt_library)
    assert result.value.attributes == ["angry"]
    (entry,) = result.trace
    f = prompt_library.get("tasks/understand")
    assert (entry.prompt_id, entry.prompt_version, entry.prompt_sha256) == ("understand", 2, f.sha256)
    assert (entry.model, entry.input_tokens, entry.output_tokens, entry.ok) == ("smollm2", 10, 5, True)
    call = chat.calls[0]
    assert call["kwargs"]["response_format"]["type"] == "json_schema"
    assert call["kwargs"]["temperature"] == 0.0  # the prompt file's override
    # The server enforces the schema, so the prompt shows none (a small model copies its descriptions);
    # the worked example goes first as a user/assistant turn.
    system, ex_user, ex_reply, user = call["messages"]
    assert "JSON schema" not in system.content and "description" not in system.content
    assert (ex_user.content, ex_reply.content) == (f.example.user, f.example.reply)
    assert "<user_prompt>" in user.content
    sent = call["kwargs"]["response_format"]["json_schema"]["schema"]
    assert sent["required"] == ["subjects", "scene", "attributes"] and sent["additionalProperties"] is False


def test_schema_text_is_sent_only_to_servers_that_do_not_enforce_it(prompt_library: PromptLibrary) -> None:
    chat = SchemaFakeChatModel(script={"text": GOOD})
    llm = StructuredLLM(chat, model_name="smollm2", structured="json_object", sleep=lambda s: None)
    _call(llm, prompt_library)
    assert "JSON schema:" in chat.calls[0]["messages"][0].content


def test_reply_copying_the_worked_example_is_asked_again_without_it(prompt_library: PromptLibrary) -> None:
    example = prompt_library.get("tasks/understand").example
    assert example is not None
    chat = SchemaFakeChatModel(script={"ContentAnchors": [example.reply, GOOD]})
    result = _call(_llm(chat), prompt_library)
    assert result.value.attributes == ["angry"] and result.repaired
    assert "copies the worked example" in str(result.trace[0].error)
    retry = chat.calls[1]["messages"]
    assert len(retry) == 2 and example.user not in str(retry[1].content)  # no example the second time
    assert [t.prompt_id for t in result.trace] == ["understand", "understand"]  # the same task, asked again


def test_structured_call_repairs_once(prompt_library: PromptLibrary) -> None:
    chat = SchemaFakeChatModel(script={"ContentAnchors": ["I think the dog is angry.", GOOD]})
    result = _call(_llm(chat), prompt_library)
    assert result.value.subjects == ["dog"]
    assert [t.ok for t in result.trace] == [False, True]
    assert result.trace[1].prompt_id == "repair_output"
    repair_turn = chat.calls[1]["messages"]
    assert repair_turn[-2].content == "I think the dog is angry."  # the bad reply stays in the conversation
    assert "could not be used" in repair_turn[-1].content


def test_structured_call_gives_up_after_repair(prompt_library: PromptLibrary) -> None:
    chat = SchemaFakeChatModel(script={"ContentAnchors": '{"subjects": 5}'})
    with pytest.raises(LLMCallError, match="unusable output after repair") as info:
        _call(_llm(chat), prompt_library)
    assert len(info.value.trace) == 2 and not any(t.ok for t in info.value.trace)


def test_transport_errors_retry_with_backoff(prompt_library: PromptLibrary) -> None:
    req = httpx.Request("POST", "http://x")
    chat = SchemaFakeChatModel(
        script={
            "ContentAnchors": [
                openai.InternalServerError("boom", response=httpx.Response(500, request=req), body=None),
                GOOD,
            ]
        }
    )
    sleeps: list[float] = []
    result = _call(_llm(chat, sleeps, max_retries=2, backoff_s=0.5), prompt_library)
    assert result.value.subjects == ["dog"]
    assert sleeps == [0.5]
    chat = SchemaFakeChatModel(script={"ContentAnchors": openai.APITimeoutError(request=req)})
    sleeps = []
    with pytest.raises(LLMCallError) as info:
        _call(_llm(chat, sleeps, max_retries=2, backoff_s=0.5), prompt_library)
    assert info.value.timed_out
    assert sleeps == [0.5, 1.0]  # bounded, doubling
    assert len(info.value.trace) == 3


def test_refused_connection_is_llm_unavailable(prompt_library: PromptLibrary) -> None:
    req = httpx.Request("POST", "http://x")
    exc = openai.APIConnectionError(request=req)
    exc.__cause__ = httpx.ConnectError("Connection refused")
    chat = SchemaFakeChatModel(script={"ContentAnchors": exc})
    with pytest.raises(LLMUnavailableError, match=r"http://127.0.0.1:1/v1.*emodir llm serve"):
        _call(_llm(chat, max_retries=1), prompt_library)


def test_concurrency_limit_bounds_requests_in_flight(prompt_library: PromptLibrary) -> None:
    barrier = threading.Barrier(2)  # each call waits for a second one: a limit of 1 would time out here

    def reply(messages: list[object]) -> str:
        barrier.wait(timeout=30)
        return '{"feeling_trigger": "x", "what_i_see": ["fog"], "strongest_image": "a lamp in fog"}'

    chat = SchemaFakeChatModel(script={"PersonaReply": reply})
    llm = _llm(chat, concurrency=2)
    threads = [
        threading.Thread(
            target=lambda: llm.call(
                prompt_library.get("tasks/persona_reaction"),
                PersonaReply,
                node="p",
                run_index=0,
                system_prefix=prompt_library.get("personas/child"),
                variables={"emotion": "awe", "persona_name": "x", "user_prompt": "a cat", "anchors": ["cat"]},
            )
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(chat.calls) == 6
    assert chat.max_in_flight == 2  # never above the limit (semaphore), and the limit was used (barrier)


def test_persona_system_prefix_and_temperature_override(prompt_library: PromptLibrary) -> None:
    chat = SchemaFakeChatModel()
    _llm(chat).call(
        prompt_library.get("tasks/persona_reaction"),
        PersonaReply,
        node="p",
        run_index=0,
        system_prefix=prompt_library.get("personas/child"),
        variables={"emotion": "awe", "persona_name": "Mia", "user_prompt": "a cat", "anchors": ["cat"]},
    )
    system = chat.calls[0]["messages"][0].content
    assert system.startswith("You are Mia")
    assert chat.calls[0]["kwargs"]["temperature"] == 0.9  # the persona's own override wins


def test_reply_copying_a_field_description_is_not_an_answer(prompt_library: PromptLibrary) -> None:
    echo = json.dumps(
        {"feeling_trigger": "x", "what_i_see": [], "strongest_image": "The single image you would paint"}
    )
    with pytest.raises(ValueError, match="copies the schema's description of 'strongest_image'"):
        parse_structured(echo, PersonaReply)
    reworded = json.dumps(
        {
            "feeling_trigger": "a",
            "what_i_see": [],
            "strongest_image": "The single image you would paint, in a sentence",
        }
    )
    with pytest.raises(ValueError, match="copies"):
        parse_structured(reworded, PersonaReply)
    ok = '{"feeling_trigger": "the dark", "what_i_see": ["fog"], "strongest_image": "a single lamp in fog"}'
    assert parse_structured(ok, PersonaReply).strongest_image == "a single lamp in fog"


def test_each_persona_gets_its_own_reproducible_seed(prompt_library: PromptLibrary) -> None:
    chat = SchemaFakeChatModel()
    llm = _llm(chat, seed=7)
    results = []
    for pid in ("child", "zen_gardener", "child"):
        results.append(
            llm.call(
                prompt_library.get("tasks/persona_reaction"),
                PersonaReply,
                node="p",
                run_index=0,
                system_prefix=prompt_library.get(f"personas/{pid}"),
                variables={"emotion": "awe", "persona_name": pid, "user_prompt": "a cat", "anchors": ["cat"]},
            )
        )
    assert [r.trace[0].persona_id for r in results] == ["child", "zen_gardener", "child"]
    seeds = [c["kwargs"]["seed"] for c in chat.calls]
    assert seeds[0] == seeds[2] != seeds[1]


def test_http_errors_are_not_retried_and_are_one_line(prompt_library: PromptLibrary) -> None:
    req = httpx.Request("POST", "http://x")
    missing = openai.NotFoundError(
        "model smollm3 does not exist", response=httpx.Response(404, request=req), body=None
    )
    sleeps: list[float] = []
    with pytest.raises(LLMUnavailableError, match=r"refused the request for model 'smollm2' \(HTTP 404"):
        _call(_llm(SchemaFakeChatModel(script={"ContentAnchors": missing}), sleeps), prompt_library)
    too_long = openai.BadRequestError("max_model_len", response=httpx.Response(400, request=req), body=None)
    with pytest.raises(LLMCallError, match="HTTP 400") as info:
        _call(_llm(SchemaFakeChatModel(script={"ContentAnchors": too_long}), sleeps), prompt_library)
    assert sleeps == [] and info.value.trace[-1].error.startswith("HTTP 400")


def test_an_answer_sharing_one_short_phrase_with_the_example_is_still_an_answer() -> None:
    example = json.dumps(
        {
            "final_prompt": "a lighthouse on a rocky coast, slate grey sky",
            "negative_prompt": "bright sunshine",
        }
    )
    own = {
        "final_prompt": "a dog on a porch, blood red sky, bared teeth, storm clouds",
        "negative_prompt": "bright sunshine",
    }
    assert not copies_example(own, example)
    assert copies_example(json.loads(example), example)
    assert not copies_example(
        {"subjects": ["red"], "attributes": ["two"]}, '{"subjects": ["red"], "attributes": ["two"]}'
    )


def test_a_reply_cut_off_at_max_tokens_is_asked_again_with_a_repeat_penalty(
    prompt_library: PromptLibrary,
) -> None:
    from openai.types.chat import ChatCompletion

    cut = ChatCompletion.model_validate(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "smollm2",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {"role": "assistant", "content": "a dark, a dark"},
                }
            ],
        }
    )
    chat = SchemaFakeChatModel(
        script={"ContentAnchors": [openai.LengthFinishReasonError(completion=cut), GOOD]}
    )
    result = _call(_llm(chat), prompt_library)
    assert result.value.attributes == ["angry"] and result.repaired
    first, second = chat.calls
    assert "frequency_penalty" not in first["kwargs"] and second["kwargs"]["frequency_penalty"] == 0.5
    assert second["messages"] == first["messages"]  # asked again, not a repair turn after an empty reply
