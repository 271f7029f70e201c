"""The synthetic affective world: spec, rendering, pixel oracles and small worlds on disk (fast)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ed_common.emotions import EMOTION_NAMES, Emotion, UnknownEmotionError
from ed_common.errors import InvalidInputError
from ed_diffusion.emotion_datasets import load_jsonl_dataset
from ed_diffusion.world import (
    ATTRIBUTE_NAMES,
    CONTENT_CLASSES,
    Layout,
    WorldSpec,
    content_of,
    draw_world_image,
    emotion_scores,
    make_world,
    measure,
    plan_split,
    sample_attributes,
    summary,
    typical_pairs,
    unusual_pairs,
)
from ed_diffusion.world import spec as spec_mod
from ed_diffusion.world.oracle import COLOUR_ATTRIBUTES, largest_component, read_image
from ed_diffusion.world.spec import EmotionStyle, Gaussian


def _grid(size: int = 32, seed: int = 11) -> list[tuple[str, Emotion, np.ndarray]]:
    """Every content under every emotion; one layout per content, so only the emotion styling changes."""
    out = []
    for ci, content in enumerate(CONTENT_CLASSES):
        layout = Layout(0.5 + 0.02 * (ci % 3 - 1), 0.5 - 0.02 * (ci % 2), 0.27 + 0.01 * ci)
        for emotion in Emotion:
            rng = np.random.default_rng([seed, ci, emotion.label_index])
            attributes = sample_attributes(rng, emotion)
            out.append((content, emotion, draw_world_image(content, attributes, size, rng, layout=layout)))
    return out


# ---------------------------------------------------------------------- spec


def test_default_spec_pairs_partition_the_grid() -> None:
    spec = WorldSpec()
    assert spec.contents == CONTENT_CLASSES and len(spec.styles) == len(Emotion)
    typical, unusual = typical_pairs(spec), unusual_pairs(spec)
    assert len(typical) + len(unusual) == len(CONTENT_CLASSES) * len(Emotion)
    assert not set(typical) & set(unusual)
    assert all(1 <= len(spec.typical_contents(e)) <= 2 for e in Emotion)
    assert spec.means().shape == spec.stds().shape == (len(Emotion), len(ATTRIBUTE_NAMES))
    json.dumps(spec.as_dict())  # serialisable


def test_no_single_attribute_separates_the_emotions() -> None:
    # The styles overlap on purpose: each attribute's mean is shared (within two spreads) by other emotions.
    means, stds = WorldSpec().means(), WorldSpec().stds()
    for a, name in enumerate(ATTRIBUTE_NAMES):
        diff = np.abs(means[:, None, a] - means[None, :, a])
        if name in spec_mod.CIRCULAR_ATTRIBUTES:
            diff = np.minimum(diff, 1.0 - diff)
        close = diff < 2.0 * np.maximum(stds[:, None, a], stds[None, :, a])
        np.fill_diagonal(close, False)
        assert close.any(axis=1).sum() >= 2, name


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"contents": ("circle", "blob")}, "blob"),
        ({"contents": ("circle",)}, "circle"),
        ({"typical": (("circle", "square", "star"),) * 8}, "star"),
        ({"typical": (("hexagon",),) * 8}, "hexagon"),
        ({"caption_templates": ("a {content} {emotion}",)}, "{emotion}"),
        ({"styles": (WorldSpec().styles[0],)}, "1 styles"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        WorldSpec(**kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_gaussian_rejects_non_positive_spread() -> None:
    with pytest.raises(InvalidInputError, match="std=0"):
        Gaussian(0.5, 0.0)


def test_sample_attributes_stays_within_rendering_limits() -> None:
    rng = np.random.default_rng(0)
    for i in range(2000):
        a = sample_attributes(rng, Emotion.from_index(i % 8))
        assert 0.0 <= a.hue < 1.0 and -0.5 <= a.accent < 0.5
        assert spec_mod.MIN_SATURATION <= a.saturation <= 1.0
        lo = a.brightness - a.contrast / 2
        hi = a.brightness + a.contrast / 2
        assert lo >= spec_mod.VALUE_MARGIN - 1e-9 and hi <= 1 - spec_mod.VALUE_MARGIN + 1e-9
        assert a.contrast >= spec_mod.MIN_CONTRAST - 1e-9
        assert a.noise * spec_mod.MIN_CONTRAST_TO_NOISE <= a.contrast + 1e-9
        assert 0.0 <= a.blur <= spec_mod.MAX_BLUR and 0.0 <= a.grain <= spec_mod.MAX_GRAIN


def test_sample_attributes_rejects_unknown_emotion() -> None:
    with pytest.raises(UnknownEmotionError, match="'joy'"):
        sample_attributes(np.random.default_rng(0), "joy")


# ---------------------------------------------------------------------- rendering


@pytest.mark.parametrize("size", [32, 64])
def test_render_is_deterministic_for_a_seed(size: int) -> None:
    def draw(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return draw_world_image("star", sample_attributes(rng, "awe"), size, rng)

    image = draw(5)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert image.tobytes() == draw(5).tobytes()
    assert image.tobytes() != draw(6).tobytes()


@pytest.mark.parametrize(
    ("content", "size", "with_rng", "needle"),
    [
        ("hexagon", 32, True, "'hexagon'"),
        ("circle", 16, True, "16"),
        ("circle", 300, True, "300"),
        ("circle", 32, False, "None"),
    ],
)
def test_render_rejects_bad_arguments(content: str, size: int, with_rng: bool, needle: str) -> None:
    rng = np.random.default_rng(0)
    attributes = sample_attributes(rng, "fear")
    with pytest.raises(InvalidInputError) as info:
        draw_world_image(content, attributes, size, rng if with_rng else None)
    assert needle in str(info.value)


def test_captions_never_name_an_emotion() -> None:
    words = {w for t in WorldSpec().caption_templates for w in t.replace("{content}", "").split()}
    assert not words & set(EMOTION_NAMES)


# ---------------------------------------------------------------------- oracles


def test_content_oracle_is_invariant_to_emotion_styling() -> None:
    grid = _grid()
    wrong = [(c, e.value, content_of(img)) for c, e, img in grid if content_of(img) != c]
    assert not wrong, wrong


def test_emotion_oracle_on_the_content_emotion_grid() -> None:
    grid = _grid(seed=3)
    hits = [int(np.argmax(emotion_scores(img))) == e.label_index for _, e, img in grid]
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_oracle_measures_the_drawn_attributes() -> None:
    rng = np.random.default_rng(21)
    attributes = sample_attributes(rng, "contentment")
    m = measure(draw_world_image("house", attributes, 64, rng))
    truth = attributes.vector()
    tolerance = {"hue": 0.01, "accent": 0.02, "saturation": 0.03, "brightness": 0.02, "contrast": 0.03}
    tolerance |= {"blur": 0.006, "noise": 0.01, "grain": 0.04}
    for i, name in enumerate(ATTRIBUTE_NAMES):
        err = m.attributes[i] - truth[i]
        if name in spec_mod.CIRCULAR_ATTRIBUTES:
            err = (err + 0.5) % 1.0 - 0.5
        assert abs(err) <= tolerance[name], (name, m.attributes[i], truth[i])


def test_oracle_scores_are_probabilities_and_a_flat_image_has_no_content() -> None:
    rng = np.random.default_rng(1)
    scores = emotion_scores(draw_world_image("ring", sample_attributes(rng, "anger"), 32, rng))
    assert scores.shape == (8,) and math.isclose(float(scores.sum()), 1.0) and (scores >= 0).all()
    flat = np.full((32, 32, 3), 90, dtype=np.uint8)
    assert content_of(flat) is None
    assert np.isfinite(emotion_scores(flat)).all()


@pytest.mark.parametrize(
    ("image", "needle"),
    [
        (np.zeros((32, 32, 3), dtype=np.float32), "float32"),
        (np.zeros((32, 31, 3), dtype=np.uint8), "(32, 31, 3)"),
        (np.zeros((16, 16, 3), dtype=np.uint8), "16"),
    ],
)
def test_oracle_rejects_bad_images(image: np.ndarray, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        content_of(image)
    assert needle in str(info.value)


def test_read_image_is_emotion_scores_and_content_of_in_one_measurement() -> None:
    for _, _, img in _grid(seed=5)[::5]:
        for attributes in (COLOUR_ATTRIBUTES, None):
            reading = read_image(img, attributes=attributes)
            assert np.array_equal(reading.posterior, emotion_scores(img, attributes=attributes))
            assert reading.emotion.label_index == int(np.argmax(reading.posterior))
            assert reading.content == content_of(img)
    assert np.array_equal(read_image(img).posterior, read_image(img, attributes=COLOUR_ATTRIBUTES).posterior)
    with pytest.raises(InvalidInputError, match="unknown oracle attributes"):
        read_image(img, attributes=("hue", "smell"))


def test_the_eval_world_oracles_score_what_read_image_reads() -> None:
    from PIL import Image

    from ed_diffusion.scoring import WorldContentOracle, WorldOracle

    grid = _grid(seed=6)[::4]
    images = [Image.fromarray(img) for _, _, img in grid]
    for attributes in (COLOUR_ATTRIBUTES, None):
        probs = WorldOracle(attributes=attributes).probs(images)
        want = np.stack([read_image(img, attributes=attributes).posterior for _, _, img in grid])
        assert np.array_equal(probs, want)
    matches = WorldContentOracle().matches(images, [c for c, _, _ in grid])
    assert list(matches) == [read_image(img).content == c for c, _, img in grid]


def test_largest_component_keeps_the_biggest_8_connected_blob() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # diagonal: one 8-connected blob of 3
    mask[6:8, 6:8] = True  # a 2x2 blob of 4
    assert largest_component(mask).sum() == 4 and largest_component(mask)[6, 6]
    mask[4, 4] = mask[5, 5] = True  # joins both: 9 pixels
    assert largest_component(mask).sum() == 9


# ---------------------------------------------------------------------- splits and worlds


@pytest.mark.parametrize("shortcut", [0.0, 0.5, 0.9, 1.0])
def test_train_plan_has_the_requested_shortcut_strength(shortcut: float) -> None:
    plan = plan_split("train", 4000, seed=1, shortcut=shortcut)
    rows = [{"content": c, "emotion": e.value} for c, e in plan]
    s = summary(rows)
    assert abs(s.shortcut_strength - shortcut) < 0.03
    assert set(s.per_emotion.values()) == {500}  # balanced emotions


def test_test_plan_holds_only_unusual_pairs_balanced() -> None:
    plan = plan_split("test", 800, seed=2)
    unusual = set(unusual_pairs())
    assert all(pair in unusual for pair in plan)
    s = summary([{"content": c, "emotion": e.value} for c, e in plan])
    assert s.typical_fraction == 0.0 and set(s.per_emotion.values()) == {100}
    assert len(s.pair_counts) == len(unusual)
    for emotion in Emotion:  # contents balanced within each emotion
        counts = [k for (_, e), k in s.pair_counts.items() if e == emotion.value]
        assert max(counts) - min(counts) <= 1, (emotion, counts)


def test_make_world_writes_a_loadable_deterministic_world(tmp_path: Path) -> None:
    a = make_world(tmp_path / "a", n_train=40, n_test=24, seed=4, shortcut=0.8)
    b = make_world(tmp_path / "b", n_train=40, n_test=24, seed=4, shortcut=0.8)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert len(files) == 40 + 24 + 3
    for rel in files:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    samples, load = load_jsonl_dataset(a.test_jsonl)
    assert load.loaded == 24 and load.num_skipped == 0
    rows = [json.loads(line) for line in a.test_jsonl.read_text().splitlines()]
    assert all(r["split"] == "test" and not r["typical"] for r in rows)
    for sample, row in zip(samples, rows, strict=True):
        assert row["content"] in sample.caption.split() and sample.emotion.value == row["emotion"]
    meta = json.loads(a.meta_json.read_text())
    assert meta["summary"]["test"]["typical_fraction"] == 0.0 and meta["seed"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_make_world_refuses_a_non_empty_directory_unless_overwriting(tmp_path: Path) -> None:
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="not empty"):
        make_world(out, n_train=8, n_test=8, seed=0)
    paths = make_world(out, n_train=8, n_test=8, seed=0, overwrite=True)
    assert not (out / "keep.txt").exists() and paths.train_jsonl.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_train": 0}, "n_train=0"),
        ({"n_test": -3}, "n_test=-3"),
        ({"n_train": 2.5}, "n_train=2.5"),
        ({"seed": -1}, "seed=-1"),
        ({"size": 16}, "16"),
        ({"shortcut": 1.5}, "shortcut=1.5"),
        ({"shortcut": float("nan")}, "shortcut=nan"),
    ],
)
def test_make_world_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object], needle: str) -> None:
    args: dict[str, object] = {"n_train": 8, "n_test": 8, "seed": 0} | kwargs
    with pytest.raises(InvalidInputError) as info:
        make_world(tmp_path / "w", **args)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert not (tmp_path / "w").exists()


def test_summary_rejects_rows_without_labels() -> None:
    with pytest.raises(InvalidInputError, match="'blob'"):
        summary([{"content": "blob", "emotion": "awe"}])
    with pytest.raises(UnknownEmotionError, match="'joy'"):
        summary([{"content": "star", "emotion": "joy"}])
    with pytest.raises(InvalidInputError, match="no rows"):
        summary([])


def test_style_table_is_complete() -> None:
    for emotion in Emotion:
        style = WorldSpec().style(emotion)
        assert isinstance(style, EmotionStyle)
        assert all(getattr(style, n).std > 0 for n in ATTRIBUTE_NAMES)


def test_world_preset_copies_the_retrieval_encoders_its_bank_names(tmp_path: Path) -> None:
    import torch

    from ed_diffusion.bank import BankMetadata, VisualPromptBank
    from ed_diffusion.presets.world import _encoders_of

    enc = tmp_path / "bench" / "encoders"
    for name in ("a-other", "b-used"):
        (enc / name / "text").mkdir(parents=True)
    e, clusters = len(EMOTION_NAMES), 2
    meta = BankMetadata(
        emotions=tuple(EMOTION_NAMES),
        clusters=clusters,
        d_t=3,
        d_v=5,
        text_encoder="/somewhere/it/was/built/b-used/text",  # the bench dir may have moved since
        image_encoder="style",
        image_kind="clip",
        dataset_fingerprint="w",
        num_samples=16,
        seed=0,
        max_iter=1,
    )
    bank_file = tmp_path / "bank.safetensors"
    counts = torch.ones(e, clusters, dtype=torch.int64)
    VisualPromptBank(torch.zeros(e, clusters, 3), torch.zeros(e, clusters, 5), counts, meta).save(bank_file)
    assert _encoders_of(tmp_path / "bench", bank_file) == enc / "b-used"  # not the first directory
    (enc / "b-used" / "text").rmdir()
    with pytest.raises(FileNotFoundError, match="b-used"):
        _encoders_of(tmp_path / "bench", bank_file)
