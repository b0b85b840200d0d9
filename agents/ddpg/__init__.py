"""AMC-style DDPG: the environment, the learner and the agent."""

from __future__ import annotations

from agents.ddpg.agent import DDPGAgent
from agents.ddpg.env import PruningEnv

__all__ = ["DDPGAgent", "PruningEnv"]
