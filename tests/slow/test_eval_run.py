"""Eval runs with images: a fake renderer, a real kill -9 and resume, two real processes, the tiny preset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cli import main
from ed_agents.clip_tokens import default_counter
from ed_agents.prompts import PromptLibrary
from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.settings import REPO_ROOT, Settings
from evals.report import finalize_run
from evals.runner import run_suite
from evals.shards import read_records
from evals.suite import Suite, load_suite
from evals.systems import make_context_factory
from tests.conftest import cli_env
from tests.fakes.fake_chat import SchemaFakeChatModel
from tests.fakes.fake_renderer import FakeRenderer

pytestmark = pytest.mark.slow

SUITE = """name: slow
emotions: [anger]
prompts: [{text: a dog}, {text: a cat}, {text: a fox}, {text: a red car}, {text: a house}, {text: a tree}]
systems: [{kind: single_llm}, {kind: plain, visual_prompts: false}]
images_per_prompt: 2
"""
# One process of a run, as `emodir eval run` wires it, with fakes; prints the outcome as JSON.
SCRIPT = """
import dataclasses, json, sys
from pathlib import Path
from ed_agents.clip_tokens import default_counter
from ed_agents.prompts import PromptLibrary
from ed_common.settings import REPO_ROOT, load_settings
from evals.report import finalize_run
from evals.runner import run_suite
from evals.shards import detect_shard, read_records
from evals.suite import load_suite
from evals.systems import make_context_factory
from tests.fakes.fake_chat import SchemaFakeChatModel

suite_path, out, delay, resume = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
suite = load_suite(suite_path)
settings = load_settings(data_dir=out.parent / "data", cache_dir=out.parent / "cache")
factory = make_context_factory(
    settings, prompts=PromptLibrary.load(REPO_ROOT / "prompts"), tokens=default_counter(),
    chat_model=SchemaFakeChatModel(delay=delay),
)
renderer = None
if suite.images_per_prompt:  # only then: the render stage imports torch, which is slow to start
    from tests.fakes.fake_renderer import FakeRenderer
    renderer = FakeRenderer()
outcome = run_suite(suite, out, context_factory=factory, renderer=renderer, concurrency=2,
                    resume=resume, shard=detect_shard(), suite_path=suite_path)
if outcome.merged:
    finalize_run(out, suite, read_records(out / "samples.jsonl"))
