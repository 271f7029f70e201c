from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from langgraph.runtime import Runtime

from ed_agents.clip_tokens import default_counter
from ed_agents.context import build_context
from ed_agents.errors import AllPersonasFailedError, InvalidInputError
from ed_agents.leaks import leak_checker
from ed_agents.lexicon import VISUAL
from ed_agents.nodes.concepts import expand_concepts
from ed_agents.nodes.consensus import (
    MIN_CHANNELS,
    MIN_DETAILS,
    chain_labels,
    channels_of,
    choices_schema,
    slot_choices,
    write_consensus,
)
from ed_agents.nodes.finalize import finalize_prompt, repair_prompt, verify_anchors
from ed_agents.nodes.personas import react_as_persona, route_to_personas
from ed_agents.nodes.revise import revise_prompt
from ed_agents.nodes.understand import accept_request, extract_anchors, understand_request
from ed_agents.provenance import candidates, content
from ed_agents.routing import route_after_verify, route_start
from ed_agents.state import VISUAL_CHANNELS, ConceptChain, PersonaReaction, VisualConcepts
from ed_common.emotions import Emotion
from tests.fakes.fake_chat import SchemaFakeChatModel


def _rt(ctx: Any) -> Runtime[Any]:
    return Runtime(context=ctx)


def _reaction(pid: str, run: int = 0) -> PersonaReaction:
    return PersonaReaction(
        persona_id=pid,
        run_index=run,
        feeling_trigger="the empty bowl",
        what_i_see=["grey rain", "empty bowl"],
        strongest_image="a dog by an empty bowl",
    )


def test_accept_request_normalises_the_emotion_once_for_every_node_after_it(make_context: Any) -> None:
    ctx = make_context(SchemaFakeChatModel())
    out = accept_request({"user_prompt": "an angry dog", "target_emotion": " Fear "}, _rt(ctx))
    assert out == {"target_emotion": Emotion.FEAR}
    assert out["target_emotion"] is Emotion.FEAR


def test_understand_takes_content_words_and_samples_personas(make_context: Any) -> None:
    ctx = make_context(SchemaFakeChatModel(), n_personas=3, seed=5)
    out = understand_request(
        {"user_prompt": "an angry dog in a snowy forest", "target_emotion": Emotion.FEAR}, _rt(ctx)
    )
    assert out["target_emotion"] is Emotion.FEAR
    assert out["anchors"] == ["angry", "dog", "snowy", "forest"]
    assert len(out["persona_ids"]) == 3 and out["run_index"] == 0
    assert ctx.llm.chat_model.calls == []  # deterministic: the fan-out starts at once
    again = understand_request(
        {"user_prompt": "an angry dog in a snowy forest", "target_emotion": Emotion.FEAR}, _rt(ctx)
    )
    assert again["persona_ids"] == out["persona_ids"]  # same seed, same personas


def test_extract_anchors_keeps_llm_phrases_that_occur_in_the_prompt(make_context: Any) -> None:
    chat = SchemaFakeChatModel(
        script={
            "ContentAnchors": json.dumps(
                {"subjects": ["dog", "unicorn"], "scene": "snowy forest", "attributes": []}
            )
        }
    )
    out = extract_anchors(
        {"user_prompt": "an angry dog in a snowy forest", "target_emotion": Emotion.FEAR, "run_index": 0},
        _rt(make_context(chat)),
    )
    assert out["anchors"] == ["dog", "snowy forest", "angry"]  # "unicorn" is not in the prompt
    assert out["trace"][-1].outcome == "used"


def test_extract_anchors_falls_back_to_content_words(make_context: Any) -> None:
    ctx = make_context(SchemaFakeChatModel(script={"ContentAnchors": "no idea"}))
    out = extract_anchors(
        {"user_prompt": "a red fox", "target_emotion": Emotion.AWE, "run_index": 0}, _rt(ctx)
    )
    assert "anchors" not in out  # the content words understand_request set stand
    assert out["warnings"] and "anchor extraction failed" in out["warnings"][0]
    assert out["trace"][-1].outcome == "fallback"


