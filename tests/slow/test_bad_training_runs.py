"""Family: training runs on the tiny preset that meet a bad checkpoint, a bad bank, a crash or an interrupt.

A checkpoint whose state disagrees with its directory is set aside and the resume stays exact; a bank with
fewer clusters than ``num_tokens`` is refused up front naming both; ``manifest.json`` records every run's
inputs, code and how it ended.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ed_common.hashing import file_sha256
from ed_diffusion.bank import VisualPromptBank
from ed_diffusion.presets import resolve_preset
from ed_diffusion.training.config import ConfigError, SFTTrainConfig
from ed_diffusion.training.loop import TrainingDivergedError, check_inputs, latest_checkpoint, train
from tests.cli_helpers import one_line

pytestmark = pytest.mark.slow
COMMON: dict[str, Any] = dict(
    max_steps=4, batch_size=2, checkpoint_every=1, log_every=1, learning_rate=1e-3, seed=4
)


def _manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


def test_a_state_json_with_another_step_is_set_aside_and_the_resume_stays_exact(
    cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = train(SFTTrainConfig(output_dir=str(tmp_path / "full"), **COMMON), cache_dir=cache).losses
    out = tmp_path / "r"
    cfg = SFTTrainConfig(output_dir=str(out), **COMMON)
    train(cfg, cache_dir=cache, stop_after=2)  # checkpoints 1 and 2
    state = out / "checkpoint-2" / "state.json"
    state.write_text(state.read_text().replace('"step": 2', '"step": 3'))  # a hand edit: would skip a step
    with caplog.at_level(logging.WARNING, logger="ed_diffusion.training.checkpoints"):
        resumed = train(cfg, cache_dir=cache)
    assert resumed.step == 4
    assert any("checkpoint-2" in r.getMessage() and "says step 3" in r.getMessage() for r in caplog.records)
    assert (out / "checkpoint-2.unreadable" / "state.json").is_file()  # set aside, not deleted
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows] == pytest.approx(full, abs=0, rel=0)  # exact from checkpoint 1


def test_the_manifest_follows_a_run_through_an_interrupt_and_a_resume(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = SFTTrainConfig(output_dir=str(out), **(COMMON | {"max_steps": 3}))

    def interrupt(step: int, total: int, row: dict[str, float]) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, cache_dir=cache, progress=interrupt)
    first = _manifest(out)
    assert first["status"] == "interrupted" and first["step"] == 2 and first["kind"] == "sft"
    assert first["last_checkpoint"] == "checkpoint-1"  # interrupted before step 2 was saved
    spec = resolve_preset("tiny", cache)
    assert first["inputs"]["bank"] == {"path": str(spec.bank), "sha256": file_sha256(spec.bank)}
    assert first["inputs"]["adapter_init"]["sha256"] == file_sha256(spec.adapter)
    assert len(first["inputs"]["data"]["sha256"]) == 64
    assert first["config"] == json.loads(json.dumps(dataclasses.asdict(cfg))) and first["from_step"] == 0

    assert train(cfg, cache_dir=cache).step == 3
    final = _manifest(out)
    assert final["status"] == "finished" and final["step"] == 3 and final["finished"] >= final["started"]
    assert final["started"] == first["started"] and final["error"] is None
    (resume,) = final["resumes"]
    assert resume["from_step"] == 1 and resume["status"] == "finished" and resume["config_changes"] == {}
    assert final["last_checkpoint"] == "checkpoint-3"


def test_a_diverged_run_is_recorded_as_failed(cache: Path, tmp_path: Path, monkeypatch: Any) -> None:
    import ed_diffusion.training.loop as loop

    real = loop._unet_err
    monkeypatch.setattr(loop, "_unet_err", lambda *a, **k: real(*a, **k) * float("nan"))
    cfg = SFTTrainConfig(output_dir=str(tmp_path / "nan"), **(COMMON | {"max_steps": 2}))
    with pytest.raises(TrainingDivergedError):
        train(cfg, cache_dir=cache)
    failed = _manifest(tmp_path / "nan")
    assert failed["status"] == "failed" and failed["step"] == 0
    assert failed["error"].startswith("TrainingDivergedError: loss became nan at step 1")


def test_a_bank_with_fewer_clusters_than_num_tokens_is_refused_naming_both(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    tiny = VisualPromptBank.load(resolve_preset("tiny", cache).bank)
    small = tmp_path / "small.safetensors"
    VisualPromptBank(
        tiny.text_centres[:, :2].contiguous(),
        tiny.visual_centres[:, :2].contiguous(),
        tiny.counts[:, :2].contiguous(),
        dataclasses.replace(tiny.metadata, clusters=2),
    ).save(small)
    cfg = SFTTrainConfig(output_dir=str(tmp_path / "k"), max_steps=1, num_tokens=4, bank=str(small))
    with pytest.raises(ConfigError, match=f"num_tokens = 4 but the bank {small} has 2 clusters"):
        check_inputs(cfg, cache)
    with pytest.raises(ConfigError, match="allowed: num_tokens <= 4"):  # the preset's own bank, at load
        train(SFTTrainConfig(output_dir=str(tmp_path / "k5"), max_steps=1, num_tokens=5), cache_dir=cache)
    monkeypatch.setenv("EMODIR_CACHE_DIR", str(cache))
    toml = tmp_path / "sft.toml"
    toml.write_text(f'output_dir = "{tmp_path / "k"}"\nmax_steps = 1\nbank = "{small}"\n')
    capsys.readouterr()  # the loading bars of the train() call above
    line = one_line(capsys, ["train", "sft", str(toml)])
    assert (
        str(toml) in line and "num_tokens = 4" in line and str(small) in line and "out of range" not in line
    )
    assert not (tmp_path / "k").exists()


def test_the_cli_writes_a_finished_manifest(cache: Path, tmp_path: Path, monkeypatch: Any) -> None:
    from cli import main

    monkeypatch.setenv("EMODIR_CACHE_DIR", str(cache))
    toml = tmp_path / "dpo.toml"
    toml.write_text(f'output_dir = "{tmp_path / "run"}"\nmax_steps = 1\nbatch_size = 2\n')
    assert main(["train", "dpo", str(toml)]) == 0
    done = _manifest(tmp_path / "run")
    assert done["kind"] == "dpo" and done["status"] == "finished" and done["step"] == 1
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoint-1"
