"""Procedural rendering of the synthetic affective world: a silhouette (content) in an emotion's style.

An image is a flat background colour, a figure of the content class filled with a second colour, and a
luminance texture over both:

    image = background * (1 - alpha) + figure * alpha + noise * texture

``alpha`` is the anti-aliased coverage of the silhouette (from its signed distance, one evaluation per pixel)
blurred by the ``blur`` attribute; ``texture`` is white noise smoothed to the ``grain`` correlation length
and scaled to unit variance. Everything is whole-array numpy (no per-pixel Python loops): a 32x32 image takes
well under a millisecond.

Every shape is defined in its own box ``[-1, 1]^2`` (``v`` pointing down) and exactly fills it, so the
content oracle can compare silhouettes after normalising their bounding boxes.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ed_common.errors import InvalidInputError
from ed_diffusion.world.spec import CONTENT_CLASSES, Attributes

MIN_SIZE, MAX_SIZE = 24, 256
RING_INNER = 0.55  # inner radius of the ring (outer = 1)
# Layout jitter: figure centre within 0.5 +- CENTER_JITTER of the side, half-size in HALF_RANGE. The figure,
# its blur and a border strip stay clear of each other, so the border shows the background only.
CENTER_JITTER = 0.05
HALF_RANGE = (0.27, 0.34)


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    verts = []
    for k in range(2 * points):
        angle = -math.pi / 2 + k * math.pi / points
        radius = 1.0 if k % 2 == 0 else inner
        verts.append((radius * math.cos(angle), radius * math.sin(angle)))
    return verts


_ARM = 0.25  # half-width of the cross's arms
_RAW_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": [(0, -1), (1, 1), (-1, 1)],
    "star": _star(),
    "cross": [
        (-_ARM, -1), (_ARM, -1), (_ARM, -_ARM), (1, -_ARM), (1, _ARM), (_ARM, _ARM),
        (_ARM, 1), (-_ARM, 1), (-_ARM, _ARM), (-1, _ARM), (-1, -_ARM), (-_ARM, -_ARM),
    ],
    "house": [(0, -1), (1, -0.15), (0.72, -0.15), (0.72, 1), (-0.72, 1), (-0.72, -0.15), (-1, -0.15)],
    "tree": [
        (0, -1), (0.6, -0.3), (0.32, -0.3), (1, 0.5), (0.22, 0.5), (0.22, 1),
        (-0.22, 1), (-0.22, 0.5), (-1, 0.5), (-0.32, -0.3), (-0.6, -0.3),
    ],
}  # fmt: skip


def _fill_box(verts: list[tuple[float, float]]) -> np.ndarray:
    # Stretch to exactly [-1, 1]^2 (the star is not symmetric vertically), so every shape fills its box.
    arr = np.asarray(verts, dtype=np.float64)  # [V, 2]
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    return np.asarray(2.0 * (arr - lo) / (hi - lo) - 1.0)


SHAPE_POLYGONS: dict[str, np.ndarray] = {name: _fill_box(v) for name, v in _RAW_POLYGONS.items()}
SHAPES: tuple[str, ...] = CONTENT_CLASSES


@dataclass(frozen=True)
class Layout:
    """Where the figure sits, as fractions of the image side.

    Attributes:
        cx: horizontal centre.
        cy: vertical centre.
        half: half the side of the figure's (square) box.
    """

    cx: float
    cy: float
    half: float


def sample_layout(rng: np.random.Generator) -> Layout:
    """A jittered figure placement (three draws from ``rng``)."""
    cx, cy = 0.5 + rng.uniform(-CENTER_JITTER, CENTER_JITTER, size=2)
    return Layout(float(cx), float(cy), float(rng.uniform(*HALF_RANGE)))


def signed_distance(content: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) to the silhouette of ``content``, in its box units.

    Args:
        content: one of ``SHAPES``.
        u: horizontal box coordinates, broadcastable with ``v``.
        v: vertical box coordinates (pointing down).

    Returns:
        The signed distances, shaped like ``u + v``.

    Raises:
        InvalidInputError: unknown content.
    """
    if content == "circle":
        return np.asarray(np.hypot(u, v) - 1.0)
    if content == "ring":
        r = np.hypot(u, v)
        return np.asarray(np.maximum(r - 1.0, RING_INNER - r))
    poly = SHAPE_POLYGONS.get(content)
    if poly is None:
        raise InvalidInputError(f"unknown content {content!r}; allowed: {', '.join(SHAPES)}")
    return _polygon_sdf(content, np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))


