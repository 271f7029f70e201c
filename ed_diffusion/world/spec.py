"""The specification of the synthetic affective world: contents, per-emotion styles, the semantic shortcut.

Content (the semantics named in a caption) is one of 8 silhouettes. Emotion is carried only by non-semantic
attributes, each drawn per image from an emotion-specific Gaussian (mean, spread):

- ``hue``: the palette's base hue (background), in turns (0 = red, 1/3 = green, 2/3 = blue); circular.
- ``accent``: the figure's hue minus the base hue, in turns in [-0.5, 0.5); circular. Near 0 is a
  one-hue palette; near 0.5 a complementary pair.
- ``saturation``: HSV saturation of both colours.
- ``brightness``: the mean HSV value of figure and background.
- ``contrast``: the HSV value difference between figure and background (which one is lighter is a coin flip,
  not an emotion cue).
- ``blur``: Gaussian blur of the silhouette edges, sigma as a fraction of the image side.
- ``noise``: standard deviation of the luminance texture added to every pixel (in [0, 1] units).
- ``grain``: correlation length of that texture, a Gaussian sigma as a fraction of the side (0 = per-pixel
  grain, large = blotchy mottling).

Grounding of the styles (colour-emotion research):

- Valdez & Mehrabian (1994), "Effects of color on emotions", J. Exp. Psychol. Gen. 123(4): brightness
  predicts pleasure (positive emotions bright, negative dark) and saturation predicts arousal (excitement
  and anger saturated; sadness, contentment and fear desaturated).
- Jonauskaite et al. (2020), "Universal patterns in color-emotion associations are further shaped by
  linguistic and geographic proximity", Psychol. Sci. 31(10): red ~ anger and excitement/love, yellow ~ joy
  and amusement, blue and grey ~ sadness, black and dark ~ fear, green ~ contentment and relief, yellow-green
  and brown ~ disgust.
- Awe as deep blue with a gold accent follows the night-sky and cathedral imagery of awe stimuli (and
  EmoSet's awe class); sharp edges and fine grain for high arousal, soft edges for low arousal follow the
  usual image-aesthetics findings (e.g. Machajdik & Hanbury 2010, "Affective image classification using
  features inspired by psychology and art theory", ACM MM).

The styles overlap on purpose: no single attribute separates the 8 emotions (anger and excitement share red,
awe, fear and sadness share blue, amusement and disgust neighbouring yellows), but the joint distribution
does, so a pixel oracle that measures all attributes recognises the emotion (``oracle.py``).

The *semantic shortcut* (Emotion-Director, arXiv 2512.19479: emotion tied to typical content) is the
``typical`` map: every emotion has 1-2 typical contents (stand-ins for EmoSet regularities such as amusement
~ balloons or awe ~ mountains and stars). ``dataset.make_world`` correlates emotion and content in its train
split through this map and tests on the unusual pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ed_common.emotions import Emotion, parse_emotion
from ed_common.errors import InvalidInputError

CONTENT_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "house", "tree")
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "hue",
    "accent",
    "saturation",
    "brightness",
    "contrast",
    "blur",
    "noise",
    "grain",
)
CIRCULAR_ATTRIBUTES: frozenset[str] = frozenset({"hue", "accent"})

# Rendering limits applied after sampling. They keep every image readable by the content oracle whatever the
# emotion: a visible figure (contrast floor, contrast-to-noise >= MIN_CONTRAST_TO_NOISE), colours off the
# uint8 rails (so medians and noise statistics are not clipped), edges that stay edges.
MIN_SATURATION = 0.05
MIN_BRIGHTNESS, MAX_BRIGHTNESS = 0.12, 0.88
VALUE_MARGIN = 0.04  # darker colour >= this, lighter colour <= 1 - this
MIN_CONTRAST, MAX_CONTRAST = 0.15, 0.8
MAX_BLUR = 0.04
MIN_NOISE = 0.004
MIN_CONTRAST_TO_NOISE = 4.0
MAX_GRAIN = 0.1


@dataclass(frozen=True)
class Gaussian:
    """A normal distribution of one attribute.

    Attributes:
        mean: the centre (for circular attributes, in turns).
        std: the spread (> 0).
    """

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise InvalidInputError(
                f"Gaussian(mean={self.mean}, std={self.std}) is invalid; allowed: finite mean and std > 0"
            )


@dataclass(frozen=True)
class EmotionStyle:
    """The per-emotion distribution of every non-semantic attribute (see the module docstring)."""

    hue: Gaussian
    accent: Gaussian
    saturation: Gaussian
    brightness: Gaussian
    contrast: Gaussian
    blur: Gaussian
    noise: Gaussian
    grain: Gaussian

    def means(self) -> np.ndarray:
        """Means in ``ATTRIBUTE_NAMES`` order, float64 ``[8]``."""
        return np.array([getattr(self, n).mean for n in ATTRIBUTE_NAMES], dtype=np.float64)

    def stds(self) -> np.ndarray:
        """Spreads in ``ATTRIBUTE_NAMES`` order, float64 ``[8]``."""
        return np.array([getattr(self, n).std for n in ATTRIBUTE_NAMES], dtype=np.float64)


@dataclass(frozen=True)
class Attributes:
    """The non-semantic attributes of one image (what ``draw_world_image`` draws).

    Attributes:
        hue: base (background) hue in turns, [0, 1).
        accent: figure hue minus base hue in turns, [-0.5, 0.5).
        saturation: HSV saturation of both colours, [0, 1].
        brightness: mean HSV value of figure and background.
        contrast: HSV value difference between figure and background (>= 0).
        blur: edge blur sigma as a fraction of the image side.
        noise: luminance texture standard deviation.
        grain: texture correlation length (Gaussian sigma) as a fraction of the side.
        figure_lighter: whether the figure is the lighter of the two colours.
    """

    hue: float
    accent: float
    saturation: float
    brightness: float
    contrast: float
    blur: float
    noise: float
    grain: float
    figure_lighter: bool = True

    def vector(self) -> np.ndarray:
        """The continuous attributes in ``ATTRIBUTE_NAMES`` order, float64 ``[8]``."""
        return np.array([getattr(self, n) for n in ATTRIBUTE_NAMES], dtype=np.float64)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (floats rounded to 5 decimals)."""
        return {
            f.name: (round(v, 5) if isinstance(v := getattr(self, f.name), float) else v)
            for f in fields(self)
        }


