"""SPPO / XPO / RLOO / GRPO losses against hand computations, gradient checks and a bandit."""

from __future__ import annotations

import math

import pytest
import torch

import preflearn.losses as L
from preflearn.errors import ConfigError
from preflearn.losses.base import Scores
from preflearn.online import objectives as O

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def test_registered_with_papers():
    for name, arxiv in (("sppo", "2405.00675"), ("xpo", "2405.21046"), ("rloo", "2402.14740"), ("grpo", "2402.03300"),
                        ("p3o", "2310.00212")):
        assert name in L.names() and L.spec(name).arxiv == arxiv and arxiv in L.get(name).__doc__


# ----------------------------------------------------------------------------- SPPO
def test_sppo_by_hand_and_gradient():
    # one prompt, K = 3: h = logps - ref = (0.5, -1, 0); targets eta (p - 1/2) with eta = 2, p = (0.9, 0.2, 0.5)
    lp = t([[-1.0, -3.0, -2.0]]).requires_grad_()
    s = Scores(logps=lp, ref_logps=t([[-1.5, -2.0, -2.0]]), rewards=t([[0.9, 0.2, 0.5]]))
    out = L.compute("sppo", s, eta=2.0)
    # targets (0.8, -0.6, 0); residuals (-0.3, -0.4, 0); loss = (0.09 + 0.16 + 0) / 3
    assert float(out.loss.detach()) == pytest.approx(0.25 / 3)
    out.loss.backward()
    # d/dh (1/3) sum (h - target)^2 = (2/3) residual
    torch.testing.assert_close(lp.grad, t([[-0.2, -0.8 / 3, 0.0]]))
    with pytest.raises(ConfigError, match="win probabilities"):
        L.compute("sppo", Scores(logps=lp.detach(), ref_logps=lp.detach(), rewards=t([[1.5, 0.0, 0.0]])))


def test_sppo_fixed_point_is_the_multiplicative_weights_update():
    """Minimising over a free tabular policy reproduces log pi_{t+1}/pi_t = eta (P_hat - 1/2), the update
    the SPPO loss regresses onto (Hedge with log Z replaced by eta/2)."""
    p = t([[0.7, 0.4, 0.5]])
    h = torch.zeros(1, 3, dtype=D, requires_grad=True)
    opt = torch.optim.SGD([h], lr=1.0)
    for _ in range(200):
        opt.zero_grad()
        L.compute("sppo", Scores(logps=h, ref_logps=torch.zeros(1, 3, dtype=D), rewards=p), eta=3.0).loss.backward()
        opt.step()
    torch.testing.assert_close(h.detach(), 3.0 * (p - 0.5))


# ----------------------------------------------------------------------------- XPO
def test_xpo_is_dpo_plus_the_exploration_term():
    lp = t([[-1.0, -2.0]]).requires_grad_()
    ex = t([[-4.0]]).requires_grad_()
    s = Scores(logps=lp, ref_logps=t([[-1.5, -1.0]]), aux={"explore_logps": ex})
    out = L.compute("xpo", s, beta=0.5, alpha=0.1)
    # DPO: z = 0.5 * ((0.5) - (-1.0)) = 0.75; -log sigmoid(0.75) = log(1 + e^-0.75)
    dpo = math.log1p(math.exp(-0.75))
    assert float(out.loss.detach()) == pytest.approx(dpo + 0.1 * -4.0)
    out.loss.backward()
    sig = 1 / (1 + math.exp(0.75))  # 1 - sigmoid(0.75)
    torch.testing.assert_close(lp.grad, t([[-0.5 * sig, 0.5 * sig]]))
    torch.testing.assert_close(ex.grad, t([[0.1]]))
    dpo_out = L.compute("dpo", Scores(logps=lp.detach(), ref_logps=t([[-1.5, -1.0]])), beta=0.5)
    assert float(L.compute("xpo", s, beta=0.5, alpha=0.0).loss.detach()) == pytest.approx(float(dpo_out.loss))


# ----------------------------------------------------------------------------- RLOO
def test_leave_one_out_advantages_by_hand():
    # baselines: (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5
    torch.testing.assert_close(O.leave_one_out_advantages(t([[1.0, 2.0, 6.0]])), t([[-3.0, -1.5, 4.5]]))
    with pytest.raises(ConfigError):
        O.leave_one_out_advantages(t([[1.0]]))


