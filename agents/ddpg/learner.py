"""DDPG as AMC configures it: actor/critic 300-300, target nets, replay buffer, batch baseline.

stable-baselines3's DDPG learns from an env it steps itself and samples its ReplayBuffer with
numpy's global RNG; AMC's loop is different (n episodes rolled out, scored later by workers, the
final reward written back into every transition of the episode) and our resume contract needs
every random draw to come from one saved generator. So the pieces are written here, small:
the networks follow AMC's reference (sigmoid actor; critic with state and action projected to
300 each and summed), Adam 1e-4 / 1e-3, soft target updates τ = 0.01, and the moving-average
reward baseline subtracted from each sampled batch (α = 0.5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from agents.ddpg.serial import pack, pack_optimizer, unpack, unpack_optimizer


class Actor(nn.Module):
    def __init__(self, obs_dim: int, hidden: int = 300, action_dim: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, action_dim),
            nn.Sigmoid(),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class Critic(nn.Module):
    def __init__(self, obs_dim: int, hidden: int = 300, action_dim: int = 1) -> None:
        super().__init__()
        self.fc_s, self.fc_a = nn.Linear(obs_dim, hidden), nn.Linear(action_dim, hidden)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc_s(obs) + self.fc_a(action))


class ReplayBuffer:
    """A ring of (obs, action, reward, next_obs, done) transitions."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int = 1) -> None:
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros((capacity, 1), np.float32)
        self.done = np.zeros((capacity, 1), np.float32)

    def add(self, obs: Any, action: float | list[float], reward: float, next_obs: Any, done: bool) -> None:
        i = self.pos
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.done[i] = next_obs, float(done)
        self.pos, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, size=n)
        fields = ("obs", "action", "reward", "next_obs", "done")
        return {f: torch.from_numpy(getattr(self, f)[idx]) for f in fields}

    def state_dict(self) -> dict[str, Any]:
        fields = ("obs", "next_obs", "action", "reward", "done")
        arrays = {f: torch.from_numpy(getattr(self, f)[: self.size].copy()) for f in fields}
        return {"size": self.size, "pos": self.pos, "arrays": pack(arrays) if self.size else ""}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.pos = int(state["size"]), int(state["pos"])
        if self.size:
            for f, t in unpack(state["arrays"]).items():
                getattr(self, f)[: self.size] = t.numpy()


class DDPG:
    """Actor-critic with target networks; ``update`` is one gradient step on a sampled batch."""

    def __init__(
        self,
        obs_dim: int,
        *,
        seed: int,
        hidden: int = 300,
        lr_actor: float = 1e-4,
        lr_critic: float = 1e-3,
        tau: float = 0.01,
        discount: float = 1.0,
        batch_size: int = 64,
        buffer_size: int = 2000,
        moving_alpha: float = 0.5,
        action_dim: int = 1,
    ) -> None:
        with torch.random.fork_rng():  # initial weights from the agent's seed, not global state
            torch.manual_seed(seed)
            self.actor, self.critic = Actor(obs_dim, hidden, action_dim), Critic(obs_dim, hidden, action_dim)
            self.actor_target = Actor(obs_dim, hidden, action_dim)
            self.critic_target = Critic(obs_dim, hidden, action_dim)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr_critic)
        self.tau, self.discount, self.batch_size = tau, discount, batch_size
        self.moving_alpha = moving_alpha
        self.moving_average: float | None = None
        self.buffer = ReplayBuffer(buffer_size, obs_dim, action_dim)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> float:
        return float(self.actor(torch.from_numpy(obs[None].astype(np.float32)))[0, 0])

    @torch.no_grad()
    def act_all(self, obs: np.ndarray) -> np.ndarray:
        """Every action dimension (the ratio, then the precision in a space with int8)."""
        return self.actor(torch.from_numpy(obs[None].astype(np.float32)))[0].numpy().astype(np.float64)

    def update(self, rng: np.random.Generator) -> None:
        b = self.buffer.sample(rng, min(self.batch_size, self.buffer.size))
        reward = b["reward"]
        mean = float(reward.mean())  # AMC: moving average of batch-mean rewards as the baseline
        if self.moving_average is None:
            self.moving_average = mean
        else:
            self.moving_average += self.moving_alpha * (mean - self.moving_average)
        reward = reward - self.moving_average
        with torch.no_grad():
            q_next = self.critic_target(b["next_obs"], self.actor_target(b["next_obs"]))
            target = reward + self.discount * (1.0 - b["done"]) * q_next
        critic_loss = nn.functional.mse_loss(self.critic(b["obs"], b["action"]), target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss = -self.critic(b["obs"], self.actor(b["obs"])).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
                    tp.mul_(1.0 - self.tau).add_(p, alpha=self.tau)

    def state_dict(self) -> dict[str, Any]:
        nets = {}
        for name in ("actor", "critic", "actor_target", "critic_target"):
            for k, v in getattr(self, name).state_dict().items():
                nets[f"{name}.{k}"] = v
        return {
            "nets": pack(nets),
            "actor_opt": pack_optimizer(self.actor_opt),
            "critic_opt": pack_optimizer(self.critic_opt),
            "moving_average": self.moving_average,
            "buffer": self.buffer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        nets = unpack(state["nets"])
        for name in ("actor", "critic", "actor_target", "critic_target"):
            prefix = f"{name}."
            getattr(self, name).load_state_dict({k[len(prefix) :]: v for k, v in nets.items() if k.startswith(prefix)})
        unpack_optimizer(self.actor_opt, state["actor_opt"])
        unpack_optimizer(self.critic_opt, state["critic_opt"])
        self.moving_average = state["moving_average"]
        self.buffer.load_state_dict(state["buffer"])
