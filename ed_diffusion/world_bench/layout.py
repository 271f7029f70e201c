"""The world benchmark's names and on-disk layout: its systems, version, and the files each seed writes.

A leaf module (no imports of its own), so the benchmark, its systems and the ``world`` preset agree on them
without importing each other.
"""

from __future__ import annotations

SYSTEMS: tuple[str, ...] = ("text_only", "vp_sft", "vp_dpo", "vp_dpo_neg_vp")
SYSTEM_LABELS = {
    "text_only": "text-only baseline",
    "vp_sft": "+ visual prompts (SFT)",
    "vp_dpo": "+ DPO (image pairs)",
    "vp_dpo_neg_vp": "+ DPO with negative VP",
}
# Bump when a change to the world code (training, sampling, oracle scoring) or to the full schedule makes
# stored results incomparable: a benchmark directory written by another version is not resumed, and an
# installed `world` preset of another version is retrained. 2: the base model runs 850 steps, not 1000.
# 3: one shared base model on pixels (lossless codec), min-SNR weighting, EMA, a pooled text vector.
# 4: zero terminal SNR, v-prediction, trailing timesteps. 5: the base trains 3,600 steps (world-bench.md).
BENCH_VERSION = 5
ADAPTER_FILES = {
    "vp_sft": "adapter_vp_sft.safetensors",
    "vp_dpo": "adapter_vp_dpo.safetensors",
    "vp_dpo_neg_vp": "adapter_vp_dpo_neg_vp.safetensors",
}
PIPELINE_DIR, BANK_FILE, ENCODERS_DIR = "pipeline", "bank.safetensors", "encoders"
BASE_DIR = "base"  # the shared base pipeline, under the benchmark directory
PRESET_JSON = "preset.json"
PRESET_SYSTEM = "vp_dpo_neg_vp"  # the system the `world` preset installs