@lru_cache(maxsize=16)
def _edges(content: str) -> tuple[np.ndarray, ...]:
    # Per-edge constants of a polygon, each shaped [E, 1, ..., 1] ready to broadcast against pixel grids.
    a = SHAPE_POLYGONS[content]
    b = np.roll(a, -1, axis=0)
    ex, ey = (b - a).T
    flat = b[:, 1] == a[:, 1]
    # Horizontal edges never cross a scanline (the crossing test's first condition), so their slope is moot.
    slope = np.where(flat, 0.0, ex / np.where(flat, 1.0, ey))
    return a[:, 0], a[:, 1], b[:, 1], ex, ey, 1.0 / (ex * ex + ey * ey), slope


def _polygon_sdf(content: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # All edges at once on [E, ...] arrays. Pixel grids come as a row (u) and a column (v), and the terms
    # that depend on one of them only stay that small: a handful of full-size numpy operations per image.
    nd = max(u.ndim, v.ndim)
    expand = (slice(None),) + (None,) * nd
    ax, ay, by, ex, ey, inv_len2, slope = (c[expand] for c in _edges(content))
    wx, wy = u[None] - ax, v[None] - ay
    t = np.clip((wx * ex + wy * ey) * inv_len2, 0.0, 1.0)
    dist = np.sqrt(np.min((wx - ex * t) ** 2 + (wy - ey * t) ** 2, axis=0))
    crosses = ((ay <= v[None]) != (by <= v[None])) & (u[None] < ax + wy * slope)  # even-odd rule
    inside = np.logical_xor.reduce(crosses, axis=0)
    return np.asarray(np.where(inside, -dist, dist))


def coverage(content: str, size: int, layout: Layout) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the silhouette, float64 ``[size, size]``.

    Coverage is ``clip(0.5 - d, 0, 1)`` with ``d`` the signed distance in pixels at the pixel centre: exact
    for straight edges, a box filter of one pixel.
    """
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    scale = layout.half * size  # pixels per box unit
    u = ((centres - layout.cx) / layout.half)[None, :]
    v = ((centres - layout.cy) / layout.half)[:, None]
    return np.clip(0.5 - signed_distance(content, u, v) * scale, 0.0, 1.0)


def blur_matrix(n: int, sigma_px: float) -> np.ndarray:
    """The ``[n, n]`` matrix of a 1-D Gaussian blur (rows renormalised at the borders); identity for tiny σ.

    A 2-D separable blur of ``x`` is ``K @ x @ K.T``.
    """
    if sigma_px < 1e-3:
        k = np.eye(n)
    else:
        idx = np.arange(n, dtype=np.float64)
        k = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma_px) ** 2)
        k = k / k.sum(axis=1, keepdims=True)
    return np.asarray(k)


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-blur a ``[H, W]`` float array (sigma in pixels)."""
    h, w = image.shape
    return np.asarray(blur_matrix(h, sigma_px) @ image @ blur_matrix(w, sigma_px).T)


def texture_kernel(grain_px: float) -> np.ndarray:
    """The 1-D smoothing kernel of the texture (unit sum); ``[1.]`` for per-pixel grain."""
    if grain_px < 0.05:
        return np.ones(1)
    radius = max(1, math.ceil(4 * grain_px))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / grain_px) ** 2)
    return np.asarray(k / k.sum())


