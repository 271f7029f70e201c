"""Settings -> the MC-Diffusion renderer (loaded once per process). Imports torch: call only to render."""

from __future__ import annotations

from collections.abc import Callable

from ed_common.render_contract import Renderer
from ed_common.settings import Settings


def build_renderer(settings: Settings, on_progress: Callable[[str], None] | None = None) -> Renderer:
    """Resolve the preset from Settings and load its renderer (cached per process).

    Raises:
        ModelMissingError / BankError / AdapterError: one-line errors naming what is missing or wrong.
    """
    from ed_diffusion.pipeline import get_renderer
    from ed_diffusion.presets import resolve_preset
    from ed_diffusion.world_bench.preset_build import ensure_world_preset

    spec = resolve_preset(
        settings.preset,
        settings.cache_dir,
        model=settings.diffusion_model,
        bank=settings.bank,
        adapter=settings.adapter,
        on_progress=on_progress,
        build_world=ensure_world_preset,  # the app's choice: train the world preset once if it is missing
    )
    renderer = get_renderer(spec, device=settings.device, dtype=settings.dtype)
    if on_progress is not None:
        on_progress(f"loading MC-Diffusion ({spec.name}: {spec.model})")
    renderer.load()
    return renderer
