"""Family: training resume is exact or refused (tiny preset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ed_diffusion.training.checkpoints import ResumeMismatchError
from ed_diffusion.training.config import DPOTrainConfig, SFTTrainConfig
from ed_diffusion.training.loop import latest_checkpoint, train

pytestmark = pytest.mark.slow
COMMON: dict[str, Any] = dict(
    max_steps=4, batch_size=2, checkpoint_every=2, log_every=1, learning_rate=1e-3, seed=4
)


@pytest.fixture(scope="module")
def full(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    out = tmp_path_factory.mktemp("full")
    return train(SFTTrainConfig(output_dir=str(out), **COMMON), cache_dir=cache).losses


def _half_run(cache: Path, out: Path, **over: Any) -> SFTTrainConfig:
    cfg = SFTTrainConfig(output_dir=str(out), **(COMMON | over))
    train(cfg, cache_dir=cache, stop_after=2)
    return cfg


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 5}, "seed 4 -> 5"),
        ({"learning_rate": 2e-3}, "learning_rate"),
        ({"batch_size": 4}, "batch_size"),
    ],
)
def test_a_resume_that_cannot_be_exact_is_refused_naming_the_fields(
    cache: Path, tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    _half_run(cache, tmp_path / "r")
    with pytest.raises(ResumeMismatchError, match=named):
        train(SFTTrainConfig(output_dir=str(tmp_path / "r"), **(COMMON | change)), cache_dir=cache)


def test_a_longer_run_may_resume(cache: Path, tmp_path: Path) -> None:
    _half_run(cache, tmp_path / "r")
    more = SFTTrainConfig(output_dir=str(tmp_path / "r"), **(COMMON | {"max_steps": 5}))
    assert train(more, cache_dir=cache).step == 5


def test_dpo_into_an_sft_run_directory_is_refused(cache: Path, tmp_path: Path) -> None:
    _half_run(cache, tmp_path / "sft")
    config = (tmp_path / "sft" / "config.toml").read_text()
    with pytest.raises(ResumeMismatchError, match="holds a SFTTrainConfig run"):
        train(DPOTrainConfig(output_dir=str(tmp_path / "sft"), **COMMON), cache_dir=cache)
    assert (tmp_path / "sft" / "config.toml").read_text() == config  # nothing of the SFT run replaced


def test_a_torn_metrics_line_and_a_corrupt_checkpoint_still_resume_exactly(
    cache: Path, tmp_path: Path, full: list[float]
) -> None:
    out = tmp_path / "r"
    cfg = _half_run(cache, out, checkpoint_every=1)  # checkpoints 1 and 2
    assert latest_checkpoint(out) == out / "checkpoint-2"
    (out / "checkpoint-2" / "adapter.safetensors").write_bytes(b"torn")  # a kill mid-write
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 3, "lo')  # a torn last line
    resumed = train(cfg, cache_dir=cache)
    assert resumed.step == 4
    assert (out / "checkpoint-2.unreadable").is_dir()  # set aside, not deleted
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == pytest.approx(full, abs=0, rel=0)  # exact from checkpoint 1
