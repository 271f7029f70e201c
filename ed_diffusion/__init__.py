"""MC-Diffusion: the image half of Emotion-Director (visual-prompt bank, adapter, renderer, trainers).

The public surface, for diffusers users::

    from ed_diffusion import load_emotion_adapter
    emo = load_emotion_adapter(pipe, bank="bank.safetensors", adapter="adapter.safetensors")
    emo("a dog in the snow", emotion="fear", seeds=[0, 1]).images

Names resolve on first use (PEP 562): importing a submodule, e.g. the CLI's command groups, does not load
torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ imports on first use
    from ed_diffusion.bank import VisualPromptBank
    from ed_diffusion.emotion_pipeline import EmotionPipeline, EmotionPipelineOutput, load_emotion_adapter
    from ed_diffusion.pipeline import MCDiffusion, get_renderer
    from ed_diffusion.presets import resolve_preset

__all__ = [
    "EmotionPipeline",
    "EmotionPipelineOutput",
    "MCDiffusion",
    "VisualPromptBank",
    "get_renderer",
    "load_emotion_adapter",
    "resolve_preset",
]

_WHERE = {
    "EmotionPipeline": "ed_diffusion.emotion_pipeline",
    "EmotionPipelineOutput": "ed_diffusion.emotion_pipeline",
    "load_emotion_adapter": "ed_diffusion.emotion_pipeline",
    "MCDiffusion": "ed_diffusion.pipeline",
    "get_renderer": "ed_diffusion.pipeline",
    "VisualPromptBank": "ed_diffusion.bank",
    "resolve_preset": "ed_diffusion.presets",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ed_diffusion' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