print(json.dumps(dataclasses.asdict(outcome)))
"""


class CountingRenderer(FakeRenderer):
    """A FakeRenderer that records how many renders ever overlapped."""

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def render(self, request: Any) -> Any:
        with self._guard:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(0.01)  # widens the window an unserialised second render would overlap in
            return super().render(request)
        finally:
            with self._guard:
                self.in_flight -= 1

    __call__ = render


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "slow.yaml"
    path.write_text(SUITE)
    return path


def _spawn(suite_file: Path, out: Path, delay: float, resume: bool, **env: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", SCRIPT, str(suite_file), str(out), str(delay), "1" if resume else "0"]
    return subprocess.Popen(
        argv, cwd=REPO_ROOT, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _assert_complete(out: Path, suite: Suite) -> None:
    records = read_records(out / "samples.jsonl")
    assert [r.id for r in records] == [s.id for s in suite.plan()]  # none lost, none duplicated, in order
    assert all(r.ok for r in records)
    for r in records:
        assert len(r.images) == suite.images_per_prompt and all((out / p).is_file() for p in r.images)
    # Every sample directory belongs to a recorded sample: leftovers of killed samples were redone.
    assert {p.name for p in (out / "images").iterdir()} == {r.id for r in records if r.images}


def test_systems_render_with_and_without_visual_prompts(
    tmp_path: Path, settings: Settings, prompt_library: PromptLibrary, suite_file: Path
) -> None:
    suite = load_suite(suite_file).model_copy(update={"seeds": [0, 5]})
    renderer = CountingRenderer()
    factory = make_context_factory(
        settings, prompts=prompt_library, tokens=default_counter(), chat_model=SchemaFakeChatModel()
    )
    out = tmp_path / "run"
    outcome = run_suite(suite, out, context_factory=factory, renderer=renderer, concurrency=4)
    assert outcome.failed == 0 and renderer.max_in_flight == 1  # renders are serialised
    records = {r.id: r for r in read_records(out / "samples.jsonl")}
    for q in renderer.requests:  # text-only systems render at visual-prompt scale 0
        record = records[q.out_dir.name]
        assert q.vp_scale == (0.0 if record.system == "plain_text" else 1.0)
        assert (q.seed, q.n_images) == (record.seed * 2, 2)  # seeds 0,1 for seed 0; 10,11 for seed 5
    record = next(r for r in records.values() if (r.prompt, r.system, r.seed) == ("a fox", "plain_text", 5))
    assert record.images == [
        f"images/{record.id}/image_00_seed10.png",
        f"images/{record.id}/image_01_seed11.png",
    ]
    manifest = json.loads((out / "images" / record.id / "manifest.json").read_text())
    assert manifest["render_options"]["vp_scale"] == 0.0 and manifest["inputs"]["agents"] is False
    summary = finalize_run(out, suite, read_records(out / "samples.jsonl"))
    assert summary["systems"]["plain_text"]["all"]["n_images"] == 6 * 2 * 2
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 2 * 6


def test_kill_minus_nine_then_resume_gives_every_sample_once(
    tmp_path: Path, settings: Settings, prompt_library: PromptLibrary, suite_file: Path
) -> None:
    out = tmp_path / "run"
    proc = _spawn(suite_file, out, delay=0.5, resume=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        lines = (out / "samples.jsonl").read_text().count("\n") if (out / "samples.jsonl").exists() else 0
        if lines >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    recorded = read_records(out / "samples.jsonl")
    suite = load_suite(suite_file)
    assert 3 <= len(recorded) < len(suite.plan())

    factory = make_context_factory(
        settings, prompts=prompt_library, tokens=default_counter(), chat_model=SchemaFakeChatModel()
    )
    outcome = run_suite(suite, out, context_factory=factory, renderer=FakeRenderer(), resume=True)
    assert outcome.skipped == len({r.id for r in recorded if r.ok}) and outcome.complete
    _assert_complete(out, suite)


def test_two_processes_split_the_samples_and_the_last_merges(tmp_path: Path, suite_file: Path) -> None:
    suite_file.write_text(SUITE.replace("images_per_prompt: 2", "images_per_prompt: 0"))  # agents only: fast
    out = tmp_path / "run"
    procs = [_spawn(suite_file, out, 0.0, False, RANK=str(r), WORLD_SIZE="2") for r in (0, 1)]
    outcomes = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        outcomes.append(json.loads(stdout.strip().splitlines()[-1]))
    suite = load_suite(suite_file)
    assert [o["owned"] for o in outcomes] == [6, 6] and sum(o["ran"] for o in outcomes) == 12
    assert any(o["merged"] for o in outcomes)
    _assert_complete(out, suite)
    plan = [s.id for s in suite.plan()]
    for rank in (0, 1):
        shard = read_records(out / f"samples.rank{rank}.jsonl")
        assert sorted(r.id for r in shard) == sorted(plan[rank::2]) and {r.rank for r in shard} == {rank}
    assert json.loads((out / "summary.json").read_text())["n_recorded"] == 12


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ed_diffusion.presets import resolve_preset

    cache = tmp_path_factory.mktemp("cache")
    resolve_preset("tiny", cache)  # build once for this module
    return cache


@pytest.fixture
def tiny_env(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("EMODIR_CACHE_DIR", str(tiny_cache))
    yield tiny_cache


def test_smoke_suite_on_the_tiny_preset(
    tiny_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "smoke"
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("EMODIR_LLM_BASE_URL", server.base_url)
        assert main(["eval", "run", str(REPO_ROOT / "evals/suites/smoke.yaml"), "--out", str(out)]) == 0
    assert "20 sample(s) run, 0 already done, 0 failed" in capsys.readouterr().out
    records = read_records(out / "samples.jsonl")
    assert len(records) == 20 and all(r.ok for r in records)
    for r in records:
        assert Image.open(out / r.images[0]).size == (64, 64)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["diffusion"]["preset"] == "tiny" and len(manifest["diffusion"]["adapter_sha256"]) == 64


def test_real_image_scorers_on_a_tiny_clip(
    tmp_path: Path, settings: Settings, prompt_library: PromptLibrary
) -> None:
    from ed_diffusion.scoring import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "tiny-clip")
    suite = Suite.model_validate(
        {
            "name": "scored",
            "emotions": ["anger", "fear"],
            "prompts": [{"text": "a dog", "content": "dog"}, {"text": "a cat", "content": "cat"}],
            "systems": [{"kind": "plain"}, {"kind": "emogen_baseline", "visual_prompts": False}],
            "images_per_prompt": 2,
            "image_scoring": {
                "clip_model": str(clip),
                "emotion_classifier": "clip_zero_shot",
                "content_scorer": "clip_zero_shot",
                "clip_score": True,
                "diversity": "clip",
                "device": "cpu",
            },
        }
    )
    factory = make_context_factory(settings, prompts=prompt_library, tokens=default_counter())
    out = tmp_path / "run"
    run_suite(suite, out, context_factory=factory, renderer=FakeRenderer())
    summary = finalize_run(out, suite, read_records(out / "samples.jsonl"))  # the real score_images
    row = summary["systems"]["plain_vp"]
    for key in ("emotion_accuracy", "polarity_accuracy", "content_accuracy", "joint_accuracy", "clip_score"):
        assert row["all"]["n"][key] == 2 * 2 * 2, key  # one value per image
        assert 0.0 <= row["all"]["metrics"][key] <= 100.0
    assert set(row["emotions"]["anger"]["metrics"]) >= {"clip_distance", "target_prob"}
    assert not any(k.endswith("_index") for k in row["all"]["metrics"])
    provenance = summary["image_scoring"]  # which scorers, models and conventions produced the numbers
    assert provenance["emotion_classifier"] == "clip_zero_shot" and provenance["clip_model"] == str(clip)
