"""``ddpg``: AMC's search (He et al., ECCV 2018) behind the ask/tell interface.

``ask(n)`` rolls out ``n`` episodes of :class:`PruningEnv` with the current actor (the first
``warmup`` episodes take uniform random actions; later ones a truncated normal on [0, 1] centred
on the actor, σ = sigma·decay^(episode − warmup); AMC's decay is 0.95 over 300+ episodes,
which leaves a 100–200-evaluation search greedy after ~60 episodes, so the default here is 0.99,
measured better on the synthetic task — pass ``sigma_decay=0.95`` for AMC's); each episode's policy, filled to use leftover
budget, is one proposal. ``tell`` writes the episode's reward into every one of its transitions
and runs one DDPG update per transition told (AMC: one update per stored transition), once
past the warm-up. Reward (``reward`` option): ``"quality"`` (resource-constrained, the default)
or ``"error_log_cost"`` = −(1 − quality)·log(MACs) (accuracy-guaranteed); a policy that breaks a
measured budget (latency) gets reward 0; a failed evaluation is dropped.

In a space with int8 the search is HAQ's on top of AMC's: each step's action has a second number,
the group's precision (int8 from 0.5), drawn and explored like the ratio (uniform in the warm-up,
then a truncated normal around the actor's), and the observation carries the previous group's
precision (``agents.ddpg.env``); the reward is the same, measured on the quantized model. An fp32
space runs AMC's search unchanged. In a space with depth the action has one more number, the
removal of the unit whose first group the step decides (from ``env.REMOVE_FROM`` = 0.75: removed),
explored like the others; a removed unit's groups are skipped (dense, no width to choose).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import truncnorm

from agents.base import Agent
from agents.baselines import rng_state, set_rng_state
from agents.ddpg.env import PruningEnv, action_dim, obs_dim
from agents.ddpg.learner import DDPG
from agents.types import Budget, Outcome, Proposal
from search_spaces.space import SearchSpace
from search_spaces.threads import torch_threads


class DDPGAgent(Agent):
    """AMC-style DDPG; options default to demo-sized runs (warm-up scales with ``trials``)."""

    name = "ddpg"

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget,
        *,
        seed: int = 0,
        trials: int | None = None,
        warmup: int | None = None,
        sigma: float = 0.5,
        sigma_decay: float = 0.99,
        reward: str = "quality",
        fill: bool = True,
        hidden: int = 300,
        lr_actor: float = 1e-4,
        lr_critic: float = 1e-3,
        tau: float = 0.01,
        discount: float = 1.0,
        batch_size: int = 64,
        buffer_episodes: int = 100,
    ) -> None:
        super().__init__(space, budget, seed=seed)
        if reward not in ("quality", "error_log_cost"):
            raise ValueError(f"options.reward must be 'quality' or 'error_log_cost', got {reward!r}")
        if trials is not None and (not isinstance(trials, int) or trials < 1):
            raise ValueError(f"options.trials must be a positive integer, got {trials!r}")
        if warmup is None:  # AMC's 100 random episodes, scaled down for short demo searches
            warmup = min(100, trials // 4) if trials else 25
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"options.warmup must be a non-negative integer, got {warmup!r}")
        if not 0 < sigma <= 1 or not 0 < sigma_decay <= 1:
            raise ValueError("options.sigma and options.sigma_decay must be in (0, 1]")
        self.warmup, self.sigma, self.sigma_decay = warmup, sigma, sigma_decay
        self.reward, self.fill = reward, fill
        self.env = PruningEnv(space, self.fit)
        self.ddpg = DDPG(
            obs_dim(space),
            seed=seed,
            hidden=hidden,
            lr_actor=lr_actor,
            lr_critic=lr_critic,
            tau=tau,
            discount=discount,
            batch_size=batch_size,
            buffer_size=max(1, buffer_episodes) * len(space),
            action_dim=action_dim(space),
        )
        self._rng = np.random.default_rng(seed)
        self._episode = 0  # episodes rolled out so far
        self._episodes: dict[int, dict[str, Any]] = {}  # trial id -> transitions awaiting reward

    # --- rollouts -----------------------------------------------------------------------------
    def _action(self, obs: np.ndarray, episode: int) -> list[float]:
        """The step's action: the ratio (AMC), then the precision in a space with int8 (HAQ)."""
        dims = action_dim(self.space)
        if episode < self.warmup:
            if dims == 1:
                return [float(self._rng.uniform(0.0, 1.0))]
            return [float(x) for x in self._rng.uniform(0.0, 1.0, size=dims)]
        mus = [self.ddpg.act(obs)] if dims == 1 else self.ddpg.act_all(obs).tolist()
        sd = self.sigma * self.sigma_decay ** (episode - self.warmup)
        return [float(truncnorm.rvs((0.0 - mu) / sd, (1.0 - mu) / sd, loc=mu, scale=sd, random_state=self._rng))
                for mu in mus]

    def rollout(self) -> tuple[dict[str, float], dict[str, Any]]:
        """One episode: the policy and its transitions (obs, taken action, next obs)."""
        obs, _ = self.env.reset()
        record: dict[str, Any] = {"obs": [], "action": [], "next_obs": [], "episode": self._episode}
        done = False
        info: dict[str, Any] = {}
        while not done:
            action = self._action(obs, self._episode)
            next_obs, _, done, _, info = self.env.step(np.array(action, np.float32))
            record["obs"].append(obs.tolist())
            record["action"].append(info["action"])  # the clamped action that was applied
            record["next_obs"].append(next_obs.tolist())
            obs = next_obs
        self._episode += 1
        policy = info["policy"]
        return (self.fit.fill(policy) if self.fill else policy), record

    def propose(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        while len(out) < n:
            with torch_threads(1):  # tiny nets: intra-op threads only add contention (40x slower on a busy 2-core box)
                policy, record = self.rollout()
            p = self._proposal(policy, episode=record["episode"], role="warmup" if record["episode"] < self.warmup else "episode")
            self._episodes[p.trial_id] = record
            out.append(p)
        return out

    # --- learning -----------------------------------------------------------------------------
    def episode_reward(self, outcome: Outcome) -> float | None:
        m = outcome.metrics
        if m is None or math.isnan(m.quality):
            return None
        if self.budget.uses_latency and not self.budget.feasible(m):
            return 0.0
        if self.reward == "error_log_cost":
            return -(1.0 - m.quality) * math.log(max(m.macs, 1))
        return float(m.quality)

    def observe(self, outcomes: list[Outcome]) -> None:
        updates = 0
        for o in sorted(outcomes, key=lambda o: o.trial_id):  # told order must not matter
            record = self._episodes.pop(o.trial_id, None)
            r = self.episode_reward(o)
            if record is None or r is None:
                continue
            steps = len(record["action"])
            for t in range(steps):  # AMC: the final reward goes to every transition
                self.ddpg.buffer.add(record["obs"][t], record["action"][t], r, record["next_obs"][t], t == steps - 1)
            if record["episode"] >= self.warmup:
                updates += steps
        if self._episode > self.warmup and updates:
            with torch_threads(1):
                for _ in range(updates):
                    self.ddpg.update(self._rng)

    # --- state --------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "rng": rng_state(self._rng),
            "episode": self._episode,
            "episodes": {str(k): v for k, v in self._episodes.items()},
            "ddpg": self.ddpg.state_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        set_rng_state(self._rng, state["rng"])
        self._episode = int(state["episode"])
        self._episodes = {int(k): v for k, v in state["episodes"].items()}
        self.ddpg.load_state_dict(state["ddpg"])
