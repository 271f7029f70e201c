"""Training datasets: emotion images for SFT (and negative-VP DPO) and image preference pairs for DPO.

Images become ``[3, H, W]`` float32 tensors in [-1, 1] (the VAE's input range) by a PIL resize of the shorter
side to the resolution and a centre crop, as the diffusers training scripts do with torchvision (which this
project does not install). Each example also carries the original size and the crop's top-left corner, the
SDXL micro-conditioning (``add_time_ids``) that diffusers' SDXL training script feeds the UNet.

``collate_pairs`` stacks winners and losers into one batch (winners first), so a training step runs the UNet
once on ``[2B, ...]`` and splits the per-sample errors with ``err.chunk(2)``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ed_common.emotions import EMOTION_NAMES, Emotion, UnknownEmotionError, parse_emotion
from ed_common.image_files import ImageReadError, read_rgb
from ed_diffusion.emotion_datasets import EmotionSample, LoadSummary, finish_summary, load_emotion_dataset
from ed_diffusion.errors import DatasetError
from ed_diffusion.training.pair_folders import read_pair_folders

logger = logging.getLogger(__name__)

_PAIR_KEYS = ("caption", "emotion", "winner", "loser")


# ---------------------------------------------------------------------- images


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the VAE, with the SDXL micro-conditioning of how it was cropped.

    Attributes:
        pixel_values: ``[3, resolution, resolution]`` float32 in [-1, 1].
        original_size: ``(height, width)`` of the file before resizing.
        crop_top_left: ``(top, left)`` of the crop in the resized image.
    """

    pixel_values: Tensor
    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8 or resolution % 8:
        raise ValueError(
            f"resolution must be a positive multiple of 8 (the VAE downsamples by 8), got {resolution!r}"
        )
    return resolution


def prepare_image(path: Path, resolution: int) -> PreparedImage:
    """Open ``path`` as RGB, resize the short side to ``resolution``, centre-crop a square, scale to [-1, 1].

    Args:
        path: an image file PIL can decode.
        resolution: output side in pixels (a multiple of 8).

    Raises:
        ValueError: a bad ``resolution``.
        DatasetError: the image cannot be decoded (names the file).
    """
    _check_resolution(resolution)
    try:
        rgb = read_rgb(path, what="training image")
    except ImageReadError as exc:
        raise DatasetError(str(exc)) from None
    width, height = rgb.size
    scale = resolution / min(width, height)
    # max(): rounding must never leave a side shorter than the crop.
    new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    # Bilinear with PIL's antialiasing on downscale, the torchvision Resize default of the diffusers scripts.
    resized = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    cropped = resized.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(cropped, dtype=np.float32)  # [H, W, 3] in 0..255
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1)  # [3, H, W]
    pixels = pixels / 127.5 - 1.0  # [3, H, W] in [-1, 1]
    return PreparedImage(pixels.contiguous(), (height, width), (top, left))


# ---------------------------------------------------------------------- SFT


class SFTExample(TypedDict):
    """One SFT example (``SFTDataset[i]``)."""

    pixel_values: Tensor  # [3, H, W] in [-1, 1]
    caption: str
    emotion: int  # EmoSet label index (Emotion.label_index)
    original_size: tuple[int, int]  # (height, width)
    crop_top_left: tuple[int, int]  # (top, left)


class SFTBatch(TypedDict):
    """A collated SFT batch (``collate_sft``)."""

    pixel_values: Tensor  # [B, 3, H, W]
    captions: list[str]
    emotions: Tensor  # [B] long
    original_sizes: Tensor  # [B, 2] long, (height, width)
    crop_top_lefts: Tensor  # [B, 2] long, (top, left)


class SFTDataset(Dataset[SFTExample]):
    """Emotion image-text samples as SFT examples (images decoded lazily, one per ``__getitem__``).

    Attributes:
        samples: the ``EmotionSample`` rows, in loader order.
        resolution: the image side in pixels.
        summary: what the loader read and skipped (``None`` when built from samples directly).
    """

    def __init__(
        self, samples: Sequence[EmotionSample], resolution: int, summary: LoadSummary | None = None
    ) -> None:
        """Wrap already-loaded samples.

        Raises:
            ValueError: ``samples`` is empty or ``resolution`` is not a positive multiple of 8.
        """
        if not samples:
            raise ValueError("SFTDataset needs at least one sample, got none")
        self.samples = list(samples)
        self.resolution = _check_resolution(resolution)
        self.summary = summary

    @classmethod
    def load(cls, path: str | os.PathLike[str], resolution: int, *, verify_images: bool = True) -> SFTDataset:
        """Load a JSONL file or an EmoSet root with ``ed_diffusion.emotion_datasets.load_emotion_dataset``.

        Bad rows are counted in ``summary``, logged once and skipped.

        Raises:
            DatasetError: nothing usable at ``path``.
            ValueError: a bad ``resolution``.
        """
        _check_resolution(resolution)  # before reading a possibly large dataset
        samples, summary = load_emotion_dataset(path, verify_images=verify_images)
        return cls(samples, resolution, summary)

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.samples)

    def __getitem__(self, index: int) -> SFTExample:
        """Decode sample ``index``.

        Raises:
            DatasetError: its image cannot be decoded.
        """
        sample = self.samples[index]
        image = prepare_image(sample.image_path, self.resolution)
        return SFTExample(
            pixel_values=image.pixel_values,
            caption=sample.caption,
            emotion=sample.emotion.label_index,
            original_size=image.original_size,
            crop_top_left=image.crop_top_left,
        )


