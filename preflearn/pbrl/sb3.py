"""Plug a learned reward into stable-baselines3 (PPO, SAC, DQN, ...) through a gymnasium wrapper.

PEBBLE (Lee, Smith, Abbeel 2021, "PEBBLE: Feedback-Efficient Interactive
Reinforcement Learning via Relabeling Experience and Unsupervised
Pre-training", arXiv:2106.05091, Algorithm 2 lines 13-16 and Section 4.3)
trains an off-the-shelf RL learner on r_hat_psi(s, a), the *mean* of the reward
ensemble, and after every reward update **relabels** every transition already in
the replay buffer with the new r_hat_psi, so that off-policy targets are never
computed from stale rewards. Here:

* :class:`LearnedRewardWrapper` replaces the environment's reward by
  ``reward_fn(s_t, a_t)`` (e.g. :meth:`RewardEnsemble.reward_fn`, the ensemble
  mean; the true reward is kept in ``info["true_reward"]``). The wrapper calls
  ``reward_fn`` on every step, so an ensemble refitted in place is used at once.
* :func:`relabel_replay_buffer` recomputes every stored reward of an SB3
  off-policy learner (SAC, TD3, DQN) with the current ``reward_fn``
  (PEBBLE Section 4.3, "relabeling experience"). On-policy learners (PPO, A2C)
  collect a fresh rollout buffer each update and need no relabelling.

Termination and the absorbing convention
----------------------------------------
The teacher's segments pad a terminated episode with an absorbing state
(terminal observation, action 0) up to the segment length, and the CEM learner
scores episodes over a fixed horizon H the same way (:mod:`preflearn.pbrl.segments`).
An RL library instead stops the episode at termination, which would make the
learned reward carry a survival bias (negative rewards -> end early). The
wrapper therefore adds, on the terminating step T (1-based count of real
steps), the discounted value of the absorbing tail::

    tail="finite"   (default)  bonus = sum_{k=1}^{H-T} gamma^k r_abs
                                     = gamma r_abs (1 - gamma^(H-T)) / (1 - gamma)   (r_abs (H-T) for gamma = 1)
    tail="infinite"            bonus = gamma r_abs / (1 - gamma)
    tail="none"                bonus = 0 (plain reward replacement)

with r_abs = reward_fn(s_T, a_abs) and a_abs = 0 (zeros for Box actions). With
the learner's own ``gamma`` this is exactly the discounted return of the
episode continued in the absorbing state (a test checks it against the explicit
sum). ``relabel_replay_buffer`` does not know T, so it supports the
``"infinite"`` and ``"none"`` tails; use one of them with off-policy learners
that are relabelled. The finite/infinite choice and the absorbing tail itself
are our choices (PEBBLE's DeepMind-Control tasks never terminate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from ..errors import ConfigError

__all__ = ["LearnedRewardWrapper", "LinearToZero", "StandardizedReward", "absorbing_bonus", "relabel_replay_buffer",
           "sb3_act_fn", "absorbing_action"]

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
TAILS = ("finite", "infinite", "none")


def absorbing_action(space: gym.Space) -> Any:
    """The padding action of the segments convention: 0, or zeros for Box actions."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.start)
    if isinstance(space, gym.spaces.Box):
        return np.zeros(space.shape, space.dtype)
    raise ConfigError(f"no absorbing action for action space {space}")


def absorbing_bonus(r_abs: np.ndarray | float, gamma: float, steps_left: np.ndarray | int | None,
                    tail: str = "finite") -> np.ndarray:
    """Discounted value of ``steps_left`` absorbing steps after termination (see the module docstring).

    ``steps_left`` = H - T (finite tail); ignored for ``tail="infinite"``/``"none"``.
    """
    r_abs = np.asarray(r_abs, np.float64)
    if tail == "none":
        return np.zeros_like(r_abs)
    if tail == "infinite":
        if not gamma < 1.0:
            raise ConfigError("tail='infinite' needs gamma < 1")
        return gamma * r_abs / (1.0 - gamma)
    if tail != "finite":
        raise ConfigError(f"tail must be one of {TAILS}, got {tail!r}")
    n = np.maximum(np.asarray(steps_left, np.float64), 0.0)
    if gamma == 1.0:
        return r_abs * n
    return gamma * r_abs * (1.0 - gamma ** n) / (1.0 - gamma)


