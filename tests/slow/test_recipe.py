"""docs/recipe.md's commands, run as written on tiny models: the rehearsal setup block, then the commands
block (the same one the GPU setup feeds). Each step must hand its output to the next."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ed_common.settings import REPO_ROOT
from ed_diffusion.training.datasets import load_preference_pairs

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "docs" / "recipe.md"


def recipe_block(name: str) -> str:
    """The fenced block right after ``<!-- recipe: NAME -->``."""
    text = RECIPE.read_text(encoding="utf-8")
    match = re.search(rf"<!-- recipe: {re.escape(name)} -->\s*```bash\n(.*?)```", text, re.DOTALL)
    assert match is not None, f"docs/recipe.md has no block {name!r}"
    return match.group(1)


def test_the_gpu_setup_sets_every_variable_the_commands_use() -> None:
    used = set(re.findall(r"\$\{?([A-Z_]+)", recipe_block("commands")))
    for setup in ("setup-gpu", "setup-rehearsal"):
        assigned = set(re.findall(r"^([A-Z_]+)=", recipe_block(setup), re.MULTILINE))
        assert used <= assigned, f"{setup} leaves {sorted(used - assigned)} unset"


def test_the_recipe_runs_end_to_end_on_tiny_models(cache: Path, tmp_path: Path) -> None:
    script = "set -euo pipefail\n" + recipe_block("setup-rehearsal") + recipe_block("commands")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "EMODIR_CACHE_DIR": str(cache),  # the tiny preset, built once for this module
        "EMODIR_DATA_DIR": str(tmp_path / "data-dir"),
        "COLUMNS": "200",
    }
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = tmp_path / "runs"
    # Each stage's output exists where the next stage read it.
    assert (runs / "bank" / "bank.safetensors").is_file()
    for stage in ("sft", "dpo"):
        manifest = json.loads((runs / "train" / stage / "manifest.json").read_text())
        assert manifest["status"] == "finished" and (runs / "train" / stage / "adapter.safetensors").is_file()
    final = (runs / "train" / "sft" / "adapter.safetensors").read_bytes()
    assert final == (runs / "train" / "sft" / "checkpoint-8" / "adapter.safetensors").read_bytes()
    scores = (runs / "train" / "sft" / "validation" / "scores.jsonl").read_text().splitlines()
    assert json.loads(scores[-1])["step"] == 8
    pairs, _ = load_preference_pairs(runs / "pairs" / "pairs.jsonl")
    dpo_inputs = json.loads((runs / "train" / "dpo" / "manifest.json").read_text())["inputs"]
    assert pairs and dpo_inputs["pairs"]["path"] == "runs/pairs/pairs.jsonl"
    assert len(list((runs / "generate" / "dog-fear").glob("image_*.png"))) == 4
    summary = json.loads((runs / "eval" / "summary.json").read_text())
    assert summary and (runs / "eval" / "report.html").is_file()
    assert "done" in result.stdout


@pytest.mark.parametrize("name", ["setup-gpu", "setup-rehearsal", "commands"])
def test_each_block_is_valid_bash(name: str) -> None:
    result = subprocess.run(["bash", "-n", "-c", recipe_block(name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
