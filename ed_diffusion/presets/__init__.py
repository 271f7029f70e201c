"""What a preset name means: the model, bank, adapter and retrieval encoders it loads, and its sampling.

``tiny`` and ``world`` are built or installed in the cache; ``sd15`` and ``sdxl`` are hub models (a bank is
the user's to give). Everything here returns paths; the renderer (``ed_diffusion.pipeline``) loads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ed_common.errors import InvalidInputError
from ed_diffusion.model_source import ModelMissingError
from ed_diffusion.presets.tiny import ensure_tiny_preset
from ed_diffusion.presets.world import (
    SHIPPED_WORLD_PRESET,
    WorldPresetFiles,
    world_preset_files,
    world_preset_ready,
)


class WorldBuilder(Protocol):
    """Trains and installs the world preset at ``root`` (``ensure_world_preset``)."""

    def __call__(
        self, root: Path, *, on_progress: Callable[[str], None] | None = None
    ) -> WorldPresetFiles: ...


PresetName = Literal["tiny", "sd15", "sdxl"]
PRESET_NAMES: tuple[str, ...] = ("tiny", "world", "sd15", "sdxl")


@dataclass(frozen=True)
class PresetSpec:
    """What a preset loads, and its sampling defaults."""

    name: str
    kind: Literal["sd15", "sdxl"]
    model: str  # hub id or local diffusers directory
    bank: str | None  # visual-prompt bank (.safetensors)
    adapter: str | None  # our adapter weights (.safetensors); None = a fresh, untrained adapter
    steps: int
    guidance: float
    size: int
    # Dir with text/ and image/ encoders for retrieval; None = the ids recorded in the bank's metadata.
    encoders: str | None = None
    # The language of the model's text encoder: "free" (CLIP over any text) or "world" (the world's captions,
    # "a star, feeling fear": an agent's prompt is condensed to one, ed_diffusion.world.captions).
    captions: Literal["free", "world"] = "free"


HUB_MODELS = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}


def resolve_preset(
    name: str,
    cache_dir: Path,
    *,
    model: str | None = None,
    bank: str | None = None,
    adapter: str | None = None,
    on_progress: Callable[[str], None] | None = None,
    build_world: WorldBuilder | None = None,
) -> PresetSpec:
    """The preset ``name``, with explicit model/bank/adapter paths winning over its defaults.

    ``tiny`` builds (once, into ``cache_dir``) random-weight SDXL-class components, tiny CLIP encoders, a bank
    over a procedural toy dataset and a fresh adapter, so the whole production path runs on a CPU. ``world``
    is the small SD 1.5-class model trained on the synthetic affective world (``ed_diffusion.presets.world``):
    its images' emotion and content can be read back by the world's oracles (``emodir world check``).
    Returns paths only: nothing here loads a model.

    ``build_world`` trains and installs the world preset when none is installed (the app passes
    ``ed_diffusion.world_bench.preset_build.ensure_world_preset``); without it a missing preset is an error.

    Raises:
        InvalidInputError: unknown preset name.
        ModelMissingError: ``sd15``/``sdxl`` without a bank; ``world`` not installed and no ``build_world``.
    """
    if name not in PRESET_NAMES:
        raise InvalidInputError(f"unknown preset {name!r}; allowed: {', '.join(PRESET_NAMES)}")
    if name == "tiny":
        files = ensure_tiny_preset(cache_dir / "tiny-preset", on_progress=on_progress)
        return PresetSpec(
            "tiny",
            "sdxl",
            model or str(files.pipeline),
            bank or str(files.bank),
            adapter or str(files.adapter),
            steps=4,
            guidance=5.0,
            size=64,
            encoders=str(files.encoders),
        )
    if name == "world":
        root = cache_dir / "world-preset"
        # All three given: nothing of the installed preset is used, so never train it for them.
        world = None if model and bank and adapter else _world_files(root, build_world, on_progress)
        return PresetSpec(
            "world",
            "sd15",
            model or str(world.pipeline if world else ""),
            bank or str(world.bank if world else ""),
            adapter or str(world.adapter if world else ""),
            steps=15,  # the sampling the world benchmark measured
            guidance=5.0,
            size=32,
            encoders=str(world.encoders) if world else None,
            captions="world",
        )
    if bank is None:
        raise ModelMissingError(
            f"preset {name!r} needs a visual-prompt bank: build one with `emodir bank build` and pass --bank "
            "(or set EMODIR_BANK)"
        )
    kind: Literal["sd15", "sdxl"] = "sd15" if name == "sd15" else "sdxl"
    return PresetSpec(
        name,
        kind,
        model or HUB_MODELS[name],
        bank,
        adapter,
        steps=30,
        guidance=7.5 if kind == "sd15" else 6.0,
        size=512 if kind == "sd15" else 1024,
    )


def _world_files(
    root: Path, build_world: WorldBuilder | None, on_progress: Callable[[str], None] | None
) -> WorldPresetFiles:
    if world_preset_ready(root):  # one the user installed (`emodir world bench`) wins over the shipped one
        return world_preset_files(root)
    if world_preset_ready(SHIPPED_WORLD_PRESET):  # the weights that ship with the package: no first build
        return world_preset_files(SHIPPED_WORLD_PRESET)
    if build_world is None:
        raise ModelMissingError(
            f"the world preset is not installed in {root}; `emodir world bench` installs it, and "
            "`emodir generate --preset world` trains it once (10-15 minutes on a CPU)"
        )
    return build_world(root, on_progress=on_progress)
