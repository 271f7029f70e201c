"""Reading an image file that a user gave: its size checked before decoding, every failure one line.

Torch-free (PIL only), so the evals' report and the CLI use the same reader as the image side.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from ed_common.errors import InvalidInputError

# 64 megapixels: far above any image the presets make or a dataset holds, far below what would exhaust
# memory when decoded (PIL's own bomb limit is ~179 MP, and it only warns below twice that).
MAX_PIXELS = 8192 * 8192


class ImageReadError(InvalidInputError):
    """An image file that is missing, undecodable, truncated or too large; the message names it."""


def read_rgb(path: Path, *, max_pixels: int = MAX_PIXELS, what: str = "image") -> Image.Image:
    """The image at ``path`` as RGB, fully decoded, the file closed; its size checked before decoding.

    ``what`` names the image in errors ("training image").

    Raises:
        ImageReadError: missing, not an image, truncated, or over ``max_pixels`` (a decompression bomb).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size  # from the header: nothing is decoded yet
                if width * height > max_pixels:
                    raise ImageReadError(
                        f"{what} {path} is {width}x{height} pixels; allowed: at most {max_pixels} pixels"
                    )
                return im.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"{what} {path} does not exist") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        if isinstance(exc, ImageReadError):
            raise
        detail = " ".join(str(exc).replace(repr(str(path)), "").split())[:160]  # the path is named once
        raise ImageReadError(f"cannot read {what} {path}: {type(exc).__name__}: {detail}") from None