class LearnedRewardWrapper(gym.Wrapper):
    """Replace the reward of ``env`` by ``reward_fn(s_t, a_t)`` (PEBBLE's r_hat_psi).

    Parameters
    ----------
    env : gymnasium environment.
    reward_fn : numpy ``(N, D) obs, (N,) or (N, A) actions -> (N,)`` rewards, e.g. ``RewardEnsemble.reward_fn``
        (the ensemble mean, as in PEBBLE).
    gamma : the RL learner's discount, used for the absorbing tail bonus; must match the learner's.
    horizon : H of the absorbing convention; defaults to ``env.spec.max_episode_steps``.
    tail : "finite" (default), "infinite" or "none" (module docstring).

    ``info["true_reward"]`` holds the environment's reward and ``info["learned_reward"]`` the
    replacement (including any absorbing bonus).
    """

    def __init__(self, env: gym.Env, reward_fn: RewardFn, *, gamma: float = 0.99, horizon: int | None = None,
                 tail: str = "finite") -> None:
        super().__init__(env)
        if tail not in TAILS:
            raise ConfigError(f"tail must be one of {TAILS}, got {tail!r}")
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1], got {gamma}")
        if horizon is None and tail == "finite":
            horizon = getattr(env.spec, "max_episode_steps", None)
            if horizon is None:
                raise ConfigError("tail='finite' needs a horizon (the env has no max_episode_steps)")
        self.reward_fn = reward_fn
        self.gamma = gamma
        self.horizon = horizon
        self.tail = tail
        self._a_abs = absorbing_action(env.action_space)
        self._obs: np.ndarray | None = None
        self._t = 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._obs = np.asarray(obs, np.float32)
        self._t = 0
        return obs, info

    def _r(self, obs: np.ndarray, act: Any) -> float:
        return float(np.asarray(self.reward_fn(np.asarray(obs, np.float32)[None], np.asarray(act)[None]))[0])

    def step(self, action: Any):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        obs, r_true, terminated, truncated, info = self.env.step(action)
        self._t += 1
        r = self._r(self._obs, action)
        if terminated and self.tail != "none":
            r_abs = self._r(obs, self._a_abs)
            left = None if self.horizon is None else self.horizon - self._t
            r += float(absorbing_bonus(r_abs, self.gamma, left, self.tail))
        info = dict(info)
        info["true_reward"] = float(r_true)
        info["learned_reward"] = r
        self._obs = np.asarray(obs, np.float32)
        return obs, r, terminated, truncated, info


def relabel_replay_buffer(model: Any, reward_fn: RewardFn, *, tail: str = "infinite",
                          batch_size: int = 65536) -> int:
    """Recompute every reward stored in an SB3 off-policy learner's replay buffer (PEBBLE Sec. 4.3).

    r <- reward_fn(s, a) (+ the absorbing bonus on terminated, not time-limit, transitions with
    ``tail="infinite"``: gamma r_hat(s', a_abs) / (1 - gamma), gamma = ``model.gamma``).
    Box actions are stored by SB3 scaled to [-1, 1]; they are unscaled with
    ``model.policy.unscale_action`` before ``reward_fn`` sees them. Returns the number of
    transitions relabelled.
    """
    if tail not in ("infinite", "none"):
        raise ConfigError("relabel_replay_buffer supports tail='infinite' or 'none' (T is not stored)")
    buf = getattr(model, "replay_buffer", None)
    if buf is None:
        raise ConfigError(f"{type(model).__name__} has no replay buffer (on-policy learners need no relabelling)")
    if buf.optimize_memory_usage:
        raise ConfigError("relabel_replay_buffer needs optimize_memory_usage=False (next observations stored)")
    n = buf.buffer_size if buf.full else buf.pos
    if n == 0:
        return 0
    space = model.action_space
    obs = buf.observations[:n].reshape(n * buf.n_envs, -1)
    nxt = buf.next_observations[:n].reshape(n * buf.n_envs, -1)
    act = buf.actions[:n].reshape(n * buf.n_envs, -1)
    if isinstance(space, gym.spaces.Discrete):
        act = act[:, 0].astype(np.int64)
    elif isinstance(space, gym.spaces.Box):
        act = model.policy.unscale_action(act).astype(np.float32)
    done = buf.dones[:n].reshape(-1) > 0
    if buf.handle_timeout_termination:
        done &= buf.timeouts[:n].reshape(-1) == 0
    a_abs = np.asarray(absorbing_action(space))
    out = np.empty(n * buf.n_envs, np.float32)
    for i in range(0, len(out), batch_size):
        sl = slice(i, i + batch_size)
        r = np.asarray(reward_fn(obs[sl].astype(np.float32), act[sl]), np.float64)
        d = done[sl]
        if tail == "infinite" and d.any():
            abs_act = np.broadcast_to(a_abs, (int(d.sum()), *a_abs.shape)).copy()
            r_abs = np.asarray(reward_fn(nxt[sl][d].astype(np.float32), abs_act), np.float64)
            r[d] += absorbing_bonus(r_abs, float(model.gamma), None, "infinite")
        out[sl] = r
    buf.rewards[:n] = out.reshape(n, buf.n_envs)
    return int(n * buf.n_envs)


