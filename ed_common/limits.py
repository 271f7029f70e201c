"""Bounds every side shares, so the CLI, the graph state and the renderer refuse the same values."""

from __future__ import annotations

# torch.Generator.manual_seed and numpy take a signed 64-bit seed; image i of a run uses seed + i, so a run
# of n images needs seed + n - 1 <= MAX_SEED (checked by the render options).
MAX_SEED = 2**63 - 1