def test_rloo_with_kl_shaped_reward_by_hand():
    lp = t([[-1.0, -2.0, -3.0]]).requires_grad_()
    s = Scores(logps=lp, ref_logps=t([[-1.5, -2.0, -2.0]]), rewards=t([[1.0, 2.0, 6.0]]))
    out = L.compute("rloo", s, beta=0.5)
    # log-ratios (0.5, 0, -1) -> R = (1 - 0.25, 2, 6 + 0.5) = (0.75, 2, 6.5)
    # A = R - LOO mean: 0.75 - 4.25 = -3.5; 2 - 3.625 = -1.625; 6.5 - 1.375 = 5.125
    A = [-3.5, -1.625, 5.125]
    torch.testing.assert_close(out.rewards, t([[0.75, 2.0, 6.5]]))
    assert float(out.loss.detach()) == pytest.approx(-sum(a * x for a, x in zip(A, [-1.0, -2.0, -3.0])) / 3)
    out.loss.backward()
    torch.testing.assert_close(lp.grad, -t([A]) / 3)


def test_rloo_gradcheck_without_kl():
    lp = torch.randn(3, 4, dtype=D, requires_grad=True)
    r = torch.randn(3, 4, dtype=D)
    assert torch.autograd.gradcheck(lambda x: L.compute("rloo", Scores(logps=x, rewards=r)).loss, (lp,))


def test_rloo_gradient_is_unbiased_for_the_policy_gradient():
    """Softmax bandit: the mean RLOO gradient over many groups equals grad E_pi[r] = pi (r - E_pi r)."""
    g = torch.Generator().manual_seed(0)
    theta = t([0.3, -0.2, 0.1]).requires_grad_()
    r = t([1.0, 0.0, 2.5])
    B, K = 40000, 4
    logpi = torch.log_softmax(theta, 0)
    arms = torch.multinomial(logpi.exp().detach().expand(B, 3), K, replacement=True, generator=g)  # (B, K)
    out = L.compute("rloo", Scores(logps=logpi[arms], rewards=r[arms]))
    (grad,) = torch.autograd.grad(out.loss, theta)
    pi = logpi.exp().detach()
    exact = pi * (r - (pi * r).sum())
    torch.testing.assert_close(-grad, exact, atol=0.01, rtol=0)


# ----------------------------------------------------------------------------- GRPO
def test_group_advantages_and_k3_by_hand():
    # mean 3, unbiased std sqrt(((-2)^2 + (-1)^2 + 3^2) / 2) = sqrt(7)
    torch.testing.assert_close(O.group_advantages(t([[1.0, 2.0, 6.0]]), eps=0.0),
                               t([[-2.0, -1.0, 3.0]]) / math.sqrt(7))
    torch.testing.assert_close(O.group_advantages(t([[1.0, 2.0, 6.0]]), scale=False), t([[-2.0, -1.0, 3.0]]))
    assert float(O.group_advantages(t([[2.0, 2.0]])).abs().max()) == 0.0
    # k3 at log pi = -1, log pi_ref = -2: d = -1 -> e^-1 + 1 - 1
    assert float(O.k3_kl(t(-1.0), t(-2.0))) == pytest.approx(math.exp(-1.0))
    assert float(O.k3_kl(t(-1.0), t(-1.0))) == 0.0


def _grpo_scores(tok, old=None):
    mask = t([[[1, 1, 0], [1, 1, 1]]])
    ref = t([[[-1.0, -1.0, 0.0], [-2.0, -1.0, -1.0]]])
    aux = {} if old is None else {"old_token_logps": old}
    return Scores(logps=(tok * mask).sum(-1), ref_logps=(ref * mask).sum(-1), token_logps=tok, ref_token_logps=ref, mask=mask,
                  rewards=t([[1.0, 0.0]]), aux=aux)


