"""Training run configs (trl-style dataclasses), read from and written to flat TOML files.

``TrainConfig`` holds what every MC-Diffusion trainer needs; ``SFTTrainConfig`` (stage 1, visual-prompt SFT)
and ``DPOTrainConfig`` (stage 2, DPO with a negative visual prompt) add their own fields and defaults. Each
field documents itself in ``metadata["help"]`` (the CLI shows it), and ``__post_init__`` checks types and
values, so a config that exists is valid whether it came from code, the CLI or a file.

A config file is a flat TOML table of field names; ``save_config`` writes one with every field (the run's
exact settings, saved with each checkpoint) and ``load_config`` reads it back. TOML has no null, so a field
whose value is ``None`` is left out of the file and reads back as its default (``None`` for every optional
field).
"""

from __future__ import annotations

import math
import os
import textwrap
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ed_common.atomic import write_text_atomic
from ed_common.emotions import EMOTION_NAMES
from ed_common.errors import InvalidInputError

MixedPrecision = Literal["no", "fp16", "bf16"]
NegativeStrategy = Literal["opposite", "confusable", "random"]

TINY_PRESET = "tiny"
WORLD_PRESET = "world"  # the shipped (or installed) world model, bank and adapter; data: `emodir world make`
# Each step draws from torch generators seeded (seed + 7_777_777) * 1_000_003 + step at most (the loop and its
# evaluation batches), and torch takes at most 2**64 - 1: a larger seed would fail at the first step.
MAX_TRAIN_SEED = 10**12 - 1
VALIDATION_SCORERS = ("none", "world_oracle", "clip_zero_shot", "clip_probe")
CONFIG_FILE_NAME = "config.toml"

ConfigT = TypeVar("ConfigT", bound="TrainConfig")


class ConfigError(InvalidInputError):
    """A training config with an unknown key, a value of the wrong type or a value out of range."""