def texture_correlation(grain_px: float, lag: int) -> float:
    """Correlation of texture pixels ``lag`` apart along a row or column, exact for the discrete kernel."""
    k = texture_kernel(grain_px)
    if lag <= 0:
        return 1.0
    return float(np.dot(k[:-lag], k[lag:]) / np.dot(k, k)) if k.size > lag else 0.0


def texture(rng: np.random.Generator, size: int, grain_px: float) -> np.ndarray:
    """A stationary unit-variance noise field ``[size, size]`` with Gaussian correlation ``grain_px``.

    White noise on a padded grid is smoothed with the separable kernel and cropped (so the borders are as
    smooth as the middle), then divided by the kernel's exact standard-deviation gain.
    """
    k = texture_kernel(grain_px)
    pad = k.size // 2
    white = rng.standard_normal((size + 2 * pad, size + 2 * pad))
    if pad == 0:
        return white
    band = np.zeros((size, size + 2 * pad))
    for i in range(k.size):  # k.size diagonals, not pixels
        band[np.arange(size), np.arange(size) + i] = k[i]
    # Separable filtering multiplies the variance by sum(k^2) per axis, so the std gain is sum(k^2).
    gain = float(np.dot(k, k))
    return np.asarray(band @ white @ band.T / gain)


def palette(attributes: Attributes) -> tuple[np.ndarray, np.ndarray]:
    """The ``(background, figure)`` RGB colours in [0, 1], float64 ``[3]`` each."""
    half = attributes.contrast / 2.0
    light, dark = attributes.brightness + half, attributes.brightness - half
    fig_v, bg_v = (light, dark) if attributes.figure_lighter else (dark, light)
    s = attributes.saturation
    bg = np.array(colorsys.hsv_to_rgb(attributes.hue % 1.0, s, min(max(bg_v, 0.0), 1.0)))
    fig = np.array(
        colorsys.hsv_to_rgb((attributes.hue + attributes.accent) % 1.0, s, min(max(fig_v, 0.0), 1.0))
    )
    return bg, fig


def check_size(size: int) -> int:
    """Return ``size`` if it is a supported image side.

    Raises:
        InvalidInputError: not an int in [MIN_SIZE, MAX_SIZE].
    """
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInputError(
            f"image size {size!r} is not supported; allowed: integers {MIN_SIZE}..{MAX_SIZE}"
        )
    return size


def draw_world_image(
    content: str,
    attributes: Attributes,
    size: int = 32,
    rng: np.random.Generator | None = None,
    *,
    layout: Layout | None = None,
) -> np.ndarray:
    """Draw one image of the world.

    Args:
        content: the silhouette class (one of ``SHAPES``).
        attributes: the style (see ``sample_attributes``).
        size: image side in pixels (``MIN_SIZE``..``MAX_SIZE``).
        rng: source of the layout jitter (unless ``layout`` is given) and the texture; required.
        layout: a fixed placement instead of a sampled one.

    Returns:
        RGB ``uint8`` array ``[size, size, 3]``; the same inputs and rng state give the same bytes.

    Raises:
        InvalidInputError: unknown content, unsupported size, or no ``rng``.
    """
    if content not in SHAPES:
        raise InvalidInputError(f"unknown content {content!r}; allowed: {', '.join(SHAPES)}")
    check_size(size)
    if rng is None:
        raise InvalidInputError(
            "draw_world_image needs an rng (numpy Generator) for layout and texture; got None"
        )
    place = layout if layout is not None else sample_layout(rng)
    alpha = blur(coverage(content, size, place), attributes.blur * size)[..., None]  # [H, W, 1]
    noise = attributes.noise * texture(rng, size, attributes.grain * size)[..., None]  # [H, W, 1]
    bg, fig = palette(attributes)
    pixels = bg * (1.0 - alpha) + fig * alpha + noise  # [H, W, 3]
    return np.asarray(np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8))
