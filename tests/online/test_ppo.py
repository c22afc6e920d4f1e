"""PPO pieces (KL-shaped rewards, GAE, clipped losses, adaptive KL) by hand and on a tabular token MDP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from preflearn.online import ppo as P

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def test_kl_penalized_rewards_by_hand():
    mask = t([[1, 1, 1], [1, 0, 0]])
    lp = t([[-1.0, -2.0, -0.5], [-1.0, 0.0, 0.0]])
    ref = t([[-1.5, -2.0, -1.0], [-0.5, 0.0, 0.0]])
    r = P.kl_penalized_rewards(t([2.0, -1.0]), lp, ref, mask, kl_coef=0.1)
    # row 0: -0.1 * (0.5, 0, 0.5) and the score 2 at token 2; row 1: -0.1 * (-0.5) + score -1 at token 0
    torch.testing.assert_close(r, t([[-0.05, 0.0, -0.05 + 2.0], [0.05 - 1.0, 0.0, 0.0]]))


def test_gae_against_the_sum_of_discounted_td_residuals():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 5, generator=g, dtype=D), torch.randn(3, 5, generator=g, dtype=D)
    lengths = [5, 3, 1]
    mask = t([[1.0 if i < n else 0.0 for i in range(5)] for n in lengths])
    gamma, lam = 0.9, 0.8
    adv, ret = P.gae(rewards * mask, values, mask, gamma, lam)
    for b, n in enumerate(lengths):
        v = [float(values[b, i]) if i < n else 0.0 for i in range(n + 1)]
        delta = [float(rewards[b, i]) + gamma * v[i + 1] - v[i] for i in range(n)]
        for i in range(5):
            want = sum((gamma * lam) ** k * delta[i + k] for k in range(n - i)) if i < n else 0.0
            assert float(adv[b, i]) == pytest.approx(want, abs=1e-12)
            assert float(ret[b, i]) == pytest.approx(want + v[i] if i < n else 0.0, abs=1e-12)
    # gamma = lam = 1: the Monte-Carlo return minus the value
    adv1, ret1 = P.gae(rewards * mask, values, mask, 1.0, 1.0)
    mc = (rewards * mask).flip(-1).cumsum(-1).flip(-1) * mask
    torch.testing.assert_close(ret1, mc)
    torch.testing.assert_close(adv1, (mc - values) * mask)


def test_ppo_losses_by_hand():
    mask = t([[1.0, 1.0, 0.0]])
    old = t([[-1.0, -1.0, -1.0]])
    lp = t([[-1.0 + math.log(1.5), -1.0 + math.log(0.5), -1.0]]).requires_grad_()
    adv = t([[2.0, -1.0, 7.0]])
    v = t([[0.5, 1.0, 3.0]]).requires_grad_()
    old_v, ret = t([[0.0, 1.0, 0.0]]), t([[1.0, 0.0, 0.0]])
    out = P.ppo_losses(lp, old, adv, v, old_v, ret, mask, clip=0.2, value_clip=0.2, value_coef=0.5)
    # token 0: ratio 1.5, A 2 -> min(3, 1.2 * 2) = 2.4; token 1: ratio 0.5, A -1 -> min(-0.5, -0.8) = -0.8
    assert float(out["policy_loss"].detach()) == pytest.approx(-(2.4 - 0.8) / 2)
    # values: token 0: V 0.5, clipped to 0.2: max(0.25, 0.64) = 0.64; token 1: V = V_old = 1: 1
    assert float(out["value_loss"].detach()) == pytest.approx(0.5 * (0.64 + 1.0) / 2)
    assert float(out["loss"].detach()) == pytest.approx(-0.8 + 0.5 * 0.41)
    assert float(out["clip_fraction"]) == 1.0
    out["loss"].backward()
    # both tokens clipped -> no policy gradient; token 0's value loss takes the clipped branch -> no value gradient
    torch.testing.assert_close(lp.grad, torch.zeros_like(lp))
    torch.testing.assert_close(v.grad, t([[0.0, 0.5 * 0.5 * 2 * (1.0 - 0.0) / 2, 0.0]]))


def test_ppo_losses_gradcheck_inside_the_trust_region():
    g = torch.Generator().manual_seed(2)
    mask = t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    old = -torch.rand(2, 3, generator=g, dtype=D)
    lp = (old + 0.05 * torch.randn(2, 3, generator=g, dtype=D)).requires_grad_()
    adv, ret = torch.randn(2, 3, generator=g, dtype=D), torch.randn(2, 3, generator=g, dtype=D)
    old_v = torch.randn(2, 3, generator=g, dtype=D)
    v = (old_v + 0.05 * torch.randn(2, 3, generator=g, dtype=D)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: P.ppo_losses(a, old, adv, b, old_v, ret, mask)["loss"], (lp, v))


def test_whiten_and_adaptive_kl():
    x, m = t([1.0, 3.0, 100.0]), t([1.0, 1.0, 0.0])
    torch.testing.assert_close(P.whiten(x, m, eps=0.0), t([-1.0, 1.0, 0.0]))
    c = P.AdaptiveKLController(value=0.1, target=6.0)
    assert c.update(9.0) == pytest.approx(0.1 * (1 + 0.1 * 0.2))  # error 0.5 clipped to 0.2
    assert c.update(5.4) == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.1))


def test_ppo_learns_a_two_token_mdp():
    """Tabular policy over 2 tokens x 2 steps (the second token's logits depend on the first),
    reward 1 for the sequence (1, 1) at the end, a small KL penalty to the uniform reference,
    tabular values: PPO with GAE lifts P(1, 1) from 1/4 to > 0.8 and the value tracks the return."""
    torch.manual_seed(0)
    logits = torch.zeros(3, 2, dtype=D, requires_grad=True)  # state 0 = start, 1 + a0 = after the first token
    values = torch.zeros(3, dtype=D, requires_grad=True)
    opt = torch.optim.Adam([logits, values], lr=0.05)
    ref_lp = math.log(0.5)
    mask = torch.ones(256, 2, dtype=D)
    for _ in range(30):
        with torch.no_grad():
            a0 = torch.multinomial(torch.softmax(logits[0], 0).expand(256, 2), 1)[:, 0]
            a1 = torch.multinomial(torch.softmax(logits[1 + a0], -1), 1)[:, 0]
            states = torch.stack([torch.zeros_like(a0), 1 + a0], 1)
            acts = torch.stack([a0, a1], 1)
            old_lp = torch.log_softmax(logits[states], -1).gather(-1, acts[..., None])[..., 0]
            old_v = values[states]
            score = ((a0 == 1) & (a1 == 1)).to(D)
            rw = P.kl_penalized_rewards(score, old_lp, torch.full_like(old_lp, ref_lp), mask, kl_coef=0.02)
            adv, ret = P.gae(rw, old_v, mask, gamma=1.0, lam=0.95)
            adv = P.whiten(adv, mask)
        for _ in range(4):
            lp = torch.log_softmax(logits[states], -1).gather(-1, acts[..., None])[..., 0]
            out = P.ppo_losses(lp, old_lp, adv, values[states], old_v, ret, mask, value_coef=1.0)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
    with torch.no_grad():
        p11 = float(torch.softmax(logits[0], 0)[1] * torch.softmax(logits[2], 0)[1])
    assert p11 > 0.8
    assert float(values[2]) == pytest.approx(1.0, abs=0.25)  # after token 1, taking 1 again is worth ~1


def test_policy_and_values_match_the_scorer():
    """One backbone forward gives the scorer's per-token log-probs and a value per completion token."""
    from preflearn.data.collate import collate_shared
    from preflearn.data.tokenize import TokenizedExample
    from preflearn.models.causal_lm import score_batch
    from preflearn.online.ppo_loop import policy_and_values

    from .test_sampling import tiny_llama

    model = tiny_llama(2)
    ex = [TokenizedExample(prompt_ids=[1, 5, 6], completion_ids=[[7, 8, 2], [9]], kind="ranked"),
          TokenizedExample(prompt_ids=[1, 4], completion_ids=[[3, 3], [10, 11, 12, 2]], kind="ranked")]
    batch = collate_shared(ex, pad_token_id=0)
    head = torch.nn.Linear(32, 1)
    with torch.no_grad():
        lp, v, m = policy_and_values(model, head, batch)
        want = score_batch(model, batch, token_level=True)
    torch.testing.assert_close(lp, want["token_logps"])
    torch.testing.assert_close(m, want["mask"])
    assert v.shape == lp.shape and bool((v[m == 0] == 0).all()) and bool((v[m == 1] != 0).all())


@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_loop_raises_the_oracle_reward(tmp_path, seed):
    from preflearn.online import judges as J
    from preflearn.online.ppo_loop import PPOConfig, run_online_ppo
    from preflearn.online.sampling import SamplingConfig

    from .test_loop import count_x
    from .test_sampling import CharTokenizer, tiny_llama

    cfg = PPOConfig(output_dir=str(tmp_path), seed=seed, rounds=2, prompts_per_round=16, eval_prompts=16, lr=3e-3,
                    sampling=SamplingConfig(num_samples=2, max_new_tokens=8),
                    eval_sampling=SamplingConfig(num_samples=1, max_new_tokens=8, temperature=0.0))
    out = run_online_ppo(cfg, J.OracleJudge(count_x, expected=True), model=tiny_llama(5), tokenizer=CharTokenizer(),
                         contexts=[f"prompt number {i}" for i in range(48)])
    assert out["mean_score_final"] > out["mean_score_initial"] + 1.0
    assert out["win_rate_vs_initial"]["win_rate"] > 0.5
    assert all(np.isfinite(r["losses"]).all() for r in out["rounds"])
    assert "ppo: mean_score of the samples per round" in (tmp_path / "online-ppo" / "report.html").read_text()


# ----------------------------------------------------------------------------- RTO
def test_rto_rewards_by_hand():
    """r_t = beta log(pi_dpo/pi_ref) - kl_coef log(pi_old/pi_ref) + [last] score_coef * score (arXiv:2404.18922)."""
    mask = t([[1, 1, 1], [1, 1, 0]])
    lp = t([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = t([[-1.5, -2.0, -1.0], [-0.5, -2.0, 0.0]])
    dpo = t([[-0.5, -3.0, -1.0], [-0.5, -1.0, -9.0]])
    r = P.rto_rewards(t([2.0, -1.0]), lp, ref, dpo, mask, kl_coef=0.1, beta=0.5, score_coef=0.25)
    # row 0: dense 0.5 * (1, -1, 0); KL -0.1 * (0.5, 0, 0.5); score 0.25 * 2 at token 2
    # row 1: dense 0.5 * (0, 1, masked); KL -0.1 * (-0.5, 1); score 0.25 * -1 at token 1
    want = t([[0.5 - 0.05, -0.5, 0.0 - 0.05 + 0.5], [0.0 + 0.05, 0.5 - 0.1 - 0.25, 0.0]])
    torch.testing.assert_close(r, want)
    # beta = 0 and score_coef = 1 is the plain KL-shaped PPO reward
    torch.testing.assert_close(P.rto_rewards(t([2.0, -1.0]), lp, ref, dpo, mask, 0.1, beta=0.0),
                               P.kl_penalized_rewards(t([2.0, -1.0]), lp, ref, mask, 0.1))


def _dpo_trained(seed=5, steps=30):
    """A tiny model trained with DPO (preflearn's dpo loss) to prefer letters a-m over n-z, and its reference."""
    import copy

    import preflearn.losses as L
    from preflearn.data.collate import collate_shared
    from preflearn.data.tokenize import TokenizedExample
    from preflearn.models.causal_lm import score_batch, to_scores

    from .test_sampling import CharTokenizer, tiny_llama

    tok, g = CharTokenizer(), np.random.default_rng(0)
    policy = tiny_llama(seed)
    ref = copy.deepcopy(policy).eval()
    ex = []
    for i in range(16):
        good = "".join(g.choice(list("abcdefghijklm"), 6))
        bad = "".join(g.choice(list("nopqrstuvwxyz"), 6))
        ex.append(TokenizedExample(prompt_ids=tok(f"prompt number {i}")["input_ids"], kind="pairwise",
                                   completion_ids=[tok(good, add_special_tokens=False)["input_ids"] + [2],
                                                   tok(bad, add_special_tokens=False)["input_ids"] + [2]]))
    batch = collate_shared(ex, pad_token_id=0)
    with torch.no_grad():
        ref_scores = score_batch(ref, batch)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    policy.train()
    for _ in range(steps):
        out = L.compute("dpo", to_scores(batch, score_batch(policy, batch), ref_scores))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return policy.eval(), ref, float(out.metrics["rewards/accuracy"])


def test_rto_token_reward_is_the_dpo_log_ratio_per_token():
    from preflearn.data.collate import collate_shared
    from preflearn.data.tokenize import TokenizedExample
    from preflearn.models.causal_lm import score_batch

    from .test_sampling import tiny_llama

    dpo, ref = tiny_llama(1), tiny_llama(2)
    batch = collate_shared([TokenizedExample(prompt_ids=[1, 5, 6], completion_ids=[[7, 8, 2], [9]], kind="ranked")],
                           pad_token_id=0)
    with torch.no_grad():
        want = 0.3 * (score_batch(dpo, batch, token_level=True)["token_logps"]
                      - score_batch(ref, batch, token_level=True)["token_logps"])
        ref_tok = score_batch(ref, batch, token_level=True)["token_logps"]
    torch.testing.assert_close(P.rto_token_reward(dpo, beta=0.3)(batch, ref_tok), want)
    torch.testing.assert_close(P.rto_token_reward(dpo, beta=0.3, reference_model=ref)(batch, ref_tok * 0), want)


def test_rto_dense_dpo_reward_alone_raises_the_oracle_score(tmp_path):
    """PPO with the judge's score switched off (score_coef = 0): RTO's dense reward from a DPO model
    trained to prefer a-m letters raises the oracle's score; the same run without it does not."""
    from preflearn.online import judges as J
    from preflearn.online.ppo_loop import PPOConfig, run_online_ppo
    from preflearn.online.sampling import SamplingConfig

    from .test_loop import count_x
    from .test_sampling import CharTokenizer, tiny_llama

    dpo, _, acc = _dpo_trained()
    assert acc == 1.0
    ctx = [f"prompt number {i}" for i in range(40)]
    results = {}
    for name, hook in (("rto", P.rto_token_reward(dpo, beta=0.5)), ("none", None)):
        cfg = PPOConfig(name=name, output_dir=str(tmp_path), rounds=2, prompts_per_round=16, eval_prompts=8, lr=1e-2,
                        ppo_epochs=4, score_coef=0.0, checkpoint=False, report=False,
                        sampling=SamplingConfig(num_samples=2, max_new_tokens=8),
                        eval_sampling=SamplingConfig(num_samples=1, max_new_tokens=8, temperature=0.0))
        results[name] = run_online_ppo(cfg, J.OracleJudge(count_x, expected=True), model=tiny_llama(5),
                                       tokenizer=CharTokenizer(), contexts=ctx, token_reward=hook)
    rto, none = results["rto"], results["none"]
    assert rto["mean_score_final"] > rto["mean_score_initial"] + 1.0
    assert rto["mean_score_final"] > none["mean_score_final"] + 1.0
    assert not (tmp_path / "rto" / "checkpoints").exists()
