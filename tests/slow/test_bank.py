"""The visual-prompt bank: tiny real-path encoders, loaders, deterministic K-means, retrieval, file format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ed_common.emotions import EMOTION_NAMES, Emotion
from ed_diffusion.bank import BankMetadata, VisualPromptBank, build_bank, kmeans
from ed_diffusion.emotion_datasets import (
    EmotionSample,
    dataset_fingerprint,
    emoset_caption,
    load_emoset,
    load_emotion_dataset,
    load_jsonl_dataset,
    make_toy_dataset,
)
from ed_diffusion.encoders import (
    TINY_IMAGE_SUBDIR,
    TINY_TEXT_SUBDIR,
    FeatureEncoders,
    build_tiny_encoders,
    ensure_tiny_encoders_dir,
)
from ed_diffusion.errors import BankError, DatasetError, EncoderLoadError

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

CLUSTERS = 4
N_PER_EMOTION = 12


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> FeatureEncoders:
    d = ensure_tiny_encoders_dir(tmp_path_factory.mktemp("enc"))
    return FeatureEncoders.from_pretrained(d / TINY_TEXT_SUBDIR, d / TINY_IMAGE_SUBDIR, kind="clip")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[EmotionSample]:
    jsonl = make_toy_dataset(tmp_path_factory.mktemp("toy"), n_per_emotion=N_PER_EMOTION, seed=0)
    loaded, summary = load_jsonl_dataset(jsonl)
    assert summary.num_skipped == 0 and summary.loaded == 8 * N_PER_EMOTION
    return loaded


@pytest.fixture(scope="module")
def bank(samples: list[EmotionSample], encoders: FeatureEncoders) -> VisualPromptBank:
    return build_bank(samples, encoders, clusters=CLUSTERS, seed=0)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# ---------------------------------------------------------------------- encoders


def test_tiny_encoders_dir_loads_through_from_pretrained(tmp_path: Path, encoders: FeatureEncoders) -> None:
    d = ensure_tiny_encoders_dir(tmp_path)
    stamp = (d / TINY_TEXT_SUBDIR / "config.json").stat().st_mtime_ns
    assert ensure_tiny_encoders_dir(tmp_path) == d  # written once, then reused
    assert (d / TINY_TEXT_SUBDIR / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [d.name]  # no temp dir left behind

    texts = ["a calm photo of a dog", "a dark photo of a house", "x" * 300]  # the last one is truncated
    feats = encoders.encode_text(texts, batch_size=2)
    assert feats.shape == (3, encoders.d_t) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    images = [Image.new("RGB", (40, 30), (200, 10, 10)), Image.new("L", (16, 16), 30)]
    assert encoders.encode_images(images, batch_size=1).shape == (2, encoders.d_v)
    # The saved directory holds exactly the in-code tiny weights.
    torch.testing.assert_close(build_tiny_encoders(seed=0).encode_text(texts), feats)
    assert set(encoders.ids) == {"text_encoder", "image_encoder", "image_kind"}


def test_from_pretrained_missing_model_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderLoadError) as exc:
        FeatureEncoders.from_pretrained(tmp_path / "nope", tmp_path / "nope", kind="clip")
    assert "nope" in _one_line(exc) and "CLIP text encoder" in str(exc.value)
    with pytest.raises(EncoderLoadError) as exc:
        FeatureEncoders.from_pretrained("no-such-org/no-such-clip", "x/y", kind="dino", local_files_only=True)
    assert "Hugging Face cache" in _one_line(exc)


def test_wrong_checkpoint_is_refused_not_randomly_initialised(tmp_path: Path) -> None:
    d = ensure_tiny_encoders_dir(tmp_path)
    with pytest.raises(EncoderLoadError) as exc:  # a text checkpoint where the vision tower is expected
        FeatureEncoders.from_pretrained(d / TINY_TEXT_SUBDIR, d / TINY_TEXT_SUBDIR, kind="clip")
    assert "weight(s) missing" in _one_line(exc)


def test_dino_kind_uses_the_pooled_cls_feature(tmp_path: Path) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    dino = Dinov2Model(
        Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8)
    )
    dino.save_pretrained(tmp_path / "dino")
    processor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path / "dino")
    d = ensure_tiny_encoders_dir(tmp_path / "enc")
    enc = FeatureEncoders.from_pretrained(d / TINY_TEXT_SUBDIR, tmp_path / "dino", kind="dino")
    images = [Image.new("RGB", (40, 36), (i * 60, 20, 200 - i * 50)) for i in range(3)]
    feats = enc.encode_images(images, batch_size=2)
    assert enc.d_v == 24 and feats.shape == (3, 24)
    with torch.inference_mode():
        direct = dino.eval()(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"])
    torch.testing.assert_close(feats, direct.pooler_output)


# ---------------------------------------------------------------------- bank building


def test_bank_is_deterministic_for_a_seed(
    samples: list[EmotionSample], encoders: FeatureEncoders, bank: VisualPromptBank
) -> None:
    again = build_bank(samples, encoders, clusters=CLUSTERS, seed=0)
    for name in ("text_centres", "visual_centres", "counts"):
        assert torch.equal(getattr(bank, name), getattr(again, name)), name
    assert again.metadata == bank.metadata
    other = build_bank(list(reversed(samples)), encoders, clusters=CLUSTERS, seed=1)
    assert other.metadata.seed == 1  # a different seed need not give different centres, only a recorded one
    assert other.metadata.dataset_fingerprint == bank.metadata.dataset_fingerprint  # order-independent


def test_bank_centres_have_the_right_shapes(bank: VisualPromptBank, encoders: FeatureEncoders) -> None:
    e = len(Emotion)
    assert bank.text_centres.shape == (e, CLUSTERS, encoders.d_t)
    assert bank.visual_centres.shape == (e, CLUSTERS, encoders.d_v)
    assert bank.counts.shape == (e, CLUSTERS)
    assert (bank.counts >= 1).all() and (bank.counts.sum(dim=1) == N_PER_EMOTION).all()
    torch.testing.assert_close(bank.text_centres.norm(dim=-1), torch.ones(e, CLUSTERS))
    assert bank.metadata.emotions == EMOTION_NAMES and bank.metadata.num_samples == e * N_PER_EMOTION
    summary = bank.summary()
    json.dumps(summary)
    assert summary["per_emotion"]["fear"]["samples"] == N_PER_EMOTION


def test_visual_centres_are_means_of_member_image_features(
    samples: list[EmotionSample], encoders: FeatureEncoders, bank: VisualPromptBank
) -> None:
    for emotion in Emotion:
        group = [s for s in samples if s.emotion == emotion]
        text = encoders.encode_text([s.caption for s in group])  # [12, d_t]
        images = encoders.encode_images([Image.open(s.image_path) for s in group])  # [12, d_v]
        labels = kmeans(text, CLUSTERS, seed=0).labels
        i = emotion.label_index
        for j in range(CLUSTERS):
            members = labels == j
            assert int(members.sum()) == int(bank.counts[i, j])
            torch.testing.assert_close(bank.visual_centres[i, j], images[members].mean(dim=0))
            torch.testing.assert_close(
                bank.text_centres[i, j], torch.nn.functional.normalize(text[members].mean(dim=0), dim=-1)
            )


def test_too_few_samples_for_clusters_is_an_error(
    samples: list[EmotionSample], encoders: FeatureEncoders
) -> None:
    few = [s for s in samples if s.emotion != Emotion.FEAR] + [
        s for s in samples if s.emotion == Emotion.FEAR
    ][:2]
    with pytest.raises(BankError) as exc:
        build_bank(few, encoders, clusters=CLUSTERS)
    assert "fear=2" in _one_line(exc)


# ---------------------------------------------------------------------- retrieval


def test_retrieve_returns_the_nearest_cluster(bank: VisualPromptBank) -> None:
    for emotion in (Emotion.AWE, Emotion.SADNESS):
        i = emotion.label_index
        tokens, indices, scores = bank.retrieve(bank.text_centres[i, 2], emotion, k=3)
        assert tokens.shape == (1, 3, bank.d_v) and indices.shape == scores.shape == (1, 3)
        assert int(indices[0, 0]) == 2 and float(scores[0, 0]) == pytest.approx(1.0, abs=1e-5)
        assert (scores[0, :-1] >= scores[0, 1:]).all()
        torch.testing.assert_close(tokens[0], bank.visual_centres[i, indices[0]])
        batch = bank.retrieve(bank.text_centres[i] * 3.0, emotion.value, k=1)  # any norm: cosine
        assert torch.equal(batch.indices[:, 0], torch.arange(CLUSTERS))


def test_negative_emotion_opposite_has_opposite_polarity(bank: VisualPromptBank) -> None:
    for emotion in Emotion:
        query = bank.text_centres[emotion.label_index, 0]
        opposite = bank.negative_emotion(emotion, query, strategy="opposite")
        assert opposite.polarity != emotion.polarity
        assert bank.negative_emotion(emotion, query, strategy="confusable") != emotion
        neg = bank.retrieve_negative(
            bank.text_centres[emotion.label_index], emotion, k=2, strategy="opposite"
        )
        assert neg.tokens.shape == (CLUSTERS, 2, bank.d_v) and len(neg.emotions) == CLUSTERS
        for row, e in enumerate(neg.emotions):
            assert e.polarity != emotion.polarity
            torch.testing.assert_close(neg.tokens[row], bank.visual_centres[e.label_index, neg.indices[row]])


def test_bad_queries_and_dims_are_named(bank: VisualPromptBank) -> None:
    with pytest.raises(ValueError, match="d_t=32"):
        bank.retrieve(torch.zeros(7), Emotion.AWE)
    with pytest.raises(ValueError, match=r"allowed: 1\.\.4"):
        bank.retrieve(torch.zeros(32), Emotion.AWE, k=5)
    with pytest.raises(ValueError, match="allowed: opposite, confusable"):
        bank.negative_emotion(Emotion.AWE, torch.ones(32), strategy="random")  # type: ignore[arg-type]
    bank.check_compatible(32)
    with pytest.raises(BankError) as exc:
        bank.check_compatible(768)
    assert "d_v=32" in _one_line(exc) and "d_v=768" in str(exc.value)


# ---------------------------------------------------------------------- file format


def test_save_load_round_trip_is_bit_exact(tmp_path: Path, bank: VisualPromptBank) -> None:
    path = bank.save(tmp_path / "banks" / "bank.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["bank.safetensors"]  # the temp file was renamed
    loaded = VisualPromptBank.load(path)
    for name in ("text_centres", "visual_centres", "counts"):
        a, b = getattr(bank, name), getattr(loaded, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert loaded.metadata == bank.metadata
    assert loaded.summary() == bank.summary()


def test_load_rejects_corrupt_and_foreign_files(tmp_path: Path, bank: VisualPromptBank) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(BankError) as exc:
        VisualPromptBank.load(garbage)
    assert str(garbage) in _one_line(exc)

    good = bank.save(tmp_path / "good.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(BankError) as exc:
        VisualPromptBank.load(truncated)
    assert str(truncated) in _one_line(exc)

    with pytest.raises(BankError) as exc:
        VisualPromptBank.load(tmp_path / "missing.safetensors")
    assert "does not exist" in _one_line(exc)

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(BankError, match="not a visual-prompt bank"):
        VisualPromptBank.load(other)


def _rewrite(bank: VisualPromptBank, path: Path, header: dict[str, str], drop: str | None = None) -> Path:
    tensors = {
        "text_centres": bank.text_centres,
        "visual_centres": bank.visual_centres,
        "counts": bank.counts,
    }
    if drop:
        del tensors[drop]
    save_file(tensors, str(path), metadata=header)
    return path


def test_load_rejects_wrong_emotion_order_and_missing_tensors(tmp_path: Path, bank: VisualPromptBank) -> None:
    header = bank.metadata.to_header()
    swapped = list(EMOTION_NAMES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    path = _rewrite(bank, tmp_path / "order.safetensors", header | {"emotions": json.dumps(swapped)})
    with pytest.raises(BankError) as exc:
        VisualPromptBank.load(path)
    assert "order" in _one_line(exc) and str(path) in str(exc.value)

    path = _rewrite(
        bank, tmp_path / "seven.safetensors", header | {"emotions": json.dumps(EMOTION_NAMES[:7])}
    )
    with pytest.raises(BankError, match="set and order"):
        VisualPromptBank.load(path)

    path = _rewrite(bank, tmp_path / "drop.safetensors", header, drop="visual_centres")
    with pytest.raises(BankError) as exc:
        VisualPromptBank.load(path)
    assert "missing tensor(s) visual_centres" in _one_line(exc)

    path = _rewrite(bank, tmp_path / "v2.safetensors", header | {"format_version": "2"})
    with pytest.raises(BankError, match="format version 2"):
        VisualPromptBank.load(path)
    assert BankMetadata.from_header(header, "x") == bank.metadata


# ---------------------------------------------------------------------- loaders


def _png(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def test_jsonl_loader_counts_and_skips_bad_rows(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png", (200, 0, 0))
    (tmp_path / "img" / "broken.png").write_bytes(b"definitely not a png")
    rows = [
        {"image": "img/a.png", "caption": "a dog", "emotion": "awe"},
        {"image": "img/b.png", "caption": "a house", "emotion": " Anger "},
        {"image": "img/missing.png", "caption": "a tree", "emotion": "fear"},
        {"image": "img/a.png", "caption": "a car", "emotion": "joy"},
        {"image": "img/broken.png", "caption": "a boat", "emotion": "sadness"},
        {"image": "img/a.png", "emotion": "awe"},
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json", "", "[1, 2]"]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded, summary = load_jsonl_dataset(path)
    assert [(s.caption, s.emotion) for s in loaded] == [("a dog", Emotion.AWE), ("a house", Emotion.ANGER)]
    assert loaded[0].image_path == (tmp_path / "img" / "a.png").resolve()
    assert summary.total == 8 and summary.loaded == 2 and summary.num_skipped == 6
    assert summary.skipped == {"missing_image": 1, "unknown_emotion": 1, "unreadable_image": 1, "bad_row": 3}
    assert any("joy" in e and "allowed" in e for e in summary.examples)
    assert summary.per_emotion["awe"] == 1 and summary.per_emotion["fear"] == 0
    assert load_emotion_dataset(path)[1].as_dict() == summary.as_dict()

    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text(json.dumps(rows[2]) + "\n")
    with pytest.raises(DatasetError, match="no usable samples"):
        load_jsonl_dataset(only_bad)


def _emoset_tree(root: Path) -> None:
    annotations = {
        "amusement/amusement_00000": {
            "emotion": "amusement",
            "image_id": "amusement_00000",
            "image": "image/amusement/amusement_00000.jpg",
            "brightness": 0.7,
            "colorfulness": 0.8,
            "scene": "/a/amusement_park",
            "object": ["Person", "Balloon"],
            "facial_expression": "happy",
        },
        "fear/fear_00001": {"emotion": "fear", "image_id": "fear_00001", "scene": "forest_path"},
        "sadness/sadness_00002": {"emotion": "sadness", "caption": "a rainy window at night"},
        "awe/awe_00003": {"emotion": "awe", "image_id": "awe_00003"},  # image missing on disk
        "anger/anger_00004": {"emotion": "rage", "image_id": "anger_00004"},
    }
    for rel, ann in annotations.items():
        emotion, name = rel.split("/")
        (root / "annotation" / emotion).mkdir(parents=True, exist_ok=True)
        (root / "annotation" / emotion / f"{name}.json").write_text(json.dumps(ann))
        if name != "awe_00003":
            path = root / "image" / emotion / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (90, 90, 90)).save(path, format="JPEG")
    (root / "annotation" / "fear" / "broken.json").write_text("{oops")
    splits = [
        ["amusement", "image/amusement/amusement_00000.jpg", "annotation/amusement/amusement_00000.json"],
        ["fear", "image/fear/fear_00001.jpg"],
    ]
    (root / "train.json").write_text(json.dumps(splits))


def test_emoset_layout_loader(tmp_path: Path) -> None:
    _emoset_tree(tmp_path)
    loaded, summary = load_emoset(tmp_path)
    by_emotion = {s.emotion: s for s in loaded}
    assert set(by_emotion) == {Emotion.AMUSEMENT, Emotion.FEAR, Emotion.SADNESS}
    assert by_emotion[Emotion.AMUSEMENT].caption == (
        "a photo of person, balloon, amusement park, happy facial expression"
    )
    assert by_emotion[Emotion.FEAR].caption == "a photo of forest path"
    assert by_emotion[Emotion.SADNESS].caption == "a rainy window at night"  # a ready caption wins
    assert by_emotion[Emotion.FEAR].image_path == (tmp_path / "image/fear/fear_00001.jpg").resolve()
    assert summary.total == 6 and summary.skipped == {"missing_image": 1, "unknown_emotion": 1, "bad_row": 1}

    train, split_summary = load_emoset(
        tmp_path, split="train", caption_template="an image showing {attributes}"
    )
    assert [s.emotion for s in train] == [Emotion.AMUSEMENT]
    assert train[0].caption.startswith("an image showing person")
    assert split_summary.skipped == {"bad_row": 1}
    assert emoset_caption({}) == "a photo of a scene"
    with pytest.raises(ValueError, match="attributes"):
        load_emoset(tmp_path, caption_template="a photo of {objects}")
    with pytest.raises(DatasetError, match="annotation/"):
        load_emoset(tmp_path / "image")


def test_dataset_fingerprint_ignores_location_and_order(tmp_path: Path) -> None:
    jsonl = make_toy_dataset(tmp_path / "a", n_per_emotion=2, size=16)
    assert jsonl.read_bytes() == make_toy_dataset(tmp_path / "again", n_per_emotion=2, size=16).read_bytes()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first, _ = load_jsonl_dataset(jsonl)
    moved, _ = load_jsonl_dataset(tmp_path / "b" / jsonl.name)
    fp = dataset_fingerprint(first)
    assert fp == dataset_fingerprint(list(reversed(moved)))
    changed = [EmotionSample(first[0].image_path, first[0].caption + "!", first[0].emotion), *first[1:]]
    assert dataset_fingerprint(changed) != fp


def test_toy_dataset_emotions_differ_in_brightness(samples: list[EmotionSample]) -> None:
    def brightness(emotion: Emotion) -> float:
        paths = [s.image_path for s in samples if s.emotion == emotion]
        return sum(float(np.asarray(Image.open(p).convert("L"), dtype=np.float64).mean()) for p in paths)

    assert brightness(Emotion.AMUSEMENT) > brightness(Emotion.SADNESS) > brightness(Emotion.FEAR)


# ---------------------------------------------------------------------- K-means


def test_kmeans_recovers_separable_blobs() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    truth = torch.arange(4).repeat_interleave(25)  # [100]
    points = centres[truth] + 0.5 * torch.randn(100, 2, generator=gen)  # [100, 2]
    for seed in range(5):
        result = kmeans(points, 4, seed=seed)
        assert result.converged
        # Same partition up to renaming: each true blob maps to exactly one cluster and vice versa.
        pairs = {(int(t), int(p)) for t, p in zip(truth, result.labels, strict=True)}
        assert len(pairs) == 4 and len({p for _, p in pairs}) == 4
        torch.testing.assert_close(result.centres[result.labels[::25]].float(), centres, atol=0.3, rtol=0)
    a, b = kmeans(points, 4, seed=3), kmeans(points, 4, seed=3)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centres, b.centres)
    with pytest.raises(ValueError, match="distinct"):
        kmeans(torch.zeros(5, 2), 2)
