"""DPO step vs SFT step on the same tiny model and UNet rows per step (a benchmark: it prints ratios).

"Same batch" = the same number of rows through the UNet: a DPO step on B pairs (2B images: winners and
losers in ONE concatenated forward, plus the reference forward with the adapters disabled) against an SFT step
on 2B images. The negative-visual-prompt step (B images under two visual prompts, concatenated) is reported
too. Each configuration runs in a fresh process, so its peak RSS is its own.
Targets: time <= 2.2x, peak memory <= 1.3x.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python evals/perf/bench_train.py [--pairs 2] [--steps 12] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def worker(kind: str, cache: Path, pairs: int, steps: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    from ed_diffusion.logs import quiet_third_party

    quiet_third_party()
    from ed_diffusion.training.config import DPOTrainConfig, SFTTrainConfig
    from ed_diffusion.training.loop import train

    out = tempfile.mkdtemp(prefix=f"bench-train-{kind}-")
    common = {
        "output_dir": out,
        "max_steps": steps,
        "checkpoint_every": steps + 1,
        "keep_last": 1,
        "log_every": 1,
        "learning_rate": 1e-4,
    }
    cfg: SFTTrainConfig | DPOTrainConfig
    if kind == "sft":
        cfg = SFTTrainConfig(batch_size=2 * pairs, vp_dropout=0.0, **common)  # type: ignore[arg-type]
    elif kind == "dpo":
        cfg = DPOTrainConfig(batch_size=pairs, w_dpo=1.0, w_neg_vp=0.0, **common)  # type: ignore[arg-type]
    else:
        # B images, each under its own and a negative emotion's visual prompt: 2B rows, like the other two.
        cfg = DPOTrainConfig(batch_size=pairs, w_dpo=0.0, w_neg_vp=1.0, **common)  # type: ignore[arg-type]
    train(cfg, cache_dir=cache, resume=False)
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    elapsed = [r["elapsed_s"] for r in rows]
    per_step = [b - a for a, b in itertools.pairwise(elapsed[1:])]  # skip the first step (warm-up)
    return {
        "step_s": statistics.median(per_step),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_worker(kind: str, cache: Path, pairs: int, steps: int) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--cache",
        str(cache),
        "--pairs",
        str(pairs),
        "--steps",
        str(steps),
    ]
    return dict(
        json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=["sft", "dpo", "negvp"])
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.cache, args.pairs, args.steps)))
        return 0
    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.presets import resolve_preset

    quiet_third_party()
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    resolve_preset("tiny", cache)
    runs: dict[str, list[dict[str, float]]] = {"sft": [], "dpo": [], "negvp": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every side alike
        for kind in runs:
            runs[kind].append(run_worker(kind, cache, args.pairs, args.steps))

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    print(f"[tiny SDXL-class, 64 px, {2 * args.pairs} rows per step, median of {args.repeats} runs]")
    for kind, label in (("sft", "SFT"), ("dpo", "image-pair DPO"), ("negvp", "negative-VP DPO")):
        step_ms, rss = med(kind, "step_s") * 1000, med(kind, "peak_rss_mb")
        print(f"  {label:<16} step {step_ms:7.1f} ms   peak RSS {rss:.0f} MB")
    for kind, label in (("dpo", "image-pair DPO"), ("negvp", "negative-VP DPO")):
        t = med(kind, "step_s") / med("sft", "step_s")
        mem = med(kind, "peak_rss_mb") / med("sft", "peak_rss_mb")
        print(f"  {label} / SFT: time {t:.2f}x (target <= 2.2x), peak memory {mem:.2f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
