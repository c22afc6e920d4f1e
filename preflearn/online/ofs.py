"""OFS-DPO: online DPO with two LoRA modules on one base, a fast one chasing a slow one.

Qi et al. 2024, "Online DPO: Online Direct Preference Optimization with Fast-Slow Chasing",
arXiv:2406.05534, Section 4 (OFS-DPO). Two *identical* LoRA modules sit on the same frozen
base: a fast one (learning rate ``lr``) and a slow one (``lr / lr_ratio``). Both are trained with
the DPO loss on the round's judged pairs; the fast one also pays a regulariser on the gap of
the two modules' preference margins, which asks it to beat the slow one::

    m_theta(x, y_w, y_l) = beta [ log pi_theta(y_w|x)/pi_ref(y_w|x) - log pi_theta(y_l|x)/pi_ref(y_l|x) ]
    L_DPO(theta)  = -log sigmoid( m_theta )
    L_reg         = -log sigmoid( m_fast - sg(m_slow) )
                  = -log sigmoid( beta [ log pi_f(y_w)/pi_s(y_w) - log pi_f(y_l)/pi_s(y_l) ] )
    L_fast = L_DPO(fast) + lam * L_reg,        L_slow = L_DPO(slow)

The regulariser is a DPO loss of the fast module with the (moving) slow module as its
reference: pi_ref cancels in m_fast - m_slow. Unlike L_DPO, whose gradient fades as the margin
grows (sigmoid saturates), the gap to a module that keeps following stays small, so the fast
module keeps a useful gradient (the paper's motivation, from its min-max regret bound).
"Chasing": after a round, if the slow module's DPO loss on the round's pairs is lower than the
fast one's, the two swap roles (their weights and optimizer states are exchanged), so the
deployed, sampling policy is always the better of the two (``swap``).

What was checked: the mechanism above (two LoRA modules, fast/slow learning rates, DPO on both,
a regulariser on the margin gap that makes the fast module beat the slow one, the cross-domain
COFS variant as a linear combination of per-domain fast modules) follows the paper's abstract
and method summaries; the equation numbers, the weight ``lam``, the learning-rate ratio and
the swap rule could not be read from the paper offline, so ``lam = 1``, ``lr_ratio = 4`` and
``swap = True`` are our choices (marked). The stop-gradient on the slow margin inside L_reg is
also ours: without it L_reg would push the slow module's margin *down*.

COFS-DPO (the cross-domain extension: keep each domain's best fast module and use a linear
combination of them, weights chosen on held-out data) is left out: it needs a stream of
domains, which the online loops here do not model.

Sampling, judging and pair building reuse :mod:`preflearn.online` pieces (the fast module
samples K = 2 completions per prompt, the judge orders them, ties are dropped); the reference
is the base with both adapters off.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .judges import Judge
from .sampling import SamplingConfig, sample

__all__ = ["OFSConfig", "ofs_losses", "add_fast_slow_adapters", "run_ofs_dpo"]


@dataclass(frozen=True)
class OFSConfig:
    """An OFS-DPO run: rounds of (fast module samples -> judge -> DPO on both modules + the chasing regulariser)."""

    name: str = "online-ofs"
    output_dir: str = "runs"
    seed: int = 0
    rounds: int = field(default=2, metadata={"ge": 1})
    prompts_per_round: int = field(default=16, metadata={"ge": 1})
    eval_prompts: int = field(default=8, metadata={"ge": 0})
    beta: float = field(default=0.1, metadata={"help": "DPO's beta (its paper's default)", "gt": 0})
    lam: float = field(default=1.0, metadata={"help": "weight of the fast-slow regulariser (our choice)", "ge": 0})
    lr: float = field(default=1e-4, metadata={"help": "the fast module's learning rate", "gt": 0})
    lr_ratio: float = field(default=4.0, metadata={"help": "fast lr / slow lr (our choice)", "ge": 1})
    swap: bool = field(default=True, metadata={"help": "swap the modules when the slow one has the lower DPO loss"})
    batch_size: int = field(default=4, metadata={"ge": 1})
    epochs: int = field(default=1, metadata={"ge": 1})
    max_grad_norm: float = field(default=1.0, metadata={"ge": 0})
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=2))
    eval_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=1, temperature=0.0))


def ofs_losses(fast_logps: Any, slow_logps: Any, ref_logps: Any, beta: float = 0.1, lam: float = 1.0) -> dict[str, Any]:
    """The OFS-DPO losses of one batch of pairs (see the module docstring for the equations).

    Parameters
    ----------
    fast_logps, slow_logps, ref_logps : (B, 2) sequence log-probs of (chosen, rejected) under the
        fast module, the slow module and the reference (the base).
    beta : DPO's beta. lam : the regulariser's weight.

    Returns a dict of scalars ``fast`` (L_DPO(fast) + lam L_reg), ``slow`` (L_DPO(slow)), ``reg``,
    ``dpo_fast``, ``dpo_slow``, and the (B,) margins ``margin_fast``/``margin_slow`` (detached).
    The slow margin enters L_reg without gradient.
    """
    import torch.nn.functional as F

    def margin(lp):
        h = lp - ref_logps
        return beta * (h[:, 0] - h[:, 1])

    m_f, m_s = margin(fast_logps), margin(slow_logps)
    dpo_f, dpo_s = -F.logsigmoid(m_f).mean(), -F.logsigmoid(m_s).mean()
    reg = -F.logsigmoid(m_f - m_s.detach()).mean()
    return {"fast": dpo_f + lam * reg, "slow": dpo_s, "reg": reg, "dpo_fast": dpo_f, "dpo_slow": dpo_s,
            "margin_fast": m_f.detach(), "margin_slow": m_s.detach()}


def add_fast_slow_adapters(model: Any, lora: Any = None) -> Any:
    """A peft model with two identical LoRA adapters, ``fast`` (active) and ``slow``, on ``model``.

    ``lora``: a ``peft.LoraConfig`` (default: r 8, alpha 16, no dropout, on the attention and MLP
    projections of LLaMA-style blocks). LoRA's B matrices start at 0, so both modules start as the base.
    """
    from peft import LoraConfig, get_peft_model

    if lora is None:
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, lora, adapter_name="fast")
    peft_model.add_adapter("slow", lora)
    peft_model.set_adapter("fast")
    return peft_model


def _adapter_params(model: Any, name: str) -> dict[str, Any]:
    return {n.replace(f".{name}.", ".{}."): p for n, p in model.named_parameters() if f".{name}." in n and "lora_" in n}


def _use(model: Any, name: str, params: list[Any]) -> None:
    """Activate one adapter for the next forward; keep every LoRA weight trainable (peft flips the others off)."""
    model.set_adapter(name)
    for p in params:
        p.requires_grad_(True)


def _swap(fast: dict[str, Any], slow: dict[str, Any], optim: Any) -> None:
    import torch

    with torch.no_grad():
        for key, pf in fast.items():
            ps = slow[key]
            tmp = pf.detach().clone()
            pf.copy_(ps)
            ps.copy_(tmp)
            sf, ss = optim.state.pop(pf, None), optim.state.pop(ps, None)
            if ss is not None:
                optim.state[pf] = ss
            if sf is not None:
                optim.state[ps] = sf


def run_ofs_dpo(cfg: OFSConfig, judge: Judge, *, model: Any, tokenizer: Any, contexts: Sequence[Any],
                progress: bool = False) -> dict[str, Any]:
    """Run ``cfg.rounds`` OFS-DPO rounds; ``model`` comes from :func:`add_fast_slow_adapters`.

    Returns a summary with per-round losses, margins and swaps and, with ``eval_prompts``, the
    held-out win rate (and mean judge score) of the fast module's greedy answers over the base's.
    Each round's judged pairs are saved as records (``round-<r>/pairs.jsonl``).
    """
    import torch

    from ..data.collate import collate_shared
    from ..data.writers import atomic_write
    from ..models.causal_lm import score_batch
    from ..train.reference import _eval_scores
    from .group import _pairs_round, split_prompts
    from .loop import held_out_summary

    if not (hasattr(model, "set_adapter") and hasattr(model, "disable_adapter")):
        raise ConfigError("OFS-DPO needs a peft model with adapters 'fast' and 'slow' (add_fast_slow_adapters)")
    fast, slow = _adapter_params(model, "fast"), _adapter_params(model, "slow")
    if not fast or set(fast) != set(slow):
        raise ConfigError("OFS-DPO needs two identical LoRA adapters named 'fast' and 'slow' (add_fast_slow_adapters)")
    if cfg.sampling.num_samples < 2:
        raise ConfigError("OFS-DPO orders two samples per prompt: sampling.num_samples >= 2")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pool, order, eval_ctx, run, pad_id = split_prompts(cfg, contexts, tokenizer, rng)
    lora = list(fast.values()) + list(slow.values())
    _use(model, "fast", lora)
    with model.disable_adapter():
        baseline = [g[0].text for g in sample(model, tokenizer, eval_ctx, cfg.eval_sampling)] if eval_ctx else []
    optim = torch.optim.AdamW([{"params": list(fast.values()), "lr": cfg.lr},
                               {"params": list(slow.values()), "lr": cfg.lr / cfg.lr_ratio}], weight_decay=0.0)
    rounds, rows, step = [], [], 0
    for r in range(cfg.rounds):
        start = cfg.eval_prompts + r * cfg.prompts_per_round
        ctx = [pool[i] for i in order[start:start + cfg.prompts_per_round]]
        scfg = SamplingConfig(**{**cfg.sampling.__dict__, "seed": cfg.sampling.seed + r})
        _use(model, "fast", lora)  # the fast module is the deployed policy that samples
        examples, _ = _pairs_round(model, tokenizer, judge, ctx, scfg, pad_id, run / f"round-{r}", r, rng)
        idx = rng.permutation(len(examples))
        batches = [idx[s:s + cfg.batch_size].tolist() for s in range(0, len(idx), cfg.batch_size)]
        collated = [collate_shared([examples[i] for i in b], pad_token_id=pad_id) for b in batches]
        with model.disable_adapter():
            refs = [_eval_scores(model, batch, False)["logps"] for batch in collated]
        model.train()
        dpo_f, dpo_s = [], []
        for _ in range(cfg.epochs):
            for bi in rng.permutation(len(batches)):
                _use(model, "slow", lora)
                slow_lp = score_batch(model, collated[bi])["logps"]
                _use(model, "fast", lora)
                fast_lp = score_batch(model, collated[bi])["logps"]
                out = ofs_losses(fast_lp, slow_lp, refs[bi], beta=cfg.beta, lam=cfg.lam)
                optim.zero_grad(set_to_none=True)
                (out["fast"] + out["slow"]).backward()  # disjoint parameters: each module gets its own loss
                torch.nn.utils.clip_grad_norm_(list(fast.values()), cfg.max_grad_norm or math.inf)
                torch.nn.utils.clip_grad_norm_(list(slow.values()), cfg.max_grad_norm or math.inf)
                optim.step()
                step += 1
                row = {"round": r, "step": step, **{k: float(out[k].detach()) for k in
                                                     ("fast", "slow", "reg", "dpo_fast", "dpo_slow")},
                       "margin_gap": float((out["margin_fast"] - out["margin_slow"]).mean())}
                rows.append(row)
                dpo_f.append(row["dpo_fast"])
                dpo_s.append(row["dpo_slow"])
        model.eval()
        after = {}  # each module's DPO loss on this round's pairs after the updates
        with torch.no_grad():
            for name in ("fast", "slow"):
                _use(model, name, lora)
                lps = [score_batch(model, batch)["logps"] for batch in collated]
                after[name] = float(np.mean([float(ofs_losses(lp, lp, ref, cfg.beta)["dpo_fast"])
                                             for lp, ref in zip(lps, refs)]))
        swapped = bool(cfg.swap and after["slow"] < after["fast"])
        if swapped:  # chasing: the better module leads (and samples the next round)
            _swap(fast, slow, optim)
        _use(model, "fast", lora)
        rounds.append({"round": r, "pairs": len(examples), "dpo_fast": float(np.mean(dpo_f)),
                       "dpo_slow": float(np.mean(dpo_s)), "dpo_after": after, "swapped": swapped})
        if progress:
            print(f"round {r}: {len(examples)} pairs, DPO loss fast {rounds[-1]['dpo_fast']:.4f} "
                  f"slow {rounds[-1]['dpo_slow']:.4f}{' (swapped)' if swapped else ''}")
    with atomic_write(run / "metrics.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    model.eval()
    summary: dict[str, Any] = {"rounds": rounds}
    if eval_ctx:
        final = [g[0].text for g in sample(model, tokenizer, eval_ctx, cfg.eval_sampling)]
        summary.update(held_out_summary(judge, eval_ctx, final, baseline))
    with atomic_write(run / "summary.json", "w") as f:
        f.write(json.dumps(summary, indent=2, default=str))
    return summary
