"""The shared training objective: which forwards run, against which reference, and the numbers, by hand."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor

from ed_diffusion.training import objective
from ed_diffusion.training.config import DPOTrainConfig, SFTTrainConfig
from ed_diffusion.training.objective import NoisedBatch, ObjectiveOptions, step_loss, train_objective

torch.set_num_threads(1)
LN3 = math.log(3.0)
# -log(sigmoid(z)) = log(1 + e^-z): at z = ln 3 it is log(4/3), at 0 log 2, at -ln 3 log 4.


class FakeUNet:
    """A denoiser whose per-row error is read off its inputs: x = the row's noisy value, v = its visual token.

    Trained: ``err = x + v``. Reference (``reference_mode``): ``err = 2x + v/2``; it reads the visual prompt
    at half weight, so a test can tell which visual prompt each reference row saw.
    """

    def __init__(self) -> None:
        self.in_reference = False
        self.lora_off: bool | None = None
        self.frozen_gain: float | None = None  # set under the frozen-adapter reference: err = 2x + gain * v
        self.calls: list[tuple[str, list[float], list[float]]] = []

    def err(self, b: NoisedBatch) -> Tensor:
        x, v = b.noisy[:, 0], b.vp[:, 0]
        mode = "frozen" if self.frozen_gain is not None else "reference" if self.in_reference else "trained"
        self.calls.append((mode, x.tolist(), v.tolist()))
        if self.frozen_gain is not None:
            return 2 * x + self.frozen_gain * v
        return 2 * x + v / 2 if self.in_reference else x + v


@contextmanager
def fake_reference_mode(unet: FakeUNet, lora: bool) -> Iterator[None]:
    unet.in_reference, unet.lora_off = True, lora
    try:
        yield
    finally:
        unet.in_reference = False


@contextmanager
def fake_frozen_mode(unet: FakeUNet, frozen: list[Tensor]) -> Iterator[None]:
    unet.frozen_gain = float(frozen[0])  # the frozen adapter reads the visual prompt at this weight
    try:
        yield
    finally:
        unet.frozen_gain = None


@pytest.fixture
def unet(monkeypatch: pytest.MonkeyPatch) -> FakeUNet:
    monkeypatch.setattr(objective, "reference_mode", fake_reference_mode)
    monkeypatch.setattr(objective, "frozen_adapter_mode", fake_frozen_mode)
    return FakeUNet()


def rows(x: list[float], v: list[float]) -> NoisedBatch:
    col = torch.tensor(x, dtype=torch.float64)[:, None]
    return NoisedBatch(
        noisy=col,
        t=torch.zeros(len(x), dtype=torch.long),
        target=torch.zeros_like(col),
        cond={"encoder_hidden_states": col.clone()},
        vp=torch.tensor(v, dtype=torch.float64)[:, None],
    )


def tokens(*v: float) -> Tensor:
    return torch.tensor(v, dtype=torch.float64)[:, None]


def close(x: Tensor, expected: float) -> None:
    assert math.isclose(float(x), expected, abs_tol=1e-9), f"{float(x)} != {expected}"


def test_sft_alone_is_the_mean_error_of_the_images_under_their_own_visual_prompt(unet: FakeUNet) -> None:
    loss, metrics = step_loss(ObjectiveOptions(w_sft=1.0), unet.err, unet, images=rows([1, 3], [0.5, 0.5]))
    close(loss, 2.5)  # errors 1 + 0.5 and 3 + 0.5
    close(metrics["sft/mse"], 2.5)
    assert unet.calls == [("trained", [1, 3], [0.5, 0.5])]  # one forward, no reference pass


def test_the_negative_vp_term_is_measured_against_the_reference_under_both_visual_prompts(
    unet: FakeUNet,
) -> None:
    opts = ObjectiveOptions(w_sft=0.5, w_neg_vp=1.0, beta=4.0)
    loss, metrics = step_loss(opts, unet.err, unet, images=rows([1, 2], [0, 1]), negative_vp=tokens(LN3, 1))
    # Δ± = (x + v±) - (2x + v±/2) = -x + v±/2, logit = -(β/2)(Δ⁺ - Δ⁻) = (β/4)(v⁻ - v⁺) = [ln 3, 0]
    neg_vp = (math.log(4 / 3) + math.log(2)) / 2
    close(metrics["neg_vp/loss"], neg_vp)
    close(metrics["neg_vp/logit"], LN3 / 2)
    close(metrics["sft/mse"], 2.0)  # (1 + 0) and (2 + 1)
    close(loss, 0.5 * 2.0 + neg_vp)
    both = ([1, 2, 1, 2], [0, 1, LN3, 1])  # the images under p_v⁺ then p_v⁻, in ONE forward
    assert unet.calls == [("trained", *both), ("reference", *both)]


def test_image_pair_dpo_compares_winners_and_losers_against_the_reference(unet: FakeUNet) -> None:
    pairs = rows([1, 2, 1, 2 + LN3], [0.5] * 4)  # winners, then losers, one visual prompt
    loss, metrics = step_loss(ObjectiveOptions(w_dpo=1.0, beta=2.0), unet.err, unet, pairs=pairs)
    # logit = -(β/2)((m_w - m_l) - (r_w - r_l)) = (β/2)(x_w - x_l) = [0, -ln 3]
    close(loss, (math.log(2) + math.log(4)) / 2)
    close(metrics["dpo/implicit_acc"], 0.25)  # a tie counts half, a negative logit nothing
    assert [mode for mode, _, _ in unet.calls] == ["trained", "reference"]
    assert unet.calls[0][1:] == unet.calls[1][1:] == ([1, 2, 1, 2 + LN3], [0.5] * 4)


def test_pair_winners_run_every_branch_in_one_forward_and_one_reference_pass(unet: FakeUNet) -> None:
    opts = ObjectiveOptions(w_sft=1.0, w_dpo=1.0, w_neg_vp=1.0, beta=2.0, image_terms="pair_winners")
    pairs = rows([1, 2, 1, 2 + LN3], [0.5] * 4)
    loss, metrics = step_loss(opts, unet.err, unet, pairs=pairs, negative_vp=tokens(0.5 + 2 * LN3, 0.5))
    sft = 2.0  # the winners under their own VP: (1 + 0.5 + 2 + 0.5) / 2
    dpo = (math.log(2) + math.log(4)) / 2  # logits (β/2)(x_w - x_l) = [0, -ln 3]
    neg_vp = (math.log(4 / 3) + math.log(2)) / 2  # logits (β/4)(v⁻ - v⁺) = [ln 3, 0]
    close(metrics["sft/loss"], sft)
    close(metrics["dpo/loss"], dpo)
    close(metrics["neg_vp/loss"], neg_vp)
    close(loss, sft + dpo + neg_vp)
    every = ([1, 2, 1, 2 + LN3, 1, 2], [0.5, 0.5, 0.5, 0.5, 0.5 + 2 * LN3, 0.5])  # [w | l | w under p_v⁻]
    assert unet.calls == [("trained", *every), ("reference", *every)]


def test_pair_winners_give_the_loss_of_the_same_winners_passed_as_their_own_batch(unet: FakeUNet) -> None:
    pairs = rows([1, 2, 1.5, 2 + LN3], [0.5, 0.25, 0.5, 0.25])
    negative = tokens(1.0, LN3)
    weights = {"w_sft": 0.3, "w_dpo": 1.0, "w_neg_vp": 2.0, "beta": 3.0}
    fused, _ = step_loss(
        ObjectiveOptions(**weights, image_terms="pair_winners"),  # type: ignore[arg-type]
        unet.err,
        unet,
        pairs=pairs,
        negative_vp=negative,
    )
    own, _ = step_loss(
        ObjectiveOptions(**weights),  # type: ignore[arg-type]
        unet.err,
        unet,
        images=pairs.head(2),
        pairs=pairs,
        negative_vp=negative,
    )
    close(fused, float(own))  # the layout changes the forwards, not the objective


def test_a_term_with_weight_zero_is_not_computed_and_needs_no_input(unet: FakeUNet) -> None:
    step_loss(ObjectiveOptions(w_dpo=1.0, w_neg_vp=0.0, beta=1.0), unet.err, unet, pairs=rows([1, 2], [0, 0]))
    assert [mode for mode, _, _ in unet.calls] == ["trained", "reference"]  # the pairs only
    unet.calls.clear()
    opts = ObjectiveOptions(w_sft=1.0, w_dpo=0.0, w_neg_vp=0.0)
    _, metrics = step_loss(opts, unet.err, unet, images=rows([1, 2], [0, 0]), negative_vp=tokens(9, 9))
    assert unet.calls == [("trained", [1, 2], [0, 0])]  # no negative branch, no reference pass
    assert set(metrics) == {"loss", "sft/loss", "sft/mse"}


def test_the_reference_pass_also_switches_lora_off_when_the_run_trains_lora(unet: FakeUNet) -> None:
    step_loss(ObjectiveOptions(w_dpo=1.0, beta=1.0, lora=True), unet.err, unet, pairs=rows([1, 2], [0, 0]))
    assert unet.lora_off is True
    step_loss(ObjectiveOptions(w_dpo=1.0, beta=1.0), unet.err, unet, pairs=rows([1, 2], [0, 0]))
    assert unet.lora_off is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"w_sft": -1.0}, "w_sft must be >= 0"),
        ({"w_dpo": math.inf}, "w_dpo must be a finite number"),
        ({}, "every loss weight is 0"),
        ({"w_neg_vp": 1.0}, "beta must be a finite number > 0"),
        ({"w_dpo": 1.0, "beta": 0.0}, "beta must be a finite number > 0"),
        ({"w_sft": 1.0, "image_terms": "winners"}, "allowed: 'own_batch', 'pair_winners'"),
    ],
)
def test_options_that_no_step_could_use_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ObjectiveOptions(**options)  # type: ignore[arg-type]


def test_a_weighted_term_without_its_input_is_refused_naming_it(unet: FakeUNet) -> None:
    neg = ObjectiveOptions(w_neg_vp=1.0, beta=1.0)
    with pytest.raises(ValueError, match="needs `negative_vp`"):
        step_loss(neg, unet.err, unet, images=rows([1], [0]))
    with pytest.raises(ValueError, match="need `images`"):
        step_loss(neg, unet.err, unet, negative_vp=tokens(1))
    with pytest.raises(ValueError, match="needs `pairs`"):
        step_loss(ObjectiveOptions(w_dpo=1.0, beta=1.0), unet.err, unet, images=rows([1], [0]))
    fused = ObjectiveOptions(w_sft=1.0, w_dpo=1.0, beta=1.0, image_terms="pair_winners")
    with pytest.raises(ValueError, match="`images` must be None"):
        step_loss(fused, unet.err, unet, images=rows([1], [0]), pairs=rows([1, 2], [0, 0]))


def test_emodir_train_uses_sft_alone_for_an_sft_config_and_the_weights_of_a_dpo_config() -> None:
    assert train_objective(SFTTrainConfig()) == ObjectiveOptions(w_sft=1.0)
    dpo = DPOTrainConfig(w_sft=0.5, w_dpo=1.0, w_neg_vp=2.0, beta=100.0, lora_rank=4)
    assert train_objective(dpo) == ObjectiveOptions(w_sft=0.5, w_dpo=1.0, w_neg_vp=2.0, beta=100.0, lora=True)
    assert train_objective(dpo).image_terms == "own_batch"


def test_a_frozen_adapter_reference_sees_the_visual_prompt_in_the_negative_vp_term(unet: FakeUNet) -> None:
    opts = ObjectiveOptions(w_neg_vp=1.0, beta=4.0, reference="frozen_adapter")
    frozen = [torch.tensor(1.0)]  # the frozen adapter reads v at full weight: ref = 2x + v
    loss, metrics = step_loss(
        opts, unet.err, unet, images=rows([1, 2], [0, 1]), negative_vp=tokens(LN3, 1), frozen=frozen
    )
    # Δ± = (x + v±) - (2x + v±) = -x for both prompts: the reference cancels the visual prompt exactly, so
    # the logit is 0 and the loss log 2 (with adapters off it was [ln 3, 0], the test above).
    close(metrics["neg_vp/logit"], 0.0)
    close(loss, math.log(2))
    both = ([1, 2, 1, 2], [0, 1, LN3, 1])
    assert unet.calls == [("trained", *both), ("frozen", *both)]


def test_a_frozen_adapter_reference_in_image_pair_dpo(unet: FakeUNet) -> None:
    pairs = rows([1, 2, 1, 2], [0.5, 0.5, 0.5 + LN3, 0.5])  # the first loser differs in its visual token only
    opts = ObjectiveOptions(w_dpo=1.0, beta=2.0, reference="frozen_adapter")
    loss, metrics = step_loss(opts, unet.err, unet, pairs=pairs, frozen=[torch.tensor(0.0)])
    # frozen gain 0: ref = 2x. logit = -(β/2)((m_w - m_l) - (r_w - r_l)) = -((v_w - v_l) - 0) = [ln 3, 0]
    close(loss, (math.log(4 / 3) + math.log(2)) / 2)
    close(metrics["dpo/implicit_acc"], 0.75)  # one positive logit, one tie
    assert [mode for mode, _, _ in unet.calls] == ["trained", "frozen"]


def test_a_frozen_reference_needs_its_weights_and_no_lora(unet: FakeUNet) -> None:
    opts = ObjectiveOptions(w_neg_vp=1.0, beta=1.0, reference="frozen_adapter")
    with pytest.raises(ValueError, match="needs `frozen`"):
        step_loss(opts, unet.err, unet, images=rows([1], [0]), negative_vp=tokens(1))
    with pytest.raises(ValueError, match="with LoRA"):
        ObjectiveOptions(w_neg_vp=1.0, beta=1.0, reference="frozen_adapter", lora=True)
    with pytest.raises(ValueError, match="reference 'sideways'"):
        ObjectiveOptions(w_neg_vp=1.0, beta=1.0, reference="sideways")  # type: ignore[arg-type]
