"""Write the synthetic affective world to disk: a shortcut-biased train split and an unusual-pair test split.

Layout of a world directory (rows in the ``ed_diffusion.emotion_datasets.load_jsonl_dataset`` format, image
paths relative to the JSONL file)::

    <root>/train.jsonl, <root>/test.jsonl
    <root>/images/train/train_00000.png ...
    <root>/images/test/test_00000.png ...
    <root>/world.json          # spec, arguments and the summary of both splits

Each row holds ``image``, ``caption`` and ``emotion`` (what the loader reads) plus ``content``, ``split``,
``typical`` (whether the pair is a shortcut pair) and ``attributes`` (the drawn style, for analysis).

**Train** (the semantic shortcut on purpose): emotions are balanced; with probability ``shortcut`` an image's
content is one of its emotion's typical contents, else any content uniformly. **Test**: only the unusual
(non-typical) pairs, emotions balanced and contents balanced within each emotion, so a model that learnt
"awe = star" instead of "awe = deep blue and gold" fails there while a pixel oracle still reads the emotion.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from ed_common.emotions import Emotion, parse_emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.world.render import check_size, draw_world_image
from ed_diffusion.world.spec import WorldSpec, sample_attributes

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
TRAIN_JSONL = "train.jsonl"
TEST_JSONL = "test.jsonl"
META_JSON = "world.json"
FORMAT_NAME = "emodir-affective-world"
FORMAT_VERSION = 1
MAX_SAMPLES = 1_000_000
_SPLIT_CODE: dict[str, int] = {"train": 0, "test": 1}  # part of every per-image seed
_PLAN_STREAM = 7919  # seed word of the split's pair plan, apart from the per-image streams


@dataclass(frozen=True)
class WorldPaths:
    """Where a generated world lives.

    Attributes:
        root: the world directory.
        train_jsonl: the train split (shortcut-biased pairs).
        test_jsonl: the test split (unusual pairs only).
        meta_json: spec, arguments and split summaries.
    """

    root: Path
    train_jsonl: Path
    test_jsonl: Path
    meta_json: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> WorldPaths:
        """The paths of a world directory (whether or not it exists)."""
        base = Path(root).expanduser()
        return cls(base, base / TRAIN_JSONL, base / TEST_JSONL, base / META_JSON)


@dataclass(frozen=True)
class WorldSummary:
    """Counts and shortcut strength of one split.

    Attributes:
        n: number of rows.
        pair_counts: rows per ``(content, emotion name)`` pair (pairs with no row are absent).
        per_emotion: rows per emotion name (EmoSet order, all 8 present).
        per_content: rows per content (class order, all present).
        typical_fraction: fraction of rows whose pair is typical.
        shortcut_strength: ``(typical_fraction - chance) / (1 - chance)``, with ``chance`` the typical
            fraction that uniform contents would give; estimates ``make_world``'s ``shortcut`` (about 0 when
            content is independent of emotion, negative when typical pairs are avoided as in the test split).
        mutual_information_bits: mutual information between content and emotion over the rows.
    """

    n: int
    pair_counts: dict[tuple[str, str], int]
    per_emotion: dict[str, int]
    per_content: dict[str, int]
    typical_fraction: float
    shortcut_strength: float
    mutual_information_bits: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (pair keys read ``"<content>|<emotion>"``)."""
        return {
            "n": self.n,
            "pair_counts": {f"{c}|{e}": k for (c, e), k in sorted(self.pair_counts.items())},
            "per_emotion": dict(self.per_emotion),
            "per_content": dict(self.per_content),
            "typical_fraction": round(self.typical_fraction, 6),
            "shortcut_strength": round(self.shortcut_strength, 6),
            "mutual_information_bits": round(self.mutual_information_bits, 6),
        }


def typical_pairs(spec: WorldSpec | None = None) -> list[tuple[str, Emotion]]:
    """Every typical ``(content, emotion)`` pair, by emotion (EmoSet order) then content (class order)."""
    world = spec or WorldSpec()
    return [(c, e) for e in Emotion for c in world.contents if world.is_typical(c, e)]


def unusual_pairs(spec: WorldSpec | None = None) -> list[tuple[str, Emotion]]:
    """Every non-typical ``(content, emotion)`` pair, by emotion (EmoSet order) then content (class order)."""
    world = spec or WorldSpec()
    return [(c, e) for e in Emotion for c in world.contents if not world.is_typical(c, e)]


