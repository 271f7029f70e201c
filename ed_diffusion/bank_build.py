"""``emodir bank build`` without its command line: options checked, the encoders chosen, the bank built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ed_common.errors import InvalidInputError, OutputExistsError
from ed_common.paths import check_writable
from ed_diffusion.bank import ProgressFn, VisualPromptBank, build_bank, check_cluster_sizes
from ed_diffusion.emotion_datasets import EmotionSample, LoadSummary, load_emotion_dataset
from ed_diffusion.encoders import (
    IMAGE_ENCODER_KINDS,
    FeatureEncoders,
    ImageEncoderKind,
    ensure_tiny_encoders_dir,
)
from ed_diffusion.pipeline import pick_device

TINY = "tiny"  # an encoder name meaning the tiny encoders, written once under the cache
TINY_ENCODERS_CACHE = "tiny-encoders"


@dataclass(frozen=True)
class EncoderChoice:
    """The encoders a bank is built with, as ``FeatureEncoders.from_pretrained`` takes them."""

    text: str  # hub id or local directory
    image: str
    kind: ImageEncoderKind  # which output of the image model is the feature


def image_kind_of(image_encoder: str) -> ImageEncoderKind:
    """The feature kind an image encoder's id or path implies: ``dino`` if its name says so, else ``clip``."""
    return "dino" if "dino" in image_encoder.lower() else "clip"


def check_image_kind(image_kind: str | None) -> ImageEncoderKind | None:
    """``image_kind`` as a kind (``None``: to be inferred from the encoder).

    Raises:
        InvalidInputError: neither ``None`` nor one of ``IMAGE_ENCODER_KINDS``.
    """
    if image_kind is None:
        return None
    if image_kind == "clip":
        return "clip"
    if image_kind == "dino":
        return "dino"
    raise InvalidInputError(
        f"--image-kind {image_kind!r} is unknown; allowed: {', '.join(IMAGE_ENCODER_KINDS)}"
    )


def choose_encoders(
    text_encoder: str, image_encoder: str, image_kind: ImageEncoderKind | None, *, cache_dir: Path
) -> EncoderChoice:
    """Resolve ``"tiny"`` to the tiny encoders under ``cache_dir`` (written once) and the feature kind.

    The kind is inferred from the resolved image encoder unless given, so a local copy of DINOv2 in a
    directory named after it reads as ``dino`` too.
    """
    if TINY in (text_encoder, image_encoder):
        tiny = ensure_tiny_encoders_dir(cache_dir / TINY_ENCODERS_CACHE)
        text_encoder = str(tiny / "text") if text_encoder == TINY else text_encoder
        image_encoder = str(tiny / "image") if image_encoder == TINY else image_encoder
    return EncoderChoice(text_encoder, image_encoder, image_kind or image_kind_of(image_encoder))


@dataclass(frozen=True)
class BankBuild:
    """A checked ``bank build``: its samples are read and fit the clusters; no encoder is loaded yet."""

    samples: list[EmotionSample]
    summary: LoadSummary  # what the dataset loader kept and skipped
    encoders: EncoderChoice
    out: Path
    clusters: int
    seed: int
    device: str

    def run(self, *, progress: ProgressFn | None = None) -> VisualPromptBank:
        """Load the encoders, encode and cluster the samples, write the bank to ``out``; return it."""
        encoders = FeatureEncoders.from_pretrained(
            self.encoders.text, self.encoders.image, kind=self.encoders.kind, device=self.device
        )
        bank = build_bank(self.samples, encoders, clusters=self.clusters, seed=self.seed, progress=progress)
        bank.save(self.out)
        return bank


def prepare_bank_build(
    data: Path,
    out: Path,
    *,
    text_encoder: str,
    image_encoder: str,
    image_kind: str | None,
    clusters: int,
    seed: int,
    device: str | None,
    cache_dir: Path,
    on_loaded: Callable[[LoadSummary], None] | None = None,
) -> BankBuild:
    """Check every option, then read the dataset and check it can fill ``clusters`` per emotion.

    Options come first because reading a real EmoSet and loading the encoders take minutes; the cluster
    sizes are checked before any encoder loads (``build_bank`` checks them again). ``on_loaded`` sees what
    the loader kept and skipped before that check, so skipped rows are reported even when it fails.

    Raises:
        InvalidInputError: an unknown device or image kind, ``clusters`` < 1.
        OutputExistsError: ``out`` exists (a bank is never overwritten).
        DatasetError: ``data`` is not a dataset, or nothing in it is usable.
        BankError: an emotion with fewer distinct captions than ``clusters``.
    """
    dev = pick_device(device)
    if clusters < 1:
        raise InvalidInputError(f"--clusters {clusters}; allowed: an integer >= 1")
    kind = check_image_kind(image_kind)
    if out.exists():
        raise OutputExistsError(f"{out} already exists; refusing to overwrite it")
    check_writable(out, directory=False)
    samples, summary = load_emotion_dataset(data)
    if on_loaded is not None:
        on_loaded(summary)
    check_cluster_sizes(samples, clusters)
    encoders = choose_encoders(text_encoder, image_encoder, kind, cache_dir=cache_dir)
    return BankBuild(samples, summary, encoders, out, clusters, seed, dev)
