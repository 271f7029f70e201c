"""Preference pairs from a kohya-style ``w/`` + ``l/`` folder layout, read by ``load_preference_pairs``."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ed_common.emotions import Emotion
from ed_diffusion.errors import DatasetError
from ed_diffusion.training.datasets import PreferencePairs, load_preference_pairs


def png(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def test_subsets_named_for_emotions_pair_files_by_stem(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    png(root / "fear" / "w" / "dog.png")
    png(root / "fear" / "l" / "dog.jpg")  # any image suffix pairs by stem
    (root / "fear" / "w" / "dog.caption").write_text("a dog  in the\nrain\n")
    png(root / "1_contentment" / "w" / "cat.png")  # kohya's repeat-count prefix
    png(root / "1_contentment" / "l" / "cat.png")
    (root / "1_contentment" / "l" / "cat.txt").write_text("a cat")  # the loser's caption, as a fallback
    png(root / "fear" / "w" / "lonely.png")  # no loser: skipped and counted
    png(root / "fear" / "w" / "nocap.png")
    png(root / "fear" / "l" / "nocap.png")  # no caption: skipped and counted
    pairs, summary = load_preference_pairs(root)
    assert [(p.caption, p.emotion) for p in pairs] == [
        ("a cat", Emotion("contentment")),
        ("a dog in the rain", Emotion("fear")),
    ]
    assert pairs[1].winner == (root / "fear" / "w" / "dog.png").resolve()
    assert pairs[1].loser == (root / "fear" / "l" / "dog.jpg").resolve()
    assert summary.total == 4 and summary.skipped == {"missing_image": 1, "bad_row": 1}
    assert len(PreferencePairs(pairs, 16)[0]["winner"].shape) == 3


def test_a_folder_that_is_one_subset_takes_its_own_name(tmp_path: Path) -> None:
    root = tmp_path / "sadness"
    png(root / "w" / "a.png")
    png(root / "l" / "a.png")
    (root / "a.txt").write_text("a rainy street")  # beside w/ and l/ works too
    pairs, _ = load_preference_pairs(root)
    assert [(p.caption, p.emotion) for p in pairs] == [("a rainy street", Emotion("sadness"))]


def test_unreadable_images_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "fear"
    png(root / "w" / "a.png")
    (root / "l").mkdir()
    (root / "l" / "a.png").write_bytes(b"not a png")
    png(root / "w" / "b.png")
    png(root / "l" / "b.png")
    (root / "a.txt").write_text("x")
    (root / "b.txt").write_text("y")
    pairs, summary = load_preference_pairs(root)
    assert [p.caption for p in pairs] == ["y"] and summary.skipped == {"unreadable_image": 1}


def test_bad_layouts_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"has no w/ folder, nor subfolders with one"):
        load_preference_pairs(tmp_path / "empty")
    png(tmp_path / "p" / "happy" / "w" / "a.png")
    with pytest.raises(DatasetError, match=r"'happy' is not an emotion; name each subset after .*amusement"):
        load_preference_pairs(tmp_path / "p")
    png(tmp_path / "q" / "fear" / "w" / "a.png")
    with pytest.raises(DatasetError, match=r"pair folder .*q has no usable pairs"):
        load_preference_pairs(tmp_path / "q")


def test_links_duplicates_and_huge_captions_skip_one_pair(tmp_path: Path) -> None:
    root = tmp_path / "fear"
    outside = png(tmp_path / "elsewhere" / "x.png")
    png(root / "w" / "same.png")
    (root / "l").mkdir()
    (root / "l" / "same.png").symlink_to(root / "w" / "same.png")  # one file twice
    png(root / "w" / "dup.png")
    png(root / "w" / "dup.jpg")  # two winners named dup
    png(root / "l" / "dup.png")
    png(root / "w" / "big.png")
    png(root / "l" / "big.png")
    (root / "big.txt").write_text("x" * 20_000)
    (root / "w" / "out.png").symlink_to(outside)  # a link out of the folder is followed, not a crash
    (root / "l" / "out.png").write_bytes(b"broken")
    png(root / "w" / "ok.png")
    png(root / "l" / "ok.png")
    for stem in ("same", "dup", "out", "ok"):
        (root / f"{stem}.txt").write_text(stem)
    pairs, summary = load_preference_pairs(root)
    assert [p.caption for p in pairs] == ["ok"]
    assert summary.skipped == {"bad_row": 3, "unreadable_image": 1}
