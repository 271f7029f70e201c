"""`emodir pairs build|select` and `emodir world make` as a user runs them, on the shipped world preset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli import main
from ed_diffusion.training.datasets import load_preference_pairs
from tests.cli_helpers import one_line

pytestmark = pytest.mark.slow

SUITE = """\
name: pairs-cli
prompts:
  - {text: a star, content: star, emotions: [fear, contentment]}
  - {text: a ring, content: ring, emotions: [anger]}
systems:
  - {kind: plain, name: text_only, visual_prompts: false, template: "{prompt}, feeling {emotion}"}
settings:
  preset: world
image_scoring:
  emotion_classifier: world_oracle
"""


def test_build_resume_and_reselect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "pairs"
    assert (
        main(["pairs", "build", str(suite), "--out", str(out), "--candidates", "3", "--min-margin", "0"]) == 0
    )
    printed = capsys.readouterr()
    # How many groups clear the margin depends on the model; every group is paired or counted as skipped.
    found = re.search(r"done: (\d) pair\(s\) from 3 group\(s\) of 9 candidates", printed.out)
    assert found is not None and "candidates/s" in printed.err
    manifest = json.loads((out / "manifest.json").read_text())
    result = manifest["result"]
    assert result["pairs"] == int(found.group(1)) and result["pairs"] + sum(result["skipped"].values()) == 3
    assert manifest["diffusion"]["preset"] == "world" and manifest["weights"]["adapter_sha256"]
    assert manifest["candidates"] == 3 and manifest["suite"]["name"] == "pairs-cli"
    assert sorted(p.name for p in (out / "sheets").iterdir()) == ["000-a-star.png", "001-a-ring.png"]

    # A finished build resumed renders nothing; one with other candidates is refused.
    assert main(["pairs", "build", str(suite), "--out", str(out), "--candidates", "3", "--resume"]) == 0
    printed = capsys.readouterr()
    assert "0 group(s) rendered and scored" in printed.err and "nothing to do" in printed.out
    line = one_line(
        capsys, ["pairs", "build", str(suite), "--out", str(out), "--candidates", "4", "--resume"]
    )
    assert "built with other candidates" in line

    # Reselecting under the other-emotion rule: the ring has no other emotion, so it is counted, not paired.
    assert main(["pairs", "select", str(out), "--loser", "other_emotion", "--min-margin", "0"]) == 0
    assert "(skipped: 1 no_loser_candidate)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert {(r["emotion"], r["loser_emotion"]) for r in rows} == {
        ("fear", "contentment"),
        ("contentment", "fear"),
    }
    pairs, _ = load_preference_pairs(out / "pairs.jsonl")  # what `train dpo` reads
    assert [p.caption for p in pairs] == [
        "a star, feeling contentment",
        "a star, feeling fear",
    ]  # EmoSet order


def test_bad_inputs_fail_before_any_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("emotion_classifier: world_oracle", "content_scorer: world_oracle"))
    line = one_line(capsys, ["pairs", "build", str(suite), "--out", str(tmp_path / "o")])
    assert "pairs build needs image_scoring.emotion_classifier" in line
    assert main(["pairs", "build", str(suite), "--out", str(tmp_path / "o"), "--candidates", "1"]) == 2
    assert "Invalid value for '--candidates'" in capsys.readouterr().err
    line = one_line(capsys, ["pairs", "select", str(tmp_path)])
    assert "holds no manifest.json; it is not a pairs build" in line
    good = tmp_path / "good.yaml"
    good.write_text(SUITE)
    assert main(["pairs", "build", str(good), "--out", str(tmp_path / "x"), "--system", "nope"]) == 2
    assert "suite 'pairs-cli' has no such system (text_only)" in capsys.readouterr().err
    # A bank or adapter with a system that renders without visual prompts would be silently unused.
    args = ["pairs", "build", str(good), "--out", str(tmp_path / "x"), "--adapter", str(good)]
    assert main(args) == 2
    assert "renders without visual prompts" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "missing.safetensors")]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written before the checks


def test_world_make_writes_a_dataset_bank_build_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "world"
    assert main(["world", "make", "--out", str(out), "--train", "8", "--test", "4"]) == 0
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all((out / r["image"]).is_file() for r in rows)
    assert {"image", "caption", "emotion"} <= set(rows[0])
    capsys.readouterr()
    line = one_line(capsys, ["world", "make", "--out", str(out), "--train", "8"])
    assert "already exists and is not empty" in line
