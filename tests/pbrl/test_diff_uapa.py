"""Diff-UAPA (MAP alignment of a diffusion policy with a Beta prior) and the shared small DDPM.

Reference values are computed independently here: closed forms by hand, scipy's Beta density and
numerical integration, the Beta-Bernoulli conjugate posterior, float64 gradient checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from preflearn.pbrl.diff_uapa import (
    DiffUAPAConfig,
    beta_elbo,
    beta_kl,
    beta_log_prob,
    beta_prior_loss,
    clone_policy,
    diff_uapa_loss,
    group_rounds,
    mle_loss,
    noisy_group_labels,
    segment_noise_gaps,
    toward_goal_rate,
    train_diff_uapa,
    two_mode_segments,
    win_loss_counts,
)
from preflearn.pbrl.diffusion_policy import (
    EpsMLP,
    cosine_schedule,
    ddpm_sample,
    guided_eps,
    q_sample,
    train_denoiser,
)
from preflearn.pbrl.segments import SegmentPairs
from preflearn.pbrl.teachers import Teacher

# ----------------------------------------------------------------------------- shared DDPM pieces


def test_cosine_schedule_and_forward_process_match_the_formulas():
    n_steps, s = 12, 0.008
    sched = cosine_schedule(n_steps)
    f = [math.cos(((t / n_steps) + s) / (1 + s) * math.pi / 2) ** 2 for t in range(n_steps + 1)]
    abar = np.array([f[t] / f[0] for t in range(1, n_steps + 1)])
    np.testing.assert_allclose(sched.abar[:-1].numpy(), abar[:-1], rtol=1e-5)  # last beta is clipped at 0.999
    assert sched.betas[-1].item() == pytest.approx(0.999)
    x0, noise = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 0.25]])
    i = torch.tensor([3])
    want = math.sqrt(abar[3]) * np.array([1.0, -2.0]) + math.sqrt(1 - abar[3]) * np.array([0.5, 0.25])
    np.testing.assert_allclose(q_sample(sched, x0, i, noise)[0].numpy(), want, rtol=1e-5)


class _GaussianOracle(torch.nn.Module):
    """The exact eps-prediction for data N(mu, s^2): eps* = sqrt(1 - abar)(x - sqrt(abar) mu) / (abar s^2 + 1 - abar)."""

    x_dim, maskable = 1, False

    def __init__(self, sched, mu, s):
        super().__init__()
        self.sched, self.mu, self.s = sched, mu, s

    def forward(self, x, i, cond=None, mask=None):
        ab = self.sched.abar[i].unsqueeze(-1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)


def test_ancestral_sampler_recovers_a_gaussian_with_the_exact_eps_model():
    sched = cosine_schedule(200)
    oracle = _GaussianOracle(sched, 2.0, 0.5)
    x = ddpm_sample(oracle, sched, 10000, generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(2.0, abs=0.02)
    assert x.std().item() == pytest.approx(0.5, abs=0.03)
    # the x0-parameterised posterior mean (DDPM Eq. 7) equals Eq. 11 when the clamp is inactive
    y = ddpm_sample(oracle, sched, 2000, clip_x0=1e6, generator=torch.Generator().manual_seed(1))
    z = ddpm_sample(oracle, sched, 2000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(y, z, rtol=1e-4, atol=1e-4)


def test_classifier_free_guidance_combines_masked_and_unmasked_passes():
    torch.manual_seed(0)
    model = EpsMLP(4, 2, steps=10, hidden=16, maskable=True)
    x, i = torch.randn(3, 4), torch.tensor([0, 4, 9])
    c, m = torch.rand(3, 2), torch.tensor([[1.0, 0.0]] * 3)
    cond = model(x, i, c, m)
    uncond = model(x, i, c, torch.zeros_like(m))
    torch.testing.assert_close(guided_eps(model, x, i, c, m, 1.0), cond)
    torch.testing.assert_close(guided_eps(model, x, i, c, m, 0.0), uncond)
    torch.testing.assert_close(guided_eps(model, x, i, c, m, 2.5), 2.5 * cond - 1.5 * uncond)
    # a masked-out attribute's value is invisible to the model
    c2 = c.clone()
    c2[:, 1] = 123.0
    torch.testing.assert_close(model(x, i, c2, m), cond)


# ----------------------------------------------------------------------------- the Diff-UAPA objective


def test_mle_loss_hand_value():
    # -log sigmoid(-0.5 * (1 - 3)) = -log sigmoid(1) = log(1 + e^-1)
    got = mle_loss(torch.tensor([1.0]), torch.tensor([3.0]), alpha_i=0.5)
    assert got.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)


def test_beta_prior_loss_and_density_match_scipy():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 2, 8)
    a, b = rng.uniform(0.1, 9, 8), rng.uniform(0.1, 9, 8)
    alpha_i = 0.7
    d_mean = d.mean()
    phi = special.expit(-alpha_i * (d - d_mean))
    want = -stats.beta.logpdf(phi, a + 1, b + 1)
    got = beta_prior_loss(torch.tensor(d), torch.tensor(d_mean), torch.tensor(a), torch.tensor(b), alpha_i)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(beta_log_prob(torch.tensor(phi), torch.tensor(a), torch.tensor(b)).numpy(),
                               stats.beta.logpdf(phi, a, b), rtol=1e-9)
    # stays finite far in the tails, where sigmoid rounds to 0 or 1
    far = beta_prior_loss(torch.tensor([500.0, -500.0]), torch.tensor(0.0), torch.tensor([2.0, 2.0]),
                          torch.tensor([3.0, 3.0]))
    assert torch.isfinite(far).all()


def test_diff_uapa_loss_value_and_gradient():
    d_w = torch.tensor([0.2, -1.0, 0.5], dtype=torch.float64)
    d_l = torch.tensor([1.0, 0.3, 0.1], dtype=torch.float64)
    a_w, b_w = torch.tensor([5.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64)
    a_l, b_l = torch.tensor([1.0, 2.0, 1.5], dtype=torch.float64), torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    ai = 0.8
    out = diff_uapa_loss(d_w, d_l, (a_w, b_w), (a_l, b_l), ai)
    m = float(torch.cat([d_w, d_l]).mean())
    want = 0.0
    for k in range(3):
        want += math.log1p(math.exp(ai * (d_w[k].item() - d_l[k].item())))
        for d, a, b in ((d_w[k], a_w[k], b_w[k]), (d_l[k], a_l[k], b_l[k])):
            want += -stats.beta.logpdf(special.expit(-ai * (d.item() - m)), a.item() + 1, b.item() + 1)
    assert out["loss"].item() == pytest.approx(want / 3, rel=1e-9)
    # no prior = the MLE (Diff-CPL) term alone
    assert diff_uapa_loss(d_w, d_l, None, None, ai)["loss"].item() == pytest.approx(out["mle"].item())
    # gradient (through the batch mean as well) against finite differences
    dw, dl = d_w.clone().requires_grad_(), d_l.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: diff_uapa_loss(x, y, (a_w, b_w), (a_l, b_l), ai)["loss"], (dw, dl))


def test_beta_kl_matches_numerical_integration():
    for a, b, a0, b0 in ((2.0, 5.0, 1.0, 1.0), (0.7, 0.9, 2.0, 3.0), (10.0, 2.0, 1.0, 1.0)):
        p, q = stats.beta(a, b), stats.beta(a0, b0)
        want, _ = integrate.quad(lambda x, p=p, q=q: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), 0, 1, limit=200)
        got = beta_kl(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), a0, b0)
        assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-8)


def test_beta_elbo_is_maximised_by_the_conjugate_posterior():
    # per-trajectory free parameters: the optimum is Beta(1 + wins, 1 + losses) (Prop. 4.1's voting example)
    wins = torch.tensor([9.0, 5.0, 0.0, 2.5], dtype=torch.float64)
    losses = torch.tensor([1.0, 5.0, 3.0, 0.5], dtype=torch.float64)
    log_ab = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_ab], lr=0.5, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = -beta_elbo(log_ab[:, 0].exp(), log_ab[:, 1].exp(), wins, losses).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    np.testing.assert_allclose(log_ab.exp()[:, 0].detach().numpy(), 1 + wins.numpy(), rtol=1e-3)
    np.testing.assert_allclose(log_ab.exp()[:, 1].detach().numpy(), 1 + losses.numpy(), rtol=1e-3)
    a, b = torch.tensor([2.0, 3.0], dtype=torch.float64, requires_grad=True), torch.tensor(
        [1.5, 4.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: beta_elbo(x, y, wins[:2], losses[:2]), (a, b))


def test_win_loss_counts_and_group_noise():
    pool = two_mode_segments(5, 3, seed=0)
    pairs = SegmentPairs(pool, np.array([0, 1, 2, 0]), np.array([1, 2, 3, 4]),
                         np.array([1.0, 0.0, 0.5, np.nan], np.float32))
    w, lo = win_loss_counts(pairs)
    np.testing.assert_allclose(w, [1.0, 0.0, 1.5, 0.5, 0.0])
    np.testing.assert_allclose(lo, [0.0, 2.0, 0.5, 0.5, 0.0])
    w2, _ = win_loss_counts([pairs, pairs])
    np.testing.assert_allclose(w2, 2 * w)
    rng = np.random.default_rng(0)
    y = np.ones(20000, np.float32)
    flipped = (noisy_group_labels(y, rng) == 0).mean()
    assert flipped == pytest.approx(0.2 * 0.5, abs=0.01)
    assert (noisy_group_labels(y, rng, pick=0.0) == 1).all()


def test_group_rounds_fresh_or_shared_pairs():
    pool = two_mode_segments(40, 3, seed=0)
    fresh = group_rounds(pool, Teacher(), n_rounds=3, pairs_per_round=30, seed=0)
    shared = group_rounds(pool, Teacher(), n_rounds=3, pairs_per_round=30, same_pairs=True, seed=0)
    np.testing.assert_array_equal(fresh[0].a, shared[0].a)
    assert not np.array_equal(fresh[0].a, fresh[1].a)
    assert all(np.array_equal(r.a, shared[0].a) and np.array_equal(r.b, shared[0].b) for r in shared)
    # labels follow the true progress except for the noisy swaps (about 10% of pairs)
    truth = (pool.rew[shared[0].a].sum(1) > pool.rew[shared[0].b].sum(1)).astype(np.float32)
    assert np.mean([np.mean(r.label == truth) for r in shared]) > 0.75


class _Const(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, i, cond=None, mask=None):
        return torch.full_like(x, self.value)


def test_segment_noise_gaps_hand_computation():
    sched = cosine_schedule(10)
    obs, act = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    gamma = 0.9
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    got = segment_noise_gaps(_Const(0.0), _Const(1.0), sched, obs, act, mask, gamma=gamma,
                             generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    torch.randint(0, 10, (12,), generator=g)  # the diffusion steps (irrelevant for constant models)
    eps = torch.randn((12, 2), generator=g).view(3, 4, 2)
    # ||eps - 0||^2 - ||eps - 1||^2 = 2 sum(eps) - A
    per = 2 * eps.sum(-1) - 2
    want = (per * gamma ** torch.arange(4.0) * mask).sum(-1)
    torch.testing.assert_close(got, want)
    same = segment_noise_gaps(_Const(0.3), _Const(0.3), sched, obs, act, gamma=gamma)
    assert torch.equal(same, torch.zeros(3))


def test_bad_prior_mode_is_rejected():
    with pytest.raises(ValueError, match="incremental"):
        train_diff_uapa(EpsMLP(2, 2), EpsMLP(2, 2), cosine_schedule(5), [], DiffUAPAConfig(prior="bayes"))


# ----------------------------------------------------------------------------- behaviour


def test_diff_uapa_moves_a_bimodal_diffusion_policy_to_the_preferred_mode():
    """BC on a half-toward / half-away dataset samples both modes; three noisy user groups (20% of pairs
    swapped with prob 0.5) prefer 'toward'; Diff-UAPA-I must put most of the policy's mass there."""
    pool = two_mode_segments(150, 5, seed=0)
    sched = cosine_schedule(10)
    torch.manual_seed(0)
    ref = EpsMLP(2, 2, steps=10, hidden=64)
    train_denoiser(ref, sched, torch.as_tensor(pool.act).reshape(-1, 2), torch.as_tensor(pool.obs).reshape(-1, 2),
                   steps=800, lr=3e-3)
    before = toward_goal_rate(ref, sched)
    assert 0.2 < before < 0.8  # both modes present (measured 0.35)
    rounds = group_rounds(pool, Teacher(), n_rounds=3, pairs_per_round=300, seed=0)
    policy = clone_policy(ref)
    hist = train_diff_uapa(policy, ref, sched, rounds, DiffUAPAConfig(steps_per_round=100, beta_steps=100), seed=0)
    after = toward_goal_rate(policy, sched)
    assert after > 0.75 and after > before + 0.3, (before, after)  # measured 0.83 from 0.35
    assert len(hist) == 3
    # the Beta prior gives the round's winners a higher expected win rate than its losers
    assert all(h["beta_mean_winners"] > h["beta_mean_losers"] for h in hist)
    # the reference is untouched
    assert all(not p.requires_grad for p in ref.parameters())
