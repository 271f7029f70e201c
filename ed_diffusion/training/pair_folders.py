"""Preference pairs from a ``w/`` + ``l/`` folder layout (kohya sd-scripts' preference sets, plus emotion).

Layout, one *subset* folder per target emotion::

    pairs/
      fear/                 # or kohya's repeat-count form "1_fear"; the name (after "N_") is the emotion
        w/dog.png           # winner
        w/dog.caption       # its caption (or dog.txt); else the loser's caption file
        l/dog.png           # loser: the same file stem, any image suffix
      contentment/
        w/...  l/...

``pairs/`` may also be a subset itself (``pairs/w``, ``pairs/l``, the emotion from the folder's own name).
Unpaired files, a missing caption or an unreadable image skip that pair and are counted by reason, as the
JSONL loader counts its rows; a subset whose name is no emotion is an error (it would otherwise be dropped
whole).
"""

from __future__ import annotations

import re
from pathlib import Path

from ed_common.emotions import EMOTION_NAMES, Emotion, UnknownEmotionError, parse_emotion
from ed_diffusion.emotion_datasets import LoadSummary
from ed_diffusion.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_SUFFIXES = (".caption", ".txt")
MAX_CAPTION_BYTES = 16_384
_REPEATS = re.compile(r"^\d+_")


def subset_emotion(folder: Path) -> Emotion:
    """The emotion a subset folder is named for (``fear``, ``1_fear``).

    Raises:
        DatasetError: the name is no emotion.
    """
    name = _REPEATS.sub("", folder.name)
    try:
        return parse_emotion(name)
    except UnknownEmotionError:
        raise DatasetError(
            f"pair folder {folder}: {name!r} is not an emotion; name each subset after its target emotion "
            f"({', '.join(EMOTION_NAMES)})"
        ) from None


def subsets(root: Path) -> list[Path]:
    """The subset folders of ``root`` (``root`` itself when it has ``w/``).

    Raises:
        DatasetError: no subset (no ``w/`` folder at either level).
    """
    if (root / "w").is_dir():
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / "w").is_dir())
    if not found:
        raise DatasetError(
            f"pair folder {root} has no w/ folder, nor subfolders with one (expected <emotion>/w and "
            "<emotion>/l)"
        )
    return found


def _images(folder: Path) -> tuple[dict[str, Path], set[str]]:
    """Images by file stem, and the stems that name more than one image (``dog.png`` and ``dog.jpg``)."""
    found: dict[str, Path] = {}
    twice: set[str] = set()
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                if p.stem in found:
                    twice.add(p.stem)
                found[p.stem] = p
    return found, twice


def _caption(stem: str, folders: tuple[Path, ...]) -> str | None:
    """The first caption file's text; ``""`` when it is over the size limit (the pair is skipped)."""
    for folder in folders:
        for suffix in CAPTION_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                if path.stat().st_size > MAX_CAPTION_BYTES:
                    return ""
                text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
                return text or None
    return None


def read_pair_folders(root: Path) -> tuple[list[tuple[str, Emotion, Path, Path]], LoadSummary]:
    """``(caption, emotion, winner, loser)`` per pair in subset then file-name order, and the summary.

    Images are not opened here (the caller verifies them as it does JSONL pairs).

    Raises:
        DatasetError: no subset, or a subset not named for an emotion.
    """
    summary = LoadSummary(source=str(root))
    rows: list[tuple[str, Emotion, Path, Path]] = []
    for subset in subsets(root):
        emotion = subset_emotion(subset)
        (winners, twice_w), (losers, twice_l) = _images(subset / "w"), _images(subset / "l")
        for stem in sorted(set(winners) | set(losers)):
            summary.total += 1
            where = f"{subset.name}/{stem}"
            if stem in twice_w | twice_l:
                summary.skip("bad_row", where, f"more than one image is named {stem}.* in w/ or l/")
                continue
            if stem not in winners or stem not in losers:
                side = "l" if stem in winners else "w"
                summary.skip("missing_image", where, f"no {side}/{stem}.* to pair it with")
                continue
            caption = _caption(stem, (subset / "w", subset / "l", subset))
            if not caption:
                why = "caption file over 16 KB" if caption == "" else f"no caption ({stem}.caption or .txt)"
                summary.skip("bad_row", where, why)
                continue
            winner, loser = winners[stem].resolve(), losers[stem].resolve()
            if winner == loser:  # one file linked twice: no preference, no gradient
                summary.skip("bad_row", where, "winner and loser are the same file")
                continue
            rows.append((caption, emotion, winner, loser))
    return rows, summary
