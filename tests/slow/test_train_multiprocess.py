"""Training on several processes (gloo on the CPU) equals one process at the same global batch (issue #15).

Two processes of batch 1 must give the loss sequence of one process of batch 2: every process draws the
global batch's noise from the same generator and keeps its rows, gradients are averaged by DDP, and the
logged loss is the mean over processes. Only rank 0 writes metrics and checkpoints.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ed_common.settings import REPO_ROOT

pytestmark = pytest.mark.slow

SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from pathlib import Path
from ed_diffusion.training.config import DPOTrainConfig, SFTTrainConfig
from ed_diffusion.training.loop import train
kind, out, bs, cache = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
common = dict(output_dir=out, max_steps=4, batch_size=bs, checkpoint_every=2, log_every=1, learning_rate=1e-3,
              seed=4)
if kind == "sft_bank":  # the trainable bank is outside the DDP-wrapped UNet
    cfg = SFTTrainConfig(**common, train_bank=True)
else:
    cfg = SFTTrainConfig(**common) if kind == "sft" else DPOTrainConfig(**common, w_sft=0.5)
res = train(cfg, cache_dir=Path(cache))
print("RANK", os.environ.get("RANK", "0"), "LOSSES", json.dumps(res.losses), flush=True)
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun() -> list[str]:
    """``torchrun --nproc_per_node 2`` on a free port, through this interpreter (no PATH needed)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_port()),
    ]


def _losses(cmd: list[str], tmp_path: Path) -> dict[str, list[float]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    result = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = {}
    for line in result.stdout.splitlines():
        if line.startswith("RANK "):
            _, rank, _, losses = line.split(" ", 3)
            found[rank] = json.loads(losses)
    return found


@pytest.mark.parametrize("kind", ["sft", "dpo", "sft_bank"])
def test_two_processes_give_the_loss_sequence_of_one(cache: Path, tmp_path: Path, kind: str) -> None:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    one = _losses([sys.executable, str(script), kind, str(tmp_path / "one"), "2", str(cache)], tmp_path)["0"]
    two = _losses([*_torchrun(), str(script), kind, str(tmp_path / "two"), "1", str(cache)], tmp_path)
    assert set(two) == {"0", "1"}  # both ranks ran, each knowing its rank
    # The same draws and the same averaged gradients: equal up to the float order of the gradient all-reduce.
    assert two["0"] == pytest.approx(one, rel=1e-4) and two["1"] == two["0"]
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # rank 0 alone writes each row
    assert sorted(p.name for p in (tmp_path / "two").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_accelerate_launch_runs_two_processes_on_the_cpu(cache: Path, tmp_path: Path) -> None:
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    # accelerate's --cpu flag starts one process unless MPI is set up; --multi_gpu is its torch.distributed
    # launcher, and the trainer picks gloo where there is no accelerator (docs/design.md, Training).
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(_port()),
    ]
    two = _losses([*cmd, str(script), "sft", str(tmp_path / "acc"), "1", str(cache)], tmp_path)
    one = _losses([sys.executable, str(script), "sft", str(tmp_path / "one"), "2", str(cache)], tmp_path)["0"]
    assert set(two) == {"0", "1"} and two["0"] == pytest.approx(one, rel=1e-4)


def test_the_cli_on_two_processes_reports_once(cache: Path, tmp_path: Path) -> None:
    config = tmp_path / "sft.toml"
    config.write_text(
        f'output_dir = "{tmp_path / "cli"}"\nmax_steps = 2\nbatch_size = 1\ncheckpoint_every = 2\n'
    )
    emodir = str(Path(sys.executable).parent / "emodir")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMODIR_CACHE_DIR": str(cache), "COLUMNS": "200"}
    result = subprocess.run(
        [*_torchrun(), emodir, "train", "sft", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("done at step 2") == 1  # rank 0 alone reports
    assert (tmp_path / "cli" / "checkpoint-2" / "adapter.safetensors").is_file()
