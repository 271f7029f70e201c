"""Image files: atomic PNG writes and a contact sheet. Nothing already written is ever overwritten."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ed_common.errors import OutputExistsError


def save_png_atomic(image: Image.Image, path: Path) -> Path:
    """Write ``image`` to ``path`` as PNG via a temp file + rename, so no half-written PNG can exist.

    Raises:
        OutputExistsError: ``path`` already exists (we never overwrite).
    """
    if path.exists():
        raise OutputExistsError(f"{path} already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared like any saved image
        # link() fails if the target appeared meanwhile, unlike replace(): no race can clobber a file.
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(f"{path} already exists; refusing to overwrite it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def contact_sheet(
    images: Sequence[Image.Image], labels: Sequence[str] | None = None, cols: int = 4, *, min_side: int = 0
) -> Image.Image:
    """Tile ``images`` (resized to the first one's size) in a grid, with an optional caption under each.

    ``min_side``: cells smaller than this are scaled up (nearest neighbour, so 32 px world images stay
    readable pixel for pixel) until their short side reaches it.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    w, h = images[0].size
    if min(w, h) < min_side:
        factor = -(-min_side // min(w, h))  # ceil: whole multiples keep pixels square
        w, h = w * factor, h * factor
        images = [im.resize((w, h), Image.Resampling.NEAREST) for im in images]
    cols = max(1, min(cols, len(images)))
    rows = (len(images) + cols - 1) // cols
    label_h = 14 if labels else 0
    sheet = Image.new("RGB", (cols * w, rows * (h + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, img in enumerate(images):
        x, y = (i % cols) * w, (i // cols) * (h + label_h)
        sheet.paste(img.convert("RGB").resize((w, h)), (x, y))
        if labels:
            draw.text((x + 2, y + h + 1), labels[i][: max(4, w // 6)], fill="black")
    return sheet
