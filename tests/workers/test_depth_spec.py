"""``search_space.depth`` in the spec reaches the space each kind builds (issue 22)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from search_spaces.models.resnet_cifar import resnet20
from tests.search_spaces.tiny_text import tiny_embedder, token_batch
from workers.kinds.image import task as image_task
from workers.kinds.text import task as text_task
from workers.spec import JobSpec


def _spec(depth: bool | None, **kw: Any) -> JobSpec:
    space = {} if depth is None else {"depth": depth}
    return JobSpec.model_validate({
        "model": {"zoo": "resnet20"}, "dataset": {"name": "digits"}, "metric": "agreement", "budget": {"macs_ratio": 0.5},
        "search_space": {**space, **kw.pop("search_space", {})}, **kw,
    })


def test_depth_is_off_unless_asked_for() -> None:
    assert _spec(None).search_space.depth is False
    assert _spec(True).search_space.depth is True
    with pytest.raises(ValueError, match="depth"):
        _spec("sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("depth", [False, True])
def test_the_image_space_has_units_only_with_depth(depth: bool) -> None:
    space = image_task._space(_spec(depth), resnet20().eval(), torch.randn(1, 3, 32, 32), "l1")
    assert len(space.units) == (7 if depth else 0)


@pytest.mark.parametrize("depth", [False, True])
def test_the_text_space_has_units_only_with_depth(depth: bool) -> None:
    spec = _spec(depth, search_space={"criterion": "l2"}, evaluation={"calibration_batches": 1, "batch_size": 4})
    splits = SimpleNamespace(train=TensorDataset(token_batch(8, 32)), pad_token_id=0)
    space = text_task._space(spec, tiny_embedder(), token_batch(1, 32), splits, "l2")
    assert [u.name for u in space.units] == (["backbone.encoder.layer.0", "backbone.encoder.layer.1"] if depth else [])
