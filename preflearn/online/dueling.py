"""Dueling bandits: online learning from pairwise comparisons of K arms.

Follows the survey of Bengs, Busa-Fekete, El Mesaoudi-Paul & Hüllermeier 2021,
"Preference-based Online Learning with Dueling Bandits: A Survey", JMLR 22(7)
(arXiv:1807.11398): a learner picks a pair (i, j) of arms each round and sees only
which one won, drawn with probability ``P[i, j]`` (``P + P.T = 1``).

Winners (survey Section 3 / 4)
------------------------------
* Condorcet winner: the arm i with P[i, j] > 1/2 for every j != i (may not exist).
* Copeland winner: maximises cpld(i) = #{j != i : P[i, j] > 1/2} (always exists).
* Borda winner: maximises B(i) = (1 / (K - 1)) sum_{j != i} P[i, j] (always exists).

Regret of a duel (i, j) against the target winner i* (survey Section 3.1.3), with the gap
Delta_i of arm i to the winner:

* strong (average) regret: (Delta_i + Delta_j) / 2   (Yue et al. 2012, Sec. 2.1; RUCB)
* weak regret:             min(Delta_i, Delta_j)     (Yue et al. 2012)

Delta_i = P[i*, i] - 1/2 for the Condorcet notion; (cpld(i*) - cpld(i)) / (K - 1) for
Copeland (Zoghi et al. 2015, Sec. 2); B(i*) - B(i) for Borda.

Algorithms (each a small stateful class: ``select() -> (i, j)``, ``update(i, j, i_won)``,
``recommend() -> arm``)

* :class:`InterleavedFilter` -- Yue, Broder, Kleinberg & Joachims 2012, "The K-armed Dueling
  Bandits Problem", J. Comput. Syst. Sci. 78(5) (IF1 / IF2, Algorithms 1-2).
* :class:`BeatTheMean` -- Yue & Joachims 2011, "Beat the Mean Bandit", ICML (Algorithm 1, online).
* :class:`RUCB` -- Zoghi, Whiteson, Munos & de Rijke 2014, "Relative Upper Confidence Bound for
  the K-Armed Dueling Bandit Problem", ICML, arXiv:1312.3393 (Algorithm 1).
* :class:`CopelandUCB` -- a simplified Copeland Confidence Bound after Zoghi, Karnin, Whiteson &
  de Rijke 2015, "Copeland Dueling Bandits", NeurIPS, arXiv:1506.00312 (CCB, Algorithm 1):
  the champion maximises the *optimistic* Copeland score, the challenger is RUCB's; CCB's
  B-sets and lower-bound bookkeeping are left out (so its regret bound is not claimed).

Algorithm and section numbers are as recalled from the papers (not reachable offline beyond
their abstracts); each rule is written out in its class docstring and tested on seeded instances.
Everything is numpy; runs are seeded (``np.random.default_rng(seed)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, unknown_name_message

__all__ = [
    "condorcet_winner",
    "copeland_scores",
    "copeland_winners",
    "borda_scores",
    "borda_winner",
    "gaps",
    "DuelingBandit",
    "InterleavedFilter",
    "BeatTheMean",
    "RUCB",
    "CopelandUCB",
    "ALGORITHMS",
    "DuelTrace",
    "run",
]


def _check(P: np.ndarray) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2:
        raise ConfigError(f"P must be a square matrix over >= 2 arms, got shape {P.shape}")
    if np.any(P < 0) or np.any(P > 1) or not np.allclose(P + P.T, 1.0, atol=1e-9):
        raise ConfigError("P must hold probabilities with P + P.T = 1")
    return P


# ----------------------------------------------------------------------------- winners
def condorcet_winner(P: np.ndarray) -> int | None:
    """The arm beating every other with probability > 1/2, or None."""
    P = _check(P)
    off = ~np.eye(P.shape[0], dtype=bool)
    wins = np.all((P > 0.5) | ~off, axis=1)
    idx = np.flatnonzero(wins)
    return int(idx[0]) if idx.size else None


def copeland_scores(P: np.ndarray) -> np.ndarray:
    """(K,) cpld(i) = number of arms i beats with probability > 1/2."""
    P = _check(P)
    return ((P > 0.5) & ~np.eye(P.shape[0], dtype=bool)).sum(1)


def copeland_winners(P: np.ndarray) -> list[int]:
    s = copeland_scores(P)
    return [int(i) for i in np.flatnonzero(s == s.max())]


def borda_scores(P: np.ndarray) -> np.ndarray:
    """(K,) B(i) = mean over j != i of P[i, j]."""
    P = _check(P)
    K = P.shape[0]
    return (P.sum(1) - np.diag(P)) / (K - 1)


def borda_winner(P: np.ndarray) -> int:
    return int(np.argmax(borda_scores(P)))


def gaps(P: np.ndarray, notion: str = "condorcet") -> np.ndarray:
    """(K,) Delta_i >= 0 of every arm to the winner under ``notion`` (0 for the winner)."""
    P = _check(P)
    if notion == "condorcet":
        w = condorcet_winner(P)
        if w is None:
            raise ConfigError("P has no Condorcet winner; use notion='copeland' or 'borda'")
        d = P[w] - 0.5
        d[w] = 0.0
        return d
    if notion == "copeland":
        s = copeland_scores(P)
        return (s.max() - s) / (P.shape[0] - 1)
    if notion == "borda":
        b = borda_scores(P)
        return b.max() - b
    raise ConfigError(unknown_name_message("winner notion", notion, ("condorcet", "copeland", "borda")))


# ----------------------------------------------------------------------------- environment
class DuelingBandit:
    """Stochastic duels from P: ``duel(i, j)`` is True when i wins (probability P[i, j])."""

    def __init__(self, P: np.ndarray, seed: int | np.random.Generator = 0):
        self.P = _check(P)
        self.K = self.P.shape[0]
        self.rng = np.random.default_rng(seed)

    def duel(self, i: int, j: int) -> bool:
        if i == j:
            return bool(self.rng.uniform() < 0.5)
        return bool(self.rng.uniform() < self.P[i, j])


# ----------------------------------------------------------------------------- algorithms
class InterleavedFilter:
    """Interleaved Filter (Yue et al. 2012, Algorithms 1-2).

    A candidate b_hat duels every remaining arm round-robin; with n duels of the pair, the
    estimate P_hat(b_hat > b) and confidence radius c = sqrt(log(1 / delta) / n),
    delta = 1 / (T K^2):

    * P_hat - c > 1/2: b_hat beats b, b leaves the set;
    * P_hat + c < 1/2: b beats b_hat: (IF2, ``prune=True``) every b' with P_hat(b_hat > b') > 1/2
      leaves too, b becomes the candidate and the estimates restart.

    When no arm remains, b_hat is played against itself (zero regret if it is the winner).
    """

    def __init__(self, K: int, horizon: int, rng: np.random.Generator, prune: bool = True):
        self.K, self.rng, self.prune = K, rng, prune
        self.log_inv_delta = math.log(max(horizon, 2) * K * K)
        self.best = int(rng.integers(K))
        self.remaining = [b for b in range(K) if b != self.best]
        self._reset()

    def _reset(self) -> None:
        self.wins = np.zeros(self.K)
        self.n = np.zeros(self.K)
        self._order = list(self.remaining)
        self._pos = 0

    def select(self) -> tuple[int, int]:
        if not self.remaining:
            return self.best, self.best
        b = self._order[self._pos % len(self._order)]
        self._pos += 1
        return self.best, b

    def update(self, i: int, j: int, i_won: bool) -> None:
        if i == j or j not in self.remaining:
            return
        self.n[j] += 1
        self.wins[j] += float(i_won)
        p, c = self.wins[j] / self.n[j], math.sqrt(self.log_inv_delta / self.n[j])
        if p - c > 0.5:
            self.remaining.remove(j)
            self._order = [b for b in self._order if b != j]
        elif p + c < 0.5:
            if self.prune:
                seen = self.n > 0
                self.remaining = [b for b in self.remaining if not (seen[b] and self.wins[b] / self.n[b] > 0.5)]
            self.remaining = [b for b in self.remaining if b != j]
            self.best = j
            self._reset()

    def recommend(self) -> int:
        return self.best


class BeatTheMean:
    """Beat-the-Mean, online setting (Yue & Joachims 2011, Algorithm 1).

    Among the working set W, the arm b with the fewest comparisons duels a uniformly drawn
    b' in W; P_hat_b = (wins of b against W) / (its comparisons against W). With
    n* = min_b n_b and c = c_scale * gamma^2 sqrt(log(1 / delta) / n*), delta = 1 / (2 T K):
    if min P_hat + c <= max P_hat - c, the arm with the lowest P_hat leaves W and every
    comparison against it is forgotten. Once |W| = 1 that arm is played against itself.
    ``c_scale`` = 3 is the paper's constant (its gamma: relaxed stochastic transitivity).
    """

    def __init__(self, K: int, horizon: int, rng: np.random.Generator, gamma: float = 1.0, c_scale: float = 3.0):
        self.K, self.rng = K, rng
        self.W = list(range(K))
        self.pair_wins = np.zeros((K, K))  # pair_wins[b, b'] = wins of b over b'
        self.pair_n = np.zeros((K, K))
        self.coef = c_scale * gamma**2
        self.log_inv_delta = math.log(2 * max(horizon, 2) * K)

    def select(self) -> tuple[int, int]:
        if len(self.W) == 1:
            return self.W[0], self.W[0]
        W = np.array(self.W)
        n = self.pair_n[np.ix_(W, W)].sum(1)
        cands = W[n == n.min()]
        b = int(self.rng.choice(cands))
        return b, int(self.rng.choice(W))

    def update(self, i: int, j: int, i_won: bool) -> None:
        if len(self.W) == 1:
            return
        self.pair_n[i, j] += 1
        self.pair_wins[i, j] += float(i_won)
        W = np.array(self.W)
        n = self.pair_n[np.ix_(W, W)].sum(1)
        if n.min() == 0:
            return
        p = self.pair_wins[np.ix_(W, W)].sum(1) / n
        c = self.coef * math.sqrt(self.log_inv_delta / n.min())
        if p.min() + c <= p.max() - c:
            worst = int(W[np.argmin(p)])
            self.W.remove(worst)

    def recommend(self) -> int:
        if len(self.W) == 1:
            return self.W[0]
        W = np.array(self.W)
        n = np.maximum(self.pair_n[np.ix_(W, W)].sum(1), 1)
        return int(W[np.argmax(self.pair_wins[np.ix_(W, W)].sum(1) / n)])


def _ucb(wins: np.ndarray, t: int, alpha: float) -> np.ndarray:
    """U_ij = w_ij / N_ij + sqrt(alpha log t / N_ij), N = w + w^T, x / 0 := 1; U_ii = 1/2."""
    N = wins + wins.T
    with np.errstate(divide="ignore", invalid="ignore"):
        U = np.where(N > 0, wins / N + np.sqrt(alpha * math.log(max(t, 1)) / N), 1.0)
    np.fill_diagonal(U, 0.5)
    return U


class RUCB:
    """Relative Upper Confidence Bound (Zoghi et al. 2014, arXiv:1312.3393, Algorithm 1).

    Round t: U = optimistic estimates (:func:`_ucb`, alpha > 1/2, default 0.51);
    C = {c : U_cj >= 1/2 for all j} (potential Condorcet winners). If C is empty, c is uniform
    over all arms; if |C| = 1 the hypothesis B = C; otherwise c is drawn from C with
    probability 1/2 for the hypothesised best arm in B (B = B ∩ C, kept between rounds) and the
    rest spread uniformly. The opponent d = argmax_j U_jc (ties at random) -- the arm most
    likely to beat c; a tie is broken at random but not towards c itself, so d = c only when
    every other arm's U_jc is below 1/2 (c is then compared with itself at no strong regret).
    """

    def __init__(self, K: int, horizon: int, rng: np.random.Generator, alpha: float = 0.51):
        if alpha <= 0.5:
            raise ConfigError(f"RUCB needs alpha > 1/2, got {alpha}")
        self.K, self.rng, self.alpha = K, rng, alpha
        self.wins = np.zeros((K, K))
        self.t = 0
        self.B: set[int] = set()
        self.champions = np.zeros(K)  # how often each arm was picked as c

    def _champion(self, U: np.ndarray) -> int:
        C = [c for c in range(self.K) if np.all(U[c] >= 0.5)]
        if not C:
            return int(self.rng.integers(self.K))
        self.B &= set(C)
        if len(C) == 1:
            self.B = set(C)
            return C[0]
        if self.B and self.rng.uniform() < 0.5:
            return int(next(iter(self.B)))
        rest = [c for c in C if c not in self.B]
        return int(self.rng.choice(rest if rest else C))

    def select(self) -> tuple[int, int]:
        self.t += 1
        U = _ucb(self.wins, self.t, self.alpha)
        c = self._champion(U)
        col = U[:, c]
        ties = np.flatnonzero(col == col.max())
        if ties.size > 1:  # a tie may not pick c itself (Algorithm 1, line 9)
            ties = ties[ties != c]
        d = int(self.rng.choice(ties))
        self.champions[c] += 1
        return c, d

    def update(self, i: int, j: int, i_won: bool) -> None:
        if i != j:
            w, lo = (i, j) if i_won else (j, i)
            self.wins[w, lo] += 1

    def recommend(self) -> int:
        """The arm picked as champion most often."""
        return int(np.argmax(self.champions))


class CopelandUCB(RUCB):
    """Simplified CCB (after Zoghi et al. 2015, arXiv:1506.00312): champion c from
    argmax_i #{j : U_ij > 1/2} (optimistic Copeland score, ties at random), opponent RUCB's
    argmax_{j != c} U_jc among the arms whose duel with c is unresolved
    (L_cj = 1 - U_jc <= 1/2 <= U_cj), else c itself. Targets the Copeland winner when no Condorcet
    winner exists."""

    def select(self) -> tuple[int, int]:
        self.t += 1
        U = _ucb(self.wins, self.t, self.alpha)
        opt = ((U > 0.5) & ~np.eye(self.K, dtype=bool)).sum(1)
        c = int(self.rng.choice(np.flatnonzero(opt == opt.max())))
        # opponents whose duel with c is unresolved: L_cj = 1 - U_jc <= 1/2 <= U_cj
        unsure = [j for j in range(self.K) if j != c and 1.0 - U[j, c] <= 0.5 <= U[c, j]]
        if unsure:
            col = U[unsure, c]
            d = int(unsure[int(self.rng.choice(np.flatnonzero(col == col.max())))])
        else:
            d = c  # every pairwise outcome of c is resolved: play the champion
        self.champions[c] += 1
        return c, d


ALGORITHMS = {"if": InterleavedFilter, "btm": BeatTheMean, "rucb": RUCB, "ccb": CopelandUCB}


@dataclass
class DuelTrace:
    """One run: the pairs played (T, 2), who won, per-round strong/weak regret, the recommendation."""

    algorithm: str
    pairs: np.ndarray
    first_won: np.ndarray
    strong_regret: np.ndarray
    weak_regret: np.ndarray
    recommendation: int

    def cumulative(self, kind: str = "strong") -> np.ndarray:
        return np.cumsum(self.strong_regret if kind == "strong" else self.weak_regret)


def run(algorithm: str, P: np.ndarray, horizon: int, seed: int = 0, notion: str = "condorcet",
        **options) -> DuelTrace:
    """Run ``algorithm`` for ``horizon`` duels on P; regret against the ``notion`` winner."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(unknown_name_message("dueling-bandit algorithm", algorithm, ALGORITHMS))
    if horizon < 1:
        raise ConfigError(f"horizon must be >= 1, got {horizon}")
    env = DuelingBandit(P, seed)
    delta = gaps(env.P, notion)
    learner = ALGORITHMS[algorithm](env.K, horizon, np.random.default_rng(seed + 1), **options)
    pairs = np.zeros((horizon, 2), dtype=np.int64)
    won = np.zeros(horizon, dtype=bool)
    for t in range(horizon):
        i, j = learner.select()
        w = env.duel(i, j)
        learner.update(i, j, w)
        pairs[t] = (i, j)
        won[t] = w
    di, dj = delta[pairs[:, 0]], delta[pairs[:, 1]]
    return DuelTrace(algorithm, pairs, won, (di + dj) / 2, np.minimum(di, dj), learner.recommend())