@pytest.mark.parametrize(
    ("prompt", "emotion", "match"),
    [
        ("", "fear", "the prompt is empty"),
        ("   ", "fear", "the prompt is empty"),
        (" ".join(["word"] * 70), "fear", "70 CLIP tokens; the limit is 60"),
        ("a dog", "joy", "unknown emotion 'joy'"),
    ],
)
def test_accept_request_rejects_bad_input(make_context: Any, prompt: str, emotion: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        accept_request({"user_prompt": prompt, "target_emotion": emotion}, _rt(make_context()))


def test_understand_rejects_unknown_persona(make_context: Any) -> None:
    with pytest.raises(InvalidInputError, match="unknown persona 'pirate'; available: child"):
        understand_request(
            {"user_prompt": "a dog", "target_emotion": Emotion.FEAR, "personas": ["pirate"]},
            _rt(make_context()),
        )


def test_route_to_personas_sends_one_task_each() -> None:
    sends = route_to_personas(
        {
            "user_prompt": "a dog",
            "target_emotion": Emotion.AWE,
            "anchors": ["dog"],
            "persona_ids": ["child", "zen_gardener"],
            "run_index": 2,
        }
    )
    assert [s.node for s in sends] == ["react_as_persona"] * 2
    assert [s.arg["persona_id"] for s in sends] == ["child", "zen_gardener"]
    assert sends[0].arg["run_index"] == 2


def test_persona_failure_is_dropped_with_warning_and_trace(make_context: Any) -> None:
    req = httpx.Request("POST", "http://x")
    ctx = make_context(SchemaFakeChatModel(script={"PersonaReply": openai.APITimeoutError(request=req)}))
    out = react_as_persona(
        {
            "persona_id": "child",
            "user_prompt": "a dog",
            "target_emotion": Emotion.FEAR,
            "anchors": ["dog"],
            "run_index": 0,
        },
        _rt(ctx),
    )
    assert "persona_reactions" not in out
    assert out["warnings"] == ["persona child dropped: timed out"]
    assert out["trace"][-1].note == "persona child dropped: timed out"
    assert any(t.error and t.error.startswith("timeout") for t in out["trace"])


def test_persona_with_unusable_output_after_repair_is_dropped(make_context: Any) -> None:
    chat = SchemaFakeChatModel(script={"PersonaReply": ["I feel scared.", "Still not JSON."]})
    out = react_as_persona(
        {
            "persona_id": "horror_director",
            "user_prompt": "a dog",
            "target_emotion": Emotion.FEAR,
            "anchors": ["dog"],
            "run_index": 0,
        },
        _rt(make_context(chat)),
    )
    assert "persona_reactions" not in out
    assert "unusable output after repair" in out["warnings"][0]
    assert [t.ok for t in out["trace"] if t.prompt_id] == [False, False]
    assert len(chat.calls) == 2  # one call, one repair turn, no more


def test_persona_reaction_carries_id_and_run(make_context: Any) -> None:
    out = react_as_persona(
        {
            "persona_id": "zen_gardener",
            "user_prompt": "a dog",
            "target_emotion": Emotion.FEAR,
            "anchors": ["dog"],
            "run_index": 3,
        },
        _rt(make_context()),
    )
    (r,) = out["persona_reactions"]
    assert (r.persona_id, r.run_index) == ("zen_gardener", 3)


def _concept_reply(**channels: list[str]) -> str:
    reply = {"concepts": ["loss", "absence"]} | {c: channels.get(c, []) for c in VISUAL_CHANNELS}
    return json.dumps(reply)


def test_expand_concepts_filters_undepictable_words(make_context: Any) -> None:
    reply = _concept_reply(
        color_palette=["ash grey", "sadness"], lighting=["dim light"], environment=["rain sound"]
    )
    ctx = make_context(SchemaFakeChatModel(script={"ConceptReply": reply}))
    state = {"user_prompt": "a dog", "target_emotion": Emotion.SADNESS, "run_index": 0}
    out = expand_concepts(state, _rt(ctx))
    chain = out["concepts"]
    assert chain.abstract == ["loss", "absence"]
    assert chain.visual.color_palette == ["ash grey"]
    assert chain.dropped == ["sadness", "rain sound"]
    assert chain.source == "llm" and out["trace"][-1].outcome == "used"


def test_expand_concepts_drops_items_that_only_name_channels(make_context: Any) -> None:
    reply = _concept_reply(
        color_palette=["lighting", "ash grey"], composition=["expression_pose, materials_texture"]
    )
    ctx = make_context(SchemaFakeChatModel(script={"ConceptReply": reply}))
    state = {"user_prompt": "a dog", "target_emotion": Emotion.SADNESS, "run_index": 0}
    chain = expand_concepts(state, _rt(ctx))["concepts"]
    assert chain.visual.color_palette == ["ash grey"] and chain.visual.composition == []
    assert chain.dropped == ["lighting", "expression_pose, materials_texture"]


def test_expand_concepts_falls_back_to_lexicon(make_context: Any) -> None:
    ctx = make_context(SchemaFakeChatModel(script={"ConceptReply": "nonsense"}))
    state = {"user_prompt": "a dog", "target_emotion": Emotion.FEAR, "run_index": 0}
    out = expand_concepts(state, _rt(ctx))
    assert out["concepts"].visual == VISUAL[Emotion.FEAR]
    assert out["concepts"].source == "lexicon"
    assert out["trace"][-1].outcome == "fallback" and "chain of concept failed" in out["warnings"][0]


def _chain() -> ConceptChain:
    return ConceptChain(
        emotion=Emotion.ANGER,
        abstract=["hostility"],
        visual=VisualConcepts(
            color_palette=["blood red"], lighting=["harsh side light"], environment=["storm clouds"]
        ),
    )


def _consensus(**slots: str) -> str:
    reply = {
        "palette": "",
        "light": "",
        "pose": "",
        "setting": "",
        "texture": "",
        "detail": "",
        "avoid": ["soft pastel"],
    }
    return json.dumps(reply | slots)


def _consensus_state(prompt: str) -> dict[str, Any]:
    return {
        "user_prompt": prompt,
        "target_emotion": Emotion.ANGER,
        "run_index": 0,
        "persona_reactions": [_reaction("child")],
        "concepts": _chain(),
    }


def test_consensus_with_no_reaction_and_no_chain_is_an_error(make_context: Any) -> None:
    state = {
        "user_prompt": "a dog",
        "target_emotion": Emotion.FEAR,
        "run_index": 1,
        "persona_reactions": [_reaction("child", run=0)],
        "persona_ids": ["child", "zen_gardener"],
    }
    with pytest.raises(AllPersonasFailedError, match="all 2 personas failed"):
        write_consensus(state, _rt(make_context()))


def test_consensus_without_personas_uses_the_chain_and_says_so(make_context: Any) -> None:
    ctx = make_context(SchemaFakeChatModel(script={"ConsensusReply": "nonsense"}))
    state = {"user_prompt": "a dog", "target_emotion": Emotion.ANGER, "run_index": 0, "concepts": _chain()}
    out = write_consensus(state, _rt(ctx))
    # The chain's three phrases, then one built-in phrase of another channel for the floor of four.
    assert out["draft_prompt"].startswith("a dog, blood red, harsh side light, storm clouds, ")
    assert len(out["prompt_phrases"]) == MIN_DETAILS and out["prompt_phrases"][-1].source == "lexicon"
    assert "every persona was dropped" in out["warnings"][0]
    assert out["trace"][-1].outcome == "fallback"


def test_consensus_keeps_the_user_words_and_the_llm_details(make_context: Any) -> None:
    reply = _consensus(
        palette="blood red and black",
        light="harsh side light",
        pose="dog with bared teeth",
        setting="storm clouds overhead",
        detail="a torn leash",
    )
    ctx = make_context(SchemaFakeChatModel(script={"ConsensusReply": reply}))
    out = write_consensus(_consensus_state("an angry dog."), _rt(ctx))
    assert out["draft_prompt"] == (
        "an angry dog, blood red and black, harsh side light, dog with bared teeth, storm clouds overhead, "
        "a torn leash"
    )
    assert out["draft_negative"] == "soft pastel"
    assert out["trace"][-1].outcome == "used" and out["warnings"] == []


def test_consensus_that_returns_only_the_users_words_is_topped_up(make_context: Any) -> None:
    # The failure the issue found: a "final prompt" that is the user's prompt and nothing else.
    reply = _consensus(palette="an angry dog", light="angry dog", pose="dog", setting="sadness", detail="")
    ctx = make_context(SchemaFakeChatModel(script={"ConsensusReply": reply}))
    out = write_consensus(_consensus_state("an angry dog"), _rt(ctx))
    added = out["draft_prompt"].split(", ")[1:]
    assert len(added) >= MIN_DETAILS
    assert len(channels_of(added, chain_labels(_chain()))) >= MIN_CHANNELS
    assert "a dog by an empty bowl" in added  # the persona's own image comes first
    assert out["trace"][-1].outcome == "topped_up" and "added" in out["warnings"][0]


def test_the_floor_holds_with_the_lexicon_when_no_input_covers_enough_channels(make_context: Any) -> None:
    # Personas that wrote whole images of no channel, and no chain: the consensus picks what there is,
    # and the built-in lexicon supplies the channels (traced as the lexicon's, not the model's).
    reaction = PersonaReaction(
        persona_id="child",
        run_index=0,
        feeling_trigger="one dish at home",
        what_i_see=["sight of fangs", "the wish of many"],
        strongest_image="a young fellow at the party",
    )
    state = {
        "user_prompt": "a clown",
        "target_emotion": Emotion.ANGER,
        "run_index": 0,
        "persona_reactions": [reaction],
    }
    out = write_consensus(state, _rt(make_context()))
    phrases = out["prompt_phrases"]
    assert len({p.channel for p in phrases if p.channel}) >= MIN_CHANNELS and len(phrases) >= MIN_DETAILS
    lexicon = [p for p in phrases if p.source == "lexicon"]
    assert lexicon and all(p.phrase in out["draft_prompt"] for p in lexicon)
    assert any(p.source == "persona" for p in phrases)


def test_the_lexicon_also_fills_the_phrase_floor(prompt_library: Any) -> None:
    from ed_agents.nodes.consensus import top_up

    details = ["blood red", "harsh side light", "storm clouds"]  # 3 channels, 3 phrases, nothing else left
    labels = {"blood red": "color_palette", "harsh side light": "lighting", "storm clouds": "environment"}
    added = top_up(details, "a dog", [], None, leak_checker(prompt_library), labels, Emotion.ANGER)
    assert len(details) + len(added) >= MIN_DETAILS and added


def test_consensus_drops_details_that_leak_schema_or_example_text(make_context: Any) -> None:
    reply = _consensus(
        palette="color_palette: red",
        light="slate grey and faded white",  # the worked example's own palette
        pose="dog with bared teeth",
        setting='{"setting": "rain"}',
        detail="harsh side light",
    )
    ctx = make_context(SchemaFakeChatModel(script={"ConsensusReply": reply}))
    out = write_consensus(_consensus_state("an angry dog"), _rt(ctx))
    assert "color_palette" not in out["draft_prompt"] and "slate grey" not in out["draft_prompt"]
    assert "{" not in out["draft_prompt"]
    assert "dog with bared teeth" in out["draft_prompt"]


def test_the_consensus_offers_each_usable_phrase_once_in_the_slot_of_its_channel(
    prompt_library: Any,
) -> None:
    reactions = [_reaction("child"), _reaction("zen_gardener")]  # the same phrases twice
    pool = candidates(reactions, _chain())
    choices, channels = slot_choices(pool, "an angry dog", leak_checker(prompt_library))
    assert choices["palette"][-1] == "blood red" and choices["light"] == ["harsh side light"]
    assert "storm clouds" in choices["setting"]
    offered = [o for options in choices.values() for o in options]
    # Each phrase once, across slots too, however it is worded ("the empty bowl" = "empty bowl").
    assert len(offered) == len({frozenset(content(o)) for o in offered})
    assert "the empty bowl" not in offered
    assert "a dog by an empty bowl" in offered and all(options for options in choices.values())
    assert channels["blood red"] == "color_palette"
    assert not any(o in {"an angry dog", "dog"} for o in offered)  # the user's own words add nothing


def test_near_duplicate_phrases_are_offered_once(prompt_library: Any) -> None:
    chain = _chain().model_copy(
        update={
            "visual": VisualConcepts(
                color_palette=["fleeting light blue"],
                lighting=["fleeting light green blue", "light of fleeting blue"],
                environment=["fleeting green blue"],
            )
        }
    )
    choices, _ = slot_choices(candidates([], chain), "a funeral", leak_checker(prompt_library))
    offered = [o for options in choices.values() for o in options]
    # 3/4 and all of the words shared: one option; 2/4 shared (light vs green): two options.
    assert offered == ["fleeting light blue", "fleeting green blue"]


def test_the_consensus_schema_makes_each_slot_an_enum_of_its_options() -> None:
    schema = choices_schema({"palette": ["blood red", "black"], "detail": ["a torn leash"]})
    props = schema["properties"]
    assert props["palette"] == {"type": "string", "enum": ["blood red", "black"]}
    assert props["detail"]["enum"] == ["a torn leash"]
    assert set(props) == {"palette", "detail", "avoid"} == set(schema["required"])
    assert schema["additionalProperties"] is False


def test_a_server_enforcing_the_options_gives_a_consensus_used_as_written(
    settings: Any, prompt_library: Any, fake_server: Any
) -> None:
    # Through HTTP with json_schema: the (fake) server answers within the enum, as vLLM's grammar does.
    ctx = build_context(
        settings.model_copy(update={"llm_base_url": fake_server.base_url}),
        prompts=prompt_library,
        tokens=default_counter(),
    )
    state = _consensus_state("an angry dog")
    state["persona_reactions"] = [_reaction("child"), _reaction("war_photographer")]
    out = write_consensus(state, _rt(ctx))
    assert out["trace"][-1].outcome == "used", out["trace"][-1].note
    sent = fake_server.requests[-1]["response_format"]["json_schema"]["schema"]["properties"]
    options = {o for p in sent.values() for o in p.get("enum", [])}
    added = out["draft_prompt"].split(", ")[1:]
    assert added and set(added) <= options
    assert all(p.source in ("persona", "concepts") for p in out["prompt_phrases"])


def test_finalize_traces_phrases_to_personas_and_concepts(make_context: Any) -> None:
    state: dict[str, Any] = {
        "user_prompt": "an angry dog",
        "target_emotion": Emotion.ANGER,
        "run_index": 0,
        "anchors": ["angry", "dog"],
        "persona_reactions": [_reaction("child")],
        "concepts": _chain(),
        "draft_prompt": "an angry dog, a dog by an empty bowl, blood red, purple dolphins, feeling_trigger x",
        "draft_negative": "",
    }
    out = finalize_prompt(state, _rt(make_context()))
    assert out["final_prompt"] == "an angry dog, a dog by an empty bowl, blood red, purple dolphins"
    sources = [(p.phrase, p.source, p.persona_id, p.channel) for p in out["prompt_phrases"]]
    assert sources == [
        ("a dog by an empty bowl", "persona", "child", None),
        ("blood red", "concepts", None, "color_palette"),
        ("purple dolphins", "consensus", None, "color_palette"),
    ]
    assert [u.persona_id for u in out["used_ideas"]] == ["child"]
    assert "leaked" in out["warnings"][0]


def test_anchor_repair_then_deterministic_fix(make_context: Any) -> None:
    ctx = make_context(
        SchemaFakeChatModel(script={"RevisedPrompt": '{"final_prompt": "a hound in red light"}'})
    )
    state: dict[str, Any] = {
        "user_prompt": "an angry dog",
        "target_emotion": Emotion.ANGER,
        "run_index": 0,
        "anchors": ["angry dog"],
        "draft_prompt": "a furious hound",
        "draft_negative": "",
    }
    state |= verify_anchors(state, _rt(ctx))
    assert state["missing_anchors"] == ["angry dog"]
    assert route_after_verify(state) == "repair_prompt"
    state |= {k: v for k, v in repair_prompt(state, _rt(ctx)).items() if k != "trace"}
    assert state["anchor_repairs"] == 1
    state |= verify_anchors(state, _rt(ctx))
    assert route_after_verify(state) == "finalize_prompt"  # only one LLM repair
    out = finalize_prompt(state, _rt(ctx))
    assert out["final_prompt"] == "an angry dog, a hound in red light"
    assert out["missing_anchors"] == []
    assert "deterministic fix" in out["trace"][0].note


def test_route_start_revises_only_same_request_with_new_feedback() -> None:
    base = {
        "user_prompt": "a dog",
        "target_emotion": Emotion.FEAR,
        "final_prompt": "p",
        "request_key": "fear|a dog",
        "feedback_applied": 1,
    }
    assert route_start({**base, "feedback": ["darker"]}) == "understand_request"
    assert route_start({**base, "feedback": ["darker", "more fog"]}) == "revise_prompt"
    assert (
        route_start({**base, "target_emotion": Emotion.AWE, "feedback": ["a", "b"]}) == "understand_request"
    )


def test_revise_uses_previous_prompt_and_feedback(make_context: Any) -> None:
    chat = SchemaFakeChatModel(script={"RevisedPrompt": '{"final_prompt": "a dog in thick night fog"}'})
    state = {
        "user_prompt": "a dog",
        "target_emotion": Emotion.FEAR,
        "run_index": 0,
        "final_prompt": "a dog at dusk",
        "feedback": ["darker", "add fog"],
        "feedback_applied": 1,
        "anchors": ["dog"],
    }
    out = revise_prompt(state, _rt(make_context(chat)))
    assert (out["draft_prompt"], out["run_index"], out["feedback_applied"]) == (
        "a dog in thick night fog",
        1,
        2,
    )
    user = chat.calls[0]["messages"][-1].content
    assert "a dog at dusk" in user and "- add fog" in user


def test_revise_ignores_feedback_given_on_an_earlier_prompt(make_context: Any) -> None:
    chat = SchemaFakeChatModel(script={"RevisedPrompt": '{"final_prompt": "a fox at night"}'})
    state = {
        "user_prompt": "a fox",
        "target_emotion": Emotion.FEAR,
        "run_index": 3,
        "final_prompt": "a fox",
        "feedback": ["old: make the dog bigger", "darker"],
        "feedback_applied": 1,
        "feedback_start": 1,
        "anchors": ["fox"],
    }
    revise_prompt(state, _rt(make_context(chat)))
    user = chat.calls[0]["messages"][-1].content
    assert "- darker" in user and "dog" not in user
