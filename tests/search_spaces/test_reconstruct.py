"""Least-squares reconstruction and ``round_to: auto`` on small real models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_spaces.build import build_space
from search_spaces.calibrate import recalibrate_bn
from search_spaces.prune import apply_policy
from search_spaces.reconstruct import DenseTargets, consumers, output_error, reconstruct
from search_spaces.space import SearchSpace, auto_step, parse_round_to


class TinyCNN(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 32, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, object]:
    from search_spaces.data import load_dataset
    from search_spaces.training import finetune

    splits = load_dataset("digits", size=8)
    torch.manual_seed(0)
    model = TinyCNN()
    finetune(model, splits.train, steps=150, lr=0.05, seed=0, augment=False)
    return model.eval(), splits


def _pruned(model: nn.Module, ratio: float) -> tuple[nn.Module, SearchSpace, dict[str, list[int]]]:
    x = torch.zeros(1, 1, 8, 8)
    space = build_space(model, x, round_to=1)
    kept_out: dict[str, list[int]] = {}
    return apply_policy(model, space, space.uniform(ratio), example_input=x, kept_out=kept_out), space, kept_out


def test_reconstruction_reduces_the_consumers_output_error(trained: tuple[nn.Module, object]) -> None:
    model, splits = trained
    calib = splits.train.tensors[0][:256]
    plain, _, kept_out = _pruned(model, 0.75)
    recalibrate_bn(plain, [calib])
    fitted, _, _ = _pruned(model, 0.75)
    refit = reconstruct(fitted, model, DenseTargets(model, calib), kept_out)
    assert refit == consumers(fitted, model) == ["conv2", "conv3", "fc"]
    held_out = splits.val.tensors[0]
    for layer in refit:
        kept = kept_out.get(layer)
        before = output_error(plain, model, layer, held_out, kept)
        after = output_error(fitted, model, layer, held_out, kept)
        assert after < 0.8 * before, (layer, before, after)


def test_reconstructed_accuracy_beats_bn_recalibration(trained: tuple[nn.Module, object]) -> None:
    from search_spaces.training import evaluate_accuracy

    model, splits = trained
    dense = evaluate_accuracy(model, splits.val)
    calib = splits.train.tensors[0][:256]
    plain, _, _ = _pruned(model, 0.75)
    recalibrate_bn(plain, [calib])
    fitted, _, kept_out = _pruned(model, 0.75)
    reconstruct(fitted, model, DenseTargets(model, calib), kept_out)
    bn_acc, lsq_acc = evaluate_accuracy(plain, splits.val), evaluate_accuracy(fitted, splits.val)
    assert dense > 0.8
    assert lsq_acc > bn_acc + 0.05, (dense, bn_acc, lsq_acc)


def test_reconstruction_also_recalibrates_batchnorm(trained: tuple[nn.Module, object]) -> None:
    model, splits = trained
    calib = splits.train.tensors[0][:128]
    fitted, _, kept_out = _pruned(model, 0.5)
    reconstruct(fitted, model, DenseTargets(model, calib), kept_out, layers=[])
    plain, _, _ = _pruned(model, 0.5)
    recalibrate_bn(plain, [calib])
    # no layer refit: what is left is exactly BN recalibration on the same batch
    assert torch.allclose(fitted.bn2.running_var, plain.bn2.running_var, rtol=1e-4)
    assert torch.equal(fitted.conv2.weight, plain.conv2.weight)


def test_conv1d_and_concatenated_inputs_are_refit() -> None:
    from search_spaces.models.resnet1d import resnet1d20
    from tests.search_spaces.tiny_models import ConcatNet

    torch.manual_seed(0)
    for model, x in ((ConcatNet().eval(), torch.randn(64, 3, 8, 8)), (resnet1d20().eval(), torch.randn(32, 1, 40))):
        space = build_space(model, x[:1], round_to=1)
        kept_out: dict[str, list[int]] = {}
        pruned = apply_policy(model, space, space.uniform(0.5), example_input=x[:1], kept_out=kept_out)
        refit = reconstruct(pruned, model, DenseTargets(model, x), kept_out)
        assert refit and set(refit) == set(consumers(pruned, model))
        assert torch.isfinite(pruned(x)).all()


def test_round_to_auto_scales_with_the_width() -> None:
    assert [auto_step(n) for n in (8, 16, 31, 32, 64, 100, 512)] == [1, 1, 1, 2, 4, 4, 32]
    model = TinyCNN(width=16)
    space = build_space(model, torch.zeros(1, 1, 8, 8))
    assert space.round_to == "auto"
    assert len(space.levels("conv1")) > 2
    assert len(space.levels("conv1")) > len(build_space(model, torch.zeros(1, 1, 8, 8), round_to=8).levels("conv1"))
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert parse_round_to("4") == 4
    for bad in (0, "x", True, 1.5):
        with pytest.raises(ValueError, match="round_to"):
            parse_round_to(bad)
