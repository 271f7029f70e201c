"""``pairs build`` throughput: candidates rendered and scored per second, batched vs one at a time.

One process, one loaded renderer and scorer (the world colour oracle), the same groups and seeds on both
sides; the sides alternate over ``--repeats`` rounds, each into a fresh directory, and the median is reported:
- batched: a group's K candidates in one render call (``pairs build``'s default);
- one at a time: K render calls of one image (``--one-at-a-time``).
On a CPU with one thread a batch is about as fast per image as single images (no idle parallelism to fill);
on a GPU it is several times faster. The ratio is what this prints, not a target met here.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python evals/perf/bench_pairs.py [--preset tiny|world] [--candidates 8]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    """Print candidates/s of both modes and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("tiny", "world"), default="world")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from ed_common.settings import load_settings
    from ed_diffusion.logs import quiet_third_party
    from evals.pair_select import SelectOptions
    from evals.pairs import BuildSpec, SuiteScorer, build_pairs, pick_system
    from evals.suite import Suite
    from graphs.renderer import build_renderer

    torch.set_num_threads(1)
    quiet_third_party()
    suite = Suite.model_validate(
        {
            "name": "bench-pairs",
            "prompts": [
                {"text": "a star", "content": "star", "emotions": ["fear", "contentment"]},
                {"text": "a house", "content": "house", "emotions": ["anger", "awe"]},
            ],
            "systems": [{"kind": "plain", "visual_prompts": args.preset == "tiny"}],
            "render": {"steps": 8},
            "image_scoring": {"emotion_classifier": "world_oracle"},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, preset=args.preset, cache_dir=Path(tmp) / "cache")
        renderer = build_renderer(settings)
        scorer = SuiteScorer(suite)
        system = pick_system(suite, None)
        groups = sum(len(suite.emotions_for(p)) for p in suite.prompts)
        n = groups * args.candidates
        rates: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.repeats + 1):  # round 0 warms up (first-call costs) and is not counted
            for batched in (True, False):
                spec = BuildSpec(suite, system, args.candidates, seed=0, batched=batched)
                out = Path(tmp) / f"r{r}-{'batched' if batched else 'single'}"
                start = time.perf_counter()
                build_pairs(
                    spec,
                    out,
                    renderer=renderer,
                    scorer=scorer,
                    options=SelectOptions(min_margin=0.0),
                    manifest={"pairs_version": 1},
                )
                if r:
                    rates[batched].append(n / (time.perf_counter() - start))
    many, single = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"preset {args.preset}: {groups} groups x {args.candidates} candidates, {args.repeats} rounds")
    print(f"  batched        {many:7.2f} candidates/s (render + score + selection and sheets)")
    print(f"  one at a time  {single:7.2f} candidates/s")
    print(f"  batched / one at a time: {many / single:.2f}x")


if __name__ == "__main__":
    main()
