"""MaxMin-RLHF: a mixture of Bradley-Terry rewards over users, and the max-min policy objective.

Chakraborty, Qiu, Yuan, Koppel, Manocha, Huang, Bedi & Wang 2024, "MaxMin-RLHF: Alignment
with Diverse Human Preferences" (ICML 2024, arXiv:2402.08925). Two pieces:

1. **Reward mixture by EM over users** (the paper's EM algorithm; only its abstract and
   summaries were reachable offline, so no section or equation numbers are cited and the form
   follows the METHODS.md row). Users u = 1..U each label
   pairs (y_w, y_l); user u belongs to one of K sub-populations with reward r_k.

   * E-step (hard assignment): z_u = argmax_k prod_{(yw, yl) of u} sigma(r_k(yw) - r_k(yl)),
     i.e. the argmax of the user's BT log-likelihood sum log sigma(theta_k . (phi(yw) - phi(yl))).
   * M-step: refit each r_k by BT maximum likelihood on the pairs of the users assigned to k.

   Rewards here are linear in features, r_k(y) = theta_k . phi(y) (phi: any embedding of
   (x, y)); the M-step is an L2-regularised logistic regression on feature differences
   (Newton's method). EM stops when no assignment changes; ``n_init`` restarts keep the best
   log-likelihood (hard EM has local optima).

2. **MaxMin objective** (Egalitarian principle): max_pi min_k E_{y~pi}[r_k(y)] - beta KL(pi || pi_ref),
   optimised with RL "against the currently worst group". :class:`MinOverGroupsJudge` wraps the
   K group judges so that :func:`preflearn.online.group.run_online_group` with RLOO / GRPO
   optimises it: per prompt it returns the scores of the group whose mean (standardised) score
   over the prompt's samples is lowest (``mode="worst_group"``, the paper's rule with the
   expectation estimated from the K samples), or the per-sample minimum over groups
   (``mode="per_sample"``, a lower bound E[min_k r_k] <= min_k E[r_k]).

   :func:`maxmin_policy` solves the tabular version exactly through its dual:
   min_k E_pi[r_k] = min_{w in simplex} E_pi[sum_k w_k r_k], and by the minimax theorem
   pi* ∝ pi_ref exp(sum_k w*_k r_k / beta) with
   w* = argmin_w beta log sum_y pi_ref(y) exp(sum_k w_k r_k(y) / beta)  (convex in w).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize
from scipy.special import log_expit, logsumexp, softmax

from ..errors import ConfigError

__all__ = [
    "fit_bt_linear",
    "RewardMixture",
    "em_reward_mixture",
    "maxmin_policy",
    "regularised_value",
    "worst_group_iteration",
    "MinOverGroupsJudge",
]


def fit_bt_linear(diffs: np.ndarray, l2: float = 1e-2, theta0: np.ndarray | None = None) -> np.ndarray:
    """BT maximum likelihood for a linear reward: argmin_theta sum_i -log sigma(theta . d_i) + l2 ||theta||^2.

    ``diffs`` (N, F) = phi(y_w) - phi(y_l) of N labelled pairs. Returns theta (F,).
    """
    d = np.asarray(diffs, dtype=np.float64)
    F = d.shape[1]
    theta = np.zeros(F) if theta0 is None else np.asarray(theta0, dtype=np.float64).copy()
    if len(d) == 0:
        return theta

    def loss(t: np.ndarray) -> float:
        return float(-np.sum(log_expit(d @ t)) + l2 * t @ t)

    # Newton's method with step halving (the objective is strictly convex for l2 > 0)
    cur = loss(theta)
    for _ in range(100):
        m = d @ theta
        s_neg = np.exp(log_expit(-m))  # sigma(-m) = -d/dm log sigma(m)
        grad = -d.T @ s_neg + 2 * l2 * theta
        if np.abs(grad).max() < 1e-10:
            break
        hess = (d * (s_neg * (1 - s_neg))[:, None]).T @ d + 2 * l2 * np.eye(F)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-8:
            cand = theta - t * step
            val = loss(cand)
            if val <= cur:
                break
            t /= 2
        theta, cur = cand, val
    return theta


@dataclass
class RewardMixture:
    """EM result: per-group linear rewards and the users' groups."""

    thetas: np.ndarray  # (K, F)
    assignment: np.ndarray  # (U,) group of each user (users in the order of ``users``)
    users: np.ndarray  # (U,) user ids
    loglik: float  # sum over users of their assigned group's BT log-likelihood
    iterations: int

    def rewards(self, features: np.ndarray) -> np.ndarray:
        """(K, n) r_k(y) for (n, F) features."""
        return self.thetas @ np.asarray(features, dtype=np.float64).T


