"""Emotion image-text datasets for the visual-prompt bank: EmoSet layout, JSONL, and a generated toy set.

Every loader returns ``(samples, summary)``. A bad row (missing image, unknown emotion, unreadable image,
malformed row) is counted by reason in the ``LoadSummary``, logged once as a warning, and skipped; only a
dataset with nothing usable at all raises ``DatasetError``.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any, Literal

from PIL import Image, ImageDraw

from ed_common.emotions import EMOTION_NAMES, Emotion, UnknownEmotionError, parse_emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.errors import DatasetError

logger = logging.getLogger(__name__)

SkipReason = Literal["missing_image", "unknown_emotion", "unreadable_image", "bad_row"]

# EmoSet has no captions. The fallback describes the annotated semantics (objects, scene, facial expression,
# human action) and deliberately leaves out the emotion word and brightness/colourfulness: the bank clusters
# *semantics within one emotion* (the query is the rewritten prompt's semantics), and the visual statistics
# are what the paired image features carry.
DEFAULT_EMOSET_CAPTION_TEMPLATE = "a photo of {attributes}"
EMPTY_ATTRIBUTES = "a scene"
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class EmotionSample:
    """One image-text pair with its emotion label.

    Attributes:
        image_path: absolute path of the image file.
        caption: the text paired with the image (CLIP-encoded for the bank's text features).
        emotion: the image's emotion category.
    """

    image_path: Path
    caption: str
    emotion: Emotion


@dataclass
class LoadSummary:
    """What a loader read, kept and skipped.

    Attributes:
        source: the JSONL file or EmoSet root that was read.
        total: rows (JSONL lines or EmoSet annotations) seen, blank lines excluded.
        loaded: rows turned into samples.
        skipped: number of skipped rows per reason.
        examples: the first few skipped rows as ``"<where>: <reason> (<detail>)"``.
        per_emotion: loaded samples per emotion name.
    """

    source: str
    total: int = 0
    loaded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    per_emotion: dict[str, int] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        """Total number of skipped rows."""
        return sum(self.skipped.values())

    def skip(self, reason: SkipReason, where: str, detail: str) -> None:
        """Count one skipped row and keep it as an example if there are few so far."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason} ({detail})")

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the CLI and build metadata)."""
        return {
            "source": self.source,
            "total": self.total,
            "loaded": self.loaded,
            "skipped": dict(self.skipped),
            "examples": list(self.examples),
            "per_emotion": dict(self.per_emotion),
        }


# ---------------------------------------------------------------------- loaders


def load_emotion_dataset(
    path: str | os.PathLike[str], *, verify_images: bool = True
) -> tuple[list[EmotionSample], LoadSummary]:
    """Load a ``.jsonl`` file or an EmoSet-layout directory (chosen by what ``path`` is).

    Raises:
        DatasetError: ``path`` is neither a file nor a directory with ``annotation/``, or nothing is usable.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return load_jsonl_dataset(p, verify_images=verify_images)
    if (p / "annotation").is_dir():
        return load_emoset(p, verify_images=verify_images)
    raise DatasetError(
        f"dataset {p} is neither a JSONL file nor an EmoSet root (image/, annotation/<emotion>/)"
    )


