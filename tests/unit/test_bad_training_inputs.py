"""Family: bad inputs to the trainers, the world benchmark and the bank builder (no model is trained here).

Each is refused in one line that names the value, file or directory and what is allowed, before anything
is written; checkpoint state that disagrees with itself is unreadable; the training manifest keeps a run's
story across resumes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_common.hashing import file_sha256
from ed_diffusion.bank import VisualPromptBank, check_cluster_sizes
from ed_diffusion.emotion_datasets import EmotionSample
from ed_diffusion.errors import BankError
from ed_diffusion.training.checkpoints import checkpoints, read_state
from ed_diffusion.training.config import MAX_TRAIN_SEED, ConfigError, DPOTrainConfig, SFTTrainConfig
from ed_diffusion.training.manifest import MANIFEST_FILE, RunManifest
from ed_diffusion.world_bench.bench import MAX_BENCH_SEED, BenchConfig, check_bench_dir
from tests.cli_helpers import one_line


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------------------------ world bench --out
def test_world_bench_refuses_a_directory_that_is_not_a_benchmark(tmp_path: Path, capsys: Any) -> None:
    run = tmp_path / "eval-run"
    (run / "images").mkdir(parents=True)
    (run / "manifest.json").write_text('{"fingerprint": "abc"}\n')
    (run / "samples.jsonl").write_text("")
    before = _tree(run)
    line = one_line(capsys, ["world", "bench", "--out", str(run), "--quick"])
    assert f"--out {run}" in line and "config.json is missing" in line and "new or empty" in line
    assert _tree(run) == before  # not one file of ours


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"model": "bert"}', "is not a world-benchmark config"),  # a model directory's config.json
        ("{not json", "is unreadable"),
        ("[1, 2]", "is not a JSON object"),
    ],
    ids=["other-config", "damaged", "not-an-object"],
)
def test_world_bench_refuses_a_config_json_that_is_not_a_benchmarks(
    tmp_path: Path, capsys: Any, config: str, message: str
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text(config)
    line = one_line(capsys, ["world", "bench", "--out", str(tmp_path / "d"), "--quick"])
    assert "--out" in line and message in line
    assert _tree(tmp_path / "d") == ["config.json"]


def test_a_new_an_empty_and_a_benchmark_directory_are_accepted(tmp_path: Path) -> None:
    check_bench_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_bench_dir(tmp_path / "empty")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "config.json").write_text(json.dumps(asdict(BenchConfig.quick()) | {"bench_version": 2}))
    (bench / "seed0").mkdir()
    check_bench_dir(bench)  # resumed as before
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        check_bench_dir(tmp_path / "file")


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("99999999999999999999999", "99999999999999999999999 is out of range"),
        (str(MAX_BENCH_SEED + 1), f"{MAX_BENCH_SEED + 1} is out of range"),
        ("-1", "-1 is out of range"),
        ("0,1,0", "0 given more than once"),
        (",", "no seed"),
        ("0,x", "is not a list of integers"),
    ],
    ids=["huge", "past-bound", "negative", "duplicate", "empty", "not-int"],
)
def test_world_bench_seeds_are_checked_before_anything_is_written(
    tmp_path: Path, capsys: Any, seeds: str, message: str
) -> None:
    line = one_line(capsys, ["world", "bench", "--out", str(tmp_path / "b"), "--quick", "--seeds", seeds])
    assert line.startswith("error: --seeds") and message in line
    if "integers" not in message:
        assert f"0..{MAX_BENCH_SEED}" in line
    assert not (tmp_path / "b").exists()


def test_bench_config_bounds_its_seeds() -> None:
    assert BenchConfig(seeds=(0, MAX_BENCH_SEED)).seeds == (0, MAX_BENCH_SEED)
    for bad in ((MAX_BENCH_SEED + 1,), (2**64,)):
        with pytest.raises(InvalidInputError, match=r"seeds=.*out of range"):
            BenchConfig(seeds=bad)
    with pytest.raises(InvalidInputError, match="True is not an integer"):
        BenchConfig(seeds=(True,))
    many = (*range(200_000), 7)
    with pytest.raises(InvalidInputError, match=r"^seeds=\(0, 1, .{0,80}: 7 given more than once"):
        BenchConfig(seeds=many)  # a short message, found without a quadratic scan
    with pytest.raises(InvalidInputError, match=f"world_seed=-1; allowed: an integer 0..{MAX_BENCH_SEED}"):
        BenchConfig(world_seed=-1)


def test_a_train_seed_past_the_generators_range_is_refused() -> None:
    assert SFTTrainConfig(seed=MAX_TRAIN_SEED).seed == MAX_TRAIN_SEED
    allowed = rf"SFTTrainConfig.seed = {MAX_TRAIN_SEED + 1} .*0\.\.{MAX_TRAIN_SEED}"
    with pytest.raises(ConfigError, match=allowed):
        SFTTrainConfig(seed=MAX_TRAIN_SEED + 1)


# ------------------------------------------------------------------------------------ checkpoint state
def _checkpoint(root: Path, step: int, state: Any) -> Path:
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    return ckpt


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"step": 5, "lr_scheduler": {}}, "state.json says step 5 but the directory is checkpoint-4"),
        ({"step": "4", "lr_scheduler": {}}, "step '4'; allowed: an integer"),
        ({"step": True, "lr_scheduler": {}}, "step True"),
        ({"lr_scheduler": {}}, "step None"),
        ({"step": 4}, "no lr_scheduler"),
        ([4], "not an object"),
        ('{"step": 4, "lr', "Unterminated"),  # torn
    ],
    ids=["other-step", "string", "bool", "missing", "no-scheduler", "list", "torn"],
)
def test_a_state_json_that_disagrees_with_its_checkpoint_is_unreadable(
    tmp_path: Path, state: Any, message: str
) -> None:
    ckpt = _checkpoint(tmp_path, 4, state)
    with pytest.raises(ValueError, match=message):  # what the trainer sets aside, like a torn file
        read_state(ckpt)


def test_a_consistent_state_json_reads_and_checkpoints_sort_by_step(tmp_path: Path) -> None:
    for step in (10, 2, 9):
        _checkpoint(tmp_path, step, {"step": step, "lr_scheduler": {"last_epoch": step}})
    assert read_state(tmp_path / "checkpoint-9")["step"] == 9
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-9", "checkpoint-10"]


# ------------------------------------------------------------------------------------ training manifest
def test_the_manifest_records_a_run_and_keeps_its_start_across_resumes(tmp_path: Path) -> None:
    bank, data = tmp_path / "bank.safetensors", tmp_path / "data"
    bank.write_bytes(b"bank bytes")
    data.mkdir()  # an EmoSet root: named, not hashed
    cfg = SFTTrainConfig(output_dir=str(tmp_path / "run"), max_steps=4)
    (tmp_path / "run").mkdir()
    inputs = {"bank": str(bank), "adapter_init": None, "data": str(data)}
    first = RunManifest.start(tmp_path / "run", cfg, inputs, 0)
    path = tmp_path / "run" / MANIFEST_FILE
    written = json.loads(path.read_text())
    assert written["status"] == "running" and written["kind"] == "sft" and written["step"] == 0
    assert written["config"]["max_steps"] == 4 and written["finished"] is None
    assert written["inputs"] == {
        "bank": {"path": str(bank), "sha256": file_sha256(bank)},
        "data": {"path": str(data), "sha256": None},
    }
    assert isinstance(written["emodir_version"], str) and "git_sha" in written and "git_dirty" in written
    first.end("interrupted", 2, tmp_path / "run" / "checkpoint-2")
    after_first = json.loads(path.read_text())
    assert after_first["status"] == "interrupted" and after_first["step"] == 2 and after_first["finished"]
    assert after_first["last_checkpoint"] == "checkpoint-2"

    longer = SFTTrainConfig(output_dir=str(tmp_path / "run"), max_steps=6)
    second = RunManifest.start(tmp_path / "run", longer, inputs, 2)
    second.end("failed", 3, None, RuntimeError("loss became\nnan"))
    final = json.loads(path.read_text())
    assert final["started"] == after_first["started"] and final["from_step"] == 0
    assert final["status"] == "failed" and final["step"] == 3
    assert final["error"] == "RuntimeError: loss became nan"
    (resume,) = final["resumes"]
    assert resume["from_step"] == 2 and resume["status"] == "failed" and resume["step"] == 3
    assert resume["config_changes"] == {"max_steps": [4, 6]}


def test_a_restart_from_step_0_or_a_damaged_manifest_starts_a_new_one(tmp_path: Path) -> None:
    cfg = DPOTrainConfig(output_dir=str(tmp_path))
    path = tmp_path / MANIFEST_FILE
    path.write_text(json.dumps({"started": "long ago", "resumes": [{}]}))
    RunManifest.start(tmp_path, cfg, {}, 0)  # nothing survived of the earlier attempt
    assert json.loads(path.read_text())["resumes"] == [] and json.loads(path.read_text())["kind"] == "dpo"
    path.write_text("{torn")
    RunManifest.start(tmp_path, cfg, {}, 3)
    fresh = json.loads(path.read_text())
    assert fresh["from_step"] == 3 and fresh["resumes"] == [] and fresh["status"] == "running"


# ------------------------------------------------------------------------------------------------ banks
def _samples(counts: dict[Emotion, int], distinct: bool = True) -> list[EmotionSample]:
    return [
        EmotionSample(Path(f"/x/{e.value}{i}.png"), f"a photo {i if distinct else 0}", e)
        for e, n in counts.items()
        for i in range(n)
    ]


def test_too_few_samples_name_the_empty_emotions_and_the_largest_clusters() -> None:
    some = {e: 5 for e in Emotion if e not in (Emotion.FEAR, Emotion.AWE)}
    with pytest.raises(BankError) as info:
        check_cluster_sizes(_samples(some), 2)
    msg = str(info.value)
    assert "no samples of emotion(s) awe, fear" in msg and "at least clusters=2" in msg
    assert "at most 0" not in msg
    counts = {e: 5 for e in Emotion} | {Emotion.SADNESS: 3}
    with pytest.raises(BankError, match=r"clusters=100: .*sadness=3; allowed: clusters <= 3"):
        check_cluster_sizes(_samples(counts), 100)
    same = _samples({e: 6 for e in Emotion if e != Emotion.ANGER}) + _samples({Emotion.ANGER: 6}, False)
    with pytest.raises(BankError, match=r"anger=6 \(1 distinct captions\); allowed: clusters <= 1"):
        check_cluster_sizes(same, 2)
    check_cluster_sizes(_samples(counts), 3)


def test_bank_show_of_a_directory_says_a_file_is_expected(tmp_path: Path, capsys: Any) -> None:
    line = one_line(capsys, ["bank", "show", str(tmp_path)])
    assert f"{tmp_path} is a directory; expected a bank file" in line and "does not exist" not in line
    with pytest.raises(BankError, match="does not exist"):
        VisualPromptBank.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "'tpu'"),
        (["--clusters", "0"], "--clusters 0; allowed: an integer >= 1"),
        (["--image-kind", "vit"], "--image-kind 'vit' is unknown"),
    ],
    ids=["device", "clusters", "image-kind"],
)
def test_bank_build_checks_its_options_before_reading_anything(
    tmp_path: Path, capsys: Any, args: list[str], message: str
) -> None:
    # The data does not exist: an error about it would mean the options were checked too late.
    argv = ["bank", "build", "--data", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "b.st")]
    line = one_line(capsys, [*argv, *args])
    assert message in line and "absent" not in line
    assert not (tmp_path / "b.st").exists()