def plan_split(
    split: Split, n: int, *, seed: int, shortcut: float = 0.9, spec: WorldSpec | None = None
) -> list[tuple[str, Emotion]]:
    """The ``(content, emotion)`` of every row of a split, in row order (no image is drawn).

    Args:
        split: ``"train"`` (balanced emotions, shortcut-biased contents) or ``"test"`` (unusual pairs only;
            emotions balanced, and each emotion's unusual contents balanced within it).
        n: number of rows.
        seed: the world seed.
        shortcut: train only; the probability that a row's content is drawn from its emotion's typical ones.
        spec: the world; default ``WorldSpec()``.

    Raises:
        InvalidInputError: unknown split, bad ``n``, ``seed`` or ``shortcut`` (the message names the value).
    """
    world = spec or WorldSpec()
    _check_split(split)
    _check_count(f"n_{split}", n, minimum=0)
    _check_seed(seed)
    _check_shortcut(shortcut)
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], _PLAN_STREAM])
    emotions = list(Emotion)
    labels = rng.permutation(np.arange(n) % len(emotions))
    plan = []
    if split == "test":
        # Each emotion walks through shuffled rounds of its unusual contents, so contents are balanced within
        # every emotion as well as emotions overall.
        unusual = {e: [c for c in world.contents if not world.is_typical(c, e)] for e in emotions}
        queues: dict[Emotion, list[str]] = {e: [] for e in emotions}
        for label in labels:
            emotion = emotions[int(label)]
            if not queues[emotion]:
                queues[emotion] = [unusual[emotion][int(i)] for i in rng.permutation(len(unusual[emotion]))]
            plan.append((queues[emotion].pop(), emotion))
        return plan
    for label in labels:
        emotion = emotions[int(label)]
        pool = world.typical_contents(emotion) if rng.random() < shortcut else world.contents
        plan.append((pool[int(rng.integers(len(pool)))], emotion))
    return plan


def make_world(
    out_dir: str | os.PathLike[str],
    *,
    n_train: int,
    n_test: int,
    seed: int,
    size: int = 32,
    shortcut: float = 0.9,
    spec: WorldSpec | None = None,
    overwrite: bool = False,
) -> WorldPaths:
    """Generate a world: PNGs, two JSONL splits and ``world.json``, written atomically.

    Everything is written into a temporary sibling directory that is renamed to ``out_dir`` at the end, so a
    crash or an interrupt never leaves a half-written world behind. Same arguments, same bytes: every image
    has its own seed ``(seed, split, index)``, so a row does not depend on the split's size.

    Args:
        out_dir: the world directory; must not exist or be empty unless ``overwrite``.
        n_train: train rows (1..1,000,000).
        n_test: test rows (1..1,000,000).
        seed: world seed (>= 0).
        size: image side in pixels (24..256).
        shortcut: train probability of a typical content, in [0, 1].
        spec: the world; default ``WorldSpec()``.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        The paths of the written world.

    Raises:
        InvalidInputError: a bad argument (the message names it and what is allowed), or ``out_dir`` exists,
            is not empty and ``overwrite`` is false, or is a file.
    """
    world = spec or WorldSpec()
    _check_count("n_train", n_train, minimum=1)
    _check_count("n_test", n_test, minimum=1)
    _check_seed(seed)
    check_size(size)
    _check_shortcut(shortcut)
    paths = WorldPaths.at(out_dir)
    root = paths.root
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"world output {root} is a file; allowed: a new or empty directory")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise InvalidInputError(
            f"world output {root} already exists and is not empty; allowed: a new or empty directory, "
            "or overwrite=True"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        summaries = {}
        counts: tuple[tuple[Split, int], ...] = (("train", n_train), ("test", n_test))
        for split, n in counts:
            rows = _write_split(tmp, split, n, seed=seed, size=size, shortcut=shortcut, spec=world)
            summaries[split] = summary(rows, world).as_dict()
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "size": size,
            "shortcut": shortcut,
            "n_train": n_train,
            "n_test": n_test,
            "spec": world.as_dict(),
            "summary": summaries,
        }
        (tmp / META_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _swap_in(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote affective world %s: %d train (shortcut %.2f, measured %.3f), %d test rows at %dpx",
        root,
        n_train,
        shortcut,
        summaries["train"]["shortcut_strength"],
        n_test,
        size,
    )
    return paths


def summary(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]], spec: WorldSpec | None = None
) -> WorldSummary:
    """Pair counts and shortcut strength of a split.

    Args:
        source: a split's JSONL file, or its rows (mappings with ``content`` and ``emotion``).
        spec: the world; default ``WorldSpec()``.

    Raises:
        InvalidInputError: a row without a known ``content`` or ``emotion``, or no rows at all.
    """
    world = spec or WorldSpec()
    rows: Iterable[Mapping[str, Any]]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        rows = source
    pairs: Counter[tuple[str, str]] = Counter()
    for i, row in enumerate(rows):
        content, emotion = row.get("content"), row.get("emotion")
        if not isinstance(content, str) or not isinstance(emotion, str):
            raise InvalidInputError(
                f"world row {i} needs string 'content' and 'emotion'; got {content!r}, {emotion!r}"
            )
        pairs[(world.check_content(content), parse_emotion(emotion).value)] += 1
    n = sum(pairs.values())
    if n == 0:
        raise InvalidInputError("cannot summarise a world split with no rows; allowed: one row or more")
    typical = sum(k for (c, e), k in pairs.items() if world.is_typical(c, e))
    chance = sum(k * len(world.typical_contents(e)) / len(world.contents) for (_, e), k in pairs.items()) / n
    per_emotion = {e.value: sum(k for (_, pe), k in pairs.items() if pe == e.value) for e in Emotion}
    per_content = {c: sum(k for (pc, _), k in pairs.items() if pc == c) for c in world.contents}
    return WorldSummary(
        n=n,
        pair_counts=dict(pairs),
        per_emotion=per_emotion,
        per_content=per_content,
        typical_fraction=typical / n,
        shortcut_strength=(typical / n - chance) / (1.0 - chance),
        mutual_information_bits=_mutual_information(pairs, per_emotion, per_content, n),
    )


