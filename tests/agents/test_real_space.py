"""Agents on a real SearchSpace (search_spaces.build on resnet20): proposals prune for real."""

from __future__ import annotations

import pytest
import torch

from agents.registry import AGENTS, make_agent
from agents.types import Budget


@pytest.fixture(scope="module")
def resnet20():
    from search_spaces.build import build_space
    from search_spaces.zoo import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1).eval()
    example = torch.randn(1, 1, 8, 8)
    return model, example, build_space(model, example)


@pytest.mark.slow
def test_agents_first_proposals_prune_resnet20_within_budget(resnet20):
    from search_spaces.measure import count_macs_params
    from search_spaces.prune import apply_policy

    model, example, space = resnet20
    dense_macs, _ = count_macs_params(model, example)
    budget = Budget(macs_ratio=0.25)
    for name in AGENTS.names():
        agent = make_agent(name, space, budget, seed=0, options={"trials": 40} if name == "ddpg" else None)
        for p in agent.ask(2):
            pruned = apply_policy(model, space, p.policy, example_input=example)
            assert pruned(example).shape == (1, 10)  # the classifier is intact
            macs, _ = count_macs_params(pruned, example)
            assert macs / dense_macs <= 0.25 + 0.01, (name, p.info, macs / dense_macs)
            assert space.macs_ratio(p.policy) == pytest.approx(macs / dense_macs, abs=0.01)


@pytest.mark.slow
def test_depth_proposals_remove_real_blocks_of_resnet20_within_budget():
    """With depth, the depth-only baseline and searched proposals (random's coins, TPE's keep per
    unit) prune and remove real blocks: the model runs and costs what the space says."""
    from search_spaces.build import build_space
    from search_spaces.measure import count_macs_params
    from search_spaces.prune import apply_policy
    from search_spaces.zoo import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1).eval()
    example = torch.randn(1, 1, 8, 8)
    space = build_space(model, example, depth=True)
    budget = Budget(macs_ratio=0.4)
    depth_only = make_agent("uniform", space, budget).ask(2)[1]
    random = make_agent("random", space, budget, seed=1).ask(3)[2:]
    tpe = make_agent("optuna-tpe", space, budget, seed=0).ask(3)[2:]
    proposals = [depth_only, *random, *tpe]
    assert depth_only.info["role"] == "depth-only" and all(space.removed_units(p.policy) for p in proposals)
    for p in proposals:
        pruned = apply_policy(model, space, p.policy, example_input=example)
        assert pruned(example).shape == (1, 10)
        macs, params = count_macs_params(pruned, example)
        assert (macs, params) == (space.macs(p.policy), space.params(p.policy))
        assert space.macs_ratio(p.policy) <= 0.4 + 1e-9
