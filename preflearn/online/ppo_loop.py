"""A compact PPO loop for language models: reward model at the end, per-token KL to the reference.

Each round (Ziegler et al. 2019, arXiv:1909.08593; Ouyang et al. 2022, arXiv:2203.02155):

1. sample K completions per prompt from the policy (shared-prompt KV cache);
2. the judge scores them (``judge.score``: a reward model or an oracle);
3. one no-grad pass gives, per completion token, log pi_old, log pi_ref and the value V_old;
   rewards = -kl_coef (log pi_old - log pi_ref) per token + the score at the last token
   (:func:`~preflearn.online.ppo.kl_penalized_rewards`), advantages and returns by GAE, the
   advantages whitened over the round;
4. ``ppo_epochs`` passes over mini-batches minimise the clipped policy loss plus
   ``value_coef`` times the clipped value loss (:func:`~preflearn.online.ppo.ppo_losses`);
   the KL coefficient follows :class:`~preflearn.online.ppo.AdaptiveKLController` when
   ``kl_target`` is set.

The value is a linear head on the policy's final hidden state at the position that predicts
each completion token (shared backbone, as in InstructGPT-style implementations with a value
head; initialised to 0). Policy log-probs and values come from one backbone forward of the
prefix-shared batch.

``token_reward`` adds a dense per-token reward to step 3, e.g. RTO's
beta log(pi_dpo / pi_ref) from a DPO-trained model (:func:`preflearn.online.ppo.rto_token_reward`,
Zhong et al. 2024, arXiv:2404.18922); ``score_coef`` weighs the judge's sparse score (0 = the
dense reward alone).

Checkpoints and resume as in :func:`preflearn.online.group.run_online_group`: after every round
the trainable weights, the value head, the optimizer (policy + value head), the RNG states, the
adaptive KL coefficient and the finished rounds are saved atomically; ``resume=True`` continues
from the last complete round and reproduces the uninterrupted run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .judges import Judge
from .sampling import SamplingConfig, encode_prompts, sample

__all__ = ["PPOConfig", "run_online_ppo", "policy_and_values"]


@dataclass(frozen=True)
class PPOConfig:
    name: str = "online-ppo"
    output_dir: str = "runs"
    seed: int = 0
    rounds: int = field(default=2, metadata={"ge": 1})
    prompts_per_round: int = field(default=16, metadata={"ge": 1})
    eval_prompts: int = field(default=8, metadata={"ge": 0})
    lr: float = field(default=1e-5, metadata={"gt": 0})
    batch_size: int = field(default=4, metadata={"help": "prompts (x K samples) per optimizer step", "ge": 1})
    ppo_epochs: int = field(default=2, metadata={"ge": 1})
    kl_coef: float = field(default=0.05, metadata={"help": "initial per-token KL coefficient", "ge": 0})
    kl_target: float = field(default=0.0, metadata={"help": "adaptive KL target in nats per sequence (0 = fixed)"})
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 0.1
    max_grad_norm: float = field(default=1.0, metadata={"ge": 0})
    score_coef: float = field(default=1.0, metadata={"help": "weight of the judge's score at the last token "
                                                           "(RTO's beta_3; 0 = only a dense token_reward)"})
    checkpoint: bool = field(default=True, metadata={"help": "save a checkpoint after every round (for resume)"})
    keep_last: int = field(default=2, metadata={"ge": 1})
    report: bool = field(default=True, metadata={"help": "write report.html + PNG plots at the end"})
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=2))
    eval_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=1, temperature=0.0))


def policy_and_values(model: Any, value_head: Any, batch: Any) -> tuple[Any, Any, Any]:
    """Per-token log pi (B, K, T), values (B, K, T) and mask (B, K, T) from ONE backbone forward.

    Same layout as :func:`preflearn.models.causal_lm.score_batch` (token-level): the value of
    token t is read from the hidden state that predicts it.
    """
    import torch

    from ..models.causal_lm import completion_hidden, target_logps

    h, head, batch = completion_hidden(model, batch)  # (N, H)
    tok = target_logps(h, head, batch.target_ids)
    val = value_head(h).squeeze(-1).to(tok.dtype)
    b, k, t = batch.num_examples, batch.num_candidates, batch.max_completion_length
    idx = (batch.target_cand, batch.target_step)
    logps = tok.new_zeros(b * k, t).index_put(idx, tok).view(b, k, t)
    values = val.new_zeros(b * k, t).index_put(idx, val).view(b, k, t)
    mask = torch.zeros(b * k, t, dtype=tok.dtype, device=tok.device).index_put(
        idx, torch.ones_like(tok).detach()).view(b, k, t)
    return logps, values, mask


def run_online_ppo(cfg: PPOConfig, judge: Judge, *, model: Any, tokenizer: Any, contexts: Sequence[Any],
                   progress: bool = False, token_reward: Callable[[Any, Any], Any] | None = None,
                   resume: bool = False) -> dict[str, Any]:
    """Rounds of sample -> reward-model score -> PPO; returns per-round mean scores and the held-out win rate.

    token_reward : optional ``f(batch, ref_token_logps (B, K, T)) -> (B, K, T)`` dense reward added
        to every completion token's reward (RTO: :func:`preflearn.online.ppo.rto_token_reward`).
    resume : continue from the run directory's last complete round (pass the initial policy).
    """
    import torch

    from ..data.collate import collate_shared
    from ..data.tokenize import TokenizedExample
    from ..data.writers import atomic_write
    from . import ppo as P
    from .group import (
        _check_fingerprint,
        _fingerprint,
        _reference,
        _report,
        _write_config,
        load_round,
        save_round,
        split_prompts,
    )
    from .loop import held_out_summary

    if not hasattr(judge, "score"):
        raise ConfigError("PPO needs a judge with scores (a reward model or an oracle)")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pool, order, eval_ctx, run, pad_id = split_prompts(cfg, contexts, tokenizer, rng)
    reference = _reference(model, "initial")  # from the initial policy, also on resume
    hidden = model.get_output_embeddings().in_features if hasattr(model, "get_output_embeddings") else None
    value_head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    kl_ctl = P.AdaptiveKLController(value=cfg.kl_coef, target=cfg.kl_target or 1.0)
    rounds, rows, step, first = [], [], 0, 0
    fingerprint = _fingerprint(cfg)
    fingerprint["token_reward"] = token_reward is not None
    _write_config(run, cfg)
    if resume:
        first, saved = load_round(run, model=model, optimizer=optim, rng=rng, modules={"value_head": value_head})
        _check_fingerprint(saved["config"], fingerprint, run)
        rounds, rows, step, baseline = saved["rounds"], saved["metrics"], saved["step"], saved["baseline"]
        kl_ctl.value = saved["kl_coef"]
    else:
        baseline = [g[0].text for g in sample(model, tokenizer, eval_ctx, cfg.eval_sampling)] if eval_ctx else []
    for r in range(first, cfg.rounds):
        start = cfg.eval_prompts + r * cfg.prompts_per_round
        ctx = [pool[i] for i in order[start:start + cfg.prompts_per_round]]
        scfg = SamplingConfig(**{**cfg.sampling.__dict__, "seed": cfg.sampling.seed + r})
        groups = sample(model, tokenizer, ctx, scfg, progress=progress)
        scores = [np.asarray(judge.score(c, [s.text for s in g]), dtype=np.float64) for c, g in zip(ctx, groups)]
        examples = [TokenizedExample(prompt_ids=list(ids), kind="ranked",
                                     completion_ids=[s.token_ids or [pad_id] for s in g])
                    for ids, g in zip(encode_prompts(tokenizer, ctx, scfg.max_prompt_length), groups)]
        idx = rng.permutation(len(examples))
        batches = [idx[s:s + cfg.batch_size].tolist() for s in range(0, len(idx), cfg.batch_size)]
        collated = [collate_shared([examples[i] for i in b], pad_token_id=pad_id) for b in batches]
        # rollout statistics under pi_old: log-probs, values, KL-shaped rewards, GAE
        stats, kls = [], []
        model.eval()
        with torch.no_grad():
            for batch, b in zip(collated, batches):
                lp, v, m = policy_and_values(model, value_head, batch)
                ref = reference(batch, b, True)["token_logps"]
                B, K, T = lp.shape
                score = torch.tensor(np.stack([scores[i] for i in b]), dtype=lp.dtype).reshape(B * K)
                flat = [x.reshape(B * K, T) for x in (lp, ref, m, v)]
                rw = P.kl_penalized_rewards(cfg.score_coef * score, flat[0], flat[1], flat[2], kl_ctl.value)
                if token_reward is not None:  # RTO: + beta log pi_dpo/pi_ref on every completion token
                    rw = rw + token_reward(batch, ref).reshape(B * K, T).to(rw.dtype) * flat[2]
                adv, ret = P.gae(rw, flat[3], flat[2], cfg.gamma, cfg.lam)
                kls.append(float(((flat[0] - flat[1]) * flat[2]).sum(-1).mean()))
                stats.append({"old": flat[0], "values": flat[3], "mask": flat[2], "adv": adv, "ret": ret})
        all_adv = torch.cat([s["adv"].reshape(-1) for s in stats])
        all_m = torch.cat([s["mask"].reshape(-1) for s in stats])
        mean = (all_adv * all_m).sum() / all_m.sum()
        std = torch.sqrt((((all_adv - mean) * all_m) ** 2).sum() / all_m.sum() + 1e-8)
        model.train()
        losses = []
        for _ in range(cfg.ppo_epochs):
            for bi in rng.permutation(len(batches)):
                st = stats[bi]
                lp, v, _ = policy_and_values(model, value_head, collated[bi])
                B, K, T = lp.shape
                out = P.ppo_losses(lp.reshape(B * K, T), st["old"], (st["adv"] - mean) / std * st["mask"],
                                   v.reshape(B * K, T), st["values"], st["ret"], st["mask"], clip=cfg.clip,
                                   value_clip=cfg.value_clip, value_coef=cfg.value_coef)
                optim.zero_grad(set_to_none=True)
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
                optim.step()
                step += 1
                row = {"split": "train", "round": r, "step": step, "kl_coef": kl_ctl.value}
                row.update({k: float(x.detach()) for k, x in out.items()})
                rows.append(row)
                losses.append(row["loss"])
        kl = float(np.mean(kls))
        if cfg.kl_target:
            kl_ctl.update(kl)
        rounds.append({"round": r, "mean_score": float(np.mean(scores)), "kl": kl, "kl_coef": kl_ctl.value,
                       "losses": losses})
        if cfg.checkpoint:
            save_round(run, r + 1, model=model, optimizer=optim, rng=rng, modules={"value_head": value_head},
                       keep_last=cfg.keep_last, state={"rounds": rounds, "metrics": rows, "step": step,
                                                       "baseline": baseline, "kl_coef": kl_ctl.value,
                                                       "config": fingerprint})
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
    if cfg.report:
        _report(run, "ppo" if token_reward is None else "ppo+token_reward", summary, "mean_score")
    summary["value_head"] = value_head
    return summary
