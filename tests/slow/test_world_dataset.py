"""The synthetic affective world at scale: oracle accuracy on fresh samples and a full world on disk."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ed_common.emotions import Emotion
from ed_diffusion.emotion_datasets import load_jsonl_dataset
from ed_diffusion.world import (
    CONTENT_CLASSES,
    draw_world_image,
    emotion_log_likelihoods,
    make_world,
    measure,
    sample_attributes,
    summary,
    unusual_pairs,
)

pytestmark = pytest.mark.slow


def _oracle_accuracy(n: int, size: int, seed: int) -> tuple[float, float]:
    """Content and emotion accuracy of the oracles on ``n`` fresh, balanced samples."""
    rng = np.random.default_rng(seed)
    content_hits = emotion_hits = 0
    for i in range(n):
        emotion = Emotion.from_index(i % len(Emotion))
        content = CONTENT_CLASSES[int(rng.integers(len(CONTENT_CLASSES)))]
        image = draw_world_image(content, sample_attributes(rng, emotion), size, rng)
        m = measure(image)
        content_hits += CONTENT_CLASSES[int(np.argmax(m.content_iou))] == content
        emotion_hits += int(np.argmax(emotion_log_likelihoods(m))) == emotion.label_index
    return content_hits / n, emotion_hits / n


def test_oracles_on_400_fresh_samples_at_32px() -> None:
    # Measured when written: content 1.000, emotion 0.9925 (seed 2024).
    content_acc, emotion_acc = _oracle_accuracy(400, 32, seed=2024)
    assert content_acc >= 0.995, content_acc
    assert emotion_acc >= 0.95, emotion_acc


def test_oracles_on_fresh_samples_at_64px() -> None:
    # Measured when written: content 1.000, emotion 0.995 (seed 7).
    content_acc, emotion_acc = _oracle_accuracy(200, 64, seed=7)
    assert content_acc >= 0.99, content_acc
    assert emotion_acc >= 0.95, emotion_acc


def test_world_has_the_shortcut_in_train_and_only_unusual_pairs_in_test(tmp_path: Path) -> None:
    paths = make_world(tmp_path / "world", n_train=1600, n_test=400, seed=9, shortcut=0.9)
    train, test = summary(paths.train_jsonl), summary(paths.test_jsonl)
    assert abs(train.shortcut_strength - 0.9) < 0.04, train.shortcut_strength
    assert set(train.per_emotion.values()) == {200}
    assert test.typical_fraction == 0.0 and set(test.pair_counts) == {
        (c, e.value) for c, e in unusual_pairs()
    }
    meta = json.loads(paths.meta_json.read_text())
    assert meta["summary"]["train"]["n"] == 1600 and meta["spec"]["contents"] == list(CONTENT_CLASSES)

    samples, load = load_jsonl_dataset(paths.test_jsonl)
    rows = [json.loads(line) for line in paths.test_jsonl.read_text().splitlines()]
    assert load.loaded == 400 and load.num_skipped == 0

    # The semantic shortcut fails on the test split by construction; the pixels still carry the emotion.
    train_rows = [json.loads(line) for line in paths.train_jsonl.read_text().splitlines()]
    by_content: dict[str, Counter[str]] = {c: Counter() for c in CONTENT_CLASSES}
    for r in train_rows:
        by_content[r["content"]][r["emotion"]] += 1
    shortcut_guess = {c: counts.most_common(1)[0][0] for c, counts in by_content.items()}
    shortcut_acc = np.mean([shortcut_guess[r["content"]] == r["emotion"] for r in rows])
    oracle_content = oracle_emotion = 0
    for sample, row in zip(samples, rows, strict=True):
        image = np.asarray(Image.open(sample.image_path).convert("RGB"))
        m = measure(image)
        oracle_content += CONTENT_CLASSES[int(np.argmax(m.content_iou))] == row["content"]
        oracle_emotion += Emotion.from_index(int(np.argmax(emotion_log_likelihoods(m)))) == sample.emotion
    assert shortcut_acc <= 0.05, shortcut_acc
    assert oracle_content / len(rows) >= 0.995
    assert oracle_emotion / len(rows) >= 0.95


def test_world_without_shortcut_is_unbiased(tmp_path: Path) -> None:
    paths = make_world(tmp_path / "flat", n_train=800, n_test=16, seed=1, shortcut=0.0, size=24)
    assert abs(summary(paths.train_jsonl).shortcut_strength) < 0.08