# ---------------------------------------------------------------------- helpers


def _write_split(
    root: Path, split: Split, n: int, *, seed: int, size: int, shortcut: float, spec: WorldSpec
) -> list[dict[str, Any]]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    for i, (content, emotion) in enumerate(plan_split(split, n, seed=seed, shortcut=shortcut, spec=spec)):
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
        attributes = sample_attributes(rng, emotion, spec)
        image = draw_world_image(content, attributes, size, rng)
        template = spec.caption_templates[int(rng.integers(len(spec.caption_templates)))]
        rel = f"images/{split}/{split}_{i:05d}.png"
        Image.fromarray(image).save(root / rel, format="PNG")
        rows.append(
            {
                "image": rel,
                "caption": template.format(content=content),
                "emotion": emotion.value,
                "content": content,
                "split": split,
                "typical": spec.is_typical(content, emotion),
                "attributes": attributes.as_dict(),
            }
        )
    name = TRAIN_JSONL if split == "train" else TEST_JSONL
    (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def _swap_in(tmp: Path, root: Path) -> None:
    # rename() replaces a missing or empty directory in one step; a non-empty one (overwrite) is first moved
    # aside, so the world at ``root`` is always either the old one or the complete new one.
    if root.is_dir() and any(root.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / root.name)
        os.replace(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, root)


def _mutual_information(
    pairs: Counter[tuple[str, str]], per_emotion: dict[str, int], per_content: dict[str, int], n: int
) -> float:
    mi = 0.0
    for (c, e), k in pairs.items():
        mi += k / n * math.log2(k * n / (per_content[c] * per_emotion[e]))
    return max(mi, 0.0)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidInputError(f"unknown world split {split!r}; allowed: {', '.join(SPLITS)}")


def _check_count(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_SAMPLES:
        raise InvalidInputError(f"{name}={value!r} is invalid; allowed: integers {minimum}..{MAX_SAMPLES}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed={seed!r} is invalid; allowed: integers >= 0")


def _check_shortcut(shortcut: float) -> None:
    if isinstance(shortcut, bool) or not isinstance(shortcut, (int, float)) or not 0.0 <= shortcut <= 1.0:
        raise InvalidInputError(f"shortcut={shortcut!r} is invalid; allowed: a number in [0, 1]")
