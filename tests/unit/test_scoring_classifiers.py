"""Emotion classifiers: probe (label orders, weight files), zero-shot mechanics; outputs in EmoSet order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ed_common.emotions import Emotion
from ed_diffusion.scoring import (
    ALPHABETICAL_TO_EMOSET,
    ClipLinearProbe,
    ClipZeroShot,
    ScorerLoadError,
    load_probe_weights,
)

ALPHABETICAL = ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"]


def _image(k: int) -> Image.Image:
    """A flat image whose red level encodes ``k`` (what the fake feature functions read back)."""
    return Image.new("RGB", (8, 8), (10 * k, 0, 0))


def _code(im: Image.Image) -> int:
    return int(np.asarray(im)[0, 0, 0]) // 10


def one_hot_features(images: Sequence[Image.Image]) -> torch.Tensor:
    """Feature e_k for the image encoding k (d = 8)."""
    return torch.eye(8)[[_code(im) for im in images]]


def test_alphabetical_to_emoset_permutation_is_by_name() -> None:
    assert [ALPHABETICAL[i] for i in ALPHABETICAL_TO_EMOSET] == [e.value for e in Emotion]
    assert ALPHABETICAL_TO_EMOSET == (0, 2, 3, 5, 1, 4, 6, 7)


def test_probe_maps_known_features_to_known_classes() -> None:
    # weight = 5 I: feature e_k gives the largest logit to class k (EmoSet order).
    probe = ClipLinearProbe(one_hot_features, 5 * torch.eye(8), torch.zeros(8))
    probs = probe.probs([_image(k) for k in range(8)])
    assert probs.shape == (8, 8)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert list(probs.argmax(axis=1)) == list(range(8))
    # Hand value: softmax of (5, 0, ..., 0) at the hot class.
    assert probs[3, 3] == pytest.approx(np.exp(5) / (np.exp(5) + 7))


def test_probe_bias_shifts_the_prediction() -> None:
    bias = torch.zeros(8)
    bias[Emotion.FEAR.label_index] = 10.0
    probe = ClipLinearProbe(one_hot_features, 5 * torch.eye(8), bias)
    assert set(probe.probs([_image(k) for k in range(8)]).argmax(axis=1)) == {Emotion.FEAR.label_index}


def test_alphabetical_probe_is_permuted_into_emoset_order() -> None:
    # A hand-built probe trained in alphabetical order: output r fires on feature r, and output r means the
    # r-th alphabetical name. Feeding the feature of name X must predict Emotion X.
    probe = ClipLinearProbe(
        one_hot_features, 5 * torch.eye(8), torch.arange(8.0) * 0.01, label_order="alphabetical"
    )
    for emotion in Emotion:
        k = ALPHABETICAL.index(emotion.value)
        probs = probe.probs([_image(k)])[0]
        assert int(probs.argmax()) == emotion.label_index, emotion
    # The bias moved with its row: alphabetical row 1 (anger) is EmoSet column 4.
    assert probe.bias[Emotion.ANGER.label_index] == pytest.approx(0.01)
    # Read as EmoSet order (the wrong order), awe's feature would be called contentment.
    wrong = ClipLinearProbe(one_hot_features, 5 * torch.eye(8), torch.zeros(8), label_order="emoset")
    assert (
        int(wrong.probs([_image(ALPHABETICAL.index("awe"))])[0].argmax()) == Emotion.CONTENTMENT.label_index
    )


def test_probe_rejects_wrong_shapes() -> None:
    with pytest.raises(ScorerLoadError, match=r"weight \[8, d\] and bias \[8\]; got weight \[7, 8\]"):
        ClipLinearProbe(one_hot_features, torch.zeros(7, 8), torch.zeros(7))
    with pytest.raises(ScorerLoadError, match="non-finite"):
        ClipLinearProbe(one_hot_features, torch.full((8, 8), float("nan")), torch.zeros(8))


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("emogen.pth", ("fc.weight", "fc.bias")),  # EmoGen's emo_classifier_768 state dict
        ("ddp.pt", ("module.fc.weight", "module.fc.bias")),  # saved from DataParallel
        ("plain.safetensors", ("weight", "bias")),  # a bare nn.Linear
        ("head.safetensors", ("head.weight", "head.bias")),
    ],
)
def test_probe_files_load_in_each_layout(tmp_path: Path, name: str, keys: tuple[str, str]) -> None:
    weight, bias = torch.randn(8, 16), torch.randn(8)
    path = tmp_path / name
    state = {keys[0]: weight, keys[1]: bias}
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    w, b = load_probe_weights(path)
    torch.testing.assert_close(w, weight)
    torch.testing.assert_close(b, bias)
    probe = ClipLinearProbe.from_file(path, lambda ims: torch.zeros(len(ims), 16), feature_dim=16)
    assert probe.probs([_image(0)]).shape == (1, 8)


def test_probe_checkpoint_wrapped_in_state_dict_loads(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"fc.weight": torch.ones(8, 4), "fc.bias": torch.zeros(8)}}, path)
    assert load_probe_weights(path)[0].shape == (8, 4)


class _NotATensor:
    pass


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        ("missing.pth", None, "does not exist"),
        ("garbage.safetensors", b"not a safetensors file", "cannot read probe file"),
        ("garbage.pth", b"\x00\x01 not a zip or pickle", "cannot read probe file"),
        ("probe.onnx", b"x", "unknown type"),
    ],
)
def test_bad_probe_files_fail_in_one_line(
    tmp_path: Path, name: str, write: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if write is not None:
        path.write_bytes(write)
    with pytest.raises(ScorerLoadError) as info:
        load_probe_weights(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_probe_pickle_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    # weights_only=True: a pickle of a custom class is refused, never executed.
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(8, 4), "fc.bias": torch.zeros(8), "x": _NotATensor()}, path)
    with pytest.raises(ScorerLoadError, match="cannot read probe file") as info:
        load_probe_weights(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "state",
    [
        {"fc.weight": torch.zeros(8, 4)},  # no bias
        {
            "fc.weight": torch.zeros(8, 4),
            "fc.bias": torch.zeros(8),
            "fc2.weight": torch.zeros(8, 8),
        },  # an MLP
        {"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)},  # a polarity head
    ],
)
def test_probe_files_of_other_layouts_are_refused(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "probe.safetensors"
    save_file(state, path)
    with pytest.raises(ScorerLoadError) as info:
        load_probe_weights(path)
    assert "\n" not in str(info.value)


def test_probe_for_another_feature_size_names_both_sizes(tmp_path: Path) -> None:
    path = tmp_path / "emogen.pth"
    torch.save({"fc.weight": torch.zeros(8, 768), "fc.bias": torch.zeros(8)}, path)
    with pytest.raises(ScorerLoadError, match="takes 768-d features but the CLIP model gives 32-d"):
        ClipLinearProbe.from_file(path, one_hot_features, feature_dim=32)


def test_zero_shot_mechanics_on_constructed_embeddings() -> None:
    # Class embeds = the basis, image embed = 3 e_k + small noise: cosine picks k; softmax uses logit_scale.
    zs = ClipZeroShot(lambda ims: 3 * one_hot_features(ims) + 0.01, torch.eye(8), logit_scale=2.0)
    probs = zs.probs([_image(k) for k in range(8)])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert list(probs.argmax(axis=1)) == list(range(8))
    exact = ClipZeroShot(one_hot_features, torch.eye(8) * 7.0, logit_scale=2.0)  # norms do not matter
    assert exact.probs([_image(5)])[0, 5] == pytest.approx(np.exp(2) / (np.exp(2) + 7))


class _KeywordEmbedder:
    """Text embed = basis vector of the emotion word in the text, in a deliberately scrambled slot order."""

    slots = ("sadness", "awe", "fear", "amusement", "excitement", "anger", "contentment", "disgust")

    @property
    def logit_scale(self) -> float:
        return 100.0

    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [next(i for i, w in enumerate(self.slots) if w in t) for t in texts]
        return torch.eye(8)[rows]

    def image_embeds(self, images: Sequence[Image.Image]) -> torch.Tensor:
        # Image k "looks like" the emotion in slot k.
        return one_hot_features(images)


def test_zero_shot_columns_are_in_emoset_order_whatever_the_embedding_layout() -> None:
    embedder = _KeywordEmbedder()
    zs = ClipZeroShot.from_embedder(embedder)
    for k, name in enumerate(embedder.slots):
        assert int(zs.probs([_image(k)])[0].argmax()) == Emotion(name).label_index