def _g(mean: float, std: float) -> Gaussian:
    return Gaussian(mean, std)


# Means and spreads per emotion, in ATTRIBUTE_NAMES order:
#   hue, accent, saturation, brightness, contrast, blur, noise, grain.
# Positive emotions are bright and negative ones dark (pleasure ~ brightness); excitement, anger and
# amusement saturated, sadness, fear and contentment desaturated (arousal ~ saturation). High-arousal
# emotions get sharp edges and fine grain; low-arousal ones soft edges and smooth or mottled texture.
DEFAULT_STYLES: dict[Emotion, EmotionStyle] = {
    # Yellow-orange with a playful cyan-violet accent, bright, crisp.
    Emotion.AMUSEMENT: EmotionStyle(
        _g(0.13, 0.046), _g(0.42, 0.117), _g(0.72, 0.13), _g(0.72, 0.091),
        _g(0.35, 0.117), _g(0.006, 0.005), _g(0.02, 0.01), _g(0.012, 0.013),
    ),
    # Deep blue with a gold accent (complementary), mid-dark, strong contrast, a slight glow.
    Emotion.AWE: EmotionStyle(
        _g(0.63, 0.046), _g(0.50, 0.065), _g(0.62, 0.13), _g(0.45, 0.091),
        _g(0.45, 0.117), _g(0.012, 0.008), _g(0.02, 0.013), _g(0.03, 0.019),
    ),
    # Soft pastel green, bright, low contrast, soft edges, smooth.
    Emotion.CONTENTMENT: EmotionStyle(
        _g(0.31, 0.058), _g(0.0, 0.052), _g(0.35, 0.104), _g(0.70, 0.091),
        _g(0.22, 0.078), _g(0.02, 0.01), _g(0.015, 0.008), _g(0.05, 0.026),
    ),
    # Red-orange with a warmer accent, fully saturated, bright, crisp, sparkling grain.
    Emotion.EXCITEMENT: EmotionStyle(
        _g(0.03, 0.039), _g(0.07, 0.052), _g(0.9, 0.078), _g(0.66, 0.091),
        _g(0.40, 0.117), _g(0.004, 0.004), _g(0.035, 0.016), _g(0.01, 0.01),
    ),
    # Deep red, saturated, dark, harsh contrast, crisp and gritty.
    Emotion.ANGER: EmotionStyle(
        _g(0.99, 0.033), _g(0.0, 0.046), _g(0.85, 0.104), _g(0.36, 0.078),
        _g(0.50, 0.117), _g(0.004, 0.004), _g(0.06, 0.019), _g(0.015, 0.013),
    ),
    # Murky olive / yellow-green drifting to brown, dark, low contrast, mottled.
    Emotion.DISGUST: EmotionStyle(
        _g(0.19, 0.039), _g(-0.04, 0.065), _g(0.50, 0.104), _g(0.38, 0.078),
        _g(0.26, 0.078), _g(0.015, 0.009), _g(0.045, 0.019), _g(0.06, 0.026),
    ),
    # Very dark blue-violet, weakly saturated, murky edges, noisy.
    Emotion.FEAR: EmotionStyle(
        _g(0.70, 0.065), _g(0.0, 0.065), _g(0.32, 0.13), _g(0.19, 0.052),
        _g(0.28, 0.078), _g(0.02, 0.013), _g(0.045, 0.019), _g(0.04, 0.026),
    ),
    # Blue-grey, nearly desaturated, mid-dark, low contrast, soft, smooth.
    Emotion.SADNESS: EmotionStyle(
        _g(0.60, 0.052), _g(0.0, 0.052), _g(0.14, 0.065), _g(0.45, 0.078),
        _g(0.20, 0.065), _g(0.022, 0.01), _g(0.02, 0.01), _g(0.05, 0.026),
    ),
}  # fmt: skip

