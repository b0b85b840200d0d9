"""Concatenation, a transformer encoder, untraceable models, BN recalibration, measurement."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from search_spaces import (
    apply_policy,
    build_space,
    count_macs_params,
    kept_counts,
    measure_latency,
    recalibrate_bn,
)
from search_spaces.graph import SpaceError
from tests.search_spaces.tiny_models import ConcatNet, TinyEncoder, Untraceable


def test_concatenated_branches_prune_independently_and_cost_stays_exact() -> None:
    model, x = ConcatNet().eval(), torch.randn(1, 3, 16, 16)
    space = build_space(model, x, round_to=4)
    assert {"a.0", "b.0", "fuse.0"} <= set(space.names)
    policy = {"a.0": 0.5, "b.0": 0.25, "fuse.0": 0.5}
    pruned = apply_policy(model, space, policy, example_input=x)
    assert kept_counts(pruned, space) == space.kept(policy)
    assert pruned.fuse[0].in_channels == 8 + 20  # the concat consumer lost both branches' channels
    macs, params = count_macs_params(pruned, x)
    assert space.macs(policy) == pytest.approx(macs, rel=1e-6)
    assert space.params(policy) == pytest.approx(params, rel=1e-3)


def test_transformer_encoder_prunes_mlp_and_embedding_width_not_heads() -> None:
    model, x = TinyEncoder().eval(), torch.randn(2, 1, 64)
    space = build_space(model, x, round_to=8)
    names = set(space.names)
    assert {"blocks.0.fc1", "blocks.1.fc1"} <= names  # MLP width
    # qkv is reshaped into heads: flat channel pruning breaks it, so its groups are probed out
    assert not any(n.endswith("attn.qkv") for n in names)
    assert any("embed" in g.layers for g in space.groups)  # the residual embedding width
    policy = {n: 0.5 for n in names}
    pruned = apply_policy(model, space, policy, example_input=x)
    assert pruned(x).shape == (2, 5)
    assert pruned.blocks[0].fc1.out_features == 32
    macs, _ = count_macs_params(pruned, x)
    assert space.macs(policy) == pytest.approx(macs, rel=0.01)


def test_untraceable_model_gives_a_clear_space_error() -> None:
    with pytest.raises(SpaceError, match="no prunable channel group"):
        build_space(Untraceable(), torch.randn(1, 3, 8, 8))


def test_model_that_fails_on_the_example_input_names_the_shape() -> None:
    with pytest.raises(SpaceError, match=r"cannot trace ConcatNet with an input of shape \(1, 5, 16, 16\)"):
        build_space(ConcatNet(), torch.randn(1, 5, 16, 16))


def test_recalibrate_bn_resets_and_reestimates_running_stats() -> None:
    model = ConcatNet()
    batches = [torch.randn(8, 3, 16, 16) * 3 + 2 for _ in range(4)]
    n = recalibrate_bn(model, batches)
    bn = model.a[1]
    assert n == 4 and not model.training
    assert bn.momentum == 0.1
    # the running mean equals the mean of the per-batch means of the conv outputs
    with torch.no_grad():
        expect = torch.stack([model.a[0](b).mean((0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(bn.running_mean, expect, atol=1e-5)
    assert recalibrate_bn(nn.Linear(2, 2), batches) == 0


def test_measure_latency_interleaves_and_reports_stats() -> None:
    small = nn.Sequential(nn.Linear(64, 64))
    big = nn.Sequential(*(nn.Linear(512, 512) for _ in range(8)), nn.Linear(512, 64))
    stats = measure_latency([small, nn.Sequential(nn.Linear(64, 512), big)], torch.randn(4, 64), rounds=7, warmup=1)
    assert [s.rounds for s in stats] == [7, 7]
    assert stats[0].median_ms < stats[1].median_ms
    assert all(s.iqr_ms >= 0 and s.min_ms <= s.median_ms and s.threads == 1 and s.batch_size == 4 for s in stats)
    with pytest.raises(ValueError, match="at least one model"):
        measure_latency([], torch.randn(1, 2))


def test_a_rounds_fastest_call_is_kept_so_one_preempted_call_does_not_count() -> None:
    from search_spaces.measure import time_interleaved

    durations = iter([0.0, 0.0] + [0.030, 0.001, 0.001] * 3)  # warm-up, then one slow call per round

    def run() -> None:
        time.sleep(next(durations))

    (mins,) = time_interleaved([run], warmup=2, rounds=3, repeat=3, reduce="min")
    assert all(t < 15 for t in mins)  # each round's 30 ms call is not its figure
    durations = iter([0.0, 0.0] + [0.030, 0.001, 0.001] * 3)
    (means,) = time_interleaved([run], warmup=2, rounds=3, repeat=3)
    assert all(t > 10 for t in means)
