"""Every zoo model: space, pruning at uniform and random policies, analytic vs counted cost."""

from __future__ import annotations

import random

import pytest
import torch

from search_spaces import (
    PolicyError,
    apply_policy,
    build_model,
    build_space,
    count_macs_params,
    kept_counts,
)
from search_spaces.graph import SpaceError
from search_spaces.zoo import DEFAULT_INPUT_SHAPES, ZOO
from tests.search_spaces.conftest import example

MODELS = [n for n in ZOO if n in DEFAULT_INPUT_SHAPES]  # text models: test_transformers.py


@pytest.fixture(scope="module", params=MODELS)
def zoo_case(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    name = request.param
    shape = DEFAULT_INPUT_SHAPES[name]
    model = build_model(name, num_classes=7, in_channels=shape[0]).eval()
    x = example(name)
    return name, model, x, build_space(model, x)


def test_random_policies_prune_run_and_match_the_analytic_cost(zoo_case) -> None:  # type: ignore[no-untyped-def]
    name, model, x, space = zoo_case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = random.Random(0)
    for _ in range(2):
        policy = {g.name: rng.uniform(0, space.max_ratio) for g in space.groups}
        pruned = apply_policy(model, space, policy, example_input=x)
        assert pruned(torch.cat([x, x])).shape == (2, 7)
        assert kept_counts(pruned, space) == space.kept(policy)
        macs, params = count_macs_params(pruned, x)
        assert macs < space.dense_macs
        assert space.macs(policy) == pytest.approx(macs, rel=0.01)
        assert space.params(policy) == pytest.approx(params, rel=0.01)
    # the input model is untouched
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_dense_cost_equals_counted(zoo_case) -> None:  # type: ignore[no-untyped-def]
    _, model, x, space = zoo_case
    assert (space.dense_macs, space.dense_params) == count_macs_params(model, x)
    assert space.macs(space.uniform(0.0)) == pytest.approx(space.dense_macs)


def test_macs_fall_monotonically_with_the_uniform_ratio(zoo_case) -> None:  # type: ignore[no-untyped-def]
    _, _, _, space = zoo_case
    ratios = [0.0, 0.2, 0.4, 0.6, 0.8]
    macs = [space.macs(space.uniform(r)) for r in ratios]
    assert all(a >= b for a, b in zip(macs, macs[1:], strict=False))
    assert macs[-1] < 0.5 * macs[0]


def test_classifier_output_is_never_a_group(zoo_case) -> None:  # type: ignore[no-untyped-def]
    name, model, _, space = zoo_case
    head = "fc" if "resnet" in name else "classifier"
    assert head not in space.names
    assert all(g.importance and list(g.importance) == sorted(g.importance) for g in space.groups)
    assert all(abs(sum(g.importance) / len(g.importance) - 1) < 1e-6 for g in space.groups)


def test_half_the_channels_is_about_a_quarter_of_the_macs(zoo_case) -> None:  # type: ignore[no-untyped-def]
    # the done-when for resnet56 (0.25 +- 0.05), checked on every zoo model
    _, model, x, space = zoo_case
    macs, _ = count_macs_params(apply_policy(model, space, space.uniform(0.5), example_input=x), x)
    assert 0.24 <= macs / space.dense_macs <= 0.30


def test_space_round_trips_through_a_dict(zoo_case) -> None:  # type: ignore[no-untyped-def]
    from search_spaces import SearchSpace

    name, _, _, space = zoo_case
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert any(g.kind == "depthwise" for g in space.groups) == (name == "mobilenetv2")
    assert any(g.kind == "conv1d" for g in space.groups) == (name == "resnet1d20")


@pytest.fixture(scope="module")
def small_case():  # type: ignore[no-untyped-def]
    model = build_model("resnet1d20", num_classes=10, in_channels=1).eval()
    x = torch.randn(2, 1, 40)
    return model, x, build_space(model, x)


@pytest.mark.parametrize(
    ("policy_of", "reason"),
    [
        (lambda s: {"nope": 0.1}, "unknown group"),
        (lambda s: {s.names[0]: 0.95}, "outside"),
        (lambda s: {s.names[1]: -0.1}, "outside"),
        (lambda s: {s.names[2]: float("nan")}, "finite"),
    ],
)
def test_bad_policies_name_the_group(policy_of, reason: str, small_case) -> None:  # type: ignore[no-untyped-def]
    model, x, space = small_case
    policy = policy_of(space)
    with pytest.raises(PolicyError, match=reason) as info:
        apply_policy(model, space, policy, example_input=x)
    assert info.value.group == next(iter(policy))


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "bn_scale", "taylor", "random"])
def test_every_criterion_prunes_to_the_same_counts(criterion: str) -> None:
    model = build_model("resnet1d20", num_classes=10, in_channels=1)
    x = torch.randn(2, 1, 40)
    space = build_space(model, x, criterion=criterion)
    policy = {g.name: 0.3 + 0.4 * (i % 2) for i, g in enumerate(space.groups)}
    pruned = apply_policy(model, space, policy, criterion=criterion, example_input=x)
    assert kept_counts(pruned, space) == space.kept(policy)
    assert pruned(x).shape == (2, 10)


def test_criteria_choose_different_channels(small_case) -> None:  # type: ignore[no-untyped-def]
    model, x, space = small_case
    policy = space.uniform(0.5)
    a = apply_policy(model, space, policy, criterion="l1", example_input=x)
    b = apply_policy(model, space, policy, criterion="random", example_input=x)
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    # l1 keeps the channels with the largest group norms: the kept stem filters are the heaviest
    norms = model.conv1.weight.detach().abs().flatten(1).sum(1)
    assert a.conv1.weight.abs().flatten(1).sum(1).sum() > norms.sort().values[:8].sum()


def test_ignore_keeps_a_layer_whole_and_unknown_names_fail() -> None:
    model = build_model("resnet20", num_classes=10, in_channels=3)
    x = example("resnet20")
    space = build_space(model, x, ignore=["layer1.0.conv1"])
    assert "layer1.0.conv1" not in space.names and space.ignored == ("layer1.0.conv1",)
    assert "layer1.1.conv1" in space.names
    with pytest.raises(SpaceError, match="no module named 'nope'"):
        build_space(model, x, ignore=["nope"])


def test_wide_resnet20_2_is_resnet20_with_every_convolution_twice_as_wide() -> None:
    def widths(name: str) -> list[int]:
        net = build_model(name, num_classes=10, in_channels=1)
        return [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]

    assert widths("wide_resnet20_2") == [2 * c for c in widths("resnet20")]
    x = torch.randn(1, 1, 28, 28)
    macs = [count_macs_params(build_model(n, num_classes=10, in_channels=1), x)[0]
            for n in ("resnet20", "wide_resnet20_2")]
    assert 3.8 < macs[1] / macs[0] < 4.1  # convolutions cost width²