# The semantic shortcut: 1-2 typical contents per emotion (balloons and party stars for amusement, mountains
# and the night sky for awe, home and garden for contentment, wheels for excitement, an X for anger, a bin for
# disgust, warning signs and dark forests for fear, graves and empty houses for sadness).
DEFAULT_TYPICAL: dict[Emotion, tuple[str, ...]] = {
    Emotion.AMUSEMENT: ("circle", "star"),
    Emotion.AWE: ("triangle", "star"),
    Emotion.CONTENTMENT: ("house", "tree"),
    Emotion.EXCITEMENT: ("ring", "circle"),
    Emotion.ANGER: ("cross",),
    Emotion.DISGUST: ("square",),
    Emotion.FEAR: ("triangle", "tree"),
    Emotion.SADNESS: ("cross", "house"),
}

# Neutral caption templates: they name the content and nothing affective, so the caption carries no emotion.
DEFAULT_CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {content}",
    "a picture of a {content}",
    "a drawing of a {content}",
    "a {content} in the middle",
    "a simple {content}",
    "an image of a {content}",
)


@dataclass(frozen=True)
class WorldSpec:
    """Everything that defines the synthetic affective world.

    Attributes:
        contents: the content classes (caption nouns), in class-index order.
        styles: one ``EmotionStyle`` per emotion, in EmoSet order (``Emotion.label_index``).
        typical: the typical contents of each emotion, in EmoSet order (the semantic shortcut).
        caption_templates: neutral caption templates, each with exactly one ``{content}`` field.
    """

    contents: tuple[str, ...] = CONTENT_CLASSES
    styles: tuple[EmotionStyle, ...] = tuple(DEFAULT_STYLES[e] for e in Emotion)
    typical: tuple[tuple[str, ...], ...] = tuple(DEFAULT_TYPICAL[e] for e in Emotion)
    caption_templates: tuple[str, ...] = DEFAULT_CAPTION_TEMPLATES

    def __post_init__(self) -> None:
        unknown = [c for c in self.contents if c not in CONTENT_CLASSES]
        if len(self.contents) < 2 or unknown or len(set(self.contents)) != len(self.contents):
            raise InvalidInputError(
                f"world contents {self.contents!r} are invalid (unknown: {unknown}); allowed: at least 2 "
                f"distinct names among {', '.join(CONTENT_CLASSES)} (the shapes render.py can draw)"
            )
        if len(self.styles) != len(Emotion) or len(self.typical) != len(Emotion):
            raise InvalidInputError(
                f"a world needs one style and one typical-content tuple per emotion ({len(Emotion)}); got "
                f"{len(self.styles)} styles and {len(self.typical)} typical tuples"
            )
        for emotion, typical in zip(Emotion, self.typical, strict=True):
            bad = [c for c in typical if c not in self.contents]
            if not 1 <= len(typical) <= 2 or bad:
                raise InvalidInputError(
                    f"typical contents {typical!r} of {emotion.value} are invalid; allowed: 1-2 names "
                    f"among {', '.join(self.contents)}"
                )
        for template in self.caption_templates:
            if template.count("{content}") != 1 or template.replace("{content}", "").count("{") > 0:
                raise InvalidInputError(
                    f"caption template {template!r} must contain exactly one {{content}} field and no other"
                )
        if not self.caption_templates:
            raise InvalidInputError("a world needs at least one caption template; got none")

    def style(self, emotion: str | Emotion) -> EmotionStyle:
        """The attribute distributions of ``emotion``."""
        return self.styles[parse_emotion(emotion).label_index]

    def typical_contents(self, emotion: str | Emotion) -> tuple[str, ...]:
        """The 1-2 typical contents of ``emotion``."""
        return self.typical[parse_emotion(emotion).label_index]

    def is_typical(self, content: str, emotion: str | Emotion) -> bool:
        """Whether ``(content, emotion)`` is a typical (shortcut) pair."""
        return self.check_content(content) in self.typical_contents(emotion)

    def check_content(self, content: str) -> str:
        """Return ``content`` if it is a class of this world.

        Raises:
            InvalidInputError: unknown content; the message lists the classes.
        """
        if content not in self.contents:
            raise InvalidInputError(f"unknown content {content!r}; allowed: {', '.join(self.contents)}")
        return content

    def means(self) -> np.ndarray:
        """Attribute means per emotion, float64 ``[num_emotions, num_attributes]``."""
        return np.stack([s.means() for s in self.styles])

    def stds(self) -> np.ndarray:
        """Attribute spreads per emotion, float64 ``[num_emotions, num_attributes]``."""
        return np.stack([s.stds() for s in self.styles])

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (written next to a generated world)."""
        return {
            "contents": list(self.contents),
            "attributes": list(ATTRIBUTE_NAMES),
            "styles": {
                e.value: {n: [getattr(s, n).mean, getattr(s, n).std] for n in ATTRIBUTE_NAMES}
                for e, s in zip(Emotion, self.styles, strict=True)
            },
            "typical": {e.value: list(t) for e, t in zip(Emotion, self.typical, strict=True)},
            "caption_templates": list(self.caption_templates),
        }


def default_spec() -> WorldSpec:
    """The default world (8 contents, the styles and typical map above)."""
    return WorldSpec()


def wrap_turns(x: float) -> float:
    """Map an angle in turns to [-0.5, 0.5)."""
    return (x + 0.5) % 1.0 - 0.5


def sample_attributes(
    rng: np.random.Generator, emotion: str | Emotion, spec: WorldSpec | None = None
) -> Attributes:
    """Draw one image's attributes from the emotion's distributions, then apply the rendering limits.

    Args:
        rng: the random source (the only one used).
        emotion: the emotion whose style to sample.
        spec: the world; default ``WorldSpec()``.

    Returns:
        The attributes, each within the rendering limits (module constants).

    Raises:
        UnknownEmotionError: ``emotion`` is not one of the 8 categories.
    """
    style = (spec or _DEFAULT_SPEC).style(emotion)
    draw = {n: float(rng.normal(getattr(style, n).mean, getattr(style, n).std)) for n in ATTRIBUTE_NAMES}
    figure_lighter = bool(rng.random() < 0.5)
    brightness = min(max(draw["brightness"], MIN_BRIGHTNESS), MAX_BRIGHTNESS)
    # Both colours keep VALUE_MARGIN from black and white, which caps the contrast of very dark or bright
    # palettes (fear's dark palette mostly).
    max_contrast = min(MAX_CONTRAST, 2.0 * min(brightness - VALUE_MARGIN, 1.0 - VALUE_MARGIN - brightness))
    contrast = min(max(draw["contrast"], MIN_CONTRAST), max_contrast)
    noise = min(max(draw["noise"], MIN_NOISE), contrast / MIN_CONTRAST_TO_NOISE)
    return Attributes(
        hue=draw["hue"] % 1.0,
        accent=wrap_turns(draw["accent"]),
        saturation=min(max(draw["saturation"], MIN_SATURATION), 1.0),
        brightness=brightness,
        contrast=contrast,
        blur=min(max(draw["blur"], 0.0), MAX_BLUR),
        noise=noise,
        grain=min(max(draw["grain"], 0.0), MAX_GRAIN),
        figure_lighter=figure_lighter,
    )


_DEFAULT_SPEC = WorldSpec()