def test_grpo_by_hand_with_a_clipped_token():
    tok = t([[[-1.0, -0.5, 0.0], [-2.0, -1.5, -1.0]]]).requires_grad_()
    old = t([[[-1.0, -1.0, 0.0], [-2.0, -1.0, -1.0]]])
    out = L.compute("grpo", _grpo_scores(tok, old), beta=0.1, epsilon=0.2)
    # K = 2, rewards (1, 0): mean 0.5, unbiased std sqrt(0.5) -> A = +-0.5/sqrt(0.5) = +-sqrt(0.5) (eps 1e-4)
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    # sample 0 (A = +a), tokens 0, 1: ratio 1 and e^0.5 = 1.6487 -> clipped to 1.2 (min picks the clip for A > 0)
    #   KL: token 0: d = 0 -> 0; token 1: d = -1 - (-0.5) = -0.5 -> e^-0.5 + 0.5 - 1
    kl01 = math.exp(-0.5) - 0.5
    s0 = -((1.0 * a - 0.0) + (1.2 * a - 0.1 * kl01)) / 2
    # sample 1 (A = -a), tokens 0..2: ratios 1, e^-0.5 = 0.6065 (clip 0.8: min(-0.6065a, -0.8a) = -0.8a), 1
    #   KL: d = 0, -1 - (-1.5) = 0.5 -> e^0.5 - 0.5 - 1, 0
    kl11 = math.exp(0.5) - 1.5
    s1 = -((-a) + (-0.8 * a - 0.1 * kl11) + (-a)) / 3
    assert float(out.loss.detach()) == pytest.approx((s0 + s1) / 2, rel=1e-12)
    out.loss.backward()
    # clipped tokens get only the KL gradient: d/dlogp [beta k3] = beta (1 - e^d) / |o| / K
    assert float(tok.grad[0, 0, 1]) == pytest.approx(0.1 * (1 - math.exp(-0.5)) / 2 / 2)
    assert float(tok.grad[0, 1, 1]) == pytest.approx(0.1 * (1 - math.exp(0.5)) / 3 / 2)
    # unclipped token with ratio 1, no KL: -A / |o| / K
    assert float(tok.grad[0, 0, 0]) == pytest.approx(-a / 2 / 2)
    assert float(tok.grad[0, 0, 2]) == 0.0  # masked
    assert float(out.metrics["clip_fraction"]) == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_grpo_gradcheck_with_fixed_old_logps_and_on_policy_equals_rloo_direction():
    g = torch.Generator().manual_seed(1)
    tok = (-0.5 - torch.rand(1, 2, 3, generator=g, dtype=D)).requires_grad_()
    old = tok.detach() + 0.05 * torch.randn(1, 2, 3, generator=g, dtype=D)
    assert torch.autograd.gradcheck(lambda x: L.compute("grpo", _grpo_scores(x, old)).loss, (tok,))
    # on-policy (no old): value -mean(A) + beta KL; at beta 0 it is 0 and its gradient is -A/|o|/K per token
    x = tok.detach().clone().requires_grad_()
    out = L.compute("grpo", _grpo_scores(x), beta=0.0)
    assert float(out.loss.detach()) == pytest.approx(0.0, abs=1e-12)
    out.loss.backward()
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(x.grad, t([[[-a / 4, -a / 4, 0.0], [a / 6, a / 6, a / 6]]]))


# ----------------------------------------------------------------------------- INPO
def test_inpo_by_hand():
    lp = t([[-1.0, -3.0]]).requires_grad_()
    s = Scores(logps=lp, ref_logps=t([[-2.0, -2.0]]), aux={"previous_logps": t([[-1.5, -2.5]])})
    out = L.compute("inpo", s, eta=4.0, tau=0.125)  # eta tau = 0.5
    # h = (2) - 0.5 (0) - 0.5 (1) = 1.5; loss = (1.5 - 2)^2
    assert float(out.loss.detach()) == pytest.approx(0.25)
    out.loss.backward()
    torch.testing.assert_close(lp.grad, t([[-1.0, 1.0]]))  # 2 (h - eta/2) = -1, times dh/dlogp = (1, -1)
    with pytest.raises(ConfigError, match="eta \\* tau"):
        L.compute("inpo", s, eta=4.0, tau=0.5)


