"""Hybrid offline-online cooperative preference learning (NeurIPS 2025, OpenReview QVheAhJefR), reduced setting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from preflearn.errors import ConfigError
from preflearn.pbrl.coop import (
    EMPTY,
    ITEM_A,
    ITEM_B,
    LEFT,
    RIGHT,
    STAY,
    ComplementPartner,
    FetchPartner,
    HybridConfig,
    Kitchen,
    KState,
    evaluate,
    feedback_pairs,
    fit_linear_bt,
    fit_style_reward,
    human_games,
    human_utility,
    hybrid_train,
    q_update,
    segment_features,
)


def test_kitchen_dynamics_by_hand():
    k = Kitchen()  # width 7: A at 0, pot at 3, B at 6
    st = k.reset()
    assert st == KState(3, EMPTY, 3, EMPTY, EMPTY)
    for _ in range(3):  # human walks to A, AI walks to B
        st, r, ev = k.step(st, LEFT, RIGHT)
    assert st == KState(0, ITEM_A, 6, ITEM_B, EMPTY) and r == 0
    for _ in range(3):
        st, r, ev = k.step(st, RIGHT, LEFT)
    # both arrive at the pot on the same step: the human's A goes in first, the AI's B completes a soup
    assert st == KState(3, EMPTY, 3, EMPTY, EMPTY) and r == 1.0 and ev == {"soups": 1, "wasted": 0}
    for _ in range(3):
        st, _, _ = k.step(st, LEFT, LEFT)  # both fetch A
    for _ in range(3):
        st, r, ev = k.step(st, RIGHT, RIGHT)
    assert st.pot == ITEM_A and r == 0 and ev["wasted"] == 1  # a duplicate A is wasted
    st2, _, _ = k.step(KState(0, EMPTY, 6, EMPTY, EMPTY), LEFT, RIGHT)  # walls: stay in place, still pick up
    assert st2 == KState(0, ITEM_A, 6, ITEM_B, EMPTY)
    # AI state index and features
    s = k.ai_state(KState(1, ITEM_B, 5, ITEM_A, ITEM_A))
    assert k.decode(s) == (5, ITEM_A, ITEM_A, ITEM_B) and s == ((5 * 3 + 1) * 3 + 1) * 3 + 2
    F = k.features()
    assert F.shape == (7 * 27, 16) and (F.sum(1) == 4).all() and F[s, [5, 8, 11, 15]].tolist() == [1, 1, 1, 1]
    with pytest.raises(ConfigError):
        Kitchen(width=6)


def test_partners_and_utility():
    k = Kitchen()
    rng = np.random.default_rng(0)
    a = FetchPartner(ITEM_A)
    assert a.act(k, 3, EMPTY, EMPTY, rng) == LEFT and a.act(k, 0, ITEM_A, EMPTY, rng) == RIGHT
    assert FetchPartner(ITEM_B).act(k, 3, EMPTY, EMPTY, rng) == RIGHT
    assert FetchPartner(ITEM_A, p_idle=1.0).act(k, 3, EMPTY, EMPTY, rng) == STAY
    c = ComplementPartner()
    assert c.act(k, 3, EMPTY, ITEM_A, rng) == RIGHT and c.act(k, 3, EMPTY, ITEM_B, rng) == LEFT
    # utility = team reward - style_weight * [AI left of the pot]
    assert human_utility(k, 1.0, KState(3, 0, 2, 0, 0), 0.3) == pytest.approx(0.7)
    assert human_utility(k, 0.0, KState(3, 0, 3, 0, 0), 0.3) == 0.0


def test_q_update_by_hand():
    Q = np.zeros((3, 3))
    Q[1] = [0.5, 2.0, -1.0]
    Q[0, 2] = 1.0
    td = q_update(Q, 0, 2, 0.5, 1, False, alpha=0.1, gamma=0.9)
    # target 0.5 + 0.9 * 2.0 = 2.3, TD error 1.3, Q = 1.0 + 0.13
    assert td == pytest.approx(1.3) and Q[0, 2] == pytest.approx(1.13)
    q_update(Q, 2, 0, 1.0, 1, True, alpha=0.5, gamma=0.9)  # terminal: no bootstrap
    assert Q[2, 0] == pytest.approx(0.5)


def test_feedback_labels_follow_the_summed_utility():
    k = Kitchen()
    games = human_games(k, FetchPartner(ITEM_A), per_policy=2, seed=0)
    assert len(games) == 6 and all(len(g.a) == k.horizon for g in games)
    fb = feedback_pairs(k, games, n_pairs=50, seed=0)
    seg = fb.pairs.segments
    assert len(seg) == 6 * 3 and (fb.pairs.a != fb.pairs.b).all()
    ua, ub = seg.rew[fb.pairs.a].sum(1), seg.rew[fb.pairs.b].sum(1)
    expect = np.where(ua > ub, 1.0, np.where(ua < ub, 0.0, 0.5))  # the oracle teacher, written out
    np.testing.assert_array_equal(fb.pairs.label, expect)
    # the env offset is the segment's team reward, and utility <= team reward (the style term is a penalty)
    env = np.array([g.r_env[t:t + 10].sum() for g in games for t in (0, 10, 20)])
    np.testing.assert_allclose(fb.env_return, env)
    assert (seg.rew.sum(1) <= env + 1e-6).all()


def test_linear_bt_matches_an_independent_minimiser():
    rng = np.random.default_rng(0)
    N, F, M = 30, 5, 80
    phi = rng.normal(size=(N, F))
    off = rng.normal(size=N)
    a, b = rng.integers(0, N, M), rng.integers(0, N, M)
    y = (rng.random(M) < 0.5).astype(np.float64)
    y[:5] = 0.5
    l2 = 0.05

    def objective(w):  # mean BCE + l2 |w|^2, numerically stable log(1 + e^x)
        z = (phi[a] - phi[b]) @ w + off[a] - off[b]
        return np.mean(np.logaddexp(0, z) - y * z) + l2 * w @ w

    ref = minimize(objective, np.zeros(F), method="BFGS").x
    w = fit_linear_bt(phi, a, b, y, off, l2=l2, steps=300, lr=0.2)
    np.testing.assert_allclose(w, ref, atol=1e-4)


def test_style_reward_penalises_the_humans_half():
    k = Kitchen()
    games = human_games(k, FetchPartner(ITEM_A, p_idle=0.1), seed=1)
    fb = feedback_pairs(k, games, n_pairs=100, seed=1)
    r_hat, metrics = fit_style_reward(k, fb, seed=1)
    assert metrics["accuracy"] > 0.95
    pos = np.array([k.decode(s)[0] for s in range(k.n_states)])
    left, right = r_hat[pos < k.pot_pos].mean(), r_hat[pos >= k.pot_pos].mean()
    assert left < right - 0.1, (left, right)
    phi = segment_features(k, fb.pairs.segments)
    assert phi.shape == (len(fb.pairs.segments), k.n_features + 3) and (phi[:, -3:].sum(1) == 10).all()
    with pytest.raises(ConfigError, match="unknown style reward model"):
        fit_style_reward(k, fb, model="tree")


def test_hybrid_agent_serves_an_unseen_partner_of_the_human_style_better():
    k = Kitchen()
    pool = [FetchPartner(ITEM_A), FetchPartner(ITEM_B), ComplementPartner()]
    unseen = FetchPartner(ITEM_A, p_idle=0.25)  # the human's style, idles more than in the logged games
    util, viol = {1.0: [], 0.0: []}, {1.0: [], 0.0: []}
    for seed in (0, 1):
        games = human_games(k, FetchPartner(ITEM_A, p_idle=0.1), seed=seed)
        r_hat, _ = fit_style_reward(k, feedback_pairs(k, games, n_pairs=100, seed=seed), seed=seed)
        for lam in (1.0, 0.0):
            Q, curve = hybrid_train(k, pool, games, r_hat if lam else None, HybridConfig(lam=lam), seed=seed)
            assert len(curve) == 1 + HybridConfig().rounds
            e = evaluate(Q, k, unseen)
            util[lam].append(e.utility)
            viol[lam].append(e.style_violations)
    # when written: utility 1.90 / 3.20 with the preference reward vs 0.68 / 0.31 without; steps in the
    # human's half 0 / 0 vs 3.55 / 5.45
    assert np.mean(util[1.0]) > np.mean(util[0.0]) + 1.0, util
    assert np.mean(viol[1.0]) < np.mean(viol[0.0]) - 2.0, viol
