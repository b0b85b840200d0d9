"""``search_space.depth`` through a job's worker side: the spec, the space, tightening, finalize."""

from __future__ import annotations

import pytest
import torch

from tests.search_spaces.tiny_models import tiny_cnn
from tests.workers.conftest import small_spec


def test_depth_is_off_by_default_and_asked_for_in_the_spec() -> None:
    assert small_spec("w").search_space.depth is False
    assert small_spec("w", search_space={"depth": True}).search_space.depth is True


def test_a_model_without_removable_blocks_fails_its_load_naming_the_field() -> None:
    """A model only building it can judge (a hub model, a plugin): refused when its task loads."""
    from workers.kinds.image.task import _space

    spec = small_spec("w", search_space={"depth": True})
    with pytest.raises(ValueError, match=r"^search_space\.depth: model 'resnet20' has no residual block"):
        _space(spec, tiny_cnn().eval(), torch.randn(1, 1, 8, 8), "l1")

