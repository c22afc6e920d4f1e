"""Batched sampling of K completions per prompt with a shared-prompt KV cache.

The prompts of a batch are left-padded and prefilled ONCE; the key/value cache is
then repeated K times (one copy per sample) and all B*K rows decode together, one
token per step. Compared with calling ``generate`` prompt by prompt this (a) runs
the prompt forward once per prompt instead of once per sample, and (b) decodes
with a large batch, which is what makes a CPU (or GPU) efficient: the weights are
read once per step for all B*K rows instead of once per prompt.

Sampling: temperature, top-p (nucleus; Holtzman et al. 2020, arXiv:1904.09751) and
top-k; a seeded ``torch.Generator`` makes runs reproducible. Each returned sample
carries its token ids and the sum of its tokens' log-probabilities under the
*unmodified* policy (temperature 1, no truncation), which online methods need
(e.g. as pi_t log-probs).

vLLM is used by :func:`sample` when installed and asked for (``backend="vllm"``);
on CPU the torch path is the default.

:func:`sample_mixture` samples token by token from the geometric mixture of the policy
and a reference, pi_mix(y_t | x, y_<t) ∝ pi(y_t | .)^(1-beta) mu(y_t | .)^beta (Munos et al.
2023, "Nash Learning from Human Feedback", arXiv:2312.00886, Sec. 7, Nash-MD-PG's
"alternative policy"; Calandriello et al. 2024, arXiv:2403.08635, IPO-MD). Both models keep
their own KV cache and decode in lock-step; with LoRA the reference is the same model with
its adapter disabled (two forwards per step, no second copy of the weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["SamplingConfig", "Sample", "sample", "sample_mixture", "encode_prompts"]


@dataclass(frozen=True)
class SamplingConfig:
    num_samples: int = field(default=4, metadata={"help": "completions per prompt (K)", "ge": 1})
    max_new_tokens: int = field(default=64, metadata={"help": "cap on generated tokens", "ge": 1})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature (0 = greedy)", "ge": 0})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass kept", "gt": 0, "le": 1})
    top_k: int = field(default=0, metadata={"help": "keep the k most likely tokens (0 = all)", "ge": 0})
    seed: int = 0
    max_prompt_length: int = field(default=256, metadata={"help": "left-truncate longer prompts", "ge": 1})
    batch_size: int = field(default=32, metadata={"help": "prompts decoded together (x K rows)", "ge": 1})
    prefill_bucket: int = field(default=8, metadata={"help": "prompts prefilled together, sorted by length", "ge": 1})


@dataclass
class Sample:
    """One completion: text, token ids and log pi(y|x) under the policy (T=1, no truncation).

    From :func:`sample_mixture` also ``ref_logp`` = log mu(y|x) and ``mix_logp`` = log pi_mix(y|x)
    (both at T=1, untruncated, pi_mix normalised per token); None from :func:`sample`.
    """

    prompt_index: int
    text: str
    token_ids: list[int]
    logp: float
    finished: bool  # ended with EOS (False: cut at max_new_tokens)
    ref_logp: float | None = None
    mix_logp: float | None = None


def encode_prompts(tokenizer: Any, prompts: Sequence[Any], max_prompt_length: int) -> list[list[int]]:
    """Token ids of each prompt (chat messages go through the chat template)."""
    from ..data.tokenize import render_prompt

    out = []
    for i, p in enumerate(prompts):
        text, is_chat = render_prompt(tokenizer, p, where=f"prompt {i}")
        ids = tokenizer(text, add_special_tokens=not is_chat)["input_ids"]
        out.append(list(ids)[-max_prompt_length:])
    return out


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k / nucleus with -inf. logits: (N, V)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def _prefill(model: Any, prompt_ids: list[list[int]], pad_id: int, device: Any, L: int, bucket: int,
             adapter_off: bool = False):
    """Prefill the prompts in length-sorted buckets (little padding), then merge the buckets' caches
    into one left-padded cache of length L in the original row order. Returns (cache, last logits (B, V))."""
    from transformers import DynamicCache

    B = len(prompt_ids)
    order = sorted(range(B), key=lambda i: len(prompt_ids[i]))
    keys: list[list[torch.Tensor]] = []
    values: list[list[torch.Tensor]] = []
    logits = []
    for s in range(0, B, bucket):
        idx = order[s:s + bucket]
        Lb = max(len(prompt_ids[i]) for i in idx)
        ids = torch.full((len(idx), Lb), pad_id, dtype=torch.long)
        att = torch.zeros((len(idx), Lb), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, Lb - len(prompt_ids[i]):] = torch.tensor(prompt_ids[i])
            att[r, Lb - len(prompt_ids[i]):] = 1
        pos = (att.cumsum(-1) - 1).clamp_min(0)
        with _adapter_ctx(model, adapter_off):
            out = model(input_ids=ids.to(device), attention_mask=att.to(device), position_ids=pos.to(device),
                        use_cache=True, logits_to_keep=1)
        logits.append(out.logits[:, -1, :])
        for li, layer in enumerate(out.past_key_values.layers):
            if li == len(keys):
                keys.append([])
                values.append([])
            keys[li].append(torch.nn.functional.pad(layer.keys, (0, 0, L - Lb, 0)))
            values[li].append(torch.nn.functional.pad(layer.values, (0, 0, L - Lb, 0)))
    inverse = torch.empty(B, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(B)
    inverse = inverse.to(device)
    cache = DynamicCache()
    for li in range(len(keys)):
        cache.update(torch.cat(keys[li])[inverse], torch.cat(values[li])[inverse], li)
    return cache, torch.cat(logits)[inverse]


def _adapter_ctx(model: Any, adapter_off: bool):
    """``model.disable_adapter()`` (peft) when ``adapter_off``, else a no-op context."""
    return model.disable_adapter() if adapter_off else nullcontext()


@dataclass(frozen=True)
class _Mixture:
    """The second stream of :func:`sample_mixture`: the reference model (or the policy with its
    adapter disabled) and the geometric weight beta."""

    reference: Any
    beta: float
    adapter_off: bool


@torch.no_grad()
def _sample_block(model: Any, prompt_ids: list[list[int]], cfg: SamplingConfig, pad_id: int, eos_ids: set[int],
                  gen: torch.Generator, mix: _Mixture | None = None) -> list[tuple]:
    device = next(model.parameters()).device
    B, K = len(prompt_ids), cfg.num_samples
    L = max(len(p) for p in prompt_ids)
    attn = torch.zeros((B, L), dtype=torch.long)
    for i, p in enumerate(prompt_ids):  # left padding: the last prompt token is at position L-1
        attn[i, L - len(p):] = 1
    pos = (attn.cumsum(-1) - 1).clamp_min(0).to(device)
    attn = attn.to(device)
    cache, last_logits = _prefill(model, prompt_ids, pad_id, device, L, cfg.prefill_bucket)
    cache.batch_repeat_interleave(K)  # (B*K, ...) rows: prompt i's samples are rows i*K .. i*K+K-1
    logits = last_logits.float().repeat_interleave(K, dim=0)  # (B*K, V)
    if mix is not None:  # the reference stream: its own cache, same rows, positions and mask
        ref_cache, ref_last = _prefill(mix.reference, prompt_ids, pad_id, device, L, cfg.prefill_bucket,
                                       mix.adapter_off)
        ref_cache.batch_repeat_interleave(K)
        ref_logits = ref_last.float().repeat_interleave(K, dim=0)
    attn = attn.repeat_interleave(K, dim=0)
    next_pos = pos[:, -1:].repeat_interleave(K, dim=0) + 1
    N = B * K
    tokens = torch.empty((N, 0), dtype=torch.long, device=device)
    logp = torch.zeros(N, dtype=torch.float64, device=device)
    ref_logp = torch.zeros(N, dtype=torch.float64, device=device)
    mix_logp = torch.zeros(N, dtype=torch.float64, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    eos = torch.tensor(sorted(eos_ids), device=device) if eos_ids else None
    for _ in range(cfg.max_new_tokens):
        base_logp = torch.log_softmax(logits, dim=-1)
        if mix is not None:
            ref_lp = torch.log_softmax(ref_logits, dim=-1)
            # log pi_mix = (1 - beta) log pi + beta log mu - log Z   (per token, per row)
            mix_lp = torch.log_softmax((1.0 - mix.beta) * base_logp + mix.beta * ref_lp, dim=-1)
            draw_logits = mix_lp
        else:
            draw_logits = logits
        if cfg.temperature == 0:
            nxt = draw_logits.argmax(-1)
        else:
            filt = _filter_logits(draw_logits / cfg.temperature, cfg.top_k, cfg.top_p)
            nxt = torch.multinomial(torch.softmax(filt, dim=-1), 1, generator=gen).squeeze(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        logp += torch.where(done, 0.0, base_logp.gather(-1, nxt[:, None]).squeeze(-1).double())
        if mix is not None:
            ref_logp += torch.where(done, 0.0, ref_lp.gather(-1, nxt[:, None]).squeeze(-1).double())
            mix_logp += torch.where(done, 0.0, mix_lp.gather(-1, nxt[:, None]).squeeze(-1).double())
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if eos is not None:
            hit = torch.isin(nxt, eos) & ~done
            finished |= hit
            done |= hit
        if bool(done.all()):
            break
        attn = torch.cat([attn, (~done).long()[:, None]], dim=1)
        out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos,
                    past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()
        if mix is not None:
            with _adapter_ctx(mix.reference, mix.adapter_off):
                out = mix.reference(input_ids=nxt[:, None], attention_mask=attn, position_ids=next_pos,
                                    past_key_values=ref_cache, use_cache=True)
            ref_cache = out.past_key_values
            ref_logits = out.logits[:, -1, :].float()
        next_pos = next_pos + 1
    results = []
    for r in range(N):
        row = tokens[r].tolist()
        n = len(row)
        if finished[r]:
            n = next(j for j, t in enumerate(row) if t in eos_ids) + 1
        extra = (float(ref_logp[r]), float(mix_logp[r])) if mix is not None else (None, None)
        results.append((row[:n], float(logp[r]), bool(finished[r]), *extra))
    return results


def sample(model: Any, tokenizer: Any, prompts: Sequence[Any], cfg: SamplingConfig | None = None,
           backend: str = "torch", progress: bool = False) -> list[list[Sample]]:
    """K completions for every prompt: ``result[i][k]`` is prompt i's k-th sample.

    Parameters
    ----------
    model : a causal LM (transformers), in eval mode.
    tokenizer : its tokenizer (chat prompts go through its chat template).
    prompts : plain strings or chat message lists.
    cfg : sampling settings (defaults: K=4, 64 new tokens, T=1, top-p 1).
    backend : "torch" (default) or "vllm" (when installed; GPU).
    """
    cfg = cfg or SamplingConfig()
    if backend == "vllm":  # pragma: no cover - needs a GPU and vllm
        return _sample_vllm(model, tokenizer, prompts, cfg)
    if backend != "torch":
        raise ConfigError(f"unknown sampling backend {backend!r}; valid: torch, vllm")
    return _sample_torch(model, tokenizer, prompts, cfg, progress, None)


def sample_mixture(model: Any, tokenizer: Any, prompts: Sequence[Any], cfg: SamplingConfig | None = None, *,
                   beta: float, reference: Any = None, progress: bool = False) -> list[list[Sample]]:
    """K completions per prompt from the per-token geometric mixture of ``model`` and a reference.

    Munos et al. 2023, "Nash Learning from Human Feedback", arXiv:2312.00886, Sec. 7 (the
    alternative policy of Nash-MD-PG), and Calandriello et al. 2024, "Human Alignment of Large
    Language Models through Online Preference Optimisation", arXiv:2403.08635, Sec. 5 (IPO-MD)::

        pi_mix(y_t | x, y_<t) = pi(y_t | x, y_<t)^(1-beta) mu(y_t | x, y_<t)^beta / Z(x, y_<t)

    normalised token by token (the papers' practical sampler; the sequence-level geometric
    mixture pi(y|x)^(1-beta) mu(y|x)^beta / Z(x) has no autoregressive sampler). Temperature,
    top-k and top-p then apply to pi_mix's logits exactly as :func:`sample` applies them to pi's.
    beta = 0 is :func:`sample` (same seed, same draws up to float rounding); beta = 1 samples mu.

    Parameters
    ----------
    model : the policy pi (a transformers causal LM, or a peft model).
    tokenizer, prompts, cfg : as for :func:`sample`.
    beta : float in [0, 1]
        Weight of the reference in the geometric mixture.
    reference : the reference mu, a second causal LM with the same vocabulary; None (default)
        uses ``model`` with its LoRA adapter disabled (``model.disable_adapter()``), so a peft
        policy needs no second copy. Each of the two keeps its own KV cache; every decoding
        step runs one forward of each on the same B*K rows.

    Returns ``result[i][k]`` with ``logp`` = log pi(y|x), ``ref_logp`` = log mu(y|x) and
    ``mix_logp`` = log pi_mix(y|x) (T = 1, untruncated), summed over the sampled tokens.
    """
    cfg = cfg or SamplingConfig()
    if not 0.0 <= float(beta) <= 1.0:
        raise ConfigError(f"the geometric-mixture weight beta must lie in [0, 1], got {beta}")
    adapter_off = reference is None
    if adapter_off:
        if not hasattr(model, "disable_adapter"):
            raise ConfigError("sample_mixture without a reference model needs a LoRA (peft) policy, whose base "
                              "(adapter disabled) is the reference; pass reference=<model> otherwise")
        reference = model
    return _sample_torch(model, tokenizer, prompts, cfg, progress, _Mixture(reference, float(beta), adapter_off))


def _sample_torch(model: Any, tokenizer: Any, prompts: Sequence[Any], cfg: SamplingConfig, progress: bool,
                  mix: _Mixture | None) -> list[list[Sample]]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    prompt_ids = encode_prompts(tokenizer, prompts, cfg.max_prompt_length)
    models = [model] if mix is None or mix.reference is model else [model, mix.reference]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    results: list[list[Sample]] = []
    blocks = range(0, len(prompt_ids), cfg.batch_size)
    if progress:
        from rich.progress import track

        blocks = track(blocks, description="sampling" if mix is None else "sampling (mixture)")
    try:
        for start in blocks:
            block = prompt_ids[start:start + cfg.batch_size]
            flat = _sample_block(model, block, cfg, pad_id, eos_ids, gen, mix)
            for i in range(len(block)):
                group = []
                for k in range(cfg.num_samples):
                    toks, lp, fin, ref_lp, mix_lp = flat[i * cfg.num_samples + k]
                    text = tokenizer.decode(toks, skip_special_tokens=True)
                    group.append(Sample(start + i, text, toks, lp, fin, ref_lp, mix_lp))
                results.append(group)
    finally:
        for m, t in zip(models, was_training):
            m.train(t)
    return results


def _sample_vllm(model: Any, tokenizer: Any, prompts: Sequence[Any], cfg: SamplingConfig):  # pragma: no cover
    from ..errors import require

    vllm = require("vllm", "gpu")
    llm = model if isinstance(model, vllm.LLM) else vllm.LLM(model=model.name_or_path)
    params = vllm.SamplingParams(n=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                 top_k=cfg.top_k or -1, max_tokens=cfg.max_new_tokens, seed=cfg.seed, logprobs=0)
    texts = [tokenizer.decode(p) for p in encode_prompts(tokenizer, prompts, cfg.max_prompt_length)]
    outs = llm.generate(texts, params)
    return [[Sample(i, c.text, list(c.token_ids), float(c.cumulative_logprob or 0.0), c.finish_reason == "stop")
             for c in o.outputs] for i, o in enumerate(outs)]
