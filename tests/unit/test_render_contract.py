"""The render contract: one validator for render settings, shared by the CLI, the graph and the renderer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_common.limits import MAX_SEED
from ed_common.render_contract import (
    Renderer,
    RenderOptions,
    RenderRequest,
    VisualPromptChoice,
    checked,
)
from tests.fakes.fake_renderer import FakeRenderer


def test_a_request_carries_every_option_it_was_built_from(tmp_path: Path) -> None:
    options = RenderOptions(
        n_images=3,
        seed=7,
        steps=5,
        guidance=2.5,
        width=64,
        height=32,
        vp_scale=0.5,
        top_k=2,
        negative_vp="confusable",
        out_dir="ignored",
    )
    request = RenderRequest.from_options(options, prompt="a fox", emotion="Awe ", out_dir=tmp_path)
    for name in RenderOptions.model_fields:
        if name != "out_dir":
            assert getattr(request, name) == getattr(options, name), name
    assert request.out_dir == tmp_path  # the request's directory, not the options' placeholder
    assert request.emotion is Emotion.AWE
    assert request.seeds == [7, 8, 9]


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({"n_images": 0}, "n_images"),
        ({"vp_scale": float("nan")}, "vp_scale"),
        ({"vp_scale": 11.0}, "vp_scale"),
        ({"top_k": 65}, "top_k"),
        ({"width": 12}, "width"),
        ({"negative_vp": "random"}, "negative_vp"),
        ({"seed": MAX_SEED, "n_images": 2}, "passes"),
        ({"emotion": "joy"}, "unknown emotion 'joy'"),
        ({"prompt": "   "}, "prompt"),
    ],
)
def test_a_bad_request_value_is_one_line_naming_it(
    tmp_path: Path, values: dict[str, object], names: str
) -> None:
    base: dict[str, object] = {"prompt": "a fox", "emotion": "fear", "out_dir": tmp_path}
    with pytest.raises(InvalidInputError, match=names) as info:
        checked(RenderRequest, **(base | values))
    assert "\n" not in str(info.value)


def test_options_and_requests_refuse_the_same_values(tmp_path: Path) -> None:
    # One validator: a value the options refuse, the request refuses too, with the same reason.
    with pytest.raises(InvalidInputError) as from_options:
        checked(RenderOptions, steps=0)
    with pytest.raises(InvalidInputError) as from_request:
        checked(RenderRequest, prompt="a fox", emotion="fear", out_dir=tmp_path, steps=0)
    assert str(from_options.value) == str(from_request.value)


def test_a_visual_prompt_choice_round_trips_through_json() -> None:
    choice = VisualPromptChoice(
        emotion="fear", indices=[3, 1], scores=[0.5, 0.25], negative_emotion="AWE", negative_indices=[0, 2]
    )
    data = json.loads(json.dumps(choice.as_dict()))
    assert data["emotion"] == "fear" and data["negative_emotion"] == "awe"
    assert VisualPromptChoice.model_validate(data) == choice
    assert choice.negative_emotion is Emotion.AWE


def test_the_fake_renderer_implements_the_protocol() -> None:
    assert isinstance(FakeRenderer(), Renderer)
