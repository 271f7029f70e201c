"""LPIPS: the formula on hand values and a tiny random AlexNet, the torchvision key layout, weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from ed_common.errors import InvalidInputError
from ed_diffusion.scoring import AlexNetFeatures, LPIPSDistance, ScorerLoadError, load_lpips_alex
from ed_diffusion.scoring.diversity import emotion_pairs, lpips_distances
from ed_diffusion.scoring.lpips import LPIPS_SCALE, LPIPS_SHIFT, lpips_input

TINY = (4, 8, 8, 8, 8)


class _Identity(nn.Module):
    """A one-layer backbone that returns its (already shifted and scaled) input."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


def _unscaled(target: tuple[float, float, float], side: int = 2) -> torch.Tensor:
    """The LPIPS input whose ScalingLayer output is ``target`` at every pixel."""
    t = torch.tensor(target).view(1, 3, 1, 1).expand(1, 3, side, side)
    return t * torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1) + torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)


def test_lpips_formula_on_hand_values() -> None:
    metric = LPIPSDistance(_Identity(), [3])
    x0, x1 = _unscaled((2.0, 0.0, 0.0)), _unscaled((0.0, 0.5, 0.0))
    # Unit-normalised (1, 0, 0) vs (0, 1, 0): squared difference (1, 1, 0), channel weights 1 -> 2 per pixel.
    assert metric(x0, x1).item() == pytest.approx(2.0, abs=1e-6)
    with torch.no_grad():
        metric.lin[0].weight.copy_(torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1))
    assert metric(x0, x1).item() == pytest.approx(0.75, abs=1e-6)
    assert metric(x0, x0).item() == 0.0


def _tiny_metric(seed: int = 0) -> LPIPSDistance:
    torch.manual_seed(seed)
    metric = LPIPSDistance(AlexNetFeatures(TINY), TINY)
    with torch.no_grad():
        for conv in metric.lin:
            conv.weight.uniform_(0.1, 1.0)  # LPIPS's learnt weights are non-negative
    return metric.eval()


def test_lpips_on_a_tiny_backbone_is_zero_symmetric_and_grows_with_difference() -> None:
    metric = _tiny_metric()
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 3, 40, 40, generator=g) * 2 - 1
    near = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    far = torch.rand(3, 3, 40, 40, generator=g) * 2 - 1
    with torch.no_grad():
        assert torch.equal(metric(a, a), torch.zeros(3))
        torch.testing.assert_close(metric(a, far), metric(far, a))
        d_near, d_far = metric(a, near), metric(a, far)
    assert (d_near > 0).all()
    assert (d_far > d_near).all()


def test_lpips_refuses_images_too_small_for_alexnet() -> None:
    with pytest.raises(InvalidInputError, match="sides >= 31"):
        _tiny_metric()(torch.zeros(1, 3, 24, 24), torch.zeros(1, 3, 24, 24))


def test_alexnet_features_match_torchvision_key_names_and_shapes() -> None:
    # torchvision.models.alexnet().features: convs at indices 0, 3, 6, 8, 10.
    shapes = {k: tuple(v.shape) for k, v in AlexNetFeatures().state_dict().items()}
    assert shapes == {
        "features.0.weight": (64, 3, 11, 11),
        "features.0.bias": (64,),
        "features.3.weight": (192, 64, 5, 5),
        "features.3.bias": (192,),
        "features.6.weight": (384, 192, 3, 3),
        "features.6.bias": (384,),
        "features.8.weight": (256, 384, 3, 3),
        "features.8.bias": (256,),
        "features.10.weight": (256, 256, 3, 3),
        "features.10.bias": (256,),
    }
    maps = AlexNetFeatures()(torch.zeros(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [64, 192, 384, 256, 256]


def _ours(metric: LPIPSDistance) -> dict[str, torch.Tensor]:
    return {
        k.removeprefix("backbone."): v for k, v in metric.state_dict().items() if k not in ("shift", "scale")
    }


def _lpips_package_layout(metric: LPIPSDistance) -> dict[str, torch.Tensor]:
    """What ``lpips.LPIPS(net="alex").state_dict()`` looks like (slices keep torchvision's indices)."""
    slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    out = {"scaling_layer.shift": torch.zeros(1, 3, 1, 1), "scaling_layer.scale": torch.ones(1, 3, 1, 1)}
    for key, value in _ours(metric).items():
        if key.startswith("features."):
            _, idx, kind = key.split(".")
            out[f"net.slice{slice_of[int(idx)]}.{idx}.{kind}"] = value
        else:
            out[f"lin{key.split('.')[1]}.model.1.weight"] = value
    return out


@pytest.mark.parametrize("layout", [_ours, _lpips_package_layout])
def test_lpips_weights_load_from_either_layout(tmp_path: Path, layout: object) -> None:
    source = _tiny_metric(seed=3)
    path = tmp_path / "lpips.safetensors"
    save_file(layout(source), path)  # type: ignore[operator]
    loaded = load_lpips_alex(path)
    assert loaded.backbone.channels == TINY  # type: ignore[union-attr]
    x0, x1 = torch.rand(2, 3, 48, 48) * 2 - 1, torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x0, x1), source(x0, x1))


def test_lpips_weight_files_with_missing_keys_or_garbage_fail_in_one_line(tmp_path: Path) -> None:
    state = _ours(_tiny_metric())
    del state["lin.2.weight"]
    partial = tmp_path / "partial.safetensors"
    save_file(state, partial)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"nope")
    no_alex = tmp_path / "vgg.safetensors"
    save_file({"features.1.weight": torch.zeros(1)}, no_alex)
    for path, message in (
        (partial, "missing lin.2.weight"),
        (garbage, "cannot read LPIPS weights"),
        (no_alex, "lack features.0.weight"),
        (tmp_path / "absent.safetensors", "does not exist"),
    ):
        with pytest.raises(ScorerLoadError) as info:
            load_lpips_alex(path)
        assert message in str(info.value)
        assert "\n" not in str(info.value)


def test_cached_feature_distances_equal_the_direct_formula() -> None:
    metric = _tiny_metric()
    g = torch.Generator().manual_seed(5)
    images = [
        Image.fromarray((torch.rand(36, 36, 3, generator=g) * 255).to(torch.uint8).numpy()) for _ in range(4)
    ]
    pairs = emotion_pairs(4)
    cached = lpips_distances(metric, images, pairs, batch_size=3)
    x = lpips_input(images)
    with torch.no_grad():
        direct = [metric(x[i : i + 1], x[j : j + 1]).item() for i, j in pairs]
    torch.testing.assert_close(
        torch.from_numpy(cached), torch.tensor(direct, dtype=torch.float64), rtol=1e-5, atol=1e-6
    )
