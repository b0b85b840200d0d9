"""``round_to: "runtime"``: "auto" never finer than the multiple the runtime runs fastest."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from search_spaces.build import build_space
from search_spaces.space import SearchSpace, parse_round_to
from tests.search_spaces.test_reconstruct import TinyCNN


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    # conv1 / conv2: 16 channels (residual-free), conv3: 32
    return build_space(TinyCNN(width=16), torch.zeros(1, 1, 8, 8), round_to="runtime")


def test_unresolved_runtime_rounding_is_auto(space: SearchSpace) -> None:
    assert parse_round_to("runtime") == "runtime"
    assert space.round_to == "runtime" and space.runtime_step == 1
    auto = dataclasses.replace(space, round_to="auto")
    assert [space.levels(g) for g in space.names] == [auto.levels(g) for g in auto.names]


def test_runtime_step_rounds_widths_and_halves_for_narrow_groups(space: SearchSpace) -> None:
    wide = {g.name: g for g in space.groups if g.channels == 32}
    narrow = {g.name: g for g in space.groups if g.channels == 16}
    assert wide and narrow
    resolved = dataclasses.replace(space, runtime_step=8)
    for name in wide:
        assert resolved.step(name) == 8 and all(k % 8 == 0 for k in resolved.levels(name))
    for name in narrow:  # 8 < 16: kept at multiples of 8
        assert resolved.levels(name) == [8, 16]
    sixteen = dataclasses.replace(space, runtime_step=16)
    for name in wide:
        assert sixteen.levels(name) == [16, 32]
    for name in narrow:  # 16 would leave one width: halved to 8, not single channels
        assert sixteen.step(name) == 8
    # a policy's architecture follows the resolved step, and the value survives serialisation
    policy = resolved.uniform(0.3)
    assert all(k % 8 == 0 for k in resolved.kept(policy).values())
    assert SearchSpace.from_dict(resolved.to_dict()) == resolved
    old = space.to_dict()
    del old["runtime_step"]  # a space stored before the field existed
    assert SearchSpace.from_dict(old).runtime_step == 1
