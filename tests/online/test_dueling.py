"""Dueling bandits: winner notions by hand, regret definitions, and the learners on seeded instances."""

from __future__ import annotations

import numpy as np
import pytest

from preflearn.errors import ConfigError
from preflearn.online import dueling as D


def _matrix(K, wins):
    """P from {(i, j): P(i beats j)}; unlisted pairs 1/2."""
    P = np.full((K, K), 0.5)
    for (i, j), p in wins.items():
        P[i, j], P[j, i] = p, 1 - p
    return P


# arm 2 beats everyone: a Condorcet instance (a utility order 2 > 0 > 3 > 1 with a cycle-free P)
CONDORCET = _matrix(4, {(2, 0): 0.6, (2, 1): 0.9, (2, 3): 0.7, (0, 1): 0.8, (0, 3): 0.55, (3, 1): 0.65})
# no Condorcet winner: 4 beats 0, but 0 has the most wins (Copeland 3) and the highest Borda score
COPELAND = _matrix(5, {(0, 1): .8, (0, 2): .8, (0, 3): .8, (4, 0): .8, (1, 2): .7, (1, 3): .7, (4, 1): .7,
                       (2, 3): .7, (2, 4): .7, (3, 4): .7})
# strong BT-like Condorcet instance for the regret-growth test
_u = np.array([0.9, 0.6, 0.5, 0.3, 0.1, 0.0])
BT6 = 1 / (1 + np.exp(-3 * (_u[:, None] - _u[None, :])))


def test_winners_by_hand():
    assert D.condorcet_winner(CONDORCET) == 2
    # Copeland: arm 0 beats 1 and 3 (0.8, 0.55), arm 3 beats 1, arm 1 none, arm 2 all three
    assert D.copeland_scores(CONDORCET).tolist() == [2, 0, 3, 1]
    # Borda: (P[i].sum() - 1/2) / 3
    np.testing.assert_allclose(D.borda_scores(CONDORCET), [(0.4 + 0.8 + 0.55) / 3, (0.1 + 0.2 + 0.35) / 3,
                                                          (0.6 + 0.9 + 0.7) / 3, (0.3 + 0.45 + 0.65) / 3])
    assert D.condorcet_winner(COPELAND) is None
    # 0 beats 1, 2, 3; 1 beats 2, 3; 2 beats 3, 4; 3 beats 4; 4 beats 0, 1
    assert D.copeland_scores(COPELAND).tolist() == [3, 2, 2, 1, 2]
    assert D.copeland_winners(COPELAND) == [0]
    assert D.borda_winner(COPELAND) == 0  # (0.8 * 3 + 0.2) / 4 = 0.65


def test_rock_paper_scissors_has_no_condorcet_winner_and_tied_copeland():
    P = _matrix(3, {(0, 1): 0.9, (1, 2): 0.9, (2, 0): 0.9})
    assert D.condorcet_winner(P) is None and D.copeland_winners(P) == [0, 1, 2]
    with pytest.raises(ConfigError, match="no Condorcet winner"):
        D.gaps(P, "condorcet")


def test_gaps_and_regret_definitions():
    np.testing.assert_allclose(D.gaps(CONDORCET), [0.1, 0.4, 0.0, 0.2])
    np.testing.assert_allclose(D.gaps(COPELAND, "copeland"), [0, 0.25, 0.25, 0.5, 0.25])  # (3 - cpld) / 4
    tr = D.run("rucb", CONDORCET, 50, seed=0)
    g = D.gaps(CONDORCET)
    i, j = tr.pairs[:, 0], tr.pairs[:, 1]
    np.testing.assert_allclose(tr.strong_regret, (g[i] + g[j]) / 2)
    np.testing.assert_allclose(tr.weak_regret, np.minimum(g[i], g[j]))
    assert np.all(tr.weak_regret <= tr.strong_regret + 1e-15)


def test_environment_draws_with_P():
    env = D.DuelingBandit(CONDORCET, seed=0)
    assert np.mean([env.duel(0, 1) for _ in range(4000)]) == pytest.approx(0.8, abs=0.02)


def test_rucb_regret_is_sublinear_and_it_finds_the_condorcet_winner():
    """Cumulative strong regret of RUCB (alpha = 0.51) on BT6: measured R(1000) = 54 / 46 / 76,
    R(4000) = 65 / 60 / 83 over seeds 0-2 (ratio 1.1-1.3; linear regret would give 4)."""
    for seed in (0, 1):
        tr = D.run("rucb", BT6, 4000, seed=seed)
        c = tr.cumulative("strong")
        assert c[-1] / c[999] < 2.5, (c[999], c[-1])
        assert tr.recommendation == D.condorcet_winner(BT6) == 0
        assert np.mean(tr.pairs[-1000:] == 0) > 0.9  # late duels are (almost all) the winner itself


def test_interleaved_filter_settles_on_the_winner_and_stops_paying():
    tr = D.run("if", BT6, 4000, seed=0)
    c = tr.cumulative()
    assert tr.recommendation == 0 and c[-1] == pytest.approx(c[999])
    assert np.all(tr.pairs[-100:] == 0)


def test_beat_the_mean_eliminates_with_a_smaller_constant():
    """BTM with the paper's c = 3 sqrt(log(1/delta)/n) eliminates nothing in 4000 duels on BT6
    (regret grows linearly); with c_scale = 1 it keeps the winner and its regret flattens."""
    tr = D.run("btm", BT6, 4000, seed=0, c_scale=1.0)
    c = tr.cumulative()
    assert tr.recommendation == 0 and c[-1] / c[999] < 2.5


def test_copeland_ucb_targets_the_copeland_winner_where_rucb_cannot():
    """No Condorcet winner: Copeland regret of CCB flattens (measured ratio ~1.2) and it
    recommends arm 0; RUCB, which looks for a Condorcet winner, keeps paying (ratio > 3)."""
    ccb = D.run("ccb", COPELAND, 4000, seed=0, notion="copeland")
    c = ccb.cumulative()
    assert ccb.recommendation == 0 and c[-1] / c[999] < 2.0
    rucb = D.run("rucb", COPELAND, 4000, seed=0, notion="copeland").cumulative()
    assert rucb[-1] / rucb[999] > 3.0


def test_bad_input():
    with pytest.raises(ConfigError, match="unknown dueling-bandit algorithm"):
        D.run("ruc", CONDORCET, 10)
    with pytest.raises(ConfigError, match="P \\+ P.T = 1"):
        D.condorcet_winner(np.array([[0.5, 0.9], [0.9, 0.5]]))
    with pytest.raises(ConfigError, match="alpha > 1/2"):
        D.run("rucb", CONDORCET, 10, alpha=0.5)