class StandardizedReward:
    """``reward_fn`` standardised to zero mean and unit standard deviation on reference (s, a) pairs.

    Christiano et al. 2017, "Deep Reinforcement Learning from Human Preferences"
    (arXiv:1706.03741), Section 2.2.1: the learned reward "r_hat ... normalized to have zero mean
    and constant standard deviation" before the RL learner sees it. A Bradley-Terry reward is only
    defined up to an additive constant, and its scale drifts from one refit to the next; an
    on-policy learner's value function (PPO's critic) then chases a moving target. Here::

        r_std(s, a) = (r_hat(s, a) - mu) / max(sigma, eps)
        mu, sigma   = mean and standard deviation of r_hat over the reference pairs given to ``update``

    Call :meth:`update` after every refit (e.g. on the segment pool's real steps). Before the first
    ``update`` the transform is the identity. With the wrapper's finite absorbing tail every episode
    sums H rewards, so the shift by ``mu`` changes every return by the same constant and preserves
    the ranking of policies.
    """

    def __init__(self, reward_fn: RewardFn, eps: float = 1e-6) -> None:
        self.reward_fn = reward_fn
        self.eps = eps
        self.mu = 0.0
        self.sigma = 1.0

    def update(self, obs: np.ndarray, act: np.ndarray) -> tuple[float, float]:
        """Recompute ``mu``, ``sigma`` from ``(N, D)`` obs and ``(N,)``/``(N, A)`` actions; returns them."""
        if len(obs) == 0:
            raise ConfigError("StandardizedReward.update needs at least one (s, a) pair")
        r = np.asarray(self.reward_fn(np.asarray(obs, np.float32), np.asarray(act)), np.float64)
        self.mu, self.sigma = float(r.mean()), float(max(r.std(), self.eps))
        return self.mu, self.sigma

    def __call__(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        r = np.asarray(self.reward_fn(obs, act), np.float64)
        return ((r - self.mu) / self.sigma).astype(np.float32)


class LinearToZero:
    """A linear schedule over a model's WHOLE training run, for learners trained in chunks.

    value(t) = start * max(0, 1 - t / total),  t = ``model.num_timesteps``

    This is rl-baselines3-zoo's ``lin_<start>`` schedule (e.g. PPO on CartPole-v1: learning rate
    lin_1e-3, clip range lin_0.2, over 1e5 steps). SB3 evaluates schedules at
    ``progress_remaining = 1 - t / total_timesteps`` of the *current* ``learn()`` call, so a PEBBLE-style
    loop that calls ``model.learn(chunk, reset_num_timesteps=False)`` after every reward refit would
    restart the decay at every chunk; this schedule reads the model's own step counter instead.
    Pass it as ``learning_rate=`` / ``clip_range=`` and set ``.model`` once the model exists (before
    that it returns ``start``).
    """

    def __init__(self, start: float, total: int) -> None:
        if total < 1:
            raise ConfigError(f"LinearToZero needs total >= 1 env steps, got {total}")
        self.start, self.total, self.model = float(start), int(total), None

    def __call__(self, progress_remaining: float) -> float:
        t = 0 if self.model is None else self.model.num_timesteps
        return self.start * max(0.0, 1.0 - t / self.total)


def sb3_act_fn(model: Any, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """A batched ``(E, D) obs -> (E,) actions`` function for :func:`preflearn.pbrl.cem.policy_return`."""

    def act(obs: np.ndarray) -> np.ndarray:
        a, _ = model.predict(obs, deterministic=deterministic)
        return np.asarray(a)

    return act
