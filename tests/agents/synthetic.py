"""A hand-built SearchSpace and a synthetic evaluator with known per-group sensitivities.

quality(policy) = 1 − Σ_g s_g · (1 − keep_g)^2, keep_g = kept/channels. With heterogeneous s_g
the optimum at a MACs budget prunes the insensitive groups hard and keeps the sensitive ones —
which uniform pruning cannot do — so a searching agent has something real to find.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import Group, LayerCost, SearchSpace


def chain_space(
    channels: Sequence[int] = (16, 16, 32, 32, 64, 64), *, hw: Sequence[int] | None = None,
    max_ratio: float = 0.8, round_to: int = 4,
) -> SearchSpace:
    """A plain conv chain: stem conv (3 → c0), conv_i (c_{i-1} → c_i), a linear head (c_last → 10)."""
    n = len(channels)
    hw = list(hw) if hw is not None else [32 if i < n // 3 else 16 if i < 2 * n // 3 else 8 for i in range(n)]
    groups, costs = [], []
    for i, c in enumerate(channels):
        cin = 3 if i == 0 else channels[i - 1]
        macs = cin * c * 9 * hw[i] * hw[i]
        params = cin * c * 9 + 2 * c
        costs.append(LayerCost(f"conv{i}", macs, cin * c * 9, (f"conv{i}",) if i == 0 else (f"conv{i - 1}", f"conv{i}")))
        costs.append(LayerCost(f"bn{i}", 0, 2 * c, (f"conv{i}",)))
        stride = 2 if i > 0 and hw[i] < hw[i - 1] else 1
        imp = tuple(sorted(np.random.default_rng(i).gamma(2.0, size=c) / 2.0))
        groups.append(Group(f"conv{i}", i, "conv", c, cin, 3, stride, macs, params, (f"conv{i}", f"bn{i}"), importance=imp))
    costs.append(LayerCost("fc", channels[-1] * 10, channels[-1] * 10 + 10, (f"conv{n - 1}",)))
    return SearchSpace(
        groups=tuple(groups),
        costs=tuple(costs),
        dense_macs=int(sum(c.macs for c in costs)),
        dense_params=int(sum(c.params for c in costs)),
        input_shape=(3, 32, 32),
        max_ratio=max_ratio,
        round_to=round_to,
    )


def sensitivities(space: SearchSpace, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(1000 + seed)
    return {g.name: float(s) for g, s in zip(space.groups, np.exp(rng.uniform(math.log(0.01), math.log(1.0), len(space))), strict=True)}


def make_evaluator(
    space: SearchSpace, sens: dict[str, float], *, latency: bool = False, fail_every: int = 0
) -> Callable[[Proposal], Outcome]:
    """Proposal -> Outcome; ``fail_every`` = k fails every k-th trial id (errors are tolerated)."""

    def evaluate(p: Proposal) -> Outcome:
        if fail_every and p.trial_id % fail_every == fail_every - 1:
            return Outcome(p.trial_id, p.policy, None, "synthetic failure")
        kept = space.kept(p.policy)
        q = 1.0 - sum(s * (1 - kept[n] / space.group(n).channels) ** 2 for n, s in sens.items())
        mr = space.macs_ratio(p.policy)
        lat = 10.0 * (0.3 + 0.7 * mr) if latency else None
        m = Metrics(
            quality=q,
            macs=int(space.macs(p.policy)),
            params=int(space.params(p.policy)),
            macs_ratio=mr,
            params_ratio=space.params_ratio(p.policy),
            latency_ms=lat,
            latency_ratio=(lat / 10.0) if lat is not None else None,
        )
        return Outcome(p.trial_id, p.policy, m)

    return evaluate
