"""The ``world`` preset: the world-trained model, its bank and its full adapter, for ``emodir generate``.

It is seed 0 of a world benchmark with the full schedule: the base pipeline (VAE, text encoder, UNet), the
style bank and the adapter trained with SFT -> image-pair DPO + negative visual prompt. ``emodir world bench``
(full, not ``--quick``) installs it when the cache has none; otherwise the first ``resolve_preset("world")``
trains it: one seed of the benchmark, all four systems and their scoring included (10-15 minutes on one
CPU core, once; a file lock makes concurrent callers wait for one build).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ed_common.errors import InvalidInputError
from ed_diffusion.world.systems import ADAPTER_FILES, BANK_FILE, ENCODERS_DIR, PIPELINE_DIR

PRESET_JSON = "preset.json"
PRESET_SYSTEM = "vp_dpo_neg_vp"


@dataclass(frozen=True)
class WorldPresetFiles:
    """Where the installed world preset lives."""

    root: Path
    pipeline: Path
    bank: Path
    adapter: Path
    encoders: Path


def _files(root: Path) -> WorldPresetFiles:
    return WorldPresetFiles(
        root, root / PIPELINE_DIR, root / BANK_FILE, root / "adapter.safetensors", root / ENCODERS_DIR
    )


def world_preset_ready(root: Path) -> bool:
    """Whether a complete preset made by this version of the world code is installed at ``root``.

    (``emodir world bench --quick`` never installs its smoke model; a preset from an older ``BENCH_VERSION``
    is retrained.)
    """
    from ed_diffusion.world.bench import BENCH_VERSION

    path = root / PRESET_JSON
    if not path.is_file():
        return False
    try:
        version = json.loads(path.read_text(encoding="utf-8"))["config"].get("bench_version", 1)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(version == BENCH_VERSION)


def install_world_preset(
    bench_dir: Path, root: Path, *, seed: int, replace: bool = False
) -> WorldPresetFiles:
    """Copy seed ``seed`` of a finished benchmark into ``root`` (atomically: temp dir, then rename).

    Raises:
        FileNotFoundError: the benchmark has no trained seed ``seed``.
    """
    src = Path(bench_dir) / f"seed{seed}"
    adapter = src / ADAPTER_FILES[PRESET_SYSTEM]
    if not adapter.is_file() or not (src / PIPELINE_DIR / "model_index.json").is_file():
        raise FileNotFoundError(f"no trained world model in {src}; run `emodir world bench` first")
    root = Path(root)
    if world_preset_ready(root) and not replace:
        return _files(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        shutil.copytree(src / PIPELINE_DIR, tmp / PIPELINE_DIR)
        shutil.copy2(src / BANK_FILE, tmp / BANK_FILE)
        shutil.copy2(adapter, tmp / "adapter.safetensors")
        shutil.copytree(_encoders_of(Path(bench_dir), src / BANK_FILE), tmp / ENCODERS_DIR)
        config = json.loads((Path(bench_dir) / "config.json").read_text())
        meta = {
            "source": str(Path(bench_dir).resolve()),
            "seed": seed,
            "system": PRESET_SYSTEM,
            "config": config,
        }
        (tmp / PRESET_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _files(root)


def _encoders_of(bench_dir: Path, bank_file: Path) -> Path:
    """The retrieval encoders the bank was built with (named in its metadata; the bench may have moved)."""
    from ed_diffusion.bank import VisualPromptBank

    text_dir = Path(VisualPromptBank.load(bank_file).metadata.text_encoder)  # <encoders>/<name>/text
    found = bench_dir / ENCODERS_DIR / text_dir.parent.name
    if not (found / text_dir.name).is_dir():
        raise FileNotFoundError(
            f"the retrieval encoders of {bank_file} ({text_dir.parent.name}) are not in {found.parent}"
        )
    return found


def ensure_world_preset(
    root: Path, *, config: Any = None, on_progress: Callable[[str], None] | None = None
) -> WorldPresetFiles:
    """The installed preset at ``root``; trains and installs it first if there is none.

    Args:
        root: the preset directory (``<cache>/world-preset``).
        config: a ``BenchConfig`` for the one-off training (default: the full benchmark's schedule, one seed).
        on_progress: messages for a spinner.
    """
    import fcntl

    root = Path(root)
    if world_preset_ready(root):
        return _files(root)
    from ed_diffusion.world.bench import BenchConfig, prepare_bench, run_seed

    cfg = config or BenchConfig.full(seeds=(0,), workers=1)
    root.parent.mkdir(parents=True, exist_ok=True)
    build = root.parent / f"{root.name}-build"
    # Several processes (eval shards, a chat and a generate) may ask at once: one builds, the others wait.
    with open(root.parent / f".{root.name}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if world_preset_ready(root):  # another process built it while this one waited
            return _files(root)
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
