"""GPU paths (CUDA, bf16/fp16): skipped on machines without CUDA, like every CI machine of this project."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_tiny_preset_renders_on_cuda(tmp_path: Path, dtype: str) -> None:
    import numpy as np
    from PIL import Image

    from ed_common.render_contract import RenderRequest
    from ed_diffusion.pipeline import MCDiffusion
    from ed_diffusion.presets import resolve_preset

    spec = resolve_preset("tiny", tmp_path / "cache")
    renderer = MCDiffusion(spec, device="cuda", dtype=dtype)
    result = renderer.render(
        RenderRequest(prompt="a red fox", emotion="awe", n_images=2, out_dir=tmp_path / "r")
    )
    assert renderer.pipe.unet.dtype == getattr(torch, dtype)
    for path in result.images:
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (64, 64, 3) and pixels.std() > 0


def test_cuda_default_dtype_is_half_precision() -> None:
    from ed_diffusion.pipeline import pick_dtype

    assert pick_dtype("cuda", None) in (torch.bfloat16, torch.float16)