def collate_sft(examples: Sequence[SFTExample]) -> SFTBatch:
    """Stack SFT examples into a batch (a ``DataLoader`` ``collate_fn``).

    Raises:
        ValueError: no examples.
    """
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    return SFTBatch(
        pixel_values=torch.stack([e["pixel_values"] for e in examples]),  # [B, 3, H, W]
        captions=[e["caption"] for e in examples],
        emotions=torch.tensor([e["emotion"] for e in examples], dtype=torch.long),  # [B]
        original_sizes=torch.tensor([e["original_size"] for e in examples], dtype=torch.long),  # [B, 2]
        crop_top_lefts=torch.tensor([e["crop_top_left"] for e in examples], dtype=torch.long),  # [B, 2]
    )


# ---------------------------------------------------------------------- preference pairs


@dataclass(frozen=True)
class PreferencePair:
    """Two images for one caption and target emotion; the winner expresses the emotion better.

    Attributes:
        caption: the text both images were made from.
        emotion: the target emotion (the condition both are scored under).
        winner: absolute path of the preferred image.
        loser: absolute path of the dispreferred image.
    """

    caption: str
    emotion: Emotion
    winner: Path
    loser: Path


def load_preference_pairs(
    path: str | os.PathLike[str], *, verify_images: bool = True
) -> tuple[list[PreferencePair], LoadSummary]:
    """Read a JSONL of ``{"caption": ..., "emotion": ..., "winner": ..., "loser": ...}`` rows, or a folder.

    A directory is read as the ``w/`` + ``l/`` layout of ``pair_folders`` (kohya's, one subset per emotion).

    Image paths are relative to the JSONL file's directory (absolute paths are kept); extra keys are ignored.
    A bad row (malformed, unknown emotion, missing or unreadable image, winner == loser) is counted by reason
    in the ``LoadSummary``, logged once as a warning and skipped.

    Args:
        path: the JSONL file (e.g. ``emodir pairs build``'s ``pairs.jsonl``) or a pair folder.
        verify_images: open each image header (PIL ``verify``) and skip unreadable ones.

    Returns:
        The pairs in file order and the load summary (``per_emotion`` counts pairs per target emotion).

    Raises:
        DatasetError: the file is missing or no row is usable.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return _load_pair_folders(p, verify_images)
    if not p.is_file():
        raise DatasetError(f"preference-pair JSONL (or w/ + l/ folder) {p} does not exist")
    summary = LoadSummary(source=str(p))
    pairs: list[PreferencePair] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            summary.total += 1
            pair = _parse_pair(line, p.parent, f"{p.name}:{lineno}", summary, verify_images)
            if pair is not None:
                pairs.append(pair)
    finish_summary(
        summary,
        [pair.emotion for pair in pairs],
        unit="pairs",
        empty=f"preference-pair JSONL {p} has no usable pairs",
    )
    return pairs, summary


def _load_pair_folders(root: Path, verify: bool) -> tuple[list[PreferencePair], LoadSummary]:
    rows, summary = read_pair_folders(root)
    pairs = []
    for caption, emotion, winner, loser in rows:
        bad = next((image for image in (winner, loser) if verify and not _verifies(image)), None)
        if bad is not None:
            summary.skip("unreadable_image", bad.name, str(bad))
            continue
        pairs.append(PreferencePair(caption=caption, emotion=emotion, winner=winner, loser=loser))
    empty = f"pair folder {root} has no usable pairs"
    finish_summary(summary, [pair.emotion for pair in pairs], unit="pairs", empty=empty)
    return pairs, summary


def _parse_pair(
    line: str, base: Path, where: str, summary: LoadSummary, verify: bool
) -> PreferencePair | None:
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        summary.skip("bad_row", where, f"invalid JSON: {exc.msg}")
        return None
    if not isinstance(row, dict):
        summary.skip("bad_row", where, "row is not a JSON object")
        return None
    missing = [k for k in _PAIR_KEYS if k not in row]
    if missing:
        summary.skip(
            "bad_row", where, f"missing key(s) {', '.join(missing)}; required: {', '.join(_PAIR_KEYS)}"
        )
        return None
    bad = [k for k in _PAIR_KEYS if not isinstance(row[k], str) or not row[k].strip()]
    if bad:
        summary.skip("bad_row", where, f"key(s) {', '.join(bad)} must be non-empty strings")
        return None
    try:
        emotion = parse_emotion(row["emotion"])
    except UnknownEmotionError:
        summary.skip("unknown_emotion", where, f"{row['emotion']!r}; allowed: {', '.join(EMOTION_NAMES)}")
        return None
    winner = (base / row["winner"]).expanduser().resolve()
    loser = (base / row["loser"]).expanduser().resolve()
    if winner == loser:
        # Identical images give identical errors: the pair carries no preference and no gradient.
        summary.skip("bad_row", where, f"winner and loser are the same image {winner}")
        return None
    for image in (winner, loser):
        if not image.is_file():
            summary.skip("missing_image", where, str(image))
            return None
        if verify and not _verifies(image):
            summary.skip("unreadable_image", where, str(image))
            return None
    return PreferencePair(caption=row["caption"].strip(), emotion=emotion, winner=winner, loser=loser)


def _verifies(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    return True


class PairExample(TypedDict):
    """One preference-pair example (``PreferencePairs[i]``)."""

    winner: Tensor  # [3, H, W] in [-1, 1]
    loser: Tensor  # [3, H, W] in [-1, 1]
    caption: str
    emotion: int  # EmoSet label index of the target emotion
    winner_original_size: tuple[int, int]  # (height, width)
    loser_original_size: tuple[int, int]
    winner_crop_top_left: tuple[int, int]  # (top, left)
    loser_crop_top_left: tuple[int, int]


class PairBatch(TypedDict):
    """A collated pair batch: rows ``[:B]`` are the winners, rows ``[B:]`` their losers, in the same order."""

    pixel_values: Tensor  # [2B, 3, H, W]
    captions: list[str]  # 2B, the B captions twice
    emotions: Tensor  # [2B] long, the B target emotions twice
    original_sizes: Tensor  # [2B, 2] long
    crop_top_lefts: Tensor  # [2B, 2] long
    num_pairs: int  # B


class PreferencePairs(Dataset[PairExample]):
    """Image preference pairs for Diffusion-DPO (images decoded lazily, one pair per ``__getitem__``).

    Attributes:
        pairs: the ``PreferencePair`` rows, in file order.
        resolution: the image side in pixels.
        summary: what the loader read and skipped (``None`` when built from pairs directly).
    """

    def __init__(
        self, pairs: Sequence[PreferencePair], resolution: int, summary: LoadSummary | None = None
    ) -> None:
        """Wrap already-loaded pairs.

        Raises:
            ValueError: ``pairs`` is empty or ``resolution`` is not a positive multiple of 8.
        """
        if not pairs:
            raise ValueError("PreferencePairs needs at least one pair, got none")
        self.pairs = list(pairs)
        self.resolution = _check_resolution(resolution)
        self.summary = summary

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], resolution: int, *, verify_images: bool = True
    ) -> PreferencePairs:
        """Read a pair JSONL with ``load_preference_pairs``.

        Raises:
            DatasetError: the file is missing or no row is usable.
            ValueError: a bad ``resolution``.
        """
        _check_resolution(resolution)
        pairs, summary = load_preference_pairs(path, verify_images=verify_images)
        return cls(pairs, resolution, summary)

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.pairs)

    def __getitem__(self, index: int) -> PairExample:
        """Decode pair ``index``.

        Raises:
            DatasetError: an image cannot be decoded.
        """
        pair = self.pairs[index]
        winner = prepare_image(pair.winner, self.resolution)
        loser = prepare_image(pair.loser, self.resolution)
        return PairExample(
            winner=winner.pixel_values,
            loser=loser.pixel_values,
            caption=pair.caption,
            emotion=pair.emotion.label_index,
            winner_original_size=winner.original_size,
            loser_original_size=loser.original_size,
            winner_crop_top_left=winner.crop_top_left,
            loser_crop_top_left=loser.crop_top_left,
        )


def collate_pairs(examples: Sequence[PairExample]) -> PairBatch:
    """Stack B pairs into ONE batch of 2B images, winners first, so the UNet runs once per step.

    Row ``i`` and row ``B + i`` are the winner and loser of pair ``i``; captions and emotions are repeated so
    every row has its own condition. The trainer must give rows ``i`` and ``B + i`` the same noise and
    timestep (Diffusion-DPO compares their errors) and split per-sample errors with ``err.chunk(2)``.

    Raises:
        ValueError: no examples.
    """
    if not examples:
        raise ValueError("cannot collate an empty list of pairs")
    winners = torch.stack([e["winner"] for e in examples])  # [B, 3, H, W]
    losers = torch.stack([e["loser"] for e in examples])  # [B, 3, H, W]
    captions = [e["caption"] for e in examples]
    emotions = torch.tensor([e["emotion"] for e in examples], dtype=torch.long)  # [B]
    sizes = [e["winner_original_size"] for e in examples] + [e["loser_original_size"] for e in examples]
    crops = [e["winner_crop_top_left"] for e in examples] + [e["loser_crop_top_left"] for e in examples]
    return PairBatch(
        pixel_values=torch.cat([winners, losers]),  # [2B, 3, H, W]
        captions=captions + captions,
        emotions=emotions.repeat(2),  # [2B]
        original_sizes=torch.tensor(sizes, dtype=torch.long),  # [2B, 2]
        crop_top_lefts=torch.tensor(crops, dtype=torch.long),  # [2B, 2]
        num_pairs=len(examples),
    )
