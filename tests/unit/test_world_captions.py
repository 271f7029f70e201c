"""The world model's caption language, and when the renderer puts a prompt in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ed_common.render_contract import RenderRequest
from ed_diffusion.pipeline import model_prompt
from ed_diffusion.presets import PresetSpec
from ed_diffusion.world.captions import emotional_caption, world_caption, world_content


@pytest.mark.parametrize(
    ("prompt", "content"),
    [
        ("a star", "star"),
        ("A bright STAR, dim over a blue sky", "star"),
        ("two stars made of light", "star"),  # a plural counts
        ("a house beside a tree", "house"),  # the first one named
        ("a starfish on a crossroad", None),  # words that merely start with a content do not count
        ("an angry dog", None),
    ],
)
def test_world_content_finds_the_first_content_word(prompt: str, content: str | None) -> None:
    assert world_content(prompt) == content


def test_world_caption_is_the_form_the_bench_measures() -> None:
    assert world_caption("a star, blue, dim over a bright blue sky", "fear") == "a star, feeling fear"
    assert world_caption("a star", "fear") == emotional_caption("a star", "fear")
    assert world_caption("an angry dog", "anger") == "feeling anger"


def _preset(captions: str) -> PresetSpec:
    return PresetSpec("p", "sd15", "m", None, None, steps=1, guidance=1.0, size=32, captions=captions)  # type: ignore[arg-type]


def _request(form: str) -> RenderRequest:
    return RenderRequest(
        prompt="a star, blue, dim over a bright blue sky",
        negative_prompt="a bright sun",
        emotion="fear",
        out_dir=Path("unused"),
        prompt_form=form,  # type: ignore[arg-type]
    )


def test_only_an_agents_prompt_on_a_world_preset_is_condensed() -> None:
    assert model_prompt(_preset("world"), _request("model")) == ("a star, feeling fear", "")
    as_written = ("a star, blue, dim over a bright blue sky", "a bright sun")
    assert model_prompt(_preset("world"), _request("as_written")) == as_written  # suites, --no-agents
    assert model_prompt(_preset("free"), _request("model")) == as_written  # CLIP reads any text


def test_a_request_is_as_written_unless_it_says_otherwise() -> None:
    request = RenderRequest(prompt="a star", emotion="fear", out_dir=Path("unused"))
    assert request.prompt_form == "as_written"
    with pytest.raises(ValueError, match="prompt_form"):
        RenderRequest(prompt="a star", emotion="fear", out_dir=Path("unused"), prompt_form="world")  # type: ignore[arg-type]