def load_jsonl_dataset(
    path: str | os.PathLike[str], *, verify_images: bool = True
) -> tuple[list[EmotionSample], LoadSummary]:
    """Load a JSONL file of ``{"image": ..., "caption": ..., "emotion": ...}`` rows.

    Image paths are relative to the JSONL file's directory (absolute paths are kept). Extra keys are ignored.

    Args:
        path: the JSONL file.
        verify_images: open each image header (PIL ``verify``) and skip unreadable ones.

    Returns:
        The samples in file order and the load summary.

    Raises:
        DatasetError: the file is missing or no row is usable.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"JSONL dataset {p} does not exist")
    summary = LoadSummary(source=str(p))
    samples: list[EmotionSample] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            summary.total += 1
            where = f"{p.name}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                summary.skip("bad_row", where, f"invalid JSON: {exc.msg}")
                continue
            problem = _row_problem(row)
            if problem:
                summary.skip("bad_row", where, problem)
                continue
            sample = _make_sample(
                p.parent / row["image"], row["caption"], row["emotion"], where, summary, verify_images
            )
            if sample is not None:
                samples.append(sample)
    return samples, _finish(samples, summary)


def load_emoset(
    root: str | os.PathLike[str],
    *,
    split: str | None = None,
    caption_key: str = "caption",
    caption_template: str = DEFAULT_EMOSET_CAPTION_TEMPLATE,
    verify_images: bool = True,
) -> tuple[list[EmotionSample], LoadSummary]:
    """Load an EmoSet-layout tree: ``image/<emotion>/<id>.jpg`` + ``annotation/<emotion>/<id>.json``.

    An annotation JSON (EmoSet-118K) looks like ``{"emotion": "amusement", "image_id": "amusement_00000",
    "image": "image/amusement/amusement_00000.jpg", "brightness": ..., "colorfulness": ..., "scene": ...,
    "object": [...], "facial_expression": ..., "human_action": ...}``; all but the emotion are optional here.
    The emotion comes from ``"emotion"`` (else the folder name); the image from ``"image"`` relative to the
    root (else ``image/<emotion folder>/<image_id or stem>.jpg``). The caption is ``annotation[caption_key]``
    when present (for VLM captions added to the files), else ``caption_template`` filled with the annotated
    objects, scene, facial expression and human action (see ``emoset_caption``).

    Args:
        root: the EmoSet root (holds ``annotation/`` and ``image/``).
        split: ``None`` for every annotation, or a split name whose ``<root>/<split>.json`` lists entries as
            EmoSet does (lists whose ``.json`` item is the annotation path relative to the root).
        caption_key: annotation key holding a ready caption, used when present and non-empty.
        caption_template: fallback caption; must contain ``{attributes}`` and no other field.
        verify_images: open each image header (PIL ``verify``) and skip unreadable ones.

    Returns:
        The samples (sorted by annotation path, or in split order) and the load summary.

    Raises:
        InvalidInputError: ``caption_template`` has no ``{attributes}`` field or other fields.
        DatasetError: the root, its ``annotation/`` dir or the split file is missing, or nothing is usable.
    """
    _check_template(caption_template)
    base = Path(root).expanduser()
    if not (base / "annotation").is_dir():
        raise DatasetError(
            f"EmoSet root {base} has no annotation/ directory (expected annotation/<emotion>/*.json)"
        )
    summary = LoadSummary(source=str(base))
    samples: list[EmotionSample] = []
    for where, ann_path in _emoset_annotation_paths(base, split, summary):
        summary.total += 1
        try:
            ann = json.loads(ann_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            summary.skip("bad_row", where, "annotation file missing")
            continue
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            summary.skip("bad_row", where, f"unreadable annotation: {type(exc).__name__}")
            continue
        if not isinstance(ann, dict):
            summary.skip("bad_row", where, "annotation is not a JSON object")
            continue
        folder = ann_path.parent.name
        emotion = ann.get("emotion", folder)
        if isinstance(ann.get("image"), str) and ann["image"]:
            image_path = base / ann["image"]
        else:
            image_path = base / "image" / folder / f"{ann.get('image_id') or ann_path.stem}.jpg"
        ready = ann.get(caption_key)
        caption = (
            ready.strip()
            if isinstance(ready, str) and ready.strip()
            else emoset_caption(ann, caption_template)
        )
        sample = _make_sample(image_path, caption, emotion, where, summary, verify_images)
        if sample is not None:
            samples.append(sample)
    return samples, _finish(samples, summary)


def emoset_caption(annotation: dict[str, Any], template: str = DEFAULT_EMOSET_CAPTION_TEMPLATE) -> str:
    """The fallback caption of an EmoSet annotation, e.g. ``"a photo of person, balloon, amusement park"``.

    Attributes, in order: objects (``"object"``, a list or a string), scene (Places-style names such as
    ``"/a/amusement_park"`` become ``"amusement park"``), ``"<facial_expression> facial expression"``, and
    ``"human_action"``. With none of them the attributes read ``"a scene"``.
    """
    parts: list[str] = []
    objects = annotation.get("object")
    if isinstance(objects, str):
        objects = [objects]
    if isinstance(objects, list):
        parts.extend(_attr(o) for o in objects if isinstance(o, str) and _attr(o))
    for key, suffix in (("scene", ""), ("facial_expression", " facial expression"), ("human_action", "")):
        value = annotation.get(key)
        if isinstance(value, str) and _attr(value):
            parts.append(_attr(value) + suffix)
    return template.format(attributes=", ".join(parts) if parts else EMPTY_ATTRIBUTES)


def dataset_fingerprint(samples: Sequence[EmotionSample], root: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 (hex) of the dataset's content description, independent of where it lives and of row order.

    Hashes the sorted records ``(path relative to root, caption, emotion, file size in bytes)``.

    Args:
        samples: the samples a bank is built from.
        root: what paths are relative to; default: the deepest common directory of the images.

    Raises:
        DatasetError: an image no longer exists.
    """
    if not samples:
        return hashlib.sha256(b"").hexdigest()
    base = (
        Path(root) if root is not None else Path(os.path.commonpath([s.image_path.parent for s in samples]))
    )
    records = []
    for s in samples:
        try:
            size = s.image_path.stat().st_size
        except OSError as exc:
            raise DatasetError(
                f"cannot fingerprint the dataset: image {s.image_path} is unreadable ({exc})"
            ) from exc
        rel = Path(os.path.relpath(s.image_path, base)).as_posix()
        records.append(json.dumps([rel, s.caption, s.emotion.value, size], ensure_ascii=False))
    digest = hashlib.sha256()
    for rec in sorted(records):
        digest.update(rec.encode("utf-8") + b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------------- helpers


def _row_problem(row: Any) -> str:
    if not isinstance(row, dict):
        return "row is not a JSON object"
    missing = [k for k in ("image", "caption", "emotion") if k not in row]
    if missing:
        return f"missing key(s) {', '.join(missing)}; required: image, caption, emotion"
    bad = [k for k in ("image", "caption", "emotion") if not isinstance(row[k], str) or not row[k].strip()]
    if bad:
        return f"key(s) {', '.join(bad)} must be non-empty strings"
    return ""


def _make_sample(
    image_path: Path, caption: str, emotion: Any, where: str, summary: LoadSummary, verify: bool
) -> EmotionSample | None:
    try:
        label = parse_emotion(str(emotion))
    except UnknownEmotionError:
        summary.skip("unknown_emotion", where, f"{emotion!r}; allowed: {', '.join(EMOTION_NAMES)}")
        return None
    path = image_path.expanduser().resolve()
    if not path.is_file():
        summary.skip("missing_image", where, str(path))
        return None
    if verify:
        try:
            with Image.open(path) as im:
                im.verify()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            summary.skip("unreadable_image", where, f"{path}: {type(exc).__name__}")
            return None
    return EmotionSample(image_path=path, caption=caption.strip(), emotion=label)


def _finish(samples: list[EmotionSample], summary: LoadSummary) -> LoadSummary:
    return finish_summary(
        summary,
        [s.emotion for s in samples],
        unit="rows",
        empty=f"dataset {summary.source} has no usable samples",
    )


def finish_summary(
    summary: LoadSummary, emotions: Sequence[Emotion], *, unit: str, empty: str
) -> LoadSummary:
    """Fill in counts, log what was skipped, and refuse an empty result (shared by every loader).

    Raises:
        DatasetError: nothing usable was loaded; ``empty`` starts the message, the skip reasons follow.
    """
    summary.loaded = len(emotions)
    counts = Counter(e.value for e in emotions)
    summary.per_emotion = {name: counts.get(name, 0) for name in EMOTION_NAMES}
    if summary.num_skipped:
        logger.warning(
            f"%s: skipped %d of %d {unit} (%s); first: %s",
            summary.source,
            summary.num_skipped,
            summary.total,
            ", ".join(f"{k}={v}" for k, v in sorted(summary.skipped.items())),
            summary.examples[0],
        )
    if not emotions:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(summary.skipped.items())) or "no rows"
        raise DatasetError(f"{empty} ({reasons})")
    return summary