def _user_loglik(thetas: np.ndarray, diffs: np.ndarray, inverse: np.ndarray, U: int) -> np.ndarray:
    """(U, K) sum over each user's pairs of log sigma(theta_k . d)."""
    ll = log_expit(diffs @ thetas.T)  # (N, K)
    out = np.zeros((U, thetas.shape[0]))
    np.add.at(out, inverse, ll)
    return out


def em_reward_mixture(users: Sequence[Any], diffs: np.ndarray, K: int, *, iterations: int = 50, n_init: int = 5,
                      l2: float = 1e-2, seed: int = 0) -> RewardMixture:
    """Hard EM over users for a K-component mixture of linear BT rewards (MaxMin-RLHF's EM).

    Parameters
    ----------
    users : (N,) the user who labelled each pair.
    diffs : (N, F) phi(y_w) - phi(y_l) of each pair (the user preferred y_w).
    K : number of groups (sub-populations), >= 1.
    iterations : EM iterations per restart (stops early when assignments are stable).
    n_init : random restarts (random user -> group assignments); the best log-likelihood wins.
    l2 : ridge on each theta_k in the M-step.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or len(d) != len(users):
        raise ConfigError(f"diffs must be (N, F) with one row per entry of users; got {d.shape} and {len(users)} users")
    if K < 1:
        raise ConfigError(f"K must be >= 1, got {K}")
    ids, inverse = np.unique(np.asarray(users), return_inverse=True)
    U = len(ids)
    if U < K:
        raise ConfigError(f"{U} users cannot form {K} groups")
    rng = np.random.default_rng(seed)
    best: RewardMixture | None = None
    for _ in range(max(1, n_init)):
        z = rng.permutation(np.arange(U) % K)  # every group starts non-empty
        thetas = np.zeros((K, d.shape[1]))
        it = 0
        for _ in range(iterations):
            it += 1
            for k in range(K):  # M-step
                rows = z[inverse] == k
                thetas[k] = fit_bt_linear(d[rows], l2, thetas[k])
            ll = _user_loglik(thetas, d, inverse, U)  # E-step
            z_new = np.argmax(ll, axis=1)
            for k in range(K):  # keep every group alive: an empty one takes the worst-explained user
                if not np.any(z_new == k):
                    worst = int(np.argmin(ll[np.arange(U), z_new]))
                    z_new[worst] = k
            if np.array_equal(z_new, z):
                break
            z = z_new
        total = float(_user_loglik(thetas, d, inverse, U)[np.arange(U), z].sum())
        if best is None or total > best.loglik:
            best = RewardMixture(thetas.copy(), z.copy(), ids, total, it)
    return best


def regularised_value(pi: np.ndarray, r: np.ndarray, ref: np.ndarray, beta: float) -> float:
    """E_pi[r] - beta KL(pi || ref)."""
    pi = np.asarray(pi, dtype=np.float64)
    m = pi > 0
    return float(pi @ r - beta * np.sum(pi[m] * np.log(pi[m] / ref[m])))


def maxmin_policy(rewards: np.ndarray, ref: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact tabular MaxMin-RLHF policy: argmax_pi min_k E_pi[r_k] - beta KL(pi || ref).

    ``rewards`` (K, n) group rewards over n responses. Returns (pi (n,), group weights w* (K,))
    from the dual min_{w in simplex} beta log sum_y ref(y) exp(w . r(y) / beta) (softmax-
    parametrised w, BFGS); pi* ∝ ref exp(w* . r / beta).
    """
    R = np.asarray(rewards, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if beta <= 0:
        raise ConfigError(f"beta must be > 0, got {beta}")
    logref = np.log(ref)

    def dual(a: np.ndarray) -> float:
        w = softmax(a)
        return float(beta * logsumexp(logref + w @ R / beta))

    K = R.shape[0]
    best = min((optimize.minimize(dual, a0, method="BFGS", options={"gtol": 1e-10})
                for a0 in [np.zeros(K)] + [5.0 * np.eye(K)[k] for k in range(K)]), key=lambda res: res.fun)
    w = softmax(best.x)
    return softmax(logref + w @ R / beta), w


def worst_group_iteration(rewards: np.ndarray, ref: np.ndarray, beta: float,
                          iterations: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The paper's RL rule, "optimise against the currently worst group", run exactly on a finite set.

    Round t: k_t = argmin_k E_{pi_t}[r_k]; one mirror-ascent step on E_pi[r_{k_t}] - beta KL(pi || ref)
    with step 1 / (beta (t + 1)):

        log pi_{t+1} = (1 - 1/(t+1)) log pi_t + (1/(t+1)) (log ref + r_{k_t} / beta)

    so pi_T ∝ ref exp(sum_k wbar_k r_k / beta), wbar_k = fraction of rounds in which group k was
    the worst: Frank-Wolfe with step 1/(t+1) on the dual of :func:`maxmin_policy`
    (d/dw_k of beta log sum ref exp(w.r/beta) = E_{pi_w}[r_k]), which converges to w*.
    Returns (pi_T, wbar).
    """
    R = np.asarray(rewards, dtype=np.float64)
    logref = np.log(np.asarray(ref, dtype=np.float64))
    counts = np.zeros(R.shape[0])
    pi = softmax(logref)
    for t in range(iterations):
        counts[int(np.argmin(R @ pi))] += 1
        pi = softmax(logref + (counts / (t + 1)) @ R / beta)
    return pi, counts / max(iterations, 1)


class MinOverGroupsJudge:
    """A judge whose score is the max-min reward over K group judges (MaxMin-RLHF's RL step).

    Each group judge gives scores s_k (``judge.score``); they are standardised with fixed
    per-group statistics, z_k = (s_k - m_k) / sd_k (``stats``, or estimated by
    :meth:`calibrate` on sample completions; none = raw scores), so that groups with different
    reward scales are comparable. Then for one prompt's K completions:

    * ``mode="worst_group"`` (default, the paper's rule): the group with the lowest mean z over
      the completions, k* = argmin_k mean_i z_k(y_i); score = z_{k*} (all completions).
    * ``mode="per_sample"``: score_i = min_k z_k(y_i).

    ``compare`` is Bradley-Terry on the scores. ``last_groups`` records k* per call.
    """

    def __init__(self, judges: Sequence[Any], mode: str = "worst_group",
                 stats: Sequence[tuple[float, float]] | None = None):
        if len(judges) < 1 or not all(hasattr(j, "score") for j in judges):
            raise ConfigError("MinOverGroupsJudge needs >= 1 judges with scores (judge.score)")
        if mode not in ("worst_group", "per_sample"):
            raise ConfigError(f"mode must be 'worst_group' or 'per_sample', got {mode!r}")
        if stats is not None and len(stats) != len(judges):
            raise ConfigError(f"stats has {len(stats)} entries for {len(judges)} judges")
        self.judges, self.mode, self.name = list(judges), mode, "maxmin"
        self.stats = None if stats is None else [(float(m), float(s)) for m, s in stats]
        self.last_groups: list[int] = []

    def calibrate(self, contexts: Sequence[Any], completions: Sequence[Sequence[str]]) -> list[tuple[float, float]]:
        """Set each group's (mean, sd) from its scores of the given completions (e.g. the initial policy's)."""
        stats = []
        for j in self.judges:
            s = np.concatenate([np.asarray(j.score(c, list(t)), dtype=np.float64) for c, t in zip(contexts, completions)])
            stats.append((float(s.mean()), float(s.std()) or 1.0))
        self.stats = stats
        return stats

    def group_scores(self, context: Any, completions: Sequence[str]) -> np.ndarray:
        """(G, K) standardised scores of every group judge."""
        z = np.stack([np.asarray(j.score(context, list(completions)), dtype=np.float64) for j in self.judges])
        if self.stats is not None:
            m = np.array([s[0] for s in self.stats])[:, None]
            sd = np.array([s[1] for s in self.stats])[:, None]
            z = (z - m) / sd
        return z

    def score(self, context: Any, completions: Sequence[str]) -> np.ndarray:
        z = self.group_scores(context, completions)
        if self.mode == "per_sample":
            self.last_groups.append(-1)
            return z.min(0)
        k = int(np.argmin(z.mean(1)))
        self.last_groups.append(k)
        return z[k]

    def compare(self, context: Any, completions: Sequence[str]) -> np.ndarray:
        from .judges import bt_matrix

        return bt_matrix(self.score(context, completions))
