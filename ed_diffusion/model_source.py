"""Where a diffusers model comes from: a local directory or the local Hugging Face cache (never the network
at run time), checked before any work starts and loaded with one-line errors that name the model."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

from ed_common.errors import EmodirError

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_NEEDED = ("model_index.json", "unet", "vae")
# diffusers imports the library each component of model_index.json names: a model directory is data, so it
# may name only these, or one of diffusers' own pipeline modules (SD 1.5 names "stable_diffusion" for its
# safety checker). The world model's pixel codec is ours.
OUR_LIBRARIES = frozenset({"ed_diffusion.world_bench.codec"})
ALLOWED_LIBRARIES = frozenset({"diffusers", "transformers"}) | OUR_LIBRARIES
_MAX_INDEX_BYTES = 1_000_000


class ModelMissingError(EmodirError):
    """A model, bank or adapter the preset needs is not where it was looked for."""


def check_diffusers_model(model: str, what: str = "model") -> None:
    """Refuse ``model`` unless it is a complete local diffusers directory or a hub id already cached.

    Args:
        model: a directory or a hub id (``owner/name``).
        what: how to name it in the message (``pretrained`` for a train config, ``--model`` ...).

    Raises:
        ModelMissingError: naming the value and what is allowed.
    """
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelMissingError(f"{what} {model!r} is a file; allowed: a diffusers model directory")
        missing = [n for n in _NEEDED if not (local / n).exists()]
        if missing:
            raise ModelMissingError(
                f"{what} {model!r} is not a complete diffusers model directory: missing {', '.join(missing)}"
            )
        check_model_index(local / "model_index.json", f"{what} {model!r}")
        return
    if not _HUB_ID.fullmatch(model):
        raise ModelMissingError(
            f"{what} {model!r} is neither an existing directory nor a hub id; allowed: a diffusers model "
            "directory or an id like 'stabilityai/stable-diffusion-xl-base-1.0'"
        )
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "model_index.json")
    if not isinstance(cached, str):
        raise ModelMissingError(
            f"{what} {model!r} is not in the local Hugging Face cache, and models are never downloaded at "
            f"run time; fetch it first (`hf download {model}`) or give a local directory"
        )
    check_model_index(Path(cached), f"{what} {model!r}")


def check_model_index(path: Path, what: str) -> None:
    """Refuse a ``model_index.json`` that names a library outside ``ALLOWED_LIBRARIES`` (or is not JSON).

    Our own libraries it names are imported here: diffusers loads a component only from a module already
    imported (it never imports one itself), and these are on our allowlist.

    Raises:
        ModelMissingError: naming the component, the library and what is allowed.
    """
    if path.stat().st_size > _MAX_INDEX_BYTES:
        raise ModelMissingError(f"{what}: model_index.json is over {_MAX_INDEX_BYTES} bytes")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelMissingError(f"{what}: model_index.json is not readable JSON ({exc})") from None
    if not isinstance(index, dict):
        raise ModelMissingError(f"{what}: model_index.json is not a JSON object")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or not entry or entry[0] is None:
            continue
        if not _allowed_library(entry[0]):
            raise ModelMissingError(
                f"{what}: component {name!r} names the library {entry[0]!r}; allowed: "
                f"{', '.join(sorted(ALLOWED_LIBRARIES))} (a model directory never chooses code to run)"
            )
        if entry[0] in OUR_LIBRARIES:
            importlib.import_module(entry[0])


def _allowed_library(name: object) -> bool:
    if name in ALLOWED_LIBRARIES:
        return True
    from diffusers import pipelines

    return isinstance(name, str) and name.isidentifier() and hasattr(pipelines, name)


def load_diffusers_pipeline(cls: Any, model: str, what: str = "model", **kwargs: Any) -> Any:
    """``cls.from_pretrained(model, local_files_only=True, **kwargs)`` after :func:`check_diffusers_model`.

    Raises:
        ModelMissingError: the model is not there, or loading it failed (the reason on the same line).
    """
    check_diffusers_model(model, what)
    try:
        return cls.from_pretrained(model, local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        where = (
            "that local directory" if Path(model).expanduser().exists() else "the local Hugging Face cache"
        )
        raise ModelMissingError(
            f"cannot load {what} {model!r} from {where}: {' '.join(str(exc).split())[:200]}"
        ) from None
