"""``search_space.depth`` through a job's worker side: the spec, the space, tightening, finalize."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from search_spaces.space import SearchSpace, Unit
from tests.search_spaces.tiny_models import tiny_cnn
from tests.workers.conftest import small_spec
from tests.workers.fakes import tiny_space
from workers.delivered import LatencyBudget, between, rescaled
from workers.latency import Latency


def test_depth_is_off_by_default_and_asked_for_in_the_spec() -> None:
    assert small_spec("w").search_space.depth is False
    assert small_spec("w", search_space={"depth": True}).search_space.depth is True


def test_a_model_without_removable_blocks_fails_its_load_naming_the_field() -> None:
    """A model only building it can judge (a hub model, a plugin): refused when its task loads."""
    from workers.kinds.image.task import _space

    spec = small_spec("w", search_space={"depth": True})
    with pytest.raises(ValueError, match=r"^search_space\.depth: model 'resnet20' has no residual block"):
        _space(spec, tiny_cnn().eval(), torch.randn(1, 1, 8, 8), "l1")



# --- tightening to a latency budget keeps the removed units -------------------------------------
def _deep_tiny_space() -> SearchSpace:
    space = tiny_space()  # three groups of 16 channels, kept rounded to multiples of 4
    return dataclasses.replace(space, units=(Unit("b1", 0, "block", ("g1",), ("g1",), 100, 10),))


def test_tightening_changes_widths_and_keeps_the_removed_units() -> None:
    space = _deep_tiny_space()
    p = space.validate(space.with_removed(space.uniform(0.25), ["b1"]))
    q = rescaled(space, p, 0.7)
    assert q is not None and space.removed_units(q) == ["b1"]
    assert space.kept(q)["g0"] < 12 and space.kept(q)["g2"] < 12
    back = between(space, q, p)
    assert back is None or space.removed_units(back) == ["b1"]
    # only the removed unit's group could narrow: nothing left to tighten
    edge = space.validate(space.with_removed({"g0": space.max_ratio, "g2": space.max_ratio}, ["b1"]))
    assert rescaled(space, edge, 0.5) is None


def test_fit_to_budget_ships_the_searched_removals(monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.delivered as delivered

    space = _deep_tiny_space()
    seen: list[list[str]] = []

    def latency(ev: Any, policy: dict[str, float], rounds: int, against: Any = None) -> Latency:
        seen.append(space.removed_units(policy))
        return Latency(ms=space.macs_ratio(policy), spread_ms=0.0, ratio=space.macs_ratio(policy),
                       dense_ms=1.0, rounds=rounds)

    monkeypatch.setattr(delivered, "architecture_latency", latency)
    budget = LatencyBudget(ratio=0.3, ms=None, tolerance=0.05)
    start = space.validate(space.with_removed(space.uniform(0.0), ["b1"]))  # 2/3 of the MACs
    fitted = delivered.fit_to_budget(SimpleNamespace(space=space), budget, start, tries=4, rounds=45)  # type: ignore[arg-type]
    assert fitted.tightened > 0 and budget.met(fitted.latency)  # type: ignore[arg-type]
    assert space.removed_units(fitted.policy) == ["b1"] and all(r == ["b1"] for r in seen)


def test_an_int8_depth_policy_quantizes_and_lists_only_the_layers_left() -> None:
    """A residual chain's group has layers in the blocks it runs through: once one is removed,
    the quantizer is given only the layers still in the file, and ``precision.json`` says
    which went."""
    from search_spaces.space import Group
    from workers.quantized import precision_map

    base = tiny_space()
    chain = dataclasses.replace(base.groups[0], weights=("stem", "b1.conv2"))
    inner = dataclasses.replace(base.groups[1], weights=("b1.conv1",))
    groups: tuple[Group, ...] = (chain, inner, base.groups[2])
    space = dataclasses.replace(base, groups=groups, precisions=("fp32", "int8"),
                                units=(Unit("b1", 0, "block", ("g1",), ("g1",), 100, 10),))
    policy = space.with_int8(space.with_removed(space.uniform(0.0), ["b1"]), ["g0", "g1"])
    assert space.int8_layers(policy) == ["stem"]
    shown = precision_map(space, policy)
    assert shown["groups"] == {"g0": "int8", "g1": "removed", "g2": "fp32"}
    assert shown["layers"] == {"stem": "int8", "b1.conv2": "removed", "b1.conv1": "removed"}