def test_inpo_population_minimiser_is_the_tabular_mirror_descent_step():
    """Over a free tabular policy, the INPO loss in expectation (pairs y, y' ~ pi_t, winner drawn from P)
    is minimised by the game's exact INPO update pi_t^(1 - eta tau) mu^(eta tau) exp(eta P(y > pi_t))."""
    import numpy as np

    from preflearn.online import game as G

    n, eta, tau = 4, 2.0, 0.1
    rng = np.random.default_rng(3)
    game = G.PreferenceGame(G.random_preference_matrix(n, 3), rng.dirichlet(np.ones(n)), tau)
    pi_t = rng.dirichlet(np.ones(n))
    target = G.inpo_step(pi_t, game, eta, 0, {})
    yw, yl = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    keep = yw != yl
    yw, yl = yw[keep], yl[keep]
    weights = t(pi_t[yw] * pi_t[yl] * game.P[yw, yl])  # the pair (y, y') drawn, then y wins
    ref, prev = t(np.log(game.ref)), t(np.log(pi_t))
    logits = torch.zeros(n, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([logits], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        lp = torch.log_softmax(logits, 0)
        s = Scores(logps=torch.stack([lp[yw], lp[yl]], 1), ref_logps=torch.stack([ref[yw], ref[yl]], 1),
                   weights=weights, aux={"previous_logps": torch.stack([prev[yw], prev[yl]], 1)})
        loss = L.compute("inpo", s, eta=eta, tau=tau).loss
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(torch.softmax(logits, 0).detach().numpy(), target, atol=1e-6)


# ----------------------------------------------------------------------------- P3O
def _p3o(lp, old, rewards, ref=None, **hp):
    s = Scores(logps=lp, rewards=rewards, ref_logps=ref, aux={"old_logps": old})
    return L.compute("p3o", s, **hp)


def test_p3o_by_hand_both_clip_forms():
    # one prompt, rho = (1.5, 0.9) -> joint weight w = 1.35; r = (2, 1) -> Q = 1; eps 0.2
    old = t([[-2.0, -3.0]])
    lp = (old + t([[math.log(1.5), math.log(0.9)]])).requires_grad_()
    l1, l2 = -2.0 + math.log(1.5), -3.0 + math.log(0.9)
    out = _p3o(lp, old, t([[2.0, 1.0]]), clip="joint")
    # d = l1 - l2 = 1.51 leaves [d_old - 0.2, d_old + 0.2] = [0.8, 1.2]: max(-1.35 * 1.51, -1.35 * 1.2) = -1.62 (clipped)
    assert float(out.loss.detach()) == pytest.approx(max(-1.35 * (l1 - l2), -1.35 * 1.2) / 2)
    assert float(out.loss.detach()) == pytest.approx(-0.81)
    out.loss.backward()
    torch.testing.assert_close(lp.grad, t([[0.0, 0.0]]))  # the clipped branch is flat
    assert float(out.metrics["importance_weight"]) == pytest.approx(1.35)
    lp.grad = None
    out = _p3o(lp, old, t([[2.0, 1.0]]), clip="separate")
    # y1: max(-1.35 l1, -1.35 clip(l1, -2.2, -1.8)) = -1.35 * -1.8 = 2.43 (clipped); y2: l2 = -3.105 inside [-3.2, -2.8]
    assert float(out.loss.detach()) == pytest.approx((max(-1.35 * l1, 1.35 * 1.8) + 1.35 * l2) / 2)
    out.loss.backward()
    torch.testing.assert_close(lp.grad, t([[0.0, 1.35 / 2]]))  # only y2's unclipped term moves: lower y2
    # inside the trust region, joint: d - d_old = log(1.05 / 0.98) < 0.2; w = 1.05 * 0.98
    lp2 = (old + t([[math.log(1.05), math.log(0.98)]])).requires_grad_()
    out = _p3o(lp2, old, t([[2.0, 1.0]]), clip="joint")
    w = 1.05 * 0.98
    assert float(out.loss.detach()) == pytest.approx(-w * (1.0 + math.log(1.05 / 0.98)) / 2)
    out.loss.backward()
    torch.testing.assert_close(lp2.grad, t([[-w / 2, w / 2]]))
    # the joint weight is clipped to [1/weight_clip, weight_clip]
    far = old + t([[3.0, 0.0]])
    assert float(_p3o(far, old, t([[2.0, 1.0]]), weight_clip=4.0).metrics["importance_weight"]) == pytest.approx(4.0)
    # the KL term of Q: Q = (2 - 1) - 0.1 * (h1 - h2) with h = logp - log pi_ref = (1, -1): Q = 0.8
    out = _p3o(old.clone().requires_grad_(), old, t([[2.0, 1.0]]), ref=old - t([[1.0, -1.0]]), beta=0.1)
    torch.testing.assert_close(out.rewards, t([[1.9, 1.1]]))
    assert float(out.loss.detach()) == pytest.approx(-0.8 * (-2.0 + 3.0) / 2)  # on policy: -Q d / 2
    with pytest.raises(ConfigError, match="clip must be"):
        _p3o(lp, old, t([[2.0, 1.0]]), clip="both")


@pytest.mark.parametrize("clip", ["separate", "joint"])
def test_p3o_on_policy_gradient_is_the_pairwise_policy_gradient(clip):
    """At theta = theta_old: grad L = -(r1 - r2)/2 * grad(log pi(y1) - log pi(y2)) (the PPG), batch-averaged."""
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(5, 2, generator=g, dtype=D)
    r = torch.randn(5, 2, generator=g, dtype=D)
    leaf = lp.clone().requires_grad_()
    _p3o(leaf, lp, r, clip=clip).loss.backward()
    d = (r[:, 0] - r[:, 1]) / 2 / 5
    torch.testing.assert_close(leaf.grad, torch.stack([-d, d], 1))


@pytest.mark.parametrize("clip", ["separate", "joint"])
def test_p3o_is_invariant_to_per_prompt_reward_shifts_unlike_reinforce(clip):
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(6, 2, generator=g, dtype=D)
    lp = old + 0.3 * torch.randn(6, 2, generator=g, dtype=D)  # some terms clipped, some not
    ref = -torch.rand(6, 2, generator=g, dtype=D)
    r = torch.randn(6, 2, generator=g, dtype=D)
    shift = 100.0 * torch.randn(6, 1, generator=g, dtype=D)  # delta(x): one constant per prompt

    def grad(fn, rewards):
        leaf = lp.clone().requires_grad_()
        loss = fn(leaf, rewards)
        loss.backward()
        return loss.detach(), leaf.grad

    def p3o(x, rw):
        return _p3o(x, old, rw, ref=ref, beta=0.1, clip=clip).loss

    def reinforce(x, rw):  # vanilla policy gradient with the absolute reward
        return -(rw * x).mean()

    (l0, g0), (l1, g1) = grad(p3o, r), grad(p3o, r + shift)
    torch.testing.assert_close(l0, l1)
    torch.testing.assert_close(g0, g1)
    assert not torch.allclose(grad(reinforce, r)[1], grad(reinforce, r + shift)[1])
    # swapping the two samples of every prompt (with their rewards, old and reference log-probs) changes nothing
    sw = [1, 0]
    swapped = _p3o(lp[:, sw], old[:, sw], r[:, sw], ref=ref[:, sw], beta=0.1, clip=clip).loss
    torch.testing.assert_close(swapped, l0)


@pytest.mark.parametrize("clip", ["separate", "joint"])
def test_p3o_gradient_matches_the_hand_formula_off_policy(clip):
    """Random float64 inputs around pi_old: each unclipped term contributes -+Q w / 2 (w: clipped, stop-gradient)."""
    g = torch.Generator().manual_seed(2)
    old = -torch.rand(8, 2, generator=g, dtype=D)
    lp = (old + 0.25 * torch.randn(8, 2, generator=g, dtype=D)).requires_grad_()
    r, ref = torch.randn(8, 2, generator=g, dtype=D), -torch.rand(8, 2, generator=g, dtype=D)
    _p3o(lp, old, r, ref=ref, beta=0.1, clip=clip, weight_clip=1.2).loss.backward()
    x = lp.detach()
    q = (r[:, 0] - r[:, 1]) - 0.1 * ((x - ref)[:, 0] - (x - ref)[:, 1])
    w = torch.exp((x - old).sum(1)).clamp(1 / 1.2, 1.2)
    want = torch.zeros(8, 2, dtype=D)
    for b in range(8):
        qw = float(q[b] * w[b])
        if clip == "joint":  # the plain branch is the max unless d left the band on the side that lowers the loss
            d, d0 = float(x[b, 0] - x[b, 1]), float(old[b, 0] - old[b, 1])
            dc = min(max(d, d0 - 0.2), d0 + 0.2)
            if -qw * d >= -qw * dc:
                want[b] = t([-qw / 2, qw / 2])
        else:
            for i, sign in ((0, -1.0), (1, 1.0)):
                li, l0 = float(x[b, i]), float(old[b, i])
                lc = min(max(li, l0 - 0.2), l0 + 0.2)
                if sign * qw * li >= sign * qw * lc:
                    want[b, i] = sign * qw / 2
    torch.testing.assert_close(lp.grad, want / 8)
    assert (want == 0).any() and (want != 0).any()  # both branches occur
