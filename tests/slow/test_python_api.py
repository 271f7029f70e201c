"""The Python API (graphs/api.py, README "Python API"): plain strings and dicts in, the CLI's JSON out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.errors import InvalidInputError
from graphs import api

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    torch.set_num_threads(1)
    monkeypatch.setenv("EMODIR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("EMODIR_AUTOSTART", "false")
    return tmp_path


def test_rewrite_and_generate_with_plain_values(env: Path) -> None:
    with FakeOpenAIServer() as server:
        out = api.rewrite("a birthday cake on a table", "Fear", llm_base_url=server.base_url, n_personas=2)
        assert "birthday cake" in out["final_prompt"] and out["target_emotion"] == "fear"
        gen = api.generate(
            "an old dog in the snow",
            "contentment",
            n=2,
            settings={"llm_base_url": server.base_url, "preset": "tiny", "n_personas": 2},
            render={"steps": 2, "vp_scale": 0.5},
        )
    assert len(gen["images"]) == 2 and Path(gen["manifest"]).is_file()
    assert Path(gen["run_dir"]).is_relative_to(env / "runs")
    assert Image.open(gen["images"][0]).size == (64, 64)


def test_generate_without_agents_and_the_renderer_with_a_dict(env: Path) -> None:
    gen = api.generate("a red apple", "awe", n=1, agents=False, preset="tiny", render={"steps": 2})
    assert gen["final_prompt"] == "a red apple" and len(gen["images"]) == 1
    renderer = api.load_renderer(preset="tiny")
    result = renderer.render({"prompt": "a fox", "emotion": "awe", "n_images": 2, "out_dir": env / "fox"})
    assert [p.name for p in result.images] == ["image_00_seed0.png", "image_01_seed1.png"]
    assert api.load_bank(renderer.preset.bank).d_v > 0


def test_bad_values_are_one_line_errors(env: Path) -> None:
    with pytest.raises(InvalidInputError, match="n_personas"):
        api.make_settings({"n_personas": 0})
    with pytest.raises(InvalidInputError, match="steps"):
        api.generate("a fox", "awe", agents=False, preset="tiny", render={"steps": -1})
    with pytest.raises(InvalidInputError, match="joy"):
        api.generate("a fox", "joy", agents=False, preset="tiny")


def test_run_suite_by_name(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("EMODIR_LLM_BASE_URL", server.base_url)
        summary = api.run_suite("smoke", env / "smoke", agents_only=True)
    assert (env / "smoke" / "report.html").is_file() and summary
