"""The tabular preference game: every online method with exact expectations.

A finite preference game has ``n`` responses, a preference matrix ``P`` with
``P[i, j] = P(y_i > y_j)`` and ``P + P.T = 1`` (so ``P[i, i] = 1/2``; it may be
intransitive), a reference policy ``mu`` and a regularization strength
``tau >= 0``. Its value for two policies is

    f(pi, pi') = pi^T P pi' - tau KL(pi || mu) + tau KL(pi' || mu)

(Munos et al. 2023, "Nash Learning from Human Feedback", arXiv:2312.00886,
Section 3). The game is symmetric and constant-sum, so it has a unique
symmetric Nash equilibrium pi* when tau > 0, characterised by the fixed point

    pi*(y) ∝ mu(y) exp( P(y > pi*) / tau ),   P(y > pi) = (P pi)_y.

Exploitability (duality gap) of a policy, in closed form
---------------------------------------------------------
    gap(pi) = max_{pi1} f(pi1, pi) - min_{pi2} f(pi, pi2)
            = 2 tau log sum_y mu(y) exp((P pi)_y / tau) + 2 tau KL(pi || mu) - 1      (tau > 0)
            = 2 max_y (P pi)_y - 1                                                       (tau = 0)

using max_{pi1} [pi1^T v - tau KL(pi1||mu)] = tau log sum mu exp(v/tau) and
P^T = 1 - P. The gap is >= 0 and is 0 exactly at the equilibrium.

Every method here performs its update *in expectation* (full information), so
the module tests the algorithms, not sampling noise. Reward-based methods
(online DPO, RSO, RLOO/GRPO/PPO with a reward model) all target the
KL-regularised optimum of a Bradley-Terry reward fitted to P, which is not the
preference game's equilibrium when P is intransitive: ``rlhf_bt`` is that
optimum and serves as the negative control.

Policies are 1-D numpy arrays on the simplex; the order of responses is the
order of ``P``'s rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import expit, logsumexp, softmax

from ..errors import ConfigError, unknown_name_message

__all__ = [
    "PreferenceGame",
    "Trace",
    "exploitability",
    "solve_nash",
    "run",
    "METHODS",
    "rock_paper_scissors",
    "random_preference_matrix",
    "bt_rewards",
    "bt_optimum",
    "bt_suboptimality",
]


@dataclass(frozen=True)
class PreferenceGame:
    """A finite preference game (P, mu, tau); validated on construction."""

    P: np.ndarray  # (n, n), P[i, j] = P(y_i > y_j)
    ref: np.ndarray  # (n,) reference policy mu, strictly positive
    tau: float = 0.1

    def __post_init__(self) -> None:
        P = np.asarray(self.P, dtype=np.float64)
        ref = np.asarray(self.ref, dtype=np.float64)
        n = P.shape[0]
        if P.ndim != 2 or P.shape != (n, n):
            raise ConfigError(f"P must be square, got shape {P.shape}")
        if np.any(P < 0) or np.any(P > 1):
            raise ConfigError("P must hold probabilities in [0, 1]")
        if not np.allclose(P + P.T, 1.0, atol=1e-9):
            raise ConfigError("P must satisfy P + P.T = 1 (P(a>b) + P(b>a) = 1)")
        if ref.shape != (n,) or np.any(ref <= 0) or not np.isclose(ref.sum(), 1.0):
            raise ConfigError("ref must be a strictly positive distribution over the n responses")
        if self.tau < 0:
            raise ConfigError(f"tau must be >= 0, got {self.tau}")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "ref", ref)

    @property
    def n(self) -> int:
        return self.P.shape[0]

    def win_rates(self, pi: np.ndarray) -> np.ndarray:
        """(n,) P(y > pi) for every response y."""
        return self.P @ pi


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    m = p > 0
    return float(np.sum(p[m] * (np.log(p[m]) - np.log(q[m]))))


def exploitability(game: PreferenceGame, pi: np.ndarray) -> float:
    """Duality gap of ``pi`` in ``game`` (closed form above); 0 at the Nash equilibrium."""
    v = game.win_rates(pi)
    if game.tau == 0:
        return float(2.0 * v.max() - 1.0)
    t = game.tau
    return float(2 * t * logsumexp(np.log(game.ref) + v / t) + 2 * t * _kl(pi, game.ref) - 1.0)


def solve_nash(game: PreferenceGame, tol: float = 1e-12) -> np.ndarray:
    """The game's (regularised) Nash equilibrium, solved with scipy.

    tau > 0: the fixed point z = log mu + P softmax(z) / tau solved by
    ``scipy.optimize.root`` (Powell hybrid), polished by minimising the convex
    duality gap when needed. tau = 0: the linear program
    min v s.t. P pi <= v, sum pi = 1, pi >= 0 (value 1/2).
    """
    n = game.n
    if game.tau == 0:
        c = np.zeros(n + 1)
        c[-1] = 1.0
        A_ub = np.hstack([game.P, -np.ones((n, 1))])
        A_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
        res = optimize.linprog(c, A_ub=A_ub, b_ub=np.zeros(n), A_eq=A_eq, b_eq=[1.0],
                               bounds=[(0, None)] * n + [(None, None)], method="highs")
        if not res.success:  # pragma: no cover - highs solves these tiny LPs
            raise RuntimeError(f"linprog failed: {res.message}")
        pi = np.clip(res.x[:n], 0, None)
        return pi / pi.sum()
    logmu, t = np.log(game.ref), game.tau

    def fixed_point(z: np.ndarray) -> np.ndarray:
        return z - logmu - game.P @ softmax(z) / t

    res = optimize.root(fixed_point, logmu.copy(), method="hybr", tol=tol)
    pi = softmax(res.x)
    if exploitability(game, pi) > 1e-10:
        # Fall back on damped fixed-point iteration (a contraction for small 1/tau steps).
        z = logmu.copy()
        for _ in range(100_000):
            z_new = logmu + game.P @ softmax(z) / t
            z = 0.5 * z + 0.5 * z_new
            if np.max(np.abs(z_new - z)) < tol:
                break
        pi = softmax(z)
    return pi


def bt_rewards(P: np.ndarray, l2: float = 1e-8) -> np.ndarray:
    """Bradley-Terry rewards fitted to P by maximum likelihood over all ordered pairs.

    maximise sum_{i != j} P[i, j] log sigmoid(r_i - r_j) - l2 ||r||^2, mean-centred.
    """
    n = P.shape[0]
    off = ~np.eye(n, dtype=bool)

    def nll(r: np.ndarray) -> tuple[float, np.ndarray]:
        d = r[:, None] - r[None, :]
        s = expit(d)
        val = -np.sum(P[off] * np.log(np.clip(s[off], 1e-300, None))) + l2 * r @ r
        g = -P * (1 - s)  # d/d d_ij of -P log s
        g[~off] = 0.0
        grad = g.sum(1) - g.sum(0) + 2 * l2 * r
        return val, grad

    res = optimize.minimize(nll, np.zeros(n), jac=True, method="L-BFGS-B", options={"gtol": 1e-12})
    return res.x - res.x.mean()


# ----------------------------------------------------------------------------------------
# Methods: one exact-expectation update each. A method maps (pi, game, t, state) -> pi.
# ----------------------------------------------------------------------------------------


def _normalise_log(logits: np.ndarray) -> np.ndarray:
    """softmax, in plain numpy (this is the inner loop of every method)."""
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _geometric_mixture(pi: np.ndarray, mu: np.ndarray, w: float) -> np.ndarray:
    """pi^(1-w) mu^w / Z."""
    return _normalise_log((1 - w) * np.log(pi) + w * np.log(mu))


def nash_md_step(pi, game, eta, t, state):
    """Nash-MD (Munos et al. 2023, arXiv:2312.00886, Section 6, Eq. 'Nash-MD').

        pi_mu    ∝ pi_t^(1 - eta tau) mu^(eta tau)
        pi_{t+1} ∝ pi_mu exp( eta P(y > pi_mu) )

    Theorem 1: with eta_t = 2 / (tau (t + 2)), KL(pi*, pi_T) <= 8 / (tau^2 (T + 1)),
    a last-iterate guarantee (``state['schedule'] = 'paper'`` uses it).
    """
    if state.get("schedule") == "paper":
        eta = min(2.0 / (game.tau * (t + 2)), 1.0 / game.tau)
    mix = _geometric_mixture(pi, game.ref, eta * game.tau)
    return _normalise_log(np.log(mix) + eta * game.win_rates(mix))


def inpo_step(pi, game, eta, t, state):
    """INPO, online mirror descent on the KL-regularised game (Zhang et al. 2024,
    "Iterative Nash Policy Optimization", arXiv:2407.00617, Eq. 4 / Algorithm 1):

        pi_{t+1} ∝ pi_t^(1 - eta tau) mu^(eta tau) exp( eta P(y > pi_t) )

    Its population loss (h_t - eta/2)^2 with
    h_t = log pi(yw)/pi(yl) - eta tau log mu(yw)/mu(yl) - (1 - eta tau) log pi_t(yw)/pi_t(yl)
    is minimised exactly by this update. The paper proves last-iterate convergence.
    """
    return _normalise_log((1 - eta * game.tau) * np.log(pi) + eta * game.tau * np.log(game.ref)
                          + eta * game.win_rates(pi))


def egpo_step(pi, game, eta, t, state):
    """EGPO, extragradient / mirror-prox (Zhou, Fazel & Du 2025, "Extragradient
    Preference Optimization", arXiv:2503.08942, Algorithm 1 in its tabular form):

        pi_{t+1/2} ∝ pi_t^(1 - eta tau) mu^(eta tau) exp( eta P(y > pi_t) )
        pi_{t+1}   ∝ pi_t^(1 - eta tau) mu^(eta tau) exp( eta P(y > pi_{t+1/2}) )

    Last-iterate linear convergence to the regularised equilibrium (their Theorem 1).
    """
    base = (1 - eta * game.tau) * np.log(pi) + eta * game.tau * np.log(game.ref)
    half = _normalise_log(base + eta * game.win_rates(pi))
    return _normalise_log(base + eta * game.win_rates(half))


def _online_ipo_grad(logits: np.ndarray, game: PreferenceGame, sampler: np.ndarray) -> np.ndarray:
    """Exact gradient of the online IPO loss w.r.t. logits, y, y' ~ sampler (stop-gradient).

    L(theta) = E_{y,y'~sampler} [ (h(y, y') - (P(y > y') - 1/2) / tau)^2 ],
    h(y, y') = log pi(y)/mu(y) - log pi(y')/mu(y')   (logsumexp cancels)
    dL/dtheta_k = 4 sampler_k sum_y' sampler_y' e(k, y'),  e = h - target (skew-symmetric).
    """
    d = logits - np.log(game.ref)
    target = (game.P - 0.5) / game.tau
    e = d[:, None] - d[None, :] - target
    return 4.0 * sampler * (e @ sampler)


def online_ipo_step(pi, game, eta, t, state):
    """Online IPO (Calandriello et al. 2024, "Human Alignment of Large Language Models
    through Online Preference Optimisation", arXiv:2403.08635, Section 4): gradient
    descent on the IPO loss with both responses sampled from the current policy
    (stop-gradient) and ordered by P. Its fixed point is the Nash equilibrium of the
    regularised game (their Theorem 1). Gradient steps on the logits with rate eta.
    """
    logits = state.setdefault("logits", np.log(pi))
    state["logits"] = logits - eta * _online_ipo_grad(logits, game, pi)
    return _normalise_log(state["logits"])


def ipo_md_step(pi, game, eta, t, state):
    """IPO-MD (Calandriello et al. 2024, arXiv:2403.08635, Section 5): online IPO with
    both responses drawn from the geometric mixture pi^(1-beta) mu^beta (``beta`` in
    ``state``, default 0.1). Its fixed point is the Nash-MD-style point
    pi ∝ mu exp(P pi_mix / tau), close to but not equal to the equilibrium when beta > 0.
    """
    beta = state.get("beta", 0.1)
    logits = state.setdefault("logits", np.log(pi))
    mix = _geometric_mixture(pi, game.ref, beta)
    state["logits"] = logits - eta * _online_ipo_grad(logits, game, mix)
    return _normalise_log(state["logits"])


def sppo_step(pi, game, eta, t, state):
    """SPPO (Wu et al. 2024, "Self-Play Preference Optimization", arXiv:2405.00675, Eq. 3.4):

        pi_{t+1}(y) ∝ pi_t(y) exp( eta P(y > pi_t) )

    (the exact minimiser of its squared loss (log pi/pi_t - eta (P(y > pi_t) - 1/2))^2).
    Multiplicative weights on the *unregularised* game: Theorem 4.1 bounds the
    duality gap of the AVERAGE policy by O(1/sqrt(T)); the last iterate cycles.
    """
    return _normalise_log(np.log(pi) + eta * game.win_rates(pi))


def rlhf_bt_step(pi, game, eta, t, state):
    """Reward-based RLHF / online DPO with a Bradley-Terry reward (the negative control).

    r = BT maximum-likelihood fit to P (``bt_rewards``); every reward-based method
    (online DPO, RSO, best-of-N distillation, RLOO, GRPO, PPO) targets the same
    KL-regularised optimum pi ∝ mu exp(r / tau) (Rafailov et al. 2023, Eq. 4). We
    move towards it by mirror descent with rate eta; it is not the preference
    game's equilibrium when P is intransitive.
    """
    r = state.get("r")
    if r is None:
        r = state["r"] = bt_rewards(game.P)
    tau = game.tau if game.tau > 0 else 1e-3
    target = np.log(game.ref) + r / tau
    return _normalise_log((1 - eta) * np.log(pi) + eta * target)


def _bt_reward(game: PreferenceGame, state: dict) -> np.ndarray:
    r = state.get("r")
    if r is None:
        r = state["r"] = bt_rewards(game.P)
    return r


def bt_optimum(game: PreferenceGame, r: np.ndarray | None = None) -> np.ndarray:
    """The KL-regularised optimum of a reward, pi* ∝ mu exp(r / tau) (Rafailov et al. 2023,
    arXiv:2305.18290, Eq. 4); tau = 0: the uniform distribution over argmax r.

    ``r`` defaults to the Bradley-Terry fit :func:`bt_rewards` of P (exact when P is BT-consistent).
    """
    r = bt_rewards(game.P) if r is None else np.asarray(r, dtype=np.float64)
    if game.tau == 0:
        top = np.isclose(r, r.max(), rtol=0, atol=1e-12)
        return top / top.sum()
    return _normalise_log(np.log(game.ref) + r / game.tau)


def bt_suboptimality(game: PreferenceGame, pi: np.ndarray, r: np.ndarray | None = None) -> float:
    """J(pi*) - J(pi) for J(pi) = E_pi[r] - tau KL(pi || mu) (>= 0, 0 only at :func:`bt_optimum`).

    In closed form J(pi*) - J(pi) = tau KL(pi || pi*) when tau > 0 (since
    J(pi) = tau log Z - tau KL(pi || pi*)), and max r - E_pi[r] when tau = 0.
    """
    r = bt_rewards(game.P) if r is None else np.asarray(r, dtype=np.float64)
    pi = np.asarray(pi, dtype=np.float64)
    if game.tau == 0:
        return float(r.max() - pi @ r)
    return float(game.tau * _kl(pi, bt_optimum(game, r)))


def _proximal_dpo(anchor: np.ndarray, game: PreferenceGame, eta: float, r: np.ndarray) -> np.ndarray:
    """argmax_pi E_pi[r] - tau KL(pi || mu) - (1/eta) KL(pi || anchor), in closed form:

        log pi ∝ (log anchor + eta tau log mu + eta r) / (1 + eta tau).
    """
    return _normalise_log((np.log(anchor) + eta * game.tau * np.log(game.ref) + eta * r) / (1 + eta * game.tau))


def iterative_dpo_step(pi, game, eta, t, state):
    """Iterative DPO in expectation: one round = the exact population minimiser of the DPO
    loss with the previous policy as reference (Xiong et al. 2024, arXiv:2312.11456;
    He, Yuan & Gu 2024, "Accelerated Preference Optimization for Large Language Model
    Alignment", arXiv:2410.06293, Section 3: iterative preference optimisation is the
    proximal point method)

        pi_{t+1} = argmax_pi E_pi[r] - tau KL(pi || mu) - (1/eta) KL(pi || pi_t),

    i.e. DPO with beta = 1/eta against reference pi_t; for a BT-consistent P its population
    minimiser is pi_t exp(eta r) / Z whatever the pairs' sampling distribution (full support).
    ``tau = 0`` is exactly APO's setting (reference = previous policy, target argmax r);
    ``tau > 0`` keeps the KL to mu of the regularised objective, whose optimum is
    :func:`bt_optimum` mu exp(r / tau). r = :func:`bt_rewards` (P's Bradley-Terry fit).
    """
    return _proximal_dpo(pi, game, eta, _bt_reward(game, state))


def apo_step(pi, game, eta, t, state):
    """APO, Accelerated Preference Optimization (He, Yuan & Gu 2024, arXiv:2410.06293,
    Section 3, Algorithm 1; only its abstract and section list were reachable offline, so
    equation numbers are not cited and the log-space form below is the METHODS.md row's, which
    marks it 'verify'):
    iterative DPO (the proximal step of :func:`iterative_dpo_step`) taken from the
    *extrapolated* reference, then Nesterov extrapolation

        pi_{t+1}     = prox_eta(pi_hat_t)                       (DPO vs reference pi_hat_t)
        pi_hat_{t+1} ∝ pi_{t+1} (pi_{t+1} / pi_t)^alpha         (log pi_hat = log pi_{t+1}
                                                                  + alpha (log pi_{t+1} - log pi_t))

    with pi_hat_0 = pi_0. ``alpha`` in ``state`` (default 0.3: our choice, not the paper's
    checked value); alpha = 0 is iterative DPO exactly.
    With tau = 0 and pi_0 = mu the iterates are mu exp(c_t r) / Z with
    c_{t+1} - c_t = alpha (c_t - c_{t-1}) + eta, so the per-round step grows towards
    eta / (1 - alpha) (a 1/(1 - alpha) speed-up; the paper's Section 4 proves an accelerated
    rate, whose constants we do not reproduce).
    The returned iterate (the one measured) is pi_{t+1}; pi_hat lives in ``state``.
    """
    alpha = float(state.get("alpha", 0.3))
    anchor = state.get("pi_hat", pi)
    new = _proximal_dpo(anchor, game, eta, _bt_reward(game, state))
    log_new = np.log(np.clip(new, 1e-300, None))
    state["pi_hat"] = _normalise_log(log_new + alpha * (log_new - np.log(pi)))
    return new


@dataclass(frozen=True)
class MethodInfo:
    name: str
    step: Callable
    iterate: str  # "last" or "average": which iterate its paper's guarantee is about
    regularised: bool  # whether it solves the tau > 0 game (False: the tau = 0 game)
    eta: float  # default step size used by run()
    nash_seeking: bool = True
    defaults: dict = field(default_factory=dict)


METHODS: dict[str, MethodInfo] = {
    "nash_md": MethodInfo("nash_md", nash_md_step, "last", True, 0.0, defaults={"schedule": "paper"}),
    "inpo": MethodInfo("inpo", inpo_step, "last", True, 1.0),
    "egpo": MethodInfo("egpo", egpo_step, "last", True, 1.0),
    "online_ipo": MethodInfo("online_ipo", online_ipo_step, "last", True, 0.02),
    "ipo_md": MethodInfo("ipo_md", ipo_md_step, "last", True, 0.02, nash_seeking=False, defaults={"beta": 0.1}),
    "sppo": MethodInfo("sppo", sppo_step, "average", False, 0.05),  # eta: a floor ~ eta * O(1e-2) on the average gap
    "rlhf_bt": MethodInfo("rlhf_bt", rlhf_bt_step, "last", True, 0.5, nash_seeking=False),
    # reward-based (BT) proximal methods: their target is bt_optimum, measured with bt_suboptimality
    "iterative_dpo": MethodInfo("iterative_dpo", iterative_dpo_step, "last", True, 1.0, nash_seeking=False),
    "apo": MethodInfo("apo", apo_step, "last", True, 1.0, nash_seeking=False, defaults={"alpha": 0.3}),
}


@dataclass
class Trace:
    """Exploitability per iteration of the last iterate and of the running average."""

    method: str
    policies: np.ndarray  # (R, n) recorded last iterates
    gap_last: np.ndarray  # (R,)
    gap_average: np.ndarray  # (R,)
    iterate: str  # which one the method's theory is about
    steps: np.ndarray  # (R,) iteration index of each recorded entry

    @property
    def gap(self) -> np.ndarray:
        return self.gap_last if self.iterate == "last" else self.gap_average

    def iterations_to(self, eps: float) -> int | None:
        """First iteration whose (theory-relevant) gap is below eps, or None."""
        hit = np.nonzero(self.gap < eps)[0]
        return int(self.steps[hit[0]]) if hit.size else None


def run(method: str, game: PreferenceGame, iterations: int = 1000, eta: float | None = None,
        init: np.ndarray | None = None, record_every: int = 1, **options) -> Trace:
    """Run ``method`` for ``iterations`` exact updates from ``init`` (default: the reference).

    Methods whose theory is about the unregularised game (``sppo``) are measured on
    the same P with tau = 0. Gaps are recorded every ``record_every`` iterations
    (``Trace.steps`` holds which), since computing them costs more than an update.
    """
    if method not in METHODS:
        raise ConfigError(unknown_name_message("online method", method, METHODS))
    info = METHODS[method]
    measure = game if info.regularised else PreferenceGame(game.P, game.ref, 0.0)
    eta = info.eta if eta is None else eta
    pi = np.array(game.ref if init is None else init, dtype=np.float64)
    state = {**info.defaults, **options}
    pols, steps = [pi], [0]
    running = pi.copy()
    gl, ga = [exploitability(measure, pi)], [exploitability(measure, pi)]
    for t in range(iterations):
        pi = info.step(pi, game, eta, t, state)
        pi = np.clip(pi, 1e-300, None)
        pi = pi / pi.sum()
        running += (pi - running) / (t + 2)
        if (t + 1) % record_every == 0 or t + 1 == iterations:
            steps.append(t + 1)
            pols.append(pi)
            gl.append(exploitability(measure, pi))
            ga.append(exploitability(measure, running))
    return Trace(method, np.array(pols), np.array(gl), np.array(ga), info.iterate, np.array(steps))


def rock_paper_scissors(strengths: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A rock-paper-scissors preference matrix with per-edge win probabilities.

    ``strengths[k]`` scales the margin of the k-th cycle edge (0 beats 1, 1 beats 2,
    2 beats 0): P = 1/2 + strength/2 on the winning side, so (1, 1, 1) is the
    deterministic cycle.
    """
    P = np.full((3, 3), 0.5)
    for (a, b), s in zip(((0, 1), (1, 2), (2, 0)), strengths):
        if not 0 <= s <= 1:
            raise ConfigError("rock-paper-scissors strengths must lie in [0, 1]")
        P[a, b] = 0.5 + s / 2
        P[b, a] = 0.5 - s / 2
    return P


def random_preference_matrix(n: int, rng: np.random.Generator | int = 0) -> np.ndarray:
    """A random (generally intransitive) P: P[i, j] = U(0, 1) above the diagonal, 1 - that below."""
    rng = np.random.default_rng(rng)
    upper = rng.uniform(size=(n, n))
    P = np.triu(upper, 1)
    P = P + np.tril(1 - P.T, -1)
    np.fill_diagonal(P, 0.5)
    return P


def compare(game: PreferenceGame, methods: tuple[str, ...] | None = None, iterations: int = 2000,
            eps: float = 1e-3, record_every: int = 1) -> list[dict]:
    """Run several methods on one game; one row per method, in the order given.

    Each row: method, iterate (last/average), iterations to reach gap < eps (None if
    never), final gap, and whether the method is Nash-seeking.
    """
    rows = []
    for m in methods or tuple(METHODS):
        iters = iterations * (30 if METHODS[m].iterate == "average" else 1)
        tr = run(m, game, iters, record_every=record_every * (30 if METHODS[m].iterate == "average" else 1))
        rows.append({"method": m, "iterate": tr.iterate, "iterations_to_eps": tr.iterations_to(eps),
                     "final_gap": float(tr.gap[-1]), "nash_seeking": METHODS[m].nash_seeking, "trace": tr})
    return rows


def plot_traces(rows: list[dict], path: str, title: str = "exploitability") -> str:
    """Exploitability per iteration (log scale), one line per method; written atomically as PNG."""
    import os
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for row in rows:
        tr = row["trace"]
        game_note = "" if METHODS[row["method"]].regularised else ", tau=0 game"
        ax.semilogy(tr.steps, np.clip(tr.gap, 1e-16, None), label=f"{row['method']} ({tr.iterate}{game_note})")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("iteration")
    ax.set_ylabel("duality gap (exploitability)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=os.path.dirname(os.path.abspath(path)) or ".")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
