"""Exact pixel oracles of the synthetic affective world: which content, which emotion, measured from pixels.

The oracles know how the world is drawn (``render.py``) and invert it; they never see the labels.

**Content.** The background colour is the median of a border strip (the figure never reaches it), and the
texture's colour covariance is read there too. Each pixel of a lightly smoothed copy is projected on the
background-to-figure colour axis, whitened by that covariance (the texture is luminance noise, so chroma
differences separate figure and background almost noise-free), giving ``t = 0`` for background and ``t = 1``
for figure whatever the palette, brightness or polarity. ``t > 0.5`` is the silhouette, of which the largest
8-connected component is kept (specks of texture cannot count). Every class is then placed with the area and
centroid of the soft silhouette (blur preserves both, whereas the acute tips of a star or a roof vanish under
blur and would fool a bounding box), blurred like the mask was, and compared by IoU.

**Emotion.** From the raw pixels: the edge blur (least-squares fit of the best class's anti-aliased coverage,
blurred, to ``t``); the two colours (per-channel medians of the flat regions, exact under uint8 clipping since
medians commute with it), hence hue, accent, saturation, brightness and contrast; the texture's grain and
amplitude from the variogram of the HSV value in a flat region (for the generator's kernel the semivariance
at lag ``L`` is ``noise^2 (1 - rho(L))`` exactly). Each emotion's score is the Gaussian log-likelihood of the
measured vector under that emotion's known distributions (``WorldSpec.styles``), each variance widened by
the measurement error of the feature; circular features use wrapped differences. ``emotion_scores`` is the
posterior under a uniform prior.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_diffusion.world.render import (
    MAX_SIZE,
    MIN_SIZE,
    RING_INNER,
    SHAPE_POLYGONS,
    Layout,
    blur,
    blur_matrix,
    coverage,
    texture_correlation,
)
from ed_diffusion.world.spec import (
    ATTRIBUTE_NAMES,
    CIRCULAR_ATTRIBUTES,
    MAX_BLUR,
    MAX_GRAIN,
    WorldSpec,
    wrap_turns,
)

# The reading of *generated* images: palette attributes only. A small latent diffusion model at 32 px renders
# palette, lightness and contrast but not pixel-level grain, noise amplitude or a sub-pixel edge blur (its VAE
# alone moves them), so those three would score the generator's texture artefacts, not the emotion it drew.
# On real world images this reading is as accurate as the full one (99.2% vs 99.2% at 32 px, measured).
COLOUR_ATTRIBUTES: tuple[str, ...] = ("hue", "accent", "saturation", "brightness", "contrast")

SMOOTH_PX = 0.8  # pre-smoothing for segmentation only; measurements use the raw pixels
MIN_CONTENT_IOU = 0.5  # below this best IoU there is no recognisable silhouette
_BLUR_STEPS = 33  # candidate sigmas from 0 to twice the largest rendered blur

# Measurement error (standard deviation) per attribute, added in quadrature to each emotion's spread. Set from
# the residuals (measured - drawn) over fresh samples of every emotion at 32 px; hue and accent get an extra
# term growing as the colour's chroma shrinks (a near-grey colour has an ill-defined hue).
MEASUREMENT_STD: dict[str, float] = {
    "hue": 0.004,
    "accent": 0.006,
    "saturation": 0.011,
    "brightness": 0.007,
    "contrast": 0.013,
    "blur": 0.004,
    "noise": 0.007,
    "grain": 0.012,
}
_QUANT_VAR = (1.0 / 255.0) ** 2 / 12.0  # variance of uint8 rounding
_HUE_QUANT = 1.0 / (255.0 * 6.0)  # hue step of a one-level channel change at chroma 1


@dataclass(frozen=True)
class Measurement:
    """What the oracle reads from one image.

    Attributes:
        attributes: measured attributes in ``ATTRIBUTE_NAMES`` order, float64 ``[8]``.
        background: background RGB in [0, 1], float64 ``[3]``.
        figure: figure RGB in [0, 1], float64 ``[3]``.
        mask: the silhouette (largest component), bool ``[H, W]``.
        content_iou: IoU of the silhouette with each content class, float64 ``[num_contents]``.
        blur_px: the fitted edge-blur sigma in pixels.
    """

    attributes: np.ndarray
    background: np.ndarray
    figure: np.ndarray
    mask: np.ndarray
    content_iou: np.ndarray
    blur_px: float

    def attribute(self, name: str) -> float:
        """One measured attribute by name."""
        if name not in ATTRIBUTE_NAMES:
            raise InvalidInputError(f"unknown attribute {name!r}; allowed: {', '.join(ATTRIBUTE_NAMES)}")
        return float(self.attributes[ATTRIBUTE_NAMES.index(name)])

    @property
    def chroma(self) -> tuple[float, float]:
        """``(background, figure)`` chroma (max - min channel), which bounds how well each hue is known."""
        return float(np.ptp(self.background)), float(np.ptp(self.figure))


_DEFAULT_SPEC = WorldSpec()


def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != arr.shape[1]:
        raise InvalidInputError(
            f"oracle image must be a square RGB uint8 array [H, H, 3]; got dtype {arr.dtype}, "
            f"shape {arr.shape}"
        )
    if not MIN_SIZE <= arr.shape[0] <= MAX_SIZE:
        raise InvalidInputError(
            f"oracle image side {arr.shape[0]} is not supported; allowed: {MIN_SIZE}..{MAX_SIZE}"
        )
    return arr.astype(np.float64) / 255.0


def _blur_rgb(x: np.ndarray, sigma_px: float) -> np.ndarray:
    k = blur_matrix(x.shape[0], sigma_px)
    return np.asarray((k @ x.transpose(2, 0, 1) @ k.T).transpose(1, 2, 0))


def _otsu(values: np.ndarray) -> float:
    # Otsu's threshold on a 64-bin histogram: maximises the between-class variance.
    hist, edges = np.histogram(values, bins=64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _shift_max(a: np.ndarray) -> np.ndarray:
    # 3x3 maximum (8-neighbourhood), separable: rows then columns; outside the image counts as nothing.
    out = a.copy()
    np.maximum(out[1:], a[:-1], out=out[1:])
    np.maximum(out[:-1], a[1:], out=out[:-1])
    rows = out.copy()
    np.maximum(out[:, 1:], rows[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], rows[:, 1:], out=out[:, :-1])
    return out


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask
    for _ in range(steps):
        out = _shift_max(out)
    return out


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    return ~_dilate(~mask, steps)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (empty stays empty).

    Labels start as pixel indices and take the neighbourhood maximum, with pointer jumping (a label is the
    index of a pixel of the same component, so that pixel's label is as good and usually larger); it converges
    in a few dozen whole-array steps.
    """
    if not mask.any():
        return mask
    h, w = mask.shape
    labels = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), 0)
    while True:
        grown = np.where(mask, _shift_max(labels), 0)
        flat = np.concatenate([[0], grown.ravel()])
        jumped = np.where(mask, flat[grown], 0)
        if np.array_equal(jumped, labels):
            break
        labels = jumped
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return np.asarray(labels == int(np.argmax(counts)))


