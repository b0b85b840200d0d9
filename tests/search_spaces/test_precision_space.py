"""The precision dimension of a space: int8 per group beside its width, one flat policy."""

from __future__ import annotations

import pytest
import torch

from search_spaces.build import build_space
from search_spaces.models.resnet_cifar import resnet20
from search_spaces.space import PolicyError, SearchSpace, bits_key


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return build_space(resnet20(num_classes=10).eval(), torch.randn(1, 3, 32, 32), precisions=("fp32", "int8"))


def test_each_conv_follows_the_group_pruning_its_outputs(space: SearchSpace) -> None:
    owners = [w for g in space.groups for w in g.weights]
    assert len(owners) == len(set(owners)) == 21  # every conv once; the classifier in no group
    assert "fc" not in owners
    stem = space.group("conv1")  # the residual group: the stem and every block's last conv of stage 1
    assert set(stem.weights) == {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"}
    assert space.group("layer1.0.conv1").weights == ("layer1.0.conv1",)


def test_int8_entries_validate_round_and_key_the_policy(space: SearchSpace) -> None:
    a, b = space.names[0], space.names[3]
    policy = space.with_int8(space.uniform(0.3), [a, b])
    assert policy[bits_key(a)] == 8.0 and space.int8_groups(policy) == [a, b]
    assert space.validate(policy) == policy and space.int8_groups(space.round(policy)) == [a, b]
    assert space.int8_layers(policy) == [*space.group(a).weights, *space.group(b).weights]
    fp32 = space.uniform(0.3)
    assert space.signature(policy) != space.signature(fp32)
    assert space.signature(policy).startswith(space.signature(fp32) + "|int8:")
    assert space.kept(policy) == space.kept(fp32) and space.macs(policy) == space.macs(fp32)
    # an explicit fp32 entry is the same policy as none
    assert space.validate({**fp32, bits_key(a): 32}) == space.validate(fp32)
    assert space.widths(policy) == fp32


def test_bad_precision_entries_name_the_group(space: SearchSpace) -> None:
    with pytest.raises(PolicyError, match="conv1.*bits must be one of 32 \\(fp32\\), 8 \\(int8\\), got 4"):
        space.validate({bits_key("conv1"): 4})
    with pytest.raises(PolicyError, match="'nope'.*unknown group"):
        space.validate({bits_key("nope"): 8})
    fp32_only = SearchSpace.from_dict({**space.to_dict(), "precisions": ["fp32"]})
    with pytest.raises(PolicyError, match="bits must be one of 32 \\(fp32\\), got 8"):
        fp32_only.validate({bits_key("conv1"): 8})
    with pytest.raises(PolicyError, match="int8 is not among this space's precisions"):
        fp32_only.with_int8(fp32_only.uniform(0.0), ["conv1"])


def test_the_space_round_trips_with_its_precisions(space: SearchSpace) -> None:
    again = SearchSpace.from_dict(space.to_dict())
    assert again == space and again.quantizable and again.group("conv1").weights == space.group("conv1").weights
    old = {k: v for k, v in space.to_dict().items() if k != "precisions"}  # a space stored before
    assert not SearchSpace.from_dict(old).quantizable
