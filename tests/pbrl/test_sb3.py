"""stable-baselines3 plumbing: the learned-reward wrapper, its absorbing tail, PEBBLE relabelling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from preflearn.errors import ConfigError
from preflearn.pbrl.sb3 import LearnedRewardWrapper, LinearToZero, absorbing_bonus, relabel_replay_buffer

pytest.importorskip("stable_baselines3")


def lin_reward(obs, act):  # any deterministic r(s, a); negative on most states
    return (obs[..., 0] - 0.5 * np.abs(obs[..., 2]) - 0.1 + 0.05 * np.asarray(act, np.float64)).astype(np.float32)


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_wrapper_return_equals_the_absorbing_padded_return(gamma):
    H = 60
    env = LearnedRewardWrapper(gym.make("CartPole-v1", max_episode_steps=H), lin_reward, gamma=gamma)
    obs, _ = env.reset(seed=3)
    states, rewards, true = [obs], [], []
    term = trunc = False
    while not (term or trunc):
        obs, r, term, trunc, info = env.step(0)  # always left: falls after a few dozen steps
        states.append(obs)
        rewards.append(r)
        true.append(info["true_reward"])
    T = len(rewards)
    assert term and T < H and true == [1.0] * T
    # per-step rewards before termination are r(s_t, a_t) exactly
    np.testing.assert_allclose(rewards[:-1], lin_reward(np.array(states[:T - 1]), np.zeros(T - 1)), rtol=1e-6)
    # reference: the episode continued in the absorbing state (terminal obs, action 0) up to H, summed explicitly
    padded = [float(lin_reward(states[t], 0)) for t in range(T)] + [float(lin_reward(states[T], 0))] * (H - T)
    want = sum(gamma ** t * r for t, r in enumerate(padded))
    got = sum(gamma ** t * r for t, r in enumerate(rewards))
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6)


def test_absorbing_bonus_closed_forms():
    assert absorbing_bonus(2.0, 0.5, 3) == pytest.approx(2 * (0.5 + 0.25 + 0.125))
    assert absorbing_bonus(2.0, 1.0, 3) == pytest.approx(6.0)
    assert absorbing_bonus(2.0, 0.5, None, "infinite") == pytest.approx(2.0)  # 2 * sum_{k>=1} 0.5^k
    assert absorbing_bonus(2.0, 0.5, 3, "none") == 0.0
    with pytest.raises(ConfigError):
        absorbing_bonus(1.0, 1.0, None, "infinite")


def test_relabel_dqn_buffer_matches_direct_recomputation():
    from stable_baselines3 import DQN

    env = LearnedRewardWrapper(gym.make("CartPole-v1"), lin_reward, gamma=0.9, tail="infinite")
    model = DQN("MlpPolicy", env, learning_starts=10**6, buffer_size=1000, gamma=0.9, seed=0,
                policy_kwargs={"net_arch": [8]})
    model.learn(300)
    buf = model.replay_buffer
    n = buf.pos
    stored = buf.rewards[:n, 0].copy()
    obs, nxt, act = buf.observations[:n, 0], buf.next_observations[:n, 0], buf.actions[:n, 0, 0]
    term = (buf.dones[:n, 0] > 0) & (buf.timeouts[:n, 0] == 0)
    assert term.sum() >= 3
    # the wrapper's rewards as stored: r(s, a) + 0.9 r(s', 0) / 0.1 on terminal steps
    want = lin_reward(obs, act) + np.where(term, 9.0 * lin_reward(nxt, np.zeros(n)), 0.0)
    np.testing.assert_allclose(stored, want, rtol=1e-5, atol=1e-5)

    def other(o, a):
        return (o[..., 1] * 2.0 + np.asarray(a, np.float64)).astype(np.float32)

    assert relabel_replay_buffer(model, other) == n
    want2 = other(obs, act) + np.where(term, 9.0 * other(nxt, np.zeros(n)), 0.0)
    np.testing.assert_allclose(buf.rewards[:n, 0], want2, rtol=1e-5, atol=1e-5)


def test_relabel_sac_unscales_box_actions():
    from stable_baselines3 import SAC

    env = LearnedRewardWrapper(gym.make("Pendulum-v1"), lambda o, a: a[..., 0], tail="none")
    model = SAC("MlpPolicy", env, learning_starts=10**6, buffer_size=500, seed=0, policy_kwargs={"net_arch": [8]})
    model.learn(64)
    buf = model.replay_buffer
    scaled = buf.actions[:64, 0, 0]
    assert np.abs(scaled).max() <= 1.0
    np.testing.assert_allclose(buf.rewards[:64, 0], 2.0 * scaled, rtol=1e-5, atol=1e-6)  # Pendulum a in [-2, 2]
    relabel_replay_buffer(model, lambda o, a: a[..., 0] ** 2, tail="none")
    np.testing.assert_allclose(buf.rewards[:64, 0], (2.0 * scaled) ** 2, rtol=1e-5, atol=1e-6)


def test_wrapper_rejects_bad_settings():
    with pytest.raises(ConfigError):
        LearnedRewardWrapper(gym.make("CartPole-v1"), lin_reward, tail="sometimes")
    with pytest.raises(ConfigError):
        LearnedRewardWrapper(gym.make("CartPole-v1"), lin_reward, gamma=0.0)


def test_standardized_reward_has_zero_mean_unit_std_on_the_reference_pairs():
    from preflearn.pbrl.sb3 import StandardizedReward

    rng = np.random.default_rng(0)
    obs = rng.standard_normal((200, 4)).astype(np.float32)
    act = rng.integers(0, 2, 200)
    norm = StandardizedReward(lin_reward)
    np.testing.assert_allclose(norm(obs, act), lin_reward(obs, act), rtol=1e-6)  # identity before update
    r = lin_reward(obs, act).astype(np.float64)
    mu, sd = norm.update(obs, act)
    assert mu == pytest.approx(r.mean()) and sd == pytest.approx(r.std())
    z = norm(obs, act)
    assert z.mean() == pytest.approx(0.0, abs=1e-5) and z.std() == pytest.approx(1.0, abs=1e-5)
    # an affine change of the underlying reward (a refit's drift in offset and scale) is undone
    norm2 = StandardizedReward(lambda o, a: 7.0 * lin_reward(o, a) - 3.0)
    norm2.update(obs, act)
    np.testing.assert_allclose(norm2(obs[:5], act[:5]), z[:5], atol=1e-4)
    with pytest.raises(ConfigError):
        norm.update(obs[:0], act[:0])


def test_standardized_reward_plugs_into_the_wrapper():
    from preflearn.pbrl.sb3 import StandardizedReward

    norm = StandardizedReward(lin_reward)
    norm.mu, norm.sigma = 0.5, 2.0
    env = LearnedRewardWrapper(gym.make("CartPole-v1"), norm, gamma=0.9, tail="none")
    obs, _ = env.reset(seed=1)
    _, r, *_ = env.step(1)
    assert r == pytest.approx((float(lin_reward(obs[None], np.array([1]))[0]) - 0.5) / 2.0, rel=1e-5)


def test_linear_to_zero_decays_over_chunked_learn_calls():
    from stable_baselines3 import PPO

    lr, clip = LinearToZero(1e-3, 1024), LinearToZero(0.2, 1024)
    model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, batch_size=64, n_epochs=1, learning_rate=lr,
                clip_range=clip, seed=0)
    lr.model = clip.model = model
    for k in (1, 2):  # SB3's own progress_remaining would restart at 1 on every learn() call
        model.learn(256, reset_num_timesteps=False)
        assert model.num_timesteps == 256 * k  # the last update ran after the chunk's last rollout
        assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 256 * k / 1024))
        assert model.clip_range(1.0) == pytest.approx(0.2 * (1 - 256 * k / 1024))
    lr.model = None
    assert lr(0.3) == 1e-3  # before the model is attached: the start value
    with pytest.raises(ConfigError):
        LinearToZero(1.0, 0)
