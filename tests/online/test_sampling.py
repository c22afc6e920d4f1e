"""Batched shared-prompt KV-cache sampling against independent computations."""

from __future__ import annotations

import pytest
import torch

from preflearn.online.sampling import SamplingConfig, _filter_logits, sample

transformers = pytest.importorskip("transformers")


class CharTokenizer:
    """A tiny invertible character tokenizer: 0 pad, 1 bos, 2 eos, 3-28 a-z, 29-54 A-Z, 55 space,
    56-63 punctuation (other characters map onto these, so decode(encode(text)) is stable)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    chat_template = None
    PUNCT = "!?.,;:-'"

    def _one(self, ch):
        if "a" <= ch <= "z":
            return 3 + ord(ch) - 97
        if "A" <= ch <= "Z":
            return 29 + ord(ch) - 65
        if ch == " ":
            return 55
        return 56 + (self.PUNCT.index(ch) if ch in self.PUNCT else ord(ch) % 8)

    def __call__(self, text, add_special_tokens=True):
        if isinstance(text, list):
            return {"input_ids": [self(t, add_special_tokens)["input_ids"] for t in text]}
        ids = [self._one(ch) for ch in text]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}

    def decode(self, ids, skip_special_tokens=True):
        out = []
        for i in ids:
            if i < 3:
                continue
            if i < 29:
                out.append(chr(97 + i - 3))
            elif i < 55:
                out.append(chr(65 + i - 29))
            elif i == 55:
                out.append(" ")
            else:
                out.append(self.PUNCT[i - 56])
        return "".join(out)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


PROMPTS = ["hello there", "a", "the quick brown fox"]


def test_greedy_batched_equals_prompt_by_prompt_generate():
    """Left padding, the repeated KV cache and position ids must not change greedy decoding."""
    model, tok = tiny_llama(), CharTokenizer()
    cfg = SamplingConfig(num_samples=2, max_new_tokens=12, temperature=0.0, prefill_bucket=2)
    got = sample(model, tok, PROMPTS, cfg)
    for i, p in enumerate(PROMPTS):
        ids = torch.tensor([tok(p)["input_ids"]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=0, eos_token_id=2)[0, ids.shape[1]:].tolist()
        if 2 in ref:
            ref = ref[: ref.index(2) + 1]
        for k in range(2):
            assert got[i][k].token_ids == ref


def test_sample_logps_equal_a_full_forward():
    """Sum of log pi(y_t | x, y_<t) recomputed with one teacher-forced forward, no cache."""
    model, tok = tiny_llama(1), CharTokenizer()
    got = sample(model, tok, PROMPTS, SamplingConfig(num_samples=3, max_new_tokens=10, temperature=1.3, top_p=0.9, seed=3, prefill_bucket=1))
    for i, p in enumerate(PROMPTS):
        prompt = tok(p)["input_ids"]
        for s in got[i]:
            full = torch.tensor([prompt + s.token_ids])
            with torch.no_grad():
                logits = model(full).logits[0, len(prompt) - 1 : -1]
            lp = torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(s.token_ids)[:, None]).sum()
            assert s.logp == pytest.approx(float(lp), abs=1e-4)


def test_seeded_sampling_is_reproducible_and_samples_differ():
    model, tok = tiny_llama(2), CharTokenizer()
    cfg = SamplingConfig(num_samples=4, max_new_tokens=8, temperature=1.0, seed=7)
    a, b = sample(model, tok, PROMPTS, cfg), sample(model, tok, PROMPTS, cfg)
    assert [[s.token_ids for s in g] for g in a] == [[s.token_ids for s in g] for g in b]
    assert len({tuple(s.token_ids) for s in a[0]}) > 1


def test_top_p_and_top_k_filter_by_hand():
    # probs 0.5, 0.3, 0.15, 0.05: top_p=0.8 keeps {0.5, 0.3} (mass before 0.15 is 0.8 >= 0.8)
    logits = torch.log(torch.tensor([[0.15, 0.5, 0.05, 0.3]]))
    kept = torch.isfinite(_filter_logits(logits, 0, 0.8))
    assert kept.tolist() == [[False, True, False, True]]
    kept = torch.isfinite(_filter_logits(logits, 3, 1.0))
    assert kept.tolist() == [[True, True, False, True]]


# ----------------------------------------------------------------------------- geometric mixture
def _next_token_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)


def _chi_square_ok(counts, probs, min_expected=5.0):
    """Pearson chi-square of counts vs probs (cells with expected < 5 pooled); p-value > 1e-3."""
    from scipy import stats

    n = counts.sum()
    exp = probs * n
    big = exp >= min_expected
    obs_c = np.append(counts[big], counts[~big].sum())
    exp_c = np.append(exp[big], exp[~big].sum())
    if exp_c[-1] < min_expected:  # fold a tiny pooled cell into the last big one
        obs_c[-2] += obs_c[-1]
        exp_c[-2] += exp_c[-1]
        obs_c, exp_c = obs_c[:-1], exp_c[:-1]
    stat = float(((obs_c - exp_c) ** 2 / exp_c).sum())
    return stats.chi2.sf(stat, len(obs_c) - 1)


import numpy as np  # noqa: E402

from preflearn.online.sampling import sample_mixture  # noqa: E402


def _sharp(model, scale=15.0):
    """A tiny random model's next-token distributions are near uniform; scale the output layer so two
    models (and their mixture) differ visibly (the chi-square test below could not fail otherwise)."""
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


@pytest.mark.parametrize("beta,temperature", [(0.3, 1.0), (0.7, 1.5)])
def test_mixture_tokens_follow_the_normalised_geometric_mixture(beta, temperature):
    """First and second tokens of 4000 draws vs pi^(1-beta) mu^beta / Z (then ^(1/T)) computed here."""
    pi, mu, tok = _sharp(tiny_llama(0)), _sharp(tiny_llama(1)), CharTokenizer()
    prompt = tok("ab")["input_ids"]
    n = 4000
    cfg = SamplingConfig(num_samples=n, max_new_tokens=2, temperature=temperature, seed=11)
    got = sample_mixture(pi, tok, ["ab"], cfg, beta=beta, reference=mu)[0]

    def target(ids):
        logits = (1 - beta) * _next_token_logprobs(pi, ids) + beta * _next_token_logprobs(mu, ids)
        return torch.softmax(logits / temperature, -1).numpy()

    first = np.array([s.token_ids[0] for s in got])
    p1 = target(prompt)
    assert _chi_square_ok(np.bincount(first, minlength=64).astype(float), p1) > 1e-3
    # the mixture really differs from either model (the test could otherwise pass by accident)
    for m in (pi, mu):
        other = torch.softmax(_next_token_logprobs(m, prompt) / temperature, -1).numpy()
        assert np.abs(other - p1).sum() > 0.3
    # second token, conditioned on the most frequent non-EOS first token
    t0 = int(np.bincount(first[first != 2], minlength=64).argmax())
    second = np.array([s.token_ids[1] for s in got if s.token_ids[0] == t0 and len(s.token_ids) > 1])
    assert len(second) > 100
    assert _chi_square_ok(np.bincount(second, minlength=64).astype(float), target(prompt + [t0])) > 1e-3


def test_mixture_logps_and_beta_zero_reproduces_plain_sampling():
    pi, mu, tok = tiny_llama(2), tiny_llama(3), CharTokenizer()
    cfg = SamplingConfig(num_samples=3, max_new_tokens=6, temperature=1.0, seed=5, prefill_bucket=2)
    plain = sample(pi, tok, PROMPTS, cfg)
    zero = sample_mixture(pi, tok, PROMPTS, cfg, beta=0.0, reference=mu)
    assert [[s.token_ids for s in g] for g in zero] == [[s.token_ids for s in g] for g in plain]
    assert all(a.logp == pytest.approx(b.logp, abs=1e-6) for ga, gb in zip(zero, plain) for a, b in zip(ga, gb))
    assert all(s.ref_logp is None for g in plain for s in g)
    beta = 0.4
    got = sample_mixture(pi, tok, PROMPTS, cfg, beta=beta, reference=mu)
    for i, p in enumerate(PROMPTS):  # teacher-forced recomputation of the three log-probs
        prompt = tok(p)["input_ids"]
        for s in got[i]:
            full = torch.tensor([prompt + s.token_ids])
            idx = torch.tensor(s.token_ids)[:, None]
            with torch.no_grad():
                lp = torch.log_softmax(pi(full).logits[0, len(prompt) - 1:-1].double(), -1)
                lm = torch.log_softmax(mu(full).logits[0, len(prompt) - 1:-1].double(), -1)
            lmix = torch.log_softmax((1 - beta) * lp + beta * lm, -1)
            assert s.logp == pytest.approx(float(lp.gather(-1, idx).sum()), abs=1e-4)
            assert s.ref_logp == pytest.approx(float(lm.gather(-1, idx).sum()), abs=1e-4)
            assert s.mix_logp == pytest.approx(float(lmix.gather(-1, idx).sum()), abs=1e-4)
    # beta = 1 samples the reference: same draws as plain sampling from mu
    one = sample_mixture(pi, tok, PROMPTS, cfg, beta=1.0, reference=mu)
    assert [[s.token_ids for s in g] for g in one] == [[s.token_ids for s in g] for g in sample(mu, tok, PROMPTS, cfg)]


def test_mixture_with_lora_uses_the_adapter_disabled_base():
    """reference=None on a peft policy == the same draws as an explicit copy of the base model."""
    import copy

    peft = pytest.importorskip("peft")
    base, tok = tiny_llama(4), CharTokenizer()
    frozen = copy.deepcopy(base)
    policy = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter matter
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    cfg = SamplingConfig(num_samples=2, max_new_tokens=6, seed=3)
    a = sample_mixture(policy, tok, PROMPTS, cfg, beta=0.5)
    b = sample_mixture(policy, tok, PROMPTS, cfg, beta=0.5, reference=frozen)
    assert [[s.token_ids for s in g] for g in a] == [[s.token_ids for s in g] for g in b]
    assert all(x.ref_logp == pytest.approx(y.ref_logp, abs=1e-4) for ga, gb in zip(a, b) for x, y in zip(ga, gb))
    assert any(abs(s.logp - s.ref_logp) > 1e-3 for g in a for s in g)  # the adapter is on for pi
    from preflearn.errors import ConfigError

    with pytest.raises(ConfigError, match="LoRA"):
        sample_mixture(frozen, tok, PROMPTS, cfg, beta=0.5)
    with pytest.raises(ConfigError, match="beta"):
        sample_mixture(policy, tok, PROMPTS, cfg, beta=1.5)
