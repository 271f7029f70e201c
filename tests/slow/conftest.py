"""Fixtures shared by the slow tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the built tiny preset (one build per test module)."""
    from ed_diffusion.presets import resolve_preset

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cache")
    resolve_preset("tiny", root)
    return root
