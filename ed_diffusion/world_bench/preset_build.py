"""Training the ``world`` preset once, on first use: one seed of the full world benchmark, then installed.

All four systems of that seed are trained and scored (10-15 minutes on one CPU core, once); a file lock makes
concurrent callers wait for one build. The app layer asks for it (``graphs.renderer``); looking a preset up
(``ed_diffusion.presets``) never trains anything.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ed_common.errors import InvalidInputError
from ed_diffusion.presets.world import (
    WorldPresetFiles,
    install_world_preset,
    world_preset_files,
    world_preset_ready,
)
from ed_diffusion.world_bench.bench import BenchConfig, prepare_bench, run_seed


def ensure_world_preset(
    root: Path, *, config: Any = None, on_progress: Callable[[str], None] | None = None
) -> WorldPresetFiles:
    """The installed preset at ``root``; trains and installs it first if there is none.

    Args:
        root: the preset directory (``<cache>/world-preset``).
        config: a ``BenchConfig`` for the one-off training (default: the full benchmark's schedule, one seed).
        on_progress: messages for a spinner.
    """
    root = Path(root)
    if world_preset_ready(root):
        return world_preset_files(root)
    cfg = config or BenchConfig.full(seeds=(0,), workers=1)
    root.parent.mkdir(parents=True, exist_ok=True)
    build = root.parent / f"{root.name}-build"
    # Several processes (eval shards, a chat and a generate) may ask at once: one builds, the others wait.
    with open(root.parent / f".{root.name}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if world_preset_ready(root):  # another process built it while this one waited
            return world_preset_files(root)
        if on_progress is not None:
            on_progress(f"training the world preset once into {root} (10-15 minutes on a CPU)")
        try:
            world, vae_dir = prepare_bench(build, cfg)
        except InvalidInputError:  # a build left by another schedule or version: start it again
            shutil.rmtree(build, ignore_errors=True)
            world, vae_dir = prepare_bench(build, cfg)
        if not (build / f"seed{cfg.seeds[0]}" / "result.json").is_file():
            run_seed(cfg.seeds[0], cfg, world.root, vae_dir, build, lambda n, what: None)
        files = install_world_preset(build, root, seed=cfg.seeds[0], replace=True)
        shutil.rmtree(build, ignore_errors=True)
        return files
