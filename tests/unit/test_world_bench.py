"""The world benchmark's parts that need no training: config, style features, scoring, aggregation, table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.world import (
    ATTRIBUTE_NAMES,
    COLOUR_ATTRIBUTES,
    CONTENT_CLASSES,
    draw_world_image,
    emotion_scores,
    sample_attributes,
    sample_layout,
)
from ed_diffusion.world.oracle import read_image
from ed_diffusion.world.spec import WorldSpec
from ed_diffusion.world.style import STYLE_DIM, style_features
from ed_diffusion.world_bench.bench import (
    BenchConfig,
    install_as_world_preset,
    seeds_to_run,
    steps_to_run,
)
from ed_diffusion.world_bench.layout import BENCH_VERSION, PRESET_JSON, SYSTEMS
from ed_diffusion.world_bench.metrics import METRICS, aggregate, eval_pairs, metrics_by_split, score_targets
from ed_diffusion.world_bench.report import markdown_table


def _images(pairs: list[tuple[str, Emotion]], seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([draw_world_image(c, sample_attributes(rng, e), 32, rng) for c, e in pairs])


def test_bench_config_rejects_bad_values_with_the_field_name() -> None:
    with pytest.raises(InvalidInputError, match="seeds"):
        BenchConfig(seeds=())
    with pytest.raises(InvalidInputError, match="seeds"):
        BenchConfig(seeds=(1, 1))
    with pytest.raises(InvalidInputError, match="base_steps=0"):
        BenchConfig(base_steps=0)
    with pytest.raises(InvalidInputError, match="shortcut"):
        BenchConfig(shortcut=1.5)
    assert BenchConfig.quick().base_steps < BenchConfig.full().base_steps
    assert BenchConfig.full(seeds=(4,)).seeds == (4,)


def test_eval_pairs_are_unusual_then_typical_and_never_typical_in_the_unusual_part() -> None:
    cfg = BenchConfig.quick(samples_per_pair=2)
    pairs = eval_pairs(cfg)
    spec = WorldSpec()
    unusual = [(c, e) for c, e, split, _ in pairs if split == "unusual"]
    typical = [(c, e) for c, e, split, _ in pairs if split == "typical"]
    assert unusual and typical
    assert all(not spec.is_typical(c, e) for c, e in unusual)
    assert all(spec.is_typical(c, e) for c, e in typical)
    assert len(unusual) == 2 * len(set(unusual))


def test_style_features_separate_palettes_and_ignore_the_silhouette() -> None:
    rng = np.random.default_rng(0)
    attrs = sample_attributes(rng, Emotion.ANGER)
    layout = sample_layout(rng)
    a = draw_world_image("circle", attrs, 32, np.random.default_rng(1), layout=layout)
    b = draw_world_image("cross", attrs, 32, np.random.default_rng(1), layout=layout)
    c = draw_world_image(
        "circle", sample_attributes(rng, Emotion.CONTENTMENT), 32, np.random.default_rng(1), layout=layout
    )
    f = style_features(np.stack([a, b, c]))
    assert f.shape == (3, STYLE_DIM) and f.dtype.is_floating_point
    same_style = float((f[0] - f[1]).norm())
    other_style = float((f[0] - f[2]).norm())
    assert other_style > 3 * same_style, (same_style, other_style)
    with pytest.raises(ValueError, match="uint8"):
        style_features(np.zeros((1, 8, 8, 3), dtype=np.float32))


def test_colour_oracle_reads_real_images_and_rejects_unknown_attributes() -> None:
    pairs = [(CONTENT_CLASSES[i % 8], e) for i, e in enumerate(list(Emotion) * 5)]
    images = _images(pairs)
    hits = sum(
        int(np.argmax(emotion_scores(im, attributes=COLOUR_ATTRIBUTES))) == e.label_index
        for im, (_, e) in zip(images, pairs, strict=True)
    )
    assert hits / len(pairs) >= 0.9
    with pytest.raises(InvalidInputError, match="unknown oracle attributes"):
        emotion_scores(images[0], attributes=("hue", "smell"))
    assert set(COLOUR_ATTRIBUTES) < set(ATTRIBUTE_NAMES)


def test_metrics_by_split_separates_right_from_wrong_targets() -> None:
    spec = WorldSpec()
    unusual = [(c, e) for e in Emotion for c in CONTENT_CLASSES if not spec.is_typical(c, e)][::3]
    images = _images(unusual)
    right = [(c, e, "unusual", 0) for c, e in unusual]
    good = metrics_by_split(images, right)["unusual"]
    assert good["emotion_acc"] >= 0.9 and good["content_acc"] == 1.0 and good["shortcut_rate"] == 0.0
    # Asking for another emotion than the one drawn: emotion and joint accuracy collapse, content stays.
    shifted = [(c, Emotion.from_index((e.label_index + 4) % 8), "unusual", 0) for c, e in unusual]
    bad = metrics_by_split(images, shifted)["unusual"]
    assert bad["emotion_acc"] <= 0.1 and bad["joint_acc"] <= 0.1 and bad["content_acc"] == 1.0
    # Images of the emotion's typical content when an unusual one was asked for: the shortcut is counted.
    typical_drawn = [(spec.typical_contents(e)[0], e) for _, e in unusual]
    shortcut = metrics_by_split(_images(typical_drawn), right)["unusual"]
    assert shortcut["shortcut_rate"] >= 0.9 and shortcut["content_acc"] <= 0.1


def test_emotion_leakage_counts_wrong_emotions_that_belong_to_the_content() -> None:
    spec = WorldSpec()
    # Contents drawn in an emotion they are typical of, asked for in one they are not: every image is in a
    # wrong emotion, and that emotion is the content's own, so the leakage is total.
    drawn = [(c, e) for e in Emotion for c in CONTENT_CLASSES if spec.is_typical(c, e)]
    asked = [
        (c, next(o for o in Emotion if not spec.is_typical(c, o) and o.polarity != e.polarity), "unusual", 0)
        for c, e in drawn
    ]
    leaked = metrics_by_split(_images(drawn), asked)["unusual"]
    assert leaked["emotion_acc"] <= 0.1 and leaked["emotion_leakage"] >= 0.9
    assert 0.0 < leaked["leakage_chance"] < 0.5  # a content is typical of a few of the 7 other emotions
    # The same images asked for in their own emotion: right, so nothing can leak.
    right = metrics_by_split(_images(drawn), [(c, e, "unusual", 0) for c, e in drawn])["unusual"]
    assert right["emotion_acc"] >= 0.9 and right["leak_rate"] <= 0.1
    # Drawn in an emotion the content is not typical of, asked for another: wrong, but no leakage.
    foreign = [(c, next(o for o in Emotion if not spec.is_typical(c, o))) for c, _ in drawn]
    other = [(c, Emotion.from_index((e.label_index + 4) % 8), "unusual", 0) for c, e in foreign]
    not_leaked = metrics_by_split(_images(foreign), other)["unusual"]
    assert not_leaked["emotion_acc"] <= 0.1 and not_leaked["emotion_leakage"] <= 0.1


def test_score_targets_judges_each_image_by_read_image_against_its_own_target() -> None:
    spec = WorldSpec()
    emotion = Emotion.FEAR
    typical = spec.typical_contents(emotion)[0]
    unusual = next(c for c in CONTENT_CLASSES if not spec.is_typical(c, emotion))
    images = _images([(unusual, emotion), (typical, emotion)])
    # Both asked for the unusual content: the second image took the shortcut.
    scores = score_targets(images, [(unusual, emotion), (unusual, emotion)], spec)
    for image, score in zip(images, scores, strict=True):
        reading = read_image(image, spec)
        assert score.reading.emotion == reading.emotion and score.reading.content == reading.content
        assert np.array_equal(score.reading.posterior, reading.posterior)
        assert score.target_prob == float(reading.posterior[emotion.label_index])
        assert tuple(score.metrics()) == METRICS
    assert scores[0].content_ok and not scores[0].shortcut
    assert not scores[1].content_ok and scores[1].shortcut
    with pytest.raises(ValueError):
        score_targets(images, [(unusual, emotion)], spec)  # one target for two images


def test_metrics_by_split_is_the_mean_of_score_targets_per_split() -> None:
    spec = WorldSpec()
    rows = eval_pairs(BenchConfig.quick(samples_per_pair=1), spec)[::7]
    images = _images([(c, e) for c, e, _, _ in rows])
    scores = score_targets(images, [(c, e) for c, e, _, _ in rows], spec)
    by_split = metrics_by_split(images, rows, spec)
    for split in ("unusual", "typical"):
        mine = [s.metrics() for s, row in zip(scores, rows, strict=True) if row[2] == split]
        assert by_split[split]["n"] == len(mine)
        for metric in METRICS:
            assert by_split[split][metric] == float(np.mean([m[metric] for m in mine]))


def test_steps_to_run_leaves_out_a_trained_base_model_and_finished_seeds(tmp_path: Path) -> None:
    cfg = BenchConfig.quick(seeds=(0, 1))
    assert seeds_to_run(tmp_path, cfg) == [0, 1]
    assert steps_to_run(tmp_path, cfg) == cfg.base_steps + 2 * cfg.steps_per_seed()
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model_index.json").write_text("{}")
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "result.json").write_text("{}")
    assert seeds_to_run(tmp_path, cfg) == [1]
    assert steps_to_run(tmp_path, cfg) == cfg.steps_per_seed()


def test_install_as_world_preset_keeps_a_current_preset(tmp_path: Path) -> None:
    target = tmp_path / "world-preset"
    target.mkdir()
    (target / PRESET_JSON).write_text(json.dumps({"config": {"bench_version": BENCH_VERSION}}))
    # The benchmark directory is empty: reaching for its seed would fail, so nothing was installed.
    assert install_as_world_preset(tmp_path / "bench", {"seeds": [{"seed": 0}]}, target) is False


def _seed_result(seed: int, acc: float) -> dict[str, object]:
    metrics = {
        "emotion_acc": acc,
        "content_acc": 1.0,
        "joint_acc": acc,
        "shortcut_rate": 0.0,
        "target_prob": acc,
        "n": 10,
    }
    return {
        "seed": seed,
        "systems": {s: {"unusual": dict(metrics), "typical": dict(metrics)} for s in SYSTEMS},
    }


def test_aggregate_gives_mean_and_sample_std_over_seeds() -> None:
    summary = aggregate([_seed_result(0, 0.2), _seed_result(1, 0.4), _seed_result(2, 0.6)])
    stat = summary["text_only"]["unusual"]["emotion_acc"]
    assert stat["mean"] == pytest.approx(0.4)
    assert stat["std"] == pytest.approx(0.2)  # sample std (ddof=1) of 0.2, 0.4, 0.6
    assert (stat["min"], stat["max"], stat["n_seeds"]) == (0.2, 0.6, 3)
    assert "vp_gap" not in summary["text_only"]["unusual"]


def test_markdown_table_has_one_row_per_system_in_percent() -> None:
    seeds = [_seed_result(0, 0.25), _seed_result(1, 0.75)]
    ref = {"emotion_acc": 1.0, "content_acc": 1.0, "joint_acc": 1.0, "n": 4}
    results = {
        "config": {"seeds": [0, 1], "samples_per_pair": 1},
        "systems": {s: s for s in SYSTEMS},
        "summary": aggregate(seeds),
        "reference": {"real_test_images": ref, "autoencoder_reconstructions": ref},
    }
    table = markdown_table(results)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "System" not in line]
    assert len(rows) == len(SYSTEMS)
    assert "50.0 ± 35.4" in rows[0]  # mean 0.5, sample std 0.354


def test_world_tokenizer_has_one_token_per_world_word_and_falls_back_to_bytes(tmp_path: object) -> None:
    from pathlib import Path

    from transformers import CLIPTokenizer

    from ed_diffusion.world_bench.model import build_world_tokenizer, world_words

    tok = build_world_tokenizer()
    assert {"feeling", "awe", "circle", "picture"} <= set(world_words())
    for word in world_words():
        assert len(tok(word).input_ids) == 3, word  # start, the word, end
    ids = tok("an angry dog").input_ids  # not world words: still encodable, character by character
    assert len(ids) > 5 and tok.unk_token_id not in ids[1:-1]  # (CLIP: unk = end of text)
    saved = Path(str(tmp_path)) / "tok"
    tok.save_pretrained(saved)
    again = CLIPTokenizer.from_pretrained(saved)
    text = "a drawing of a tree, feeling sadness"
    assert again(text).input_ids == tok(text).input_ids


def test_oracle_reads_a_generated_image_whose_fitted_silhouette_covers_nothing() -> None:
    # A world-bench sample (seed 2, image-pair DPO) on which the oracle used to divide by zero coverage.
    import warnings
    from pathlib import Path

    from PIL import Image

    from ed_diffusion.world import measure

    path = Path(__file__).parent.parent / "fixtures" / "world_generated_no_cover.png"
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or NaN warnings any more
        m = measure(image)
    assert np.isfinite(m.attributes).all()
    probs = emotion_scores(image, attributes=COLOUR_ATTRIBUTES)
    assert np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-9


def test_world_preset_is_ready_only_when_made_by_this_bench_version(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from ed_diffusion.presets.world import world_preset_ready
    from ed_diffusion.world_bench.layout import BENCH_VERSION, PRESET_JSON

    root = Path(str(tmp_path)) / "world-preset"
    assert not world_preset_ready(root)
    root.mkdir()
    (root / PRESET_JSON).write_text(json.dumps({"config": {"bench_version": BENCH_VERSION + 1}}))
    assert not world_preset_ready(root)  # another code version: retrained, not reused
    (root / PRESET_JSON).write_text(json.dumps({"config": {"bench_version": BENCH_VERSION - 1}}))
    assert not world_preset_ready(root)  # an older schedule (v1: the 1000-step base) too
    (root / PRESET_JSON).write_text("{not json")
    assert not world_preset_ready(root)
    (root / PRESET_JSON).write_text(json.dumps({"config": {"bench_version": BENCH_VERSION}}))
    assert world_preset_ready(root)


def test_resume_key_ignores_workers_but_not_the_schedule_or_code_version() -> None:
    from dataclasses import asdict

    from ed_diffusion.world_bench.bench import schedule_of
    from ed_diffusion.world_bench.layout import BENCH_VERSION

    base = asdict(BenchConfig.full()) | {"bench_version": BENCH_VERSION}
    assert schedule_of(base | {"workers": 1}) == schedule_of(base)
    assert schedule_of(base | {"base_steps": 10}) != schedule_of(base)
    assert schedule_of(base | {"bench_version": BENCH_VERSION + 1}) != schedule_of(base)


def test_the_world_schedule_reaches_zero_terminal_snr_with_v_prediction() -> None:
    """At t = T the image must be gone: a 16 x 16 latent's mean colour stays readable at SD 1.5's T, and a
    model that learns to read it there paints every sample in the dataset's mean colour (docs/world-bench.md,
    version 4). Zero terminal SNR needs v-prediction (ε is undefined there)."""
    from ed_diffusion.world_bench.model import sample_scheduler, train_scheduler

    train, sample = train_scheduler(), sample_scheduler()
    assert float(train.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-12)
    assert train.config.prediction_type == sample.config.prediction_type == "v_prediction"
    sample.set_timesteps(15)
    assert int(sample.timesteps[0]) == 999  # trailing spacing: sampling starts where training's noise ends


def test_min_snr_weights_by_hand() -> None:
    import torch

    from ed_diffusion.world_bench.train import min_snr_weights

    class Sched:  # SNR = a / (1 - a): [4, 9, 1/3] at these alphas_cumprod
        alphas_cumprod = torch.tensor([0.8, 0.9, 0.25])

        class config:
            prediction_type = "epsilon"

    t = torch.tensor([0, 1, 2])
    eps = min_snr_weights(Sched, t, gamma=5.0)
    assert eps.tolist() == pytest.approx([1.0, 5 / 9, 1.0])  # min(SNR, 5) / SNR
    Sched.config.prediction_type = "v_prediction"
    v = min_snr_weights(Sched, t, gamma=5.0)
    assert v.tolist() == pytest.approx([4 / 5, 5 / 10, (1 / 3) / (4 / 3)])  # min(SNR, 5) / (SNR + 1)
    assert min_snr_weights(Sched, t, gamma=0.0).tolist() == [1.0, 1.0, 1.0]