@dataclass
class TrainConfig:
    """Settings shared by the MC-Diffusion trainers (see the ``help`` of each field)."""

    output_dir: str = field(
        default="outputs/mc-diffusion",
        metadata={"help": "Run directory: checkpoints, logs and the saved config go here."},
    )
    pretrained: str = field(
        default=TINY_PRESET,
        metadata={
            "help": "Base model: 'tiny' (the random CPU-sized preset built in code), 'world' (the world "
            "preset's model, bank and adapter), or a diffusers model directory / cached hub id."
        },
    )
    bank: str | None = field(
        default=None,
        metadata={
            "help": "Visual-prompt bank (.safetensors from `emodir bank build`). None: the tiny preset's "
            "bank; required for any other model."
        },
    )
    adapter_init: str | None = field(
        default=None,
        metadata={
            "help": "Emotion-adapter weights to start from (.safetensors). None: the tiny preset's adapter, "
            "else a fresh adapter (to_k_ip/to_v_ip copied from to_k/to_v)."
        },
    )
    data: str | None = field(
        default=None,
        metadata={
            "help": "Emotion image-text data: a JSONL file ({image, caption, emotion}) or an EmoSet root. "
            "None: the tiny preset's toy dataset; required for any other model."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of parameters, data order, noise and timesteps."})
    max_steps: int = field(default=1000, metadata={"help": "Optimiser steps to run (>= 1)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate (> 0)."})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay (>= 0)."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear learning-rate warm-up steps (>= 0)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping threshold (> 0)."})
    batch_size: int = field(default=4, metadata={"help": "Samples per device per micro-batch (>= 1)."})
    grad_accum: int = field(
        default=1, metadata={"help": "Micro-batches accumulated per optimiser step (>= 1)."}
    )
    mixed_precision: MixedPrecision = field(
        default="no",
        metadata={"help": "Autocast precision: no (float32), fp16 or bf16. Losses are computed in float32."},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute UNet activations in backward to save memory."}
    )
    checkpoint_every: int = field(
        default=500, metadata={"help": "Save a checkpoint every N steps (>= 0; 0: only at the end)."}
    )
    keep_last: int = field(
        default=3, metadata={"help": "Checkpoints to keep, oldest deleted first (>= 0; 0: keep all)."}
    )
    log_every: int = field(default=10, metadata={"help": "Log metrics every N steps (>= 1)."})
    resolution: int | None = field(
        default=None,
        metadata={
            "help": "Training image side in pixels, a multiple of 8 (the VAE downsamples by 8). "
            "None: the preset's size (64 tiny, 512 sd15, 1024 sdxl)."
        },
    )
    num_tokens: int = field(
        default=4, metadata={"help": "Visual-prompt tokens per prompt (k, top-k bank clusters; >= 1)."}
    )
    train_projector: bool = field(default=True, metadata={"help": "Train the emotion-token projector."})
    train_ip_kv: bool = field(
        default=True, metadata={"help": "Train the decoupled cross-attention weights to_k_ip/to_v_ip."}
    )
    train_bank: bool = field(
        default=False,
        metadata={"help": "Train the per-emotion bank tokens (initialised from the bank's visual centres)."},
    )
    lora_rank: int = field(
        default=0, metadata={"help": "Rank of LoRA on the UNet attention (to_q/k/v/out); 0: no LoRA."}
    )
    lora_alpha: int | None = field(
        default=None, metadata={"help": "LoRA alpha (scale alpha/rank). None: equal to lora_rank."}
    )
    vp_dropout: float = field(
        default=0.05,
        metadata={
            "help": "Probability of replacing a sample's visual prompt by zeros (the unconditional branch of "
            "classifier-free guidance), in [0, 1)."
        },
    )
    min_timestep: int = field(default=0, metadata={"help": "Smallest training timestep (inclusive, >= 0)."})
    max_timestep: int = field(
        default=1000,
        metadata={"help": "Largest training timestep (exclusive, <= the scheduler's num_train_timesteps)."},
    )
    validation_every: int = field(
        default=0,
        metadata={
            "help": "Render the validation grid every N steps, and at the end (>= 0; 0: never). The loss is "
            "not a reliable signal for adapters: look at the images."
        },
    )
    validation_prompts: tuple[str, ...] = field(
        default=("a dog in the snow", "a house by the sea"),
        metadata={"help": "Prompts of the validation grid (its rows, with each emotion)."},
    )
    validation_emotions: tuple[str, ...] = field(
        default=("fear", "contentment"),
        metadata={"help": "Emotions of the validation grid (EmoSet names)."},
    )
    validation_seeds: tuple[int, ...] = field(
        default=(0, 1), metadata={"help": "Seeds of the validation grid (its columns)."}
    )
    validation_steps: int = field(
        default=20, metadata={"help": "Denoising steps of validation images (>= 1)."}
    )
    validation_scorer: Literal["none", "world_oracle", "clip_zero_shot", "clip_probe"] = field(
        default="none",
        metadata={
            "help": "Emotion classifier that scores each validation grid (none, world_oracle, "
            "clip_zero_shot, clip_probe): emotion accuracy and mean target probability per step in "
            "validation/scores.jsonl and the tracker."
        },
    )
    validation_clip_model: str | None = field(
        default=None,
        metadata={"help": "CLIP model (local dir or cached hub id) for the clip_* validation scorers."},
    )
    validation_probe_path: str | None = field(
        default=None,
        metadata={"help": "Linear(d, 8) probe weights for validation_scorer = 'clip_probe'."},
    )
    report_to: Literal["none", "tensorboard"] = field(
        default="none",
        metadata={
            "help": "Tracker for metrics and validation grids through accelerate: none or tensorboard "
            "(`pip install tensorboard`; logs in <output_dir>/logs)."
        },
    )

    def __post_init__(self) -> None:
        """Check types (ints given for floats become floats) and values.

        Raises:
            ConfigError: the first bad field, named with its value and what is allowed.
        """
        _check_types(self)
        self._check_values()

    def validation_scoring(self) -> Any:
        """The ``ImageScoringConfig`` that scores validation grids (``validation_scorer`` must not be none).

        Raises:
            ConfigError: a combination the scorers refuse (names the validation_* key).
        """
        from ed_diffusion.scoring.config import ImageScoringConfig

        try:
            return ImageScoringConfig(
                emotion_classifier=self.validation_scorer,
                clip_model=self.validation_clip_model,
                probe_path=self.validation_probe_path,
            )
        except InvalidInputError as exc:
            text = (
                str(exc)
                .replace("clip_model", "validation_clip_model")
                .replace("probe_path", "validation_probe_path")
            )
            raise ConfigError(f"validation_scorer = {self.validation_scorer!r}: {text}") from None

    def _check_values(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "num_tokens"):
            _require(self, name, getattr(self, name) >= 1, ">= 1")
        for name in ("warmup_steps", "checkpoint_every", "keep_last", "lora_rank"):
            _require(self, name, getattr(self, name) >= 0, ">= 0")
        _require(self, "seed", 0 <= self.seed <= MAX_TRAIN_SEED, f"0..{MAX_TRAIN_SEED}")
        for name in ("learning_rate", "max_grad_norm"):
            _require(
                self, name, math.isfinite(getattr(self, name)) and getattr(self, name) > 0, "finite, > 0"
            )
        _require(self, "weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, ">= 0")
        for name in ("output_dir", "pretrained"):
            _require(self, name, bool(getattr(self, name).strip()), "a non-empty string")
        if self.pretrained == WORLD_PRESET:
            _require(self, "data", self.data is not None, "set (e.g. `emodir world make`'s train.jsonl)")
        elif self.pretrained != TINY_PRESET:
            for name in ("bank", "data"):
                _require(
                    self, name, getattr(self, name) is not None, f"set unless pretrained is {TINY_PRESET!r}"
                )
        if self.resolution is not None:
            _require(self, "resolution", self.resolution >= 8 and self.resolution % 8 == 0, "a multiple of 8")
        if self.lora_alpha is not None:
            _require(self, "lora_alpha", self.lora_alpha >= 1, ">= 1 (or unset)")
        _require(self, "vp_dropout", 0.0 <= self.vp_dropout < 1.0, "in [0, 1)")
        _require(self, "min_timestep", self.min_timestep >= 0, ">= 0")
        _require(
            self,
            "max_timestep",
            self.max_timestep > self.min_timestep,
            f"> min_timestep ({self.min_timestep})",
        )
        _require(self, "validation_every", self.validation_every >= 0, ">= 0")
        _require(self, "validation_steps", self.validation_steps >= 1, ">= 1")
        if self.validation_every:
            for name in ("validation_prompts", "validation_emotions", "validation_seeds"):
                _require(self, name, len(getattr(self, name)) > 0, "at least one entry")
            _require(
                self,
                "validation_prompts",
                all(p.strip() for p in self.validation_prompts),
                "non-empty prompts",
            )
        _require(
            self,
            "validation_scorer",
            self.validation_scorer in VALIDATION_SCORERS,
            f"one of {', '.join(VALIDATION_SCORERS)}",
        )
        if self.validation_scorer != "none":
            self.validation_scoring()  # its own one-line errors (a clip scorer without a model, ...)
        bad = [e for e in self.validation_emotions if e.strip().lower() not in EMOTION_NAMES]
        _require(self, "validation_emotions", not bad, f"EmoSet emotion names ({', '.join(EMOTION_NAMES)})")
        _require(
            self,
            "validation_seeds",
            all(0 <= x <= MAX_TRAIN_SEED for x in self.validation_seeds),
            f"seeds 0..{MAX_TRAIN_SEED}",
        )
        trains_something = self.train_projector or self.train_ip_kv or self.train_bank or self.lora_rank > 0
        _require(
            self,
            "train_projector",
            trains_something,
            "true, or one of train_ip_kv / train_bank / lora_rank > 0 (nothing would be trained)",
        )


@dataclass
class SFTTrainConfig(TrainConfig):
    """Stage 1, visual-prompt SFT: ε/v-prediction MSE on (image, caption, target emotion's visual prompt)."""

    output_dir: str = field(
        default="outputs/mc-diffusion-sft",
        metadata={"help": "Run directory: checkpoints, logs and the saved config go here."},
    )


@dataclass
class DPOTrainConfig(TrainConfig):
    """Stage 2: DPO with a negative visual prompt, optionally mixed with image-pair DPO and SFT.

    The loss is ``w_sft·L_sft + w_dpo·L_dpo + w_neg_vp·L_neg_vp`` (``training.losses``); a term with weight 0
    is not computed.
    """

    output_dir: str = field(
        default="outputs/mc-diffusion-dpo",
        metadata={"help": "Run directory: checkpoints, logs and the saved config go here."},
    )
    learning_rate: float = field(
        default=1e-5,
        metadata={"help": "Peak AdamW learning rate (> 0); DPO fine-tunes, so lower than SFT's."},
    )
    vp_dropout: float = field(
        default=0.0,
        metadata={
            "help": "Probability of zeroing a sample's visual prompt, in [0, 1). 0 by default: a dropped "
            "prompt makes the positive and negative branches identical and the sample useless for L_neg_vp."
        },
    )
    pairs: str | None = field(
        default=None,
        metadata={
            "help": "Image pairs for the dpo term: a JSONL of {caption, emotion, winner, loser} (what "
            "`emodir pairs build` writes) or a w/ + l/ folder (<emotion>/w, <emotion>/l). None: with the "
            "tiny preset, pairs from its toy dataset; otherwise required when w_dpo > 0."
        },
    )
    # Diffusion-DPO's β is in the thousands because the preference logit is β times a difference of
    # per-sample MSEs, which is ~1e-3; β = 1 would make every logit ~0 and the loss flat (peers.md §7.8).
    beta: float = field(
        default=2500.0,
        metadata={
            "help": "DPO β (> 0). Thousands, as in Diffusion-DPO (2500 diffusers, 5000 the paper): "
            "per-sample MSE differences are ~1e-3, so a small β gives logits ~0 and no learning signal."
        },
    )
    w_sft: float = field(default=0.0, metadata={"help": "Weight of the SFT loss (>= 0)."})
    w_dpo: float = field(default=1.0, metadata={"help": "Weight of image-pair Diffusion-DPO (>= 0)."})
    w_neg_vp: float = field(
        default=1.0, metadata={"help": "Weight of DPO with a negative visual prompt (>= 0)."}
    )
    reference: Literal["adapters_off", "initial_adapter"] = field(
        default="adapters_off",
        metadata={
            "help": "The DPO terms' reference model: adapters_off (the UNet with the emotion adapter off: "
            "no extra memory, but it never sees a visual prompt) or initial_adapter (a frozen copy of the "
            "adapter the run starts from, e.g. SFT's: one adapter's weights more; not with LoRA)."
        },
    )
    negative_strategy: NegativeStrategy = field(
        default="opposite",
        metadata={
            "help": "Negative emotion e⁻ for the dispreferred visual prompt: opposite (most similar emotion "
            "of the other polarity), confusable (most similar other emotion) or random (uniform other)."
        },
    )

    def _check_values(self) -> None:
        super()._check_values()
        _require(
            self,
            "reference",
            not (self.reference == "initial_adapter" and self.lora_rank > 0),
            "adapters_off when lora_rank > 0 (the frozen copy holds the emotion adapter only)",
        )
        _require(self, "beta", math.isfinite(self.beta) and self.beta > 0, "finite, > 0")
        for name in ("w_sft", "w_dpo", "w_neg_vp"):
            _require(self, name, math.isfinite(getattr(self, name)) and getattr(self, name) >= 0, ">= 0")
        _require(
            self,
            "w_neg_vp",
            self.w_sft > 0 or self.w_dpo > 0 or self.w_neg_vp > 0,
            "> 0, or one of w_sft / w_dpo > 0 (every loss weight is 0)",
        )
        if self.w_dpo > 0 and self.pretrained != TINY_PRESET:
            _require(
                self,
                "pairs",
                self.pairs is not None,
                f"set when w_dpo > 0 unless pretrained is {TINY_PRESET!r}",
            )


# ---------------------------------------------------------------------- checks


def _require(config: TrainConfig, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(
            f"{type(config).__name__}.{name} = {getattr(config, name)!r} is invalid; allowed: {allowed}"
        )


_FIELD_TYPES: dict[type[TrainConfig], dict[str, Any]] = {}


def _field_types(cls: type[TrainConfig]) -> dict[str, Any]:
    # Annotations are strings (postponed evaluation); resolve them once per class.
    if cls not in _FIELD_TYPES:
        hints = get_type_hints(cls)
        _FIELD_TYPES[cls] = {f.name: hints[f.name] for f in fields(cls)}
    return _FIELD_TYPES[cls]


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "unset"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        item = next(a for a in get_args(tp) if a is not Ellipsis)
        return f"a list of {_type_name(item).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _conform(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``tp``, and the value to store (an int becomes a float)."""
    origin = get_origin(tp)
    if origin is Literal:
        return (isinstance(value, str) and value in get_args(tp)), value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            ok, conformed = _conform(value, arg)
            if ok:
                return True, conformed
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    # bool is an int subclass: `max_steps = true` in a file is a mistake, not 1.
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:  # tuple[X, ...]: a TOML array
        (item,) = (a for a in get_args(tp) if a is not Ellipsis)
        if not isinstance(value, list | tuple):
            return False, value
        done = [_conform(v, item) for v in value]
        return all(ok for ok, _ in done), tuple(v for _, v in done)
    raise TypeError(f"unsupported config field type {tp!r}")


def _check_types(config: TrainConfig) -> None:
    for name, tp in _field_types(type(config)).items():
        value = getattr(config, name)
        ok, conformed = _conform(value, tp)
        if not ok:
            raise ConfigError(
                f"{type(config).__name__}.{name} must be {_type_name(tp)}, "
                f"got {type(value).__name__} {value!r}"
            )
        setattr(config, name, conformed)


# ---------------------------------------------------------------------- files


def parse_overrides(items: Sequence[str], cls: type[TrainConfig] | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) as config values: VALUE is read as a TOML value (``10``, ``1e-4``,
    ``true``, ``["a", "b"]``, ``"quoted"``), and as a plain string when it is not one (``runs/x``) or when the
    field of ``cls`` is a string (``data=2024`` is the path ``2024``).

    Raises:
        ConfigError: an item without ``=``, an empty key, a value with a line break, or a key ``cls`` lacks.
    """
    hints = get_type_hints(cls) if cls is not None else {}
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. max_steps=100)")
        if "\n" in raw or "\r" in raw:
            raise ConfigError(f"--set {key}=...: the value has a line break; one value per --set")
        if cls is not None and key not in hints:
            allowed = ", ".join(f.name for f in fields(cls))
            raise ConfigError(f"--set {key}=...: {cls.__name__} has no key {key!r}; allowed: {allowed}")
        if hints.get(key) in (str, str | None):
            values[key] = raw
            continue
        try:
            values[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            values[key] = raw
    return values


def load_config(
    path: str | os.PathLike[str], cls: type[ConfigT], overrides: Mapping[str, Any] | None = None
) -> ConfigT:
    """Read a flat TOML file of ``cls`` fields; absent fields keep their defaults.

    Args:
        path: the ``.toml`` file.
        cls: ``TrainConfig`` or a subclass (``SFTTrainConfig``, ``DPOTrainConfig``).
        overrides: values that replace the file's (``--set``; see :func:`parse_overrides`).

    Returns:
        The validated config.

    Raises:
        ConfigError: the file is missing or not TOML, has a key ``cls`` does not know (the message lists the
            allowed keys), a value of the wrong type or out of range (the message names the key).
    """
    p = Path(path).expanduser()
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is unreadable: {type(exc).__name__}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
    raw = {**raw, **(overrides or {})}
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{p}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; allowed: {', '.join(allowed)}"
        )
    try:
        return cls(**raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as a flat TOML file atomically (temp file in the same directory, then rename).

    Every field is written except those that are ``None`` (TOML has no null; they read back as their
    ``None`` default). ``load_config(path, type(config))`` gives an equal config.

    Args:
        config: the config to save.
        path: the target file, conventionally ``<checkpoint>/config.toml``; parents are created.

    Returns:
        The written path.
    """
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    defaults = {f.name: f.default for f in fields(config)}
    lines = [f"# {type(config).__name__}"]
    for name, value in asdict(config).items():
        if value is None:
            # Leaving a key out restores its default on load, which round-trips only when that is None.
            if defaults[name] is not None and defaults[name] is not MISSING:
                raise ConfigError(f"{type(config).__name__}.{name} is None but its default is not")
            continue
        lines.append(f"{name} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    return write_text_atomic(target, text)


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ("-inf" if value < 0 else "inf") if math.isinf(value) else "nan"
        # repr is the shortest text that reads back to the same float; TOML needs a dot or an exponent.
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        # A TOML basic string: escape quotes, backslashes and every control character (TOML forbids them
        # raw, DEL included); everything else, non-ASCII too, is written as is.
        return '"' + "".join(_escape_char(c) for c in value) + '"'
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to a config file")


def _escape_char(c: str) -> str:
    if c in _TOML_ESCAPES:
        return _TOML_ESCAPES[c]
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04X}"
    return c


def commented_config(cls: type[TrainConfig]) -> str:
    """A TOML file of ``cls``'s defaults with each field's help as a comment (``emodir train config``).

    Fields whose default is unset (None) are written commented out, so the text loads as the defaults.
    """
    command = "dpo" if issubclass(cls, DPOTrainConfig) else "sft"
    lines = [
        f"# {cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}",
        f"# Every key is optional; `emodir train {command} FILE`.",
    ]
    for f in fields(cls):
        lines.append("")
        for chunk in textwrap.wrap(str(f.metadata.get("help", "")), width=100):
            lines.append(f"# {chunk}")
        default = f.default
        if default is None:
            lines.append(f"# {f.name} = ...")
        else:
            lines.append(f"{f.name} = {_toml_value(default)}")
    return "\n".join(lines) + "\n"


EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
"""Example configs shipped with the package (tiny, sd15 and sdxl presets; ``docs/recipe.md``)."""
