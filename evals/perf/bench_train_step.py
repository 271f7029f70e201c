"""Training step time and peak memory: SFT vs DPO, the two DPO references, 1 vs 2 processes (prints ratios).

Every side is a fresh process (its peak RSS is its own) training the tiny preset's adapter on one thread
(``OMP_NUM_THREADS=1``) at the same batch and the same number of steps; the first steps (warm-up: allocator,
first kernels) are not timed. Sides:

- ``sft``: ``train sft`` (one forward per step);
- ``dpo``: ``train dpo`` with image-pair DPO + negative VP + SFT terms against the adapters-off reference;
- ``dpo_frozen``: the same against a frozen copy of the starting adapter (``reference = "initial_adapter"``);
- ``dpo_rows``: ``dpo`` at a quarter of the batch, so that as many rows go through the trained forward and
  backward as in ``sft`` (its images under both visual prompts, the pairs' winners and losers): the cost of
  the objective itself (reference passes, the extra VAE encodes) at equal work for the optimiser;
- ``sft_2proc``: ``train sft`` on 2 processes (torchrun, gloo) at the same global batch: per-step time of the
  pair and the peak RSS of one of them.

Targets (issue #13): DPO / SFT <= 1.6x time and <= 1.05x memory; the frozen reference <= 1.4x the time of
the adapters-off one. Issue #15 asks for the 2-process ratios to be reported.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python evals/perf/bench_train_step.py [--steps 12] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

WARMUP = 2
BATCH = 4


def worker(kind: str, cache: Path, steps: int) -> dict[str, float]:
    """Train ``steps`` steps of ``kind`` in this process; time the steps after the warm-up ones."""
    import torch

    torch.set_num_threads(1)
    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.training.config import DPOTrainConfig, SFTTrainConfig
    from ed_diffusion.training.loop import train

    quiet_third_party()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    out = tempfile.mkdtemp(prefix=f"bench-train-{kind}-")
    common: dict[str, Any] = {
        "output_dir": out,
        "max_steps": steps,
        "batch_size": (BATCH // 4 if kind == "dpo_rows" else BATCH) // world,
        "checkpoint_every": 0,
        "keep_last": 1,
        "log_every": 1,
        "learning_rate": 1e-4,
    }
    if kind.startswith("sft"):
        cfg: Any = SFTTrainConfig(**common)
    else:
        cfg = DPOTrainConfig(
            **common,
            w_sft=0.5,
            w_dpo=1.0,
            w_neg_vp=1.0,
            reference="initial_adapter" if kind == "dpo_frozen" else "adapters_off",
        )
    stamps: list[float] = []
    train(cfg, cache_dir=cache, progress=lambda step, total, row: stamps.append(time.perf_counter()))
    if not stamps:  # ranks > 0 get no progress calls; rank 0 reports
        return {}
    per_step = (stamps[-1] - stamps[WARMUP - 1]) / (len(stamps) - WARMUP)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": per_step, "peak_rss_mb": peak_mb}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_worker(kind: str, cache: Path, steps: int) -> dict[str, float]:
    """One side in fresh process(es); the 2-process side reports rank 0's numbers."""
    args = [__file__, "--worker", kind, "--cache", str(cache), "--steps", str(steps)]
    if kind == "sft_2proc":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
        cmd += [str(_port()), *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return dict(rows[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["sft", "dpo", "dpo_frozen", "dpo_rows", "sft_2proc"])
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    if args.worker:
        rank = int(os.environ.get("RANK", "0"))
        result = worker(args.worker, args.cache, args.steps)
        if rank == 0:
            print(json.dumps(result), flush=True)
        return 0
    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.presets import resolve_preset

    quiet_third_party()
    cache = Path(tempfile.mkdtemp(prefix="bench-train-cache-"))
    resolve_preset("tiny", cache)  # built once, outside every timing
    kinds = ("sft", "dpo", "dpo_frozen", "dpo_rows", "sft_2proc")
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for _ in range(args.repeats):  # alternate sides, so machine noise hits all alike
        for kind in kinds:
            runs[kind].append(run_worker(kind, cache, args.steps))

    def med(kind: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[kind])

    print(
        f"[tiny preset, global batch {BATCH}, {args.steps} steps ({WARMUP} untimed), median of "
        f"{args.repeats} runs, each side in its own process, one thread each]"
    )
    for kind in kinds:
        step_ms, peak = med(kind, "step_s") * 1000, med(kind, "peak_rss_mb")
        print(f"  {kind:<11} {step_ms:8.1f} ms/step   peak RSS {peak:6.0f} MB")
    t = {k: med(k, "step_s") for k in kinds}
    m = {k: med(k, "peak_rss_mb") for k in kinds}
    print(f"  DPO / SFT time, same batch_size        {t['dpo'] / t['sft']:.2f}x   (4x the trained rows)")
    print(f"  DPO / SFT memory, same batch_size      {m['dpo'] / m['sft']:.3f}x")
    print(f"  DPO / SFT time, equal trained rows     {t['dpo_rows'] / t['sft']:.2f}x   (target <= 1.6)")
    print(f"  DPO / SFT memory, equal trained rows   {m['dpo_rows'] / m['sft']:.3f}x   (target <= 1.05)")
    print(f"  frozen ref / adapters-off ref, DPO time    {t['dpo_frozen'] / t['dpo']:.2f}x   (target <= 1.4)")
    print(f"  frozen ref / adapters-off ref, DPO memory  {m['dpo_frozen'] / m['dpo']:.3f}x")
    print(
        f"  2 processes / 1, SFT time per step   {t['sft_2proc'] / t['sft']:.2f}x   (reported; 2 cores here)"
    )
    print(f"  2 processes / 1, peak RSS per process {m['sft_2proc'] / m['sft']:.2f}x   (reported)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
