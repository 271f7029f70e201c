"""Suite files: the shipped suites, strict validation with file and field, the plan and its stable ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from ed_agents.clip_tokens import default_counter
from ed_agents.prompts import PromptLibrary
from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_common.settings import REPO_ROOT, Settings
from evals.records import sample_id
from evals.suite import Suite, load_suite
from evals.systems import validate_suite

SUITES = sorted((REPO_ROOT / "evals" / "suites").glob("*.yaml"))
MINIMAL = "name: t\nprompts: [{text: a dog}]\nsystems: [{kind: plain}]\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suites_load_and_pass_the_request_checks(
    path: Path, prompt_library: PromptLibrary, settings: Settings
) -> None:
    suite = load_suite(path)
    validate_suite(suite, prompt_library, default_counter(), settings)
    plan = suite.plan()
    assert len({s.id for s in plan}) == len(plan)  # every sample id is unique


def test_shipped_suites_cover_what_the_issue_asks_for() -> None:
    names = {p.stem for p in SUITES}
    assert {"smoke", "counter-stereotype", "content-diverse"} <= names
    diverse = load_suite(REPO_ROOT / "evals/suites/content-diverse.yaml")
    assert len(diverse.prompts) >= 40 and all(p.content for p in diverse.prompts)
    counter = load_suite(REPO_ROOT / "evals/suites/counter-stereotype.yaml")
    assert all(p.emotions and p.content for p in counter.prompts)  # content paired with chosen emotions
    smoke = load_suite(REPO_ROOT / "evals/suites/smoke.yaml")
    assert smoke.settings["preset"] == "tiny" and {s.kind for s in smoke.systems} == {
        "full_graph",
        "single_llm",
        "plain",
        "emogen_baseline",
    }


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (MINIMAL + "colour: red\n", "colour: Extra inputs are not permitted"),
        (MINIMAL.replace("{kind: plain}", "{kind: plain, vp: 1}"), "systems.0.vp: Extra inputs"),
        (MINIMAL.replace("{kind: plain}", "{kind: dalle}"), "systems.0.kind: Input should be 'full_graph'"),
        (MINIMAL + "emotions: [joy]\n", "emotions.0: unknown emotion 'joy'; allowed: amusement"),
        (MINIMAL.replace("{kind: plain}", "{kind: plain}, {kind: plain}"), "repeated: plain_vp"),
        (MINIMAL + "seeds: [1, 1]\n", "repeat a value"),
        (MINIMAL + "settings: {presett: tiny}\n", "unknown setting(s) presett"),
        # A shared suite file is data: it may not choose a program, a server or a path.
        (MINIMAL + "settings: {llm_server_python: /bin/sh}\n", "llm_server_python may not be set by a suite"),
        (MINIMAL + "settings: {prompts_dir: /tmp/evil}\n", "prompts_dir may not be set by a suite"),
        (MINIMAL + "settings: {llm_base_url: 'http://x'}\n", "llm_base_url may not be set by a suite"),
        (MINIMAL + "text_scorers: [bleurt]\n", "unknown scorer 'bleurt'"),
        (MINIMAL + "image_scoring: {emotion_classifier: resnet}\n", "image_scoring.emotion_classifier"),
        (
            MINIMAL.replace("{kind: plain}", "{kind: plain, personas: [child]}"),
            "only applies to kind full_graph",
        ),
        ("name: t\nprompts: []\nsystems: [{kind: plain}]\n", "prompts: List should have at least 1 item"),
        (MINIMAL + "image_scoring: {content_scorer: clip_zero_shot}\n", "needs a `content` on every prompt"),
    ],
)
def test_bad_suites_fail_with_file_and_field(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InvalidInputError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(str(path)) and needle in message and "\n" not in message


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidInputError, match=r"suite.yaml:2: invalid YAML: mapping values are not allowed"
    ):
        load_suite(_write(tmp_path, "name: t\nprompts: x: y\n"))
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_suite(tmp_path / "nope.yaml")


def test_over_long_prompt_is_refused_before_running(
    tmp_path: Path, prompt_library: PromptLibrary, settings: Settings
) -> None:
    suite = load_suite(_write(tmp_path, MINIMAL.replace("a dog", " ".join(["castle"] * 80))))
    with pytest.raises(
        InvalidInputError, match=r"suite prompt 'castle castle.*80 CLIP tokens; the limit is 60"
    ):
        validate_suite(suite, prompt_library, default_counter(), settings)


def test_sample_ids_are_stable_and_independent_of_suite_order() -> None:
    assert sample_id("plain_vp", "a dog", "fear", 0, 0) == sample_id("plain_vp", "a dog", "fear", 0, 0)
    distinct = {
        sample_id("plain_vp", "a dog", "fear", 0, 0),
        sample_id("plain_text", "a dog", "fear", 0, 0),
        sample_id("plain_vp", "a cat", "fear", 0, 0),
        sample_id("plain_vp", "a dog", "anger", 0, 0),
        sample_id("plain_vp", "a dog", "fear", 1, 0),
        sample_id("plain_vp", "a dog", "fear", 0, 1),
    }
    assert len(distinct) == 6
    base = {"name": "t", "emotions": ["fear", "awe"], "systems": [{"kind": "plain"}, {"kind": "full_graph"}]}
    a = Suite.model_validate(base | {"prompts": [{"text": "a dog"}, {"text": "a  cat "}]})
    b = Suite.model_validate(base | {"prompts": [{"text": "a cat"}, {"text": "a dog"}]})
    assert {s.id for s in a.plan()} == {s.id for s in b.plan()}
    assert a.fingerprint() != b.fingerprint()  # the order is still part of what was asked for


def test_a_pair_listed_twice_gets_index_one_not_the_same_id() -> None:
    suite = Suite.model_validate(
        {
            "name": "t",
            "emotions": ["fear"],
            "systems": [{"kind": "plain"}],
            "prompts": [{"text": "a dog"}] * 2,
        }
    )
    plan = suite.plan()
    assert [s.index for s in plan] == [0, 1] and plan[0].id != plan[1].id


def test_plan_interleaves_systems_and_honours_per_prompt_emotions() -> None:
    suite = Suite.model_validate(
        {
            "name": "t",
            "emotions": ["awe"],
            "seeds": [0, 3],
            "systems": [{"kind": "plain"}, {"kind": "plain", "visual_prompts": False}],
            "prompts": [
                {"text": "a dog", "content": "dog", "emotions": ["ANGER", "fear"]},
                {"text": "a cat"},
            ],
        }
    )
    plan = suite.plan()
    assert [(s.prompt, s.emotion, s.seed, s.system) for s in plan[:4]] == [
        ("a dog", Emotion.ANGER, 0, "plain_vp"),
        ("a dog", Emotion.ANGER, 0, "plain_text"),
        ("a dog", Emotion.ANGER, 3, "plain_vp"),
        ("a dog", Emotion.ANGER, 3, "plain_text"),
    ]
    assert len(plan) == (2 + 1) * 2 * 2 and plan[0].content == "dog"
    assert {s.emotion for s in plan if s.prompt == "a cat"} == {Emotion.AWE}


def test_fingerprint_ignores_scoring_but_not_samples() -> None:
    base = Suite.model_validate({"name": "t", "prompts": [{"text": "a dog"}], "systems": [{"kind": "plain"}]})
    rescored = base.model_copy(update={"text_scorers": ["cost"], "description": "x"})
    assert rescored.fingerprint() == base.fingerprint()
    assert base.model_copy(update={"seeds": [0, 1]}).fingerprint() != base.fingerprint()
    assert base.model_copy(update={"settings": {"preset": "sd15"}}).fingerprint() != base.fingerprint()


def test_world_suite_asks_only_for_unusual_pairs_and_names_the_emotion_in_text() -> None:
    from ed_diffusion.world import unusual_pairs

    suite = load_suite(REPO_ROOT / "evals/suites/world.yaml")
    asked = {(p.content, e) for p in suite.prompts for e in (p.emotions or [])}
    assert asked == set(unusual_pairs())
    text_only = suite.system("text_only")
    assert text_only.template == "{prompt}, feeling {emotion}" and not text_only.visual_prompts


@pytest.mark.parametrize(
    ("system", "needle"),
    [
        ("{kind: plain, template: 'a {emotion}'}", "must contain {prompt}"),
        ("{kind: plain, template: '{prompt} {mood}'}", "nothing else"),
        ("{kind: plain, template: '{{prompt}}, sad'}", "must contain {prompt}"),  # a literal, no field
        ("{kind: plain, template: '{prompt.upper} {prompt}'}", "nothing else"),  # attribute lookup
        ("{kind: plain, template: '{prompt!r}'}", "nothing else"),
        ("{kind: plain, template: '{prompt'}", "is not a format string"),  # would fail every sample
        ("{kind: emogen_baseline, template: '{prompt}'}", "template only applies to kind plain"),
    ],
)
def test_system_template_is_checked(tmp_path: Path, system: str, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        load_suite(_write(tmp_path, MINIMAL.replace("{kind: plain}", system)))


def test_plain_template_fills_prompt_and_emotion(make_context: object) -> None:
    from evals.records import SampleSpec
    from evals.systems import run_system

    suite = load_suite(REPO_ROOT / "evals/suites/world.yaml")
    spec = next(s for s in suite.plan() if s.system == "text_only")
    state = run_system(suite.system("text_only"), spec, make_context(), None, None)  # type: ignore[operator]
    assert state["final_prompt"] == f"{spec.prompt}, feeling {spec.emotion.value}"
    assert isinstance(spec, SampleSpec)
