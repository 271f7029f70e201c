"""Training data: SFT examples from the toy set, preference-pair JSONL loading, winner-first collation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ed_common.emotions import Emotion
from ed_diffusion.emotion_datasets import make_toy_dataset
from ed_diffusion.errors import DatasetError
from ed_diffusion.training.datasets import (
    PreferencePairs,
    SFTDataset,
    collate_pairs,
    collate_sft,
    load_preference_pairs,
    prepare_image,
)

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

N_PER_EMOTION = 2
RESOLUTION = 16


@pytest.fixture(scope="module")
def toy_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), n_per_emotion=N_PER_EMOTION, seed=0, size=32)


def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (24, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# ---------------------------------------------------------------------- images and SFT


def test_sft_dataset_on_the_toy_set(toy_jsonl: Path) -> None:
    ds = SFTDataset.load(toy_jsonl, RESOLUTION)
    assert len(ds) == 8 * N_PER_EMOTION
    assert ds.summary is not None and ds.summary.num_skipped == 0
    for i in (0, len(ds) - 1):
        ex = ds[i]
        px = ex["pixel_values"]
        assert px.shape == (3, RESOLUTION, RESOLUTION) and px.dtype == torch.float32
        assert float(px.min()) >= -1.0 and float(px.max()) <= 1.0
        assert float(px.max() - px.min()) > 0.1  # a real image, not a constant
        assert ex["caption"] == ds.samples[i].caption and ex["caption"].startswith("a ")
        assert ex["emotion"] == ds.samples[i].emotion.label_index
        assert ex["original_size"] == (32, 32) and ex["crop_top_left"] == (0, 0)
    assert {ds[i]["emotion"] for i in range(len(ds))} == set(range(8))

    batch = next(iter(DataLoader(ds, batch_size=5, shuffle=False, collate_fn=collate_sft)))
    assert batch["pixel_values"].shape == (5, 3, RESOLUTION, RESOLUTION)
    assert len(batch["captions"]) == 5
    assert batch["emotions"].dtype == torch.long and batch["emotions"].shape == (5,)
    assert batch["original_sizes"].tolist() == [[32, 32]] * 5
    assert batch["crop_top_lefts"].shape == (5, 2)


def test_prepare_image_scales_to_minus_one_one_and_centre_crops(tmp_path: Path) -> None:
    # 40 wide x 20 high -> shorter side 20 to 16: 32 x 16, crop left = (32 - 16) // 2 = 8, top = 0.
    path = _solid(tmp_path / "wide.png", (255, 0, 127), size=(40, 20))
    img = prepare_image(path, 16)
    assert img.pixel_values.shape == (3, 16, 16)
    assert img.original_size == (20, 40) and img.crop_top_left == (0, 8)
    # 255 -> 1, 0 -> -1, 127 -> 127/127.5 − 1 = -0.00392
    expected = torch.tensor([1.0, -1.0, 127 / 127.5 - 1.0]).view(3, 1, 1).expand(3, 16, 16)
    torch.testing.assert_close(img.pixel_values, expected)

    # The crop is the centre: a tall image with a red top band and a blue bottom band loses both bands.
    tall = Image.new("RGB", (16, 32), (0, 255, 0))
    tall.paste((255, 0, 0), (0, 0, 16, 8))
    tall.paste((0, 0, 255), (0, 24, 16, 32))
    tall.save(tmp_path / "tall.png")
    centre = prepare_image(tmp_path / "tall.png", 16)
    assert centre.crop_top_left == (8, 0)
    torch.testing.assert_close(centre.pixel_values[1], torch.ones(16, 16))  # all green


def test_prepare_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        prepare_image(_solid(tmp_path / "a.png", (0, 0, 0)), 12)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(DatasetError, match="cannot read training image"):
        prepare_image(bad, 16)


# ---------------------------------------------------------------------- preference pairs


def _write_pairs(tmp_path: Path) -> Path:
    img = tmp_path / "img"
    _solid(img / "w0.png", (250, 200, 50))
    _solid(img / "l0.png", (20, 20, 60))
    _solid(img / "w1.png", (200, 250, 150))
    _solid(img / "l1.png", (90, 10, 10))
    (img / "broken.png").write_text("not a png")
    rows: list[Any] = [
        {"caption": "a dog", "emotion": "amusement", "winner": "img/w0.png", "loser": "img/l0.png"},
        {
            "caption": "a house",
            "emotion": "Contentment ",
            "winner": str(img / "w1.png"),
            "loser": "img/l1.png",
        },
        "not json {",
        {"caption": "a car", "emotion": "awe", "winner": "img/w0.png"},  # no loser
        {"caption": "a car", "emotion": "joy", "winner": "img/w0.png", "loser": "img/l0.png"},
        {"caption": "a car", "emotion": "awe", "winner": "img/w0.png", "loser": "img/missing.png"},
        {"caption": "a car", "emotion": "awe", "winner": "img/w0.png", "loser": "img/../img/w0.png"},
        {"caption": "a car", "emotion": "awe", "winner": "img/w0.png", "loser": "img/broken.png"},
        {"caption": "", "emotion": "awe", "winner": "img/w0.png", "loser": "img/l0.png"},
        ["a list"],
    ]
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n", encoding="utf-8")
    return path


def test_preference_pairs_skip_and_count_bad_rows(tmp_path: Path) -> None:
    pairs, summary = load_preference_pairs(_write_pairs(tmp_path))
    assert [(p.caption, p.emotion) for p in pairs] == [
        ("a dog", Emotion.AMUSEMENT),
        ("a house", Emotion.CONTENTMENT),
    ]
    assert pairs[0].winner == (tmp_path / "img" / "w0.png").resolve()  # relative to the JSONL
    assert summary.total == 10  # the blank line is not a row
    assert summary.loaded == 2
    assert summary.skipped == {"bad_row": 5, "unknown_emotion": 1, "missing_image": 1, "unreadable_image": 1}
    assert summary.num_skipped == 8
    assert summary.per_emotion["amusement"] == 1 and summary.per_emotion["contentment"] == 1
    assert len(summary.examples) == 5 and summary.examples[0].startswith(
        "pairs.jsonl:4: bad_row (invalid JSON"
    )
    assert any("same image" in e for e in summary.examples)

    # Without verification, the undecodable file passes the loader (it fails later, when decoded).
    pairs, summary = load_preference_pairs(tmp_path / "pairs.jsonl", verify_images=False)
    assert len(pairs) == 3 and "unreadable_image" not in summary.skipped


def test_preference_pairs_with_nothing_usable(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"caption": "x"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"no usable pairs \(bad_row=1\)"):
        load_preference_pairs(path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_preference_pairs(tmp_path / "missing.jsonl")


def test_collate_pairs_puts_winners_first(tmp_path: Path) -> None:
    ds = PreferencePairs.load(_write_pairs(tmp_path), RESOLUTION)
    assert len(ds) == 2 and ds.summary is not None and ds.summary.num_skipped == 8
    loader = DataLoader(ds, batch_size=2, shuffle=False, collate_fn=collate_pairs)
    batch = next(iter(loader))
    assert batch["num_pairs"] == 2
    px = batch["pixel_values"]
    assert px.shape == (4, 3, RESOLUTION, RESOLUTION)
    # Rows: winner 0, winner 1, loser 0, loser 1 (each a solid colour, compared at one pixel).
    colours = [(250, 200, 50), (200, 250, 150), (20, 20, 60), (90, 10, 10)]
    expected = torch.tensor(colours, dtype=torch.float32) / 127.5 - 1.0  # [4, 3]
    torch.testing.assert_close(px[:, :, 0, 0], expected)
    assert batch["captions"] == ["a dog", "a house", "a dog", "a house"]
    labels = [Emotion.AMUSEMENT.label_index, Emotion.CONTENTMENT.label_index]
    assert batch["emotions"].tolist() == labels + labels
    assert batch["original_sizes"].tolist() == [[24, 24]] * 4
    # The trainer's split: err.chunk(2) gives (winners, losers) of the same pairs.
    winners, losers = px.chunk(2)
    torch.testing.assert_close(winners[1], ds[1]["winner"])
    torch.testing.assert_close(losers[1], ds[1]["loser"])


def test_datasets_reject_empty_input_and_bad_resolution(toy_jsonl: Path) -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        SFTDataset([], RESOLUTION)
    with pytest.raises(ValueError, match="at least one pair"):
        PreferencePairs([], RESOLUTION)
    with pytest.raises(ValueError, match=r"multiple of 8 .*, got 10"):
        SFTDataset.load(toy_jsonl, 10)
    with pytest.raises(ValueError, match="empty"):
        collate_pairs([])
    with pytest.raises(ValueError, match="empty"):
        collate_sft([])
