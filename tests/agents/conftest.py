from __future__ import annotations

import pytest

from agents.base import Agent
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The contract's 60-round ``finished`` run asserts nothing more than a crash-free long run
    for an agent that never finishes (no ``finished`` of its own): the slow lane keeps it."""
    for item in items:
        if not item.nodeid.startswith("tests/agents/test_contract.py::test_finished_is_honoured["):
            continue
        name = item.callspec.params["agent_name"]  # type: ignore[attr-defined]
        if AGENTS.get(name).finished is Agent.finished:
            item.add_marker(pytest.mark.slow)
