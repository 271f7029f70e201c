"""The graph's render stage with a fake renderer: routing, run directories, manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from ed_common.render_contract import RenderOptions
from ed_diffusion.images import OutputExistsError, save_png_atomic
from graphs.emotion_director import build_graph
from tests.fakes.fake_chat import SchemaFakeChatModel
from tests.fakes.fake_renderer import FakeRenderer


def _ctx(make_context: Any, tmp_path: Path, renderer: FakeRenderer) -> Any:
    return make_context(SchemaFakeChatModel(), renderer=renderer, runs_dir=tmp_path / "runs")


def test_render_after_agents_writes_images_and_manifest(make_context: Any, tmp_path: Path) -> None:
    renderer = FakeRenderer()
    out = build_graph().invoke(
        {
            "user_prompt": "an angry dog",
            "target_emotion": "contentment",
            "personas": ["child", "zen_gardener"],
            "render": RenderOptions(n_images=3, seed=7, vp_scale=0.5, out_dir=str(tmp_path / "run")),
        },
        context=_ctx(make_context, tmp_path, renderer),
    )
    (request,) = renderer.requests
    assert request.prompt == out["final_prompt"] and request.emotion == "contentment"
    assert request.prompt_form == "model"  # an agent's prompt: the renderer may put it in its model's form
    assert out["model_prompt"] is None  # ... and this one rendered it unchanged
    assert (request.seed, request.n_images, request.vp_scale) == (7, 3, 0.5)
    assert renderer.retrievals == [(out["final_prompt"], "contentment")]  # retrieval uses the final prompt
    assert [Path(p).name for p in out["images"]] == [
        "image_00_seed7.png",
        "image_01_seed8.png",
        "image_02_seed9.png",
    ]
    manifest = json.loads(Path(out["manifest"]).read_text())
    assert manifest["inputs"]["user_prompt"] == "an angry dog"
    assert manifest["final_prompt"] == out["final_prompt"] and manifest["seeds"] == [7, 8, 9]
    assert {f["id"] for f in manifest["prompt_files"]} >= {"understand", "persona_reaction", "consensus"}
    assert all(len(f["sha256"]) == 64 for f in manifest["prompt_files"])
    assert manifest["visual_prompt"]["emotion"] == "contentment"
    assert manifest["contact_sheet"] == "contact_sheet.png"


def test_no_agents_renders_the_prompt_as_written(make_context: Any, tmp_path: Path) -> None:
    renderer = FakeRenderer()
    chat = SchemaFakeChatModel()
    out = build_graph().invoke(
        {"user_prompt": "a  red fox", "target_emotion": "fear", "agents": False, "render": RenderOptions()},
        context=make_context(chat, renderer=renderer, runs_dir=tmp_path / "runs"),
    )
    assert chat.calls == []  # no LLM at all
    assert renderer.requests[0].prompt == "a red fox"
    assert renderer.requests[0].prompt_form == "as_written"
    run_dir = Path(out["run_dir"])
    assert run_dir.parent == tmp_path / "runs" and "fear-a-red-fox" in run_dir.name


def test_render_refuses_an_existing_output_dir(make_context: Any, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError, match="already exists"):
        build_graph().invoke(
            {
                "user_prompt": "a fox",
                "target_emotion": "fear",
                "agents": False,
                "render": RenderOptions(out_dir=str(tmp_path / "taken")),
            },
            context=_ctx(make_context, tmp_path, FakeRenderer()),
        )


def test_render_of_current_prompt_skips_the_agents(make_context: Any, tmp_path: Path) -> None:
    chat = SchemaFakeChatModel()
    renderer = FakeRenderer()
    ctx = make_context(chat, renderer=renderer, runs_dir=tmp_path / "runs")
    graph = build_graph(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t"}}
    graph.invoke({"user_prompt": "a cat", "target_emotion": "awe", "personas": ["child"]}, cfg, context=ctx)
    assert renderer.requests == []  # no render unless asked
    calls = len(chat.calls)
    out = graph.invoke(
        {"user_prompt": "a cat", "target_emotion": "awe", "render": RenderOptions()}, cfg, context=ctx
    )
    assert len(chat.calls) == calls and len(renderer.requests) == 1
    assert out["images"]


def test_save_png_atomic_never_overwrites(tmp_path: Path) -> None:
    from PIL import Image

    path = save_png_atomic(Image.new("RGB", (2, 2)), tmp_path / "a.png")
    with pytest.raises(OutputExistsError):
        save_png_atomic(Image.new("RGB", (2, 2), "red"), path)
    assert Image.open(path).getpixel((0, 0)) == (0, 0, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left behind


class _StopsAfterOneImage(FakeRenderer):
    def __init__(self, stop: BaseException) -> None:
        super().__init__()
        self.stop = stop

    def render(self, request: Any) -> Any:
        save_png_atomic(Image.new("RGB", (1, 1)), request.out_dir / "image_00_seed0.png")
        raise self.stop


@pytest.mark.parametrize(
    ("stop", "status"), [(KeyboardInterrupt(), "interrupted"), (RuntimeError("out of memory"), "failed")]
)
def test_a_render_that_stops_midway_still_leaves_a_manifest(
    make_context: Any, tmp_path: Path, stop: BaseException, status: str
) -> None:
    run = tmp_path / "run"
    with pytest.raises(type(stop)):
        build_graph().invoke(
            {
                "user_prompt": "a red fox",
                "target_emotion": "fear",
                "agents": False,
                "render": RenderOptions(n_images=4, out_dir=str(run)),
            },
            context=_ctx(make_context, tmp_path, _StopsAfterOneImage(stop)),
        )
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == status and manifest["images"] == ["image_00_seed0.png"]
    assert manifest["inputs"]["user_prompt"] == "a red fox" and manifest["render_options"]["n_images"] == 4
    assert (manifest["error"] is None) == (status == "interrupted")


class _CondensingRenderer(FakeRenderer):
    """A renderer whose model read another prompt than the request's (as the world preset's does)."""

    def render(self, request: Any) -> Any:
        result = super().render(request)
        return result.model_copy(
            update={"settings": {**result.settings, "model_prompt": "a fox, feeling fear"}}
        )


def test_the_prompt_the_model_read_is_reported_when_the_renderer_changed_it(
    make_context: Any, tmp_path: Path
) -> None:
    out = build_graph().invoke(
        {"user_prompt": "a red fox", "target_emotion": "fear", "render": RenderOptions()},
        context=_ctx(make_context, tmp_path, _CondensingRenderer()),
    )
    assert out["model_prompt"] == "a fox, feeling fear"
    manifest = json.loads(Path(out["manifest"]).read_text())
    assert manifest["render_settings"]["model_prompt"] == "a fox, feeling fear"
