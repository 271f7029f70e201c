"""MC-Diffusion vs the stock diffusers pipeline on the same tiny config (a benchmark: it prints ratios).

Each side runs in its own fresh process (so its peak RSS is its own), on the tiny preset's SDXL-class
weights, with the same prompt, steps, size, guidance and seeds:
- per-image time: MC-Diffusion ``--n N`` (retrieval + adapter + PNG writes; one batched pipeline call) / the
  stock pipeline with ``num_images_per_prompt=N`` and one generator per image. Target <= 1.10.
  Reported at 64 px (the preset's size) and at a larger size: the adapter adds a fixed number of small ops
  per cross-attention layer, which a tiny UNet magnifies (its own ops are just as small).
- batched / sequential: MC-Diffusion's batched render of N images against N one-image renders (reported; on a
  GPU a batch is several times faster per image, on one CPU thread about the same).
- load once: the first one-image render in a process (imports and loading included) / the second.
  Target >= 10x.
- peak memory: peak RSS of the MC-Diffusion process / the stock one. Target <= 1.2.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python evals/perf/bench_render.py [--images 8] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

PROMPT = "a red fox in the snow, soft morning light"
NEGATIVE = "blurry"


def _mc_render(cache: Path, size: int, *, sequential: bool = False) -> Callable[[Path, int], None]:
    from ed_common.render_contract import RenderRequest
    from ed_diffusion.pipeline import get_renderer
    from ed_diffusion.presets import resolve_preset

    renderer = get_renderer(resolve_preset("tiny", cache))  # loads lazily, on the first render

    def render(out: Path, n: int) -> None:
        for i, count in enumerate([1] * n if sequential else [n]):
            renderer.render(
                RenderRequest(
                    prompt=PROMPT,
                    negative_prompt=NEGATIVE,
                    emotion="fear",
                    n_images=count,
                    seed=i,
                    out_dir=out / str(i),
                    width=size,
                    height=size,
                )
            )

    return render


def _stock_render(cache: Path, size: int) -> Callable[[Path, int], None]:
    import torch
    from diffusers import StableDiffusionXLPipeline

    from ed_diffusion.presets import resolve_preset

    spec = resolve_preset("tiny", cache)
    state: dict[str, Any] = {}

    def render(out: Path, n: int) -> None:
        if "pipe" not in state:
            state["pipe"] = StableDiffusionXLPipeline.from_pretrained(  # type: ignore[no-untyped-call]
                spec.model, local_files_only=True
            )
            state["pipe"].set_progress_bar_config(disable=True)
        state["pipe"](
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            width=size,
            height=size,
            num_images_per_prompt=n,
            generator=[torch.Generator("cpu").manual_seed(i) for i in range(n)],
        )

    return render


def worker(kind: str, cache: Path, images: int, size: int) -> dict[str, float]:
    """Time one side in this (fresh) process."""
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    from ed_diffusion.logs import quiet_third_party

    quiet_third_party()
    if kind == "stock":
        render = _stock_render(cache, size)
    else:
        render = _mc_render(cache, size, sequential=kind == "mc_seq")
    out = Path(tempfile.mkdtemp(prefix="bench-render-"))
    render(out / "first", 1)
    first = time.perf_counter() - t0  # imports + load + one image: what a user waits for the first time
    t0 = time.perf_counter()
    render(out / "second", 1)
    second = time.perf_counter() - t0
    t0 = time.perf_counter()
    render(out / "batch", images)
    per_image = (time.perf_counter() - t0) / images
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_s": first, "second_s": second, "per_image_s": per_image, "peak_rss_mb": peak_mb}


def run_worker(kind: str, cache: Path, images: int, size: int) -> dict[str, float]:
    """One side in a fresh process."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--cache",
        str(cache),
        "--images",
        str(images),
        "--size",
        str(size),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--large", type=int, default=256, help="a second size for the per-image ratio")
    parser.add_argument("--worker", choices=["mc", "mc_seq", "stock"])
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.cache, args.images, args.size)))
        return 0
    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.presets import resolve_preset

    quiet_third_party()
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    resolve_preset("tiny", cache)  # build the preset's files once, outside every timing
    runs: dict[str, list[dict[str, float]]] = {
        k: [] for k in ("mc", "mc_seq", "stock", "mc_large", "stock_large")
    }
    for _ in range(args.repeats):  # alternate sides, so machine noise hits both alike
        runs["mc"].append(run_worker("mc", cache, args.images, args.size))
        runs["stock"].append(run_worker("stock", cache, args.images, args.size))
        runs["mc_seq"].append(run_worker("mc_seq", cache, args.images, args.size))
        runs["mc_large"].append(run_worker("mc", cache, args.images, args.large))
        runs["stock_large"].append(run_worker("stock", cache, args.images, args.large))

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    print(
        f"[tiny SDXL-class, 4 steps, {args.images} images per request, median of {args.repeats} runs, "
        "each side in its own process]"
    )
    for label, mc, stock in ((args.size, "mc", "stock"), (args.large, "mc_large", "stock_large")):
        a, b = med(mc, "per_image_s"), med(stock, "per_image_s")
        print(
            f"  {label:>4}px per image, batched: stock {b * 1000:.1f} ms, MC-Diffusion {a * 1000:.1f} ms, "
            f"ratio {a / b:.2f}x   (target <= 1.10)"
        )
    seq = med("mc_seq", "per_image_s") / med("mc", "per_image_s")
    print(f"  MC sequential / batched per image  {seq:.2f}x   (reported: >1 = batching is faster)")
    load_ratio = med("mc", "first_s") / med("mc", "second_s")
    print(f"  MC first render / second  {load_ratio:.1f}x   (target >= 10x: components load once)")
    mem = med("mc", "peak_rss_mb") / med("stock", "peak_rss_mb")
    print(
        f"  peak RSS MC / stock       {med('mc', 'peak_rss_mb'):.0f} / {med('stock', 'peak_rss_mb'):.0f} MB, "
        f"ratio {mem:.2f}x   (target <= 1.2)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
