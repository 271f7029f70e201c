"""Family: weights files that would render nonsense. A bank or adapter holding NaN/inf is refused (it would
make black images with exit 0), and a bank passed as the adapter (or the reverse) is named for what it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cli import main
from ed_diffusion.adapter_file import load_adapter
from ed_diffusion.bank import VisualPromptBank
from ed_diffusion.errors import AdapterError, BankError
from ed_diffusion.presets import resolve_preset

pytestmark = pytest.mark.slow


def _damaged(src: str, dst: Path, value: float, only: str | None = None) -> Path:
    with safe_open(src, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(src)
    name = only or next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value  # one bad number is enough to blacken every image
    save_file(tensors, dst, metadata=metadata)
    return dst


@pytest.fixture(scope="module")
def tiny(cache: Path) -> Any:
    return resolve_preset("tiny", cache)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_bank_with_a_non_finite_value_is_refused(tiny: Any, tmp_path: Path, value: float) -> None:
    bad = _damaged(str(tiny.bank), tmp_path / "bank.safetensors", value, only="visual_centres")
    with pytest.raises(BankError, match=r"tensor 'visual_centres' has 1 NaN/infinite value\(s\)"):
        VisualPromptBank.load(bad)
    assert VisualPromptBank.load(tiny.bank) is not None  # the good one still loads


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_adapter_with_a_non_finite_value_is_refused_before_the_unet_changes(
    tiny: Any, tmp_path: Path, value: float
) -> None:
    from diffusers import StableDiffusionXLPipeline

    unet = StableDiffusionXLPipeline.from_pretrained(tiny.model, local_files_only=True).unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    bad = _damaged(str(tiny.adapter), tmp_path / "adapter.safetensors", value)
    with pytest.raises(AdapterError, match="NaN/infinite"):
        load_adapter(bad, unet)
    after = unet.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_bank_and_an_adapter_swapped_are_named_for_what_they_are(tiny: Any, tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    unet = StableDiffusionXLPipeline.from_pretrained(tiny.model, local_files_only=True).unet
    with pytest.raises(AdapterError, match=r"this is a visual-prompt bank .*; pass it with --bank"):
        load_adapter(tiny.bank, unet)
    with pytest.raises(BankError, match=r"this is an emotion adapter .*; pass it with --adapter"):
        VisualPromptBank.load(tiny.adapter)


@pytest.mark.parametrize("flag", ["--bank", "--adapter"])
def test_generate_with_a_damaged_file_exits_1_and_writes_no_image(
    tiny: Any, cache: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    monkeypatch.setenv("EMODIR_CACHE_DIR", str(cache))
    source = tiny.bank if flag == "--bank" else tiny.adapter
    bad = _damaged(str(source), tmp_path / "bad.safetensors", float("nan"))
    out = tmp_path / "run"
    argv = ["generate", "a dog", "-e", "fear", "--no-agents", "--preset", "tiny", "--n", "1"]
    assert main([*argv, flag, str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "NaN/infinite" in err and "Traceback" not in err
    assert not out.exists() or not list(out.glob("*.png"))
