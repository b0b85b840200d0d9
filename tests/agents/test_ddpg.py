from __future__ import annotations

import json

import numpy as np
from gymnasium.utils.env_checker import check_env

from agents.budget_fit import BudgetFit
from agents.ddpg import DDPGAgent, PruningEnv
from agents.types import Budget
from tests.agents.synthetic import chain_space, make_evaluator, sensitivities


def test_env_passes_gymnasium_checker_and_ends_within_budget():
    space = chain_space()
    fit = BudgetFit(space, Budget(macs_ratio=0.3))
    env = PruningEnv(space, fit, reward_fn=lambda p: 1.0 - space.macs_ratio(p))
    check_env(env, skip_render_check=True)
    rng = np.random.default_rng(0)
    for _ in range(20):  # whatever the actions (even "prune nothing"), the clamp keeps it feasible
        obs, _ = env.reset()
        assert obs.shape == (11,) and env.observation_space.contains(obs)
        done, steps = False, 0
        while not done:
            action = np.array([rng.choice([0.0, rng.uniform()])], np.float32)
            obs, reward, done, truncated, info = env.step(action)
            steps += 1
        assert steps == len(space) and not truncated
        assert fit.fits(info["policy"])
        assert reward == 1.0 - space.macs_ratio(info["policy"])


def test_warmup_scales_with_trials_and_noise_decays():
    space = chain_space()
    b = Budget(macs_ratio=0.5)
    assert DDPGAgent(space, b, trials=40).warmup == 10
    assert DDPGAgent(space, b, trials=2000).warmup == 100
    assert DDPGAgent(space, b).warmup == 25


def test_learning_moves_the_actor_and_state_round_trips():
    space = chain_space()
    sens = sensitivities(space)
    evaluate = make_evaluator(space, sens)
    agent = DDPGAgent(space, Budget(macs_ratio=0.4), seed=0, warmup=4, hidden=32, batch_size=16)
    obs = PruningEnv(space, agent.fit).reset()[0]
    before = agent.ddpg.act(obs)
    for _ in range(4):
        props = agent.ask(4)
        assert {p.info["role"] for p in props} <= {"baseline", "warmup", "episode"}
        agent.tell([evaluate(p) for p in props])
    assert agent.ddpg.buffer.size == 15 * len(space)  # 15 episodes (+ the baseline, not an episode)
    assert agent.ddpg.moving_average is not None
    assert agent.ddpg.act(obs) != before
    state = json.loads(json.dumps(agent.state_dict()))
    clone = DDPGAgent(space, Budget(macs_ratio=0.4), seed=0, warmup=4, hidden=32, batch_size=16)
    clone.load_state_dict(state)
    assert clone.ddpg.act(obs) == agent.ddpg.act(obs)
    assert clone.ddpg.buffer.size == agent.ddpg.buffer.size


def test_error_log_cost_reward_prefers_cheaper_at_equal_quality():
    space = chain_space()
    agent = DDPGAgent(space, Budget(macs_ratio=0.5), reward="error_log_cost")
    evaluate = make_evaluator(space, {n: 0.0 for n in space.names})
    p = agent.ask(1)[0]
    o = evaluate(p)
    r = agent.episode_reward(o)
    assert r is not None and r <= 0.0
