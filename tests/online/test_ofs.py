"""OFS-DPO (arXiv:2406.05534): the fast-slow losses by hand, gradients, swapping, and a tiny-model run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from preflearn.errors import ConfigError
from preflearn.online import ofs as O

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_ofs_losses_by_hand():
    fast, slow, ref = t([[-1.0, -3.0]]), t([[-2.0, -2.5]]), t([[-2.0, -2.0]])
    out = O.ofs_losses(fast, slow, ref, beta=0.5, lam=2.0)
    # margins: fast 0.5 * ((-1 + 2) - (-3 + 2)) = 1.0; slow 0.5 * (0 - (-0.5)) = 0.25
    assert float(out["margin_fast"][0]) == pytest.approx(1.0) and float(out["margin_slow"][0]) == pytest.approx(0.25)
    assert float(out["dpo_fast"]) == pytest.approx(math.log1p(math.exp(-1.0)))
    assert float(out["dpo_slow"]) == pytest.approx(math.log1p(math.exp(-0.25)))
    assert float(out["reg"]) == pytest.approx(math.log1p(math.exp(-0.75)))
    assert float(out["fast"]) == pytest.approx(math.log1p(math.exp(-1.0)) + 2.0 * math.log1p(math.exp(-0.75)))
    # the reference cancels in the gap: the regulariser is DPO of the fast module against the slow one
    other = O.ofs_losses(fast, slow, t([[-7.0, 0.3]]), beta=0.5, lam=2.0)
    assert float(other["reg"]) == pytest.approx(float(out["reg"]))


def test_ofs_gradients_by_hand_and_gradcheck():
    beta, lam = 0.5, 2.0
    fast = t([[-1.0, -3.0], [-2.0, -1.0]]).requires_grad_()
    slow = t([[-2.0, -2.5], [-1.5, -1.5]]).requires_grad_()
    ref = t([[-2.0, -2.0], [-1.0, -2.0]])
    out = O.ofs_losses(fast, slow, ref, beta=beta, lam=lam)
    (out["fast"] + out["slow"]).backward()
    m_f, m_s = out["margin_fast"].tolist(), out["margin_slow"].tolist()
    for b in range(2):  # d/d logp_w = -beta/B [sigma(-m_f) + lam sigma(-(m_f - m_s))], and minus that for logp_l
        gf = -beta / 2 * (sig(-m_f[b]) + lam * sig(-(m_f[b] - m_s[b])))
        gs = -beta / 2 * sig(-m_s[b])  # the slow module sees only its DPO loss (sg in the regulariser)
        torch.testing.assert_close(fast.grad[b], t([gf, -gf]))
        torch.testing.assert_close(slow.grad[b], t([gs, -gs]))
    # finite differences w.r.t. each module's own inputs (the slow margin is a stop-gradient target in L_reg)
    f0, s0 = fast.detach().clone().requires_grad_(), slow.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: O.ofs_losses(a, slow.detach(), ref, beta, lam)["fast"], (f0,))
    assert torch.autograd.gradcheck(lambda b: O.ofs_losses(fast.detach(), b, ref, beta, lam)["slow"], (s0,))


def test_the_chasing_gradient_does_not_fade_when_dpo_saturates():
    """Margin 40 (beta 1): DPO's gradient is ~4e-18; the gap of 0.5 to the slow module still gives sigma(-0.5)."""
    fast = t([[20.0, -20.0]]).requires_grad_()
    out = O.ofs_losses(fast, t([[19.75, -19.75]]), t([[0.0, 0.0]]), beta=1.0, lam=1.0)
    out["dpo_fast"].backward(retain_graph=True)
    assert abs(float(fast.grad[0, 0])) < 1e-15
    fast.grad = None
    out["fast"].backward()
    assert float(fast.grad[0, 0]) == pytest.approx(-sig(-0.5), rel=1e-9)


def _tiny_peft(seed=5):
    from peft import LoraConfig

    from .test_sampling import tiny_llama

    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj", "up_proj",
                                                                               "down_proj"])
    return O.add_fast_slow_adapters(tiny_llama(seed), lora)


def test_swap_exchanges_weights_and_optimizer_state():
    model = _tiny_peft()
    fast, slow = O._adapter_params(model, "fast"), O._adapter_params(model, "slow")
    assert set(fast) == set(slow) and len(fast) == 2 * 5 * 2  # A and B of 5 projections in 2 blocks
    with torch.no_grad():
        for p in fast.values():
            p.fill_(1.0)
        for p in slow.values():
            p.fill_(2.0)
    optim = torch.optim.AdamW([{"params": list(fast.values())}, {"params": list(slow.values())}])
    key = next(iter(fast))
    optim.state[fast[key]] = {"tag": "fast"}
    O._swap(fast, slow, optim)
    assert all(bool((p == 2.0).all()) for p in fast.values()) and all(bool((p == 1.0).all()) for p in slow.values())
    assert optim.state[slow[key]] == {"tag": "fast"} and fast[key] not in optim.state


def test_ofs_dpo_raises_the_oracle_score_and_the_fast_module_leads(tmp_path):
    from preflearn.online import judges as J
    from preflearn.online.sampling import SamplingConfig

    from .test_loop import count_x
    from .test_sampling import CharTokenizer, tiny_llama

    cfg = O.OFSConfig(output_dir=str(tmp_path), rounds=2, prompts_per_round=16, eval_prompts=16, lr=1e-2,
                      batch_size=4, epochs=2, sampling=SamplingConfig(num_samples=2, max_new_tokens=8),
                      eval_sampling=SamplingConfig(num_samples=1, max_new_tokens=8, temperature=0.0))
    model = _tiny_peft()
    out = O.run_ofs_dpo(cfg, J.OracleJudge(count_x, expected=True), model=model, tokenizer=CharTokenizer(),
                        contexts=[f"prompt number {i}" for i in range(48)])
    assert out["mean_score_final"] > out["mean_score_initial"] + 1.0
    assert out["win_rate_vs_initial"]["win_rate"] > 0.5
    # after each round's updates the fast module (4x the learning rate plus the chasing term) fits the
    # round's pairs better than the slow one, so no swap was needed
    assert all(r["dpo_after"]["fast"] < r["dpo_after"]["slow"] and not r["swapped"] for r in out["rounds"])
    rows = [json.loads(x) for x in (tmp_path / "online-ofs" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 4 and all(r["reg"] > 0 for r in rows)
    with pytest.raises(ConfigError, match="adapters 'fast' and 'slow'"):
        O.run_ofs_dpo(cfg, J.OracleJudge(count_x), model=tiny_llama(), tokenizer=CharTokenizer(), contexts=[])