@lru_cache(maxsize=64)
def _shape_moments(content: str) -> tuple[float, float, float]:
    """Exact area and centroid ``(area, u, v)`` of a class silhouette in its box units."""
    if content == "circle":
        return math.pi, 0.0, 0.0
    if content == "ring":
        return math.pi * (1.0 - RING_INNER**2), 0.0, 0.0
    poly = SHAPE_POLYGONS[content]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cross = x0 * y1 - x1 * y0  # shoelace terms
    area = float(cross.sum()) / 2.0
    cu = float(((x0 + x1) * cross).sum()) / (6.0 * area)
    cv = float(((y0 + y1) * cross).sum()) / (6.0 * area)
    return abs(area), cu, cv


def _class_layout(content: str, moments: tuple[float, float, float], size: int) -> Layout:
    """The placement of ``content`` that has the observed area and centroid (pixels)."""
    area_px, cx_px, cy_px = moments
    c_area, c_u, c_v = _shape_moments(content)
    half_px = math.sqrt(max(area_px, 1.0) / c_area)
    return Layout((cx_px - c_u * half_px) / size, (cy_px - c_v * half_px) / size, half_px / size)


def _content_iou(mask: np.ndarray, covers: list[np.ndarray], sigma_px: float) -> np.ndarray:
    """IoU of ``mask`` with each class coverage blurred by ``sigma_px`` and thresholded like the mask was."""
    ious = []
    for cover in covers:
        template = blur(cover, sigma_px) > 0.5
        union = np.logical_or(mask, template).sum()
        ious.append(np.logical_and(mask, template).sum() / union if union else 0.0)
    return np.array(ious, dtype=np.float64)


