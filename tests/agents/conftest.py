from __future__ import annotations

import pytest

from agents.registry import AGENTS
from tests.agents.synthetic import chain_space, sensitivities

# Demo-sized options so the contract runs fast; every agent also runs with defaults below.
FAST_OPTIONS = {"ddpg": {"warmup": 3, "hidden": 32, "batch_size": 16}, "sensitivity": {"ratios": 2}}


@pytest.fixture(params=AGENTS.names())
def agent_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def space():
    return chain_space()


@pytest.fixture
def sens(space):
    return sensitivities(space)
