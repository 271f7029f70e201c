"""MC-Diffusion end to end on the tiny preset: the production loading path on random tiny weights."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli import app, main
from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.render_contract import RenderRequest
from ed_diffusion.bank import VisualPromptBank
from ed_diffusion.pipeline import MAX_BATCH, MCDiffusion, get_renderer
from ed_diffusion.presets import resolve_preset

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("cache")
    resolve_preset("tiny", cache)  # build once per session
    return cache


@pytest.fixture
def tiny_env(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("EMODIR_CACHE_DIR", str(tiny_cache))
    monkeypatch.setenv("EMODIR_RUNS_DIR", str(tmp_path / "runs"))
    yield tiny_cache


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_generate_end_to_end_with_agents(
    tiny_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("EMODIR_LLM_BASE_URL", server.base_url)
        result = runner.invoke(
            app,
            [
                "generate",
                "an angry dog",
                "-e",
                "contentment",
                "--n",
                "2",
                "--seed",
                "3",
                "--out",
                str(tmp_path / "run"),
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("run_dir", "images", "final_prompt", "manifest", "contact_sheet", "visual_prompt"):
        assert data[key], key
    assert [Path(p).name for p in data["images"]] == ["image_00_seed3.png", "image_01_seed4.png"]
    for p in data["images"]:
        assert Image.open(p).size == (64, 64)
    manifest = json.loads(Path(data["manifest"]).read_text())
    assert manifest["final_prompt"] == data["final_prompt"]
    assert len(manifest["model"]["bank_sha256"]) == 64 and len(manifest["model"]["adapter_sha256"]) == 64
    assert manifest["llm_models"] == ["smollm2"] and manifest["prompt_files"]


def test_renderer_scale_zero_is_the_stock_pipeline(tiny_env: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    spec = resolve_preset("tiny", tiny_env)
    renderer = MCDiffusion(spec)
    req = dict(prompt="a red fox", emotion="fear", seed=5, negative_prompt="blurry")
    zero = renderer.render(RenderRequest(out_dir=tmp_path / "zero", vp_scale=0.0, **req))  # type: ignore[arg-type]
    one = renderer.render(RenderRequest(out_dir=tmp_path / "one", vp_scale=1.0, **req))  # type: ignore[arg-type]
    stock = StableDiffusionXLPipeline.from_pretrained(spec.model, local_files_only=True)
    stock.set_progress_bar_config(disable=True)
    image = stock(
        prompt="a red fox",
        negative_prompt="blurry",
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(5),
    ).images[0]
    a = np.asarray(Image.open(zero.images[0]))
    assert np.array_equal(a, np.asarray(image))  # scale 0 == stock, bit for bit
    assert not np.array_equal(a, np.asarray(Image.open(one.images[0])))


def test_renderer_loads_once_per_process(tiny_env: Path, tmp_path: Path) -> None:
    spec = resolve_preset("tiny", tiny_env)
    r1 = get_renderer(spec)
    r1.render(RenderRequest(prompt="a fox", emotion="awe", out_dir=tmp_path / "a"))
    pipe = r1.pipe
    r2 = get_renderer(spec)
    r2.render(RenderRequest(prompt="a fox", emotion="awe", out_dir=tmp_path / "b"))
    assert r1 is r2 and r2.pipe is pipe


def test_interrupted_render_leaves_no_partial_png(tiny_env: Path, tmp_path: Path) -> None:
    renderer = MCDiffusion(resolve_preset("tiny", tiny_env))
    renderer.load()
    real = renderer.emotion.pipe
    calls = {"n": 0}

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    renderer.emotion.pipe = interrupted
    renderer.emotion.pipe.unet = real.unet  # type: ignore[attr-defined]
    renderer.emotion.pipe.device = real.device  # type: ignore[attr-defined]
    n = MAX_BATCH + 2  # two batched calls: the first finishes, the second is interrupted
    with pytest.raises(KeyboardInterrupt):
        renderer.render(RenderRequest(prompt="a fox", emotion="awe", n_images=n, out_dir=tmp_path / "run"))
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    # The first batch's images, nothing half-written, no temp file.
    assert names == [f"image_{i:02d}_seed{i}.png" for i in range(MAX_BATCH)]
    for name in names:
        Image.open(tmp_path / "run" / name).verify()


def test_generate_no_agents_needs_no_llm(tiny_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMODIR_LLM_PORT", "9")  # no server anywhere
    result = runner.invoke(
        app,
        [
            "generate",
            "a lighthouse",
            "-e",
            "awe",
            "--n",
            "1",
            "--no-agents",
            "--json",
            "--vp-scale",
            "0.5",
            "--negative-vp",
            "opposite",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["final_prompt"] == "a lighthouse"
    assert data["visual_prompt"]["negative_emotion"] in {"anger", "disgust", "fear", "sadness"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--preset", "huge"], "preset='huge': Input should be 'tiny', 'world', 'sd15' or 'sdxl'"),
        (["--preset", "sdxl"], "preset 'sdxl' needs a visual-prompt bank"),
        (["--vp-scale", "-1"], "vp_scale"),
        (["--negative-vp", "sideways"], "negative_vp"),
    ],
)
def test_generate_bad_options_are_one_line(
    tiny_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    line = _one_line_error(capsys, ["generate", "a fox", "-e", "awe", "--no-agents", *argv])
    assert needle in line


def test_generate_refuses_existing_out(
    tiny_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("mine")
    line = _one_line_error(
        capsys, ["generate", "a fox", "-e", "awe", "--no-agents", "--out", str(tmp_path / "old")]
    )
    assert "already exists" in line
    assert (tmp_path / "old" / "keep.txt").read_text() == "mine"


def test_missing_or_partial_model_dir_is_one_line(
    tiny_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(resolve_preset("tiny", tiny_env).model, partial)
    shutil.rmtree(partial / "unet")
    line = _one_line_error(capsys, ["generate", "a fox", "-e", "awe", "--no-agents", "--model", str(partial)])
    assert "is not a complete diffusers model directory: missing unet" in line
    line = _one_line_error(
        capsys, ["generate", "a fox", "-e", "awe", "--no-agents", "--model", str(tmp_path / "nowhere")]
    )
    assert "nowhere" in line and "neither an existing directory nor a hub id" in line


def test_bad_bank_files_are_one_line(
    tiny_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    line = _one_line_error(capsys, ["generate", "a fox", "-e", "awe", "--no-agents", "--bank", str(corrupt)])
    assert "corrupt.safetensors" in line
    bank = VisualPromptBank.load(resolve_preset("tiny", tiny_env).bank)  # type: ignore[arg-type]
    narrow = VisualPromptBank(
        bank.text_centres,
        bank.visual_centres[..., :16].contiguous(),
        bank.counts,
        bank.metadata.__class__(**{**bank.metadata.__dict__, "d_v": 16}),
    )
    narrow.save(tmp_path / "narrow.safetensors")
    line = _one_line_error(
        capsys,
        ["generate", "a fox", "-e", "awe", "--no-agents", "--bank", str(tmp_path / "narrow.safetensors")],
    )
    assert "16" in line and "32" in line


def test_bank_build_and_show(tiny_env: Path, tmp_path: Path) -> None:
    from ed_diffusion.emotion_datasets import make_toy_dataset

    jsonl = make_toy_dataset(tmp_path / "toy", n_per_emotion=4, seed=1)
    out = tmp_path / "bank.safetensors"
    result = runner.invoke(
        app,
        [
            "bank",
            "build",
            "--data",
            str(jsonl),
            "--out",
            str(out),
            "--text-encoder",
            "tiny",
            "--image-encoder",
            "tiny",
            "--clusters",
            "2",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert VisualPromptBank.load(out).clusters == 2
    result = runner.invoke(app, ["bank", "show", str(out)])
    assert result.exit_code == 0 and "clusters" in result.output
    again = runner.invoke(
        app,
        [
            "bank",
            "build",
            "--data",
            str(jsonl),
            "--out",
            str(out),
            "--text-encoder",
            "tiny",
            "--image-encoder",
            "tiny",
            "--clusters",
            "2",
        ],
    )
    assert again.exit_code != 0  # never overwrites


def test_chat_render_uses_the_current_prompt(tiny_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("EMODIR_LLM_BASE_URL", server.base_url)
        result = runner.invoke(
            app,
            ["chat", "--session", "r", "-e", "awe", "--personas", "child"],
            input="/render\na quiet harbour\n/render two\n/render 2\n/quit\n",
        )
    assert result.exit_code == 0, result.output
    assert "nothing to render yet" in result.output
    assert "give a number of images" in result.output
    assert "2 image(s) in" in result.output


def test_render_without_guidance(tiny_env: Path, tmp_path: Path) -> None:
    renderer = MCDiffusion(resolve_preset("tiny", tiny_env))
    result = renderer.render(
        RenderRequest(prompt="a fox", emotion="awe", guidance=1.0, out_dir=tmp_path / "g")
    )
    assert Image.open(result.images[0]).size == (64, 64)


def test_generate_a_prompts_file_one_run_dir_per_line(
    tiny_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "an old dog in the snow", "emotion": "fear"}\n{"prompt": "a red apple"}\n')
    out = tmp_path / "batch"
    argv = ["generate", "--prompts", str(prompts), "-e", "awe", "--no-agents", "--n", "1", "--steps", "2"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["final_prompt"], r["target_emotion"]) for r in rows] == [
        ("an old dog in the snow", "fear"),
        ("a red apple", "awe"),
    ]
    assert sorted(p.name for p in out.iterdir()) == ["000-fear-an-old-dog-in-the-snow", "001-awe-a-red-apple"]
    for run in out.iterdir():
        assert len(list(run.glob("*.png"))) == 1 and (run / "manifest.json").is_file()
    assert main([*argv, "--out", str(out)]) == 1  # nothing is overwritten
