"""On the shipped world preset, an agent's prompt reaches the model as the caption the benchmark measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ed_common.render_contract import RenderRequest
from ed_diffusion.pipeline import get_renderer
from ed_diffusion.presets import resolve_preset
from ed_diffusion.world.oracle import read_image

pytestmark = pytest.mark.slow

# What MC-Agent wrote for "a star" / fear on the embedded model (session 9): outside the world's vocabulary,
# and cut at its text encoder's 12 tokens before any emotion word.
AGENT_PROMPT = "a star, blue, dim over a bright blue sky, sky above, a strange book on the floor"


def _fear_share(tmp_path: Path, form: str) -> tuple[float, dict[str, object]]:
    renderer = get_renderer(resolve_preset("world", tmp_path / "cache"))
    result = renderer.render(
        RenderRequest(
            prompt=AGENT_PROMPT,
            emotion="fear",
            n_images=4,
            out_dir=tmp_path / form,
            prompt_form=form,  # type: ignore[arg-type]
        )
    )
    emotions = [read_image(np.asarray(Image.open(p).convert("RGB"))).emotion for p in result.images]
    return sum(e == "fear" for e in emotions) / len(emotions), result.settings


def test_the_world_model_paints_the_emotion_only_when_it_reads_its_caption(tmp_path: Path) -> None:
    condensed, settings = _fear_share(tmp_path, "model")
    assert settings["model_prompt"] == "a star, feeling fear" and settings["model_negative_prompt"] == ""
    as_written, settings = _fear_share(tmp_path, "as_written")
    assert settings["model_prompt"] == AGENT_PROMPT
    # Measured on 8 images: 8/8 fear condensed, 0/8 as written (the star's typical emotions instead).
    assert condensed >= 0.75 and as_written <= 0.25