def _emoset_annotation_paths(
    base: Path, split: str | None, summary: LoadSummary
) -> Iterator[tuple[str, Path]]:
    if split is None:
        for p in sorted((base / "annotation").glob("*/*.json")):
            yield p.relative_to(base).as_posix(), p
        return
    split_file = base / f"{split}.json"
    try:
        entries = json.loads(split_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"EmoSet split file {split_file} does not exist (split={split!r})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"EmoSet split file {split_file} is unreadable: {type(exc).__name__}") from exc
    if not isinstance(entries, list):
        raise DatasetError(
            f"EmoSet split file {split_file} must hold a JSON list, got {type(entries).__name__}"
        )
    for i, entry in enumerate(entries):
        items = entry if isinstance(entry, list) else [entry]
        rel = next((x for x in items if isinstance(x, str) and x.endswith(".json")), None)
        if rel is None:
            summary.total += 1
            summary.skip("bad_row", f"{split_file.name}[{i}]", "no annotation .json path in the entry")
            continue
        yield f"{split_file.name}[{i}]", base / rel


def _attr(value: str) -> str:
    # Places365-style scene names ("/a/apartment_building/outdoor") lose their one-letter index parts.
    words = [w for w in value.replace("_", " ").split("/") if len(w.strip()) > 1]
    return " ".join(" ".join(words).lower().split())


def _check_template(template: str) -> None:
    fields = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    if fields != {"attributes"}:
        raise InvalidInputError(
            f"caption template {template!r} must use exactly the field {{attributes}}; found {sorted(fields)}"
        )


# ---------------------------------------------------------------------- toy dataset

# Colour-emotion grounding for the toy set (hue, saturation and brightness ranges in HSV, each in [0, 1]),
# following the usual findings: positive emotions bright, negative ones dark; excitement/anger saturated,
# sadness/fear desaturated; contentment soft greens, awe deep blues with light, disgust murky olive.
_TOY_STYLE: dict[Emotion, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    Emotion.AMUSEMENT: ((0.08, 0.17), (0.65, 0.9), (0.85, 1.0)),
    Emotion.AWE: ((0.60, 0.75), (0.55, 0.8), (0.45, 0.7)),
    Emotion.CONTENTMENT: ((0.25, 0.40), (0.25, 0.45), (0.7, 0.9)),
    Emotion.EXCITEMENT: ((0.93, 1.03), (0.9, 1.0), (0.9, 1.0)),
    Emotion.ANGER: ((0.97, 1.02), (0.8, 1.0), (0.3, 0.5)),
    Emotion.DISGUST: ((0.14, 0.22), (0.45, 0.6), (0.28, 0.42)),
    Emotion.FEAR: ((0.60, 0.70), (0.1, 0.3), (0.06, 0.2)),
    Emotion.SADNESS: ((0.55, 0.62), (0.08, 0.22), (0.35, 0.52)),
}
_TOY_ADJECTIVES: dict[Emotion, tuple[str, str, str, str]] = {
    Emotion.AMUSEMENT: ("playful", "cheerful", "colourful", "bouncy"),
    Emotion.AWE: ("vast", "majestic", "towering", "starlit"),
    Emotion.CONTENTMENT: ("calm", "cosy", "gentle", "peaceful"),
    Emotion.EXCITEMENT: ("thrilling", "vivid", "energetic", "dazzling"),
    Emotion.ANGER: ("furious", "blazing", "harsh", "clashing"),
    Emotion.DISGUST: ("grimy", "rotten", "slimy", "murky"),
    Emotion.FEAR: ("dark", "eerie", "shadowy", "menacing"),
    Emotion.SADNESS: ("gloomy", "lonely", "grey", "rainy"),
}
# Content words shared by every emotion (the same semantics under different emotions), one shape each.
TOY_CONTENT_WORDS: tuple[str, ...] = ("dog", "house", "tree", "car", "child", "boat", "street", "mountain")
TOY_JSONL_NAME = "toy_emotions.jsonl"


def make_toy_dataset(
    out_dir: str | os.PathLike[str], n_per_emotion: int = 12, seed: int = 0, size: int = 32
) -> Path:
    """Write a small synthetic emotion image-text dataset: PNGs plus a JSONL in ``load_jsonl_dataset`` format.

    Each emotion has its own palette, brightness and saturation (``_TOY_STYLE``); each image draws a shape
    for its content word over a two-colour gradient with pixel noise. Captions read ``"a <adjective> photo of
    a <content>"`` with an emotion-specific visual adjective and a content word from ``TOY_CONTENT_WORDS``;
    (content, adjective) pairs are distinct within an emotion for up to 32 images. Same arguments, same bytes.

    Args:
        out_dir: created if needed; gets ``images/<emotion>/*.png`` and ``toy_emotions.jsonl``.
        n_per_emotion: images per emotion (1..32).
        seed: RNG seed for colours, shapes and noise.
        size: image side in pixels (>= 8).

    Returns:
        The JSONL path.

    Raises:
        InvalidInputError: ``n_per_emotion`` not in 1..32 or ``size`` < 8.
    """
    import numpy as np

    if not 1 <= n_per_emotion <= 32:
        raise InvalidInputError(f"n_per_emotion must be in 1..32 (distinct captions), got {n_per_emotion}")
    if size < 8:
        raise InvalidInputError(f"toy image size must be >= 8 pixels, got {size}")
    root = Path(out_dir).expanduser()
    rows: list[dict[str, str]] = []
    for emotion in Emotion:
        rng = np.random.default_rng([seed, emotion.label_index])
        (root / "images" / emotion.value).mkdir(parents=True, exist_ok=True)
        adjectives = _TOY_ADJECTIVES[emotion]
        for i in range(n_per_emotion):
            content_idx = i % len(TOY_CONTENT_WORDS)
            adjective = adjectives[(i + i // len(TOY_CONTENT_WORDS)) % len(adjectives)]
            image = _toy_image(emotion, content_idx, size, rng)
            rel = f"images/{emotion.value}/{emotion.value}_{i:03d}.png"
            image.save(root / rel, format="PNG")
            caption = f"a {adjective} photo of a {TOY_CONTENT_WORDS[content_idx]}"
            rows.append({"image": rel, "caption": caption, "emotion": emotion.value})
    jsonl = root / TOY_JSONL_NAME
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return jsonl


def _toy_colour(emotion: Emotion, rng: Any) -> tuple[int, int, int]:
    (h0, h1), (s0, s1), (v0, v1) = _TOY_STYLE[emotion]
    h, s, v = rng.uniform(h0, h1) % 1.0, rng.uniform(s0, s1), rng.uniform(v0, v1)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _toy_image(emotion: Emotion, content_idx: int, size: int, rng: Any) -> Image.Image:
    import numpy as np

    top, bottom = np.array(_toy_colour(emotion, rng)), np.array(_toy_colour(emotion, rng))
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]  # [H, 1, 1]
    pixels = top * (1 - ramp) + bottom * ramp  # [H, 1, 3]
    pixels = np.broadcast_to(pixels, (size, size, 3)) + rng.normal(0.0, 6.0, (size, size, 3))  # [H, W, 3]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    r, g, b = _toy_colour(emotion, rng)
    # Same palette, shifted in brightness (lighter on dark palettes, darker on light ones) to stay visible.
    fg = (
        (min(255, r + 80), min(255, g + 80), min(255, b + 80))
        if top.mean() < 96
        else (r // 2, g // 2, b // 2)
    )
    m = size // 4 + int(rng.integers(-1, 2))
    lo, hi = m, size - m
    _draw_shape(draw, content_idx, lo, hi, size, fg)
    return image


def _draw_shape(
    draw: ImageDraw.ImageDraw, idx: int, lo: int, hi: int, size: int, fg: tuple[int, int, int]
) -> None:
    mid = size // 2
    if idx == 0:
        draw.ellipse((lo, lo, hi, hi), fill=fg)
    elif idx == 1:
        draw.rectangle((lo, lo, hi, hi), fill=fg)
    elif idx == 2:
        draw.polygon([(mid, lo), (lo, hi), (hi, hi)], fill=fg)
    elif idx == 3:
        for y in range(lo, hi, 4):
            draw.line((lo, y, hi, y), fill=fg, width=2)
    elif idx == 4:
        for x in range(lo, hi, 4):
            draw.line((x, lo, x, hi), fill=fg, width=2)
    elif idx == 5:
        draw.line((lo, mid, hi, mid), fill=fg, width=3)
        draw.line((mid, lo, mid, hi), fill=fg, width=3)
    elif idx == 6:
        draw.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], fill=fg)
    else:
        draw.ellipse((lo, lo, hi, hi), outline=fg, width=3)


def group_by_emotion(samples: Iterable[EmotionSample]) -> dict[Emotion, list[int]]:
    """Indices of ``samples`` per emotion, in EmoSet order (every emotion present, possibly empty)."""
    groups: dict[Emotion, list[int]] = {e: [] for e in Emotion}
    for i, s in enumerate(samples):
        groups[s.emotion].append(i)
    return groups