def _border(size: int) -> np.ndarray:
    bw = max(2, size // 16)
    border = np.ones((size, size), dtype=bool)
    border[bw:-bw, bw:-bw] = False
    return border


def _noise_precision(pixels: np.ndarray) -> np.ndarray:
    """Inverse covariance of background pixels, with a quantisation floor so it always exists.

    The texture is luminance noise, i.e. mostly along (1, 1, 1); whitening by it lets the figure/background
    separation lean on chroma differences, which the texture barely touches.
    """
    cov = np.cov(pixels.T) + np.eye(3) * _QUANT_VAR
    return np.asarray(np.linalg.inv(cov))


def _segment(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Silhouette mask, background and figure colours, and the whitening, from the smoothed image ``xs``."""
    size = xs.shape[0]
    border = _border(size)
    bg = np.median(xs[border], axis=0)
    prec = _noise_precision(xs[border])
    mask = np.zeros((size, size), dtype=bool)
    dev = xs - bg
    dist = np.sqrt(np.maximum(((dev @ prec) * dev).sum(axis=-1), 0.0))
    if float(dist.max()) < 1e-6:  # a flat image: no figure at all
        return mask, bg, bg, prec
    fig = np.median(xs[dist > _otsu(dist)], axis=0)
    for _ in range(2):  # second pass: colours from the interiors of the first mask
        t = _project(xs, bg, fig, prec)
        if t is None:
            break
        mask = largest_component(t > 0.5)
        inner, outer = _erode(mask, 1), ~_dilate(mask, 2)
        if inner.any() and outer.any():
            fig, bg = np.median(xs[inner], axis=0), np.median(xs[outer], axis=0)
    return mask, bg, fig, prec


def _project(x: np.ndarray, bg: np.ndarray, fig: np.ndarray, prec: np.ndarray) -> np.ndarray | None:
    """Position of each pixel on the background (0) to figure (1) axis, noise-whitened; None if no axis."""
    w = prec @ (fig - bg)
    scale = float((fig - bg) @ w)
    if scale < 1e-6:
        return None
    return np.asarray(((x - bg) @ w) / scale)


@lru_cache(maxsize=4)  # 33 matrices per image size; a few sizes at a time
def _blur_bank(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate sigmas (pixels, 0 to twice the largest rendered blur) and their matrices ``[S, H, H]``."""
    grid = np.linspace(0.0, 2.0 * MAX_BLUR * size, _BLUR_STEPS)
    bank = np.stack([blur_matrix(size, float(s)) for s in grid])
    bank.setflags(write=False)  # cached and shared
    return grid, bank


def _fit_blur(t: np.ndarray, cover: np.ndarray) -> tuple[float, np.ndarray]:
    """Least-squares sigma (pixels) of ``blur(cover)`` against ``t``, refined by a parabola; and the model."""
    size = cover.shape[0]
    grid, ks = _blur_bank(size)
    models = ks @ cover @ ks.transpose(0, 2, 1)  # [S, H, W]
    sse = ((models - t[None]) ** 2).sum(axis=(1, 2))
    i = int(np.argmin(sse))
    sigma = float(grid[i])
    if 0 < i < len(sse) - 1:
        denom = sse[i - 1] - 2 * sse[i] + sse[i + 1]
        if denom > 0:
            step = float(grid[1] - grid[0])
            sigma += step * float(np.clip(0.5 * (sse[i - 1] - sse[i + 1]) / denom, -0.5, 0.5))
    return sigma, blur(cover, sigma)


def _far_lag(size: int) -> int:
    # The long lag of the variogram: about the largest texture grain, so blotchy textures stay resolvable.
    return max(2, round(MAX_GRAIN * size))


@lru_cache(maxsize=16)
def _grain_table(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grain sigmas (pixels), the variogram ratio gamma(L)/gamma(1) each gives, and 1 - rho(L)."""
    far = _far_lag(size)
    sig = np.linspace(0.0, MAX_GRAIN * size, 256)
    one_minus_far = np.array([1.0 - texture_correlation(float(g), far) for g in sig])
    one_minus_near = np.array([1.0 - texture_correlation(float(g), 1) for g in sig])
    ratio = np.maximum.accumulate(one_minus_far / np.maximum(one_minus_near, 1e-12))
    return sig, ratio, one_minus_far


def _semivariance(r: np.ndarray, region: np.ndarray, lag: int) -> float:
    """Half the mean squared difference of ``r`` at ``lag`` (horizontal and vertical) within ``region``."""
    total = count = 0.0
    for d, both in (
        (r[:, lag:] - r[:, :-lag], region[:, lag:] & region[:, :-lag]),
        (r[lag:, :] - r[:-lag, :], region[lag:, :] & region[:-lag, :]),
    ):
        total += float((d[both] ** 2).sum())
        count += float(both.sum())
    return 0.5 * total / count if count else 0.0


def _texture_stats(value: np.ndarray, region: np.ndarray, size: int) -> tuple[float, float]:
    """Texture amplitude and grain (fraction of the side) from the variogram of ``value`` over a flat region.

    Differences do not see the region's (unknown, texture-shifted) mean, so a blotchy texture is measured
    without the downward bias of a variance around a sample mean. For the generator's kernel,
    ``gamma(L) = noise^2 (1 - rho(L))`` exactly; ``gamma(L) / gamma(1)`` gives the grain, then ``gamma(L)``
    the amplitude. uint8 rounding adds the same white variance at every lag and is removed first.
    """
    far = _far_lag(size)
    near_sv = _semivariance(value, region, 1) - _QUANT_VAR
    far_sv = _semivariance(value, region, far) - _QUANT_VAR
    if near_sv <= 0.0 or far_sv <= 0.0:
        return 0.0, 0.0
    sig, ratio, one_minus_far = _grain_table(size)
    grain_px = float(np.interp(far_sv / near_sv, ratio, sig))
    noise = math.sqrt(far_sv / float(np.interp(grain_px, sig, one_minus_far)))
    return noise, grain_px / size


def measure(image: np.ndarray, spec: WorldSpec | None = None) -> Measurement:
    """Measure the silhouette and every non-semantic attribute of one image.

    Args:
        image: RGB ``uint8`` ``[H, H, 3]`` with ``MIN_SIZE <= H <= MAX_SIZE``.
        spec: the world whose content classes are scored; default ``WorldSpec()``.

    Returns:
        The measurement; a flat image gives an empty mask, zero IoUs and equal colours (no error).

    Raises:
        InvalidInputError: not a square RGB uint8 image of a supported size.
    """
    world = spec or _DEFAULT_SPEC
    x = _check_image(image)
    size = x.shape[0]
    xs = _blur_rgb(x, SMOOTH_PX)
    mask, bg, fig, prec = _segment(xs)
    ts = _project(xs, bg, fig, prec)
    if ts is None or not mask.any():
        attrs = [*_colour_attributes(bg, bg), 0.0, 0.0, 0.0]
        return Measurement(np.array(attrs), bg, bg, mask, np.zeros(len(world.contents)), 0.0)
    # Area and centroid of the soft silhouette (blur preserves both; t's noise is zero-mean) place each
    # class's template; acute tips that blur erases would make a bounding box unreliable.
    region = _dilate(mask, 3)
    ts = np.where(region, ts, 0.0)
    ys, xs_idx = np.mgrid[0:size, 0:size] + 0.5
    area = float(ts.sum())
    moments = (area, float((ts * xs_idx).sum()) / area, float((ts * ys).sum()) / area)
    covers = [coverage(c, size, _class_layout(c, moments, size)) for c in world.contents]
    best = int(np.argmax(_content_iou(mask, covers, SMOOTH_PX)))
    # The edge blur: fit the best class's coverage, blurred, to the raw projection (the anti-aliasing is in
    # the coverage already). Then score the classes again with the full blur the mask went through.
    t = _project(x, bg, fig, _noise_precision(x[_border(size)]))
    if t is None:  # unreachable: the smoothed colours differ, so the raw ones do  # pragma: no cover
        t = ts
    sigma, model = _fit_blur(t, covers[best])
    ious = _content_iou(mask, covers, math.hypot(sigma, SMOOTH_PX))
    if int(np.argmax(ious)) != best:
        best = int(np.argmax(ious))
        sigma, model = _fit_blur(t, covers[best])
    bg_region, fig_region = model < 0.02, model > 0.97
    if bg_region.sum() >= 8:
        bg = np.median(x[bg_region], axis=0)
    if fig_region.sum() >= 8:
        fig = np.median(x[fig_region], axis=0)
    elif float(model.max()) > 1e-3:  # thin and blurred: undo the known partial coverage of the most covered
        top = model >= 0.8 * float(model.max())
        fig = bg + np.median((x[top] - bg) / model[top][:, None], axis=0)
    # else: the fitted silhouette covers no pixel (a generated image can be that far from every class); the
    # segmentation's figure colour is the best reading left, and dividing by ~0 coverage would give inf/NaN.
    fig = np.clip(fig, 0.0, 1.0)
    colour = _colour_attributes(bg, fig)
    # Texture from the HSV value: max over channels commutes with the per-channel clipping of luminance noise,
    # so the residual is the texture itself, clipped only at black and white. Read it where its colour is
    # further from both.
    value = x.max(axis=-1)
    regions = [(bg_region, float(bg.max())), (fig_region, float(fig.max()))]
    usable = [(r, min(v, 1.0 - v)) for r, v in regions if r.sum() >= 24]
    flat = max(usable, key=lambda rv: rv[1])[0] if usable else bg_region
    noise, grain = _texture_stats(value, flat, size)
    attrs = [*colour, sigma / size, noise, grain]
    return Measurement(np.array(attrs, dtype=np.float64), bg, fig, mask, ious, sigma)


def _colour_attributes(bg: np.ndarray, fig: np.ndarray) -> list[float]:
    h_bg, s_bg, v_bg = colorsys.rgb_to_hsv(*(float(c) for c in bg))
    h_fig, s_fig, v_fig = colorsys.rgb_to_hsv(*(float(c) for c in fig))
    # Both colours share one saturation; the brighter one knows it better (more channel levels per unit).
    saturation = (s_bg * v_bg + s_fig * v_fig) / max(v_bg + v_fig, 1e-6)
    return [h_bg, wrap_turns(h_fig - h_bg), saturation, (v_bg + v_fig) / 2, abs(v_fig - v_bg)]


def content_scores(image: np.ndarray, spec: WorldSpec | None = None) -> np.ndarray:
    """IoU of the image's silhouette with each content class, float64 ``[num_contents]``."""
    return measure(image, spec).content_iou


def content_of(image: np.ndarray, spec: WorldSpec | None = None) -> str | None:
    """The content class of an image, or ``None`` when no class reaches IoU ``MIN_CONTENT_IOU``."""
    return content_from(measure(image, spec), spec)


def content_from(measurement: Measurement, spec: WorldSpec | None = None) -> str | None:
    """``content_of`` on a measurement already taken (callers that also read the emotion measure once)."""
    world = spec or _DEFAULT_SPEC
    ious = measurement.content_iou
    best = int(np.argmax(ious))
    return world.contents[best] if ious[best] >= MIN_CONTENT_IOU else None


def emotion_log_likelihoods(
    measurement: Measurement, spec: WorldSpec | None = None, attributes: Sequence[str] | None = None
) -> np.ndarray:
    """Gaussian log-likelihood of the measured attributes per emotion, float64 ``[8]`` (EmoSet order).

    ``attributes`` restricts the sum to some of ``ATTRIBUTE_NAMES`` (default: all); ``COLOUR_ATTRIBUTES`` is
    the reading used for generated images (see ``COLOUR_ATTRIBUTES``).
    """
    world = spec or _DEFAULT_SPEC
    use = _attribute_mask(attributes)
    means, stds = world.means(), world.stds()  # [E, A]
    meas = np.array([MEASUREMENT_STD[n] for n in ATTRIBUTE_NAMES])
    chroma_bg, chroma_fig = measurement.chroma
    hue_bg = _HUE_QUANT / max(chroma_bg, 1e-4)
    hue_fig = _HUE_QUANT / max(chroma_fig, 1e-4)
    i_hue, i_acc = ATTRIBUTE_NAMES.index("hue"), ATTRIBUTE_NAMES.index("accent")
    meas[i_hue] = math.hypot(meas[i_hue], hue_bg)
    meas[i_acc] = math.hypot(meas[i_acc], hue_bg, hue_fig)
    meas = np.minimum(meas, 0.5)  # beyond a half turn a hue says nothing; keep the term finite
    diff = measurement.attributes[None, :] - means  # [E, A]
    for name in CIRCULAR_ATTRIBUTES:
        i = ATTRIBUTE_NAMES.index(name)
        diff[:, i] = (diff[:, i] + 0.5) % 1.0 - 0.5
    var = stds**2 + meas[None, :] ** 2
    return np.asarray(-0.5 * (diff**2 / var + np.log(2 * np.pi * var))[:, use].sum(axis=1))


def _attribute_mask(attributes: Sequence[str] | None) -> np.ndarray:
    if attributes is None:
        return np.ones(len(ATTRIBUTE_NAMES), dtype=bool)
    unknown = [a for a in attributes if a not in ATTRIBUTE_NAMES]
    if unknown or not attributes:
        raise InvalidInputError(
            f"unknown oracle attributes {unknown or list(attributes)!r}; allowed: a non-empty subset of "
            f"{', '.join(ATTRIBUTE_NAMES)}"
        )
    return np.array([a in attributes for a in ATTRIBUTE_NAMES])


def emotion_scores(
    image: np.ndarray, spec: WorldSpec | None = None, attributes: Sequence[str] | None = None
) -> np.ndarray:
    """Posterior probability of each emotion (uniform prior), float64 ``[8]`` in EmoSet order (sums to 1)."""
    return emotion_posterior(measure(image, spec), spec, attributes)


def emotion_posterior(
    measurement: Measurement, spec: WorldSpec | None = None, attributes: Sequence[str] | None = None
) -> np.ndarray:
    """``emotion_scores`` on a measurement already taken (callers that also read the content measure once)."""
    ll = emotion_log_likelihoods(measurement, spec, attributes)
    p = np.exp(ll - ll.max())
    return np.asarray(p / p.sum())


def emotion_of(
    image: np.ndarray, spec: WorldSpec | None = None, attributes: Sequence[str] | None = None
) -> Emotion:
    """The most likely emotion of an image."""
    return Emotion.from_index(int(np.argmax(emotion_scores(image, spec, attributes))))


@dataclass(frozen=True)
class Reading:
    """What the oracles read from one image: the emotion (colour reading) and the content drawn."""

    emotion: Emotion
    posterior: np.ndarray  # float64 [8], EmoSet order
    content: str | None  # None: no recognisable silhouette

    @property
    def confidence(self) -> float:
        """The posterior of the emotion read."""
        return float(self.posterior[self.emotion.label_index])


def read_image(
    image: np.ndarray,
    spec: WorldSpec | None = None,
    attributes: Sequence[str] | None = COLOUR_ATTRIBUTES,
) -> Reading:
    """The one way to read a world image: one measurement gives both the emotion and the silhouette.

    ``emodir world check``, the benchmark's metrics (``metrics.score_targets``) and the eval's world-oracle
    scorers all call it, so they always agree. ``attributes`` defaults to the colour reading (the one for
    generated images, see ``COLOUR_ATTRIBUTES``); ``None`` reads every attribute, as ``emotion_scores`` does.

    Raises:
        InvalidInputError: not a square RGB uint8 image of a supported size, or unknown ``attributes``.
    """
    m = measure(image, spec)
    p = emotion_posterior(m, spec, attributes)
    return Reading(Emotion.from_index(int(np.argmax(p))), p, content_from(m, spec))
