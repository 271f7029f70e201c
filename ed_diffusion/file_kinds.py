"""What a weights file is, told from its header, and whether its numbers are usable.

The bank and the adapter are both safetensors files with a ``format`` entry in their metadata. A user who
swaps them (``--adapter bank.safetensors``) should hear which kind of file it is and which flag takes it,
not a parser error; and a file whose tensors hold NaN or infinity renders black images without any error,
so both loaders refuse one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch

BANK_FORMAT = "emodir-visual-prompt-bank"
ADAPTER_FORMAT = "emodir-emotion-adapter"

# format -> (what it is, the flag that takes it)
_KINDS = {
    BANK_FORMAT: ("a visual-prompt bank", "--bank"),
    ADAPTER_FORMAT: ("an emotion adapter", "--adapter"),
}


def format_of(header: Mapping[str, str]) -> str | None:
    """The ``format`` entry, whether stored raw (banks) or JSON-encoded (adapters)."""
    raw = header.get("format")
    if raw is None:
        return None
    try:
        decoded = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return decoded if isinstance(decoded, str) else raw


def wrong_kind(header: Mapping[str, str], expected: str) -> str | None:
    """A hint when ``header`` is another of our file kinds than ``expected``, else None."""
    found = format_of(header)
    if found is None or found == expected or found not in _KINDS:
        return None
    what, flag = _KINDS[found]
    return f"this is {what} (format {found!r}), not {_KINDS[expected][0]}; pass it with {flag}"


def non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """``'name' has N NaN/infinite values`` for the first floating tensor that has any, else None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                return f"tensor {name!r} has {bad} NaN/infinite value(s) of {tensor.numel()}"
    return None
