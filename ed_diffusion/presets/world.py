"""The ``world`` preset's files: where an installed one lives, whether it is current, how one is installed.

It is seed 0 of a world benchmark with the full schedule: the base pipeline (VAE, text encoder, UNet), the
style bank and the adapter trained with SFT -> image-pair DPO + negative visual prompt. ``emodir world bench``
(full, not ``--quick``) installs it; training one on first use is the app's call
(``ed_diffusion.world_bench.preset_build.ensure_world_preset``), never a side effect of looking a preset up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ed_diffusion.bank import VisualPromptBank
from ed_diffusion.world_bench.layout import (
    ADAPTER_FILES,
    BANK_FILE,
    BENCH_VERSION,
    ENCODERS_DIR,
    PIPELINE_DIR,
    PRESET_JSON,
    PRESET_SYSTEM,
)

# The preset that ships with the package (seed 0 of the benchmark in docs/world-bench.md, ~4 MB): used when
# none is installed in the cache, so `emodir generate --preset world` needs no first build. Read-only.
SHIPPED_WORLD_PRESET = Path(__file__).resolve().parent / "world_weights"


@dataclass(frozen=True)
class WorldPresetFiles:
    """Where the installed world preset lives."""

    root: Path
    pipeline: Path
    bank: Path
    adapter: Path
    encoders: Path


def world_preset_files(root: Path) -> WorldPresetFiles:
    """Where the preset's files are (or will be) under ``root``."""
    return WorldPresetFiles(
        root, root / PIPELINE_DIR, root / BANK_FILE, root / "adapter.safetensors", root / ENCODERS_DIR
    )


def world_preset_ready(root: Path) -> bool:
    """Whether a complete preset made by this version of the world code is installed at ``root``.

    (``emodir world bench --quick`` never installs its smoke model; a preset from an older ``BENCH_VERSION``
    is retrained.)
    """
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
        return world_preset_files(root)
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
    return world_preset_files(root)


def _encoders_of(bench_dir: Path, bank_file: Path) -> Path:
    """The retrieval encoders the bank was built with (named in its metadata; the bench may have moved)."""
    text_dir = Path(VisualPromptBank.load(bank_file).metadata.text_encoder)  # <encoders>/<name>/text
    found = bench_dir / ENCODERS_DIR / text_dir.parent.name
    if not (found / text_dir.name).is_dir():
        raise FileNotFoundError(
            f"the retrieval encoders of {bank_file} ({text_dir.parent.name}) are not in {found.parent}"
        )
    return found
