"""Nash-seeking online methods at language-model level: Nash-MD-PG, online IPO, IPO-MD and EGPO.

The tabular versions (exact expectations, exploitability against the solved equilibrium)
are in :mod:`preflearn.online.game`; this module runs the same updates on a causal LM with
sampled responses and a judge. The game they all target is the KL-regularised preference
game (Munos et al. 2023, arXiv:2312.00886, Sec. 3)::

    max_pi min_pi'  P(pi > pi') - tau KL(pi || mu) + tau KL(pi' || mu)

Methods (``NashConfig.method``) and what one optimizer step samples
-------------------------------------------------------------------
* ``nash_md`` -- Nash-MD-PG (Munos et al., Sec. 7): y ~ pi, y' ~ pi_mix (the per-token
  geometric mixture pi^(1-beta) mu^beta, :func:`preflearn.online.sampling.sample_mixture`),
  the judge's P(y > y'), loss :func:`nash_md_pg`.
* ``online_ipo`` -- online IPO (Calandriello et al. 2024, arXiv:2403.08635, Sec. 4): y, y' ~ pi,
  loss :func:`online_ipo` on the pair.
* ``ipo_md`` -- IPO-MD (Calandriello et al., Sec. 5): y, y' ~ pi_mix, the same loss.
* ``egpo`` -- EGPO (Zhou, Fazel & Du 2025, arXiv:2503.08942, Algorithm 1): extragradient on
  the online IPO loss, see :func:`egpo_step`.

Every step samples fresh pairs from the *current* policy for ``batch_size`` prompts (fully
online, as in Calandriello et al.); a round is a pass over ``prompts_per_round`` prompts.
The reference mu is the initial policy for the whole run (the LoRA base with the adapter off,
or one frozen copy). Each round's samples and judgments are saved as records
(``round-<r>/pairs.jsonl``, :class:`~preflearn.data.PairwiseRecord`, chosen = the response
the judge prefers) and raw rows (``round-<r>/samples.jsonl``), plus ``metrics.jsonl`` and
``summary.json`` (written atomically).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..losses.base import LossOutput, Scores, pair_metrics, register, weighted_mean
from .judges import Judge
from .sampling import Sample, SamplingConfig, encode_prompts, sample, sample_mixture

__all__ = ["NashConfig", "METHODS", "LOSS_OF", "nash_md_pg", "online_ipo", "sample_pairs", "judge_pairs",
           "pair_examples", "pair_loss", "egpo_step", "nash_round", "run_online_nash"]

METHODS = ("nash_md", "online_ipo", "ipo_md", "egpo")
LOSS_OF = {"nash_md": "nash_md_pg", "online_ipo": "online_ipo", "ipo_md": "online_ipo", "egpo": "online_ipo"}


def _probabilities(scores: Scores, name: str) -> Tensor:
    p = scores.rewards[:, 0]
    if bool(((p < 0) | (p > 1)).any()):
        raise ConfigError(f"loss {name!r} reads Scores.rewards[:, 0] as the judge's P(y > y'): it must lie in [0, 1]")
    return p.to(scores.logps.dtype)


# ----------------------------------------------------------------------------- Nash-MD-PG
@register(
    "nash_md_pg",
    family="online",
    k=1,
    reference="required",
    needs=("rewards",),
    defaults={"tau": 0.008},
    paper="Nash Learning from Human Feedback",
    arxiv="2312.00886",
)
def nash_md_pg(scores: Scores, tau: float = 0.008) -> LossOutput:
    """Nash-MD-PG: REINFORCE on the preference against a mixture sample, plus a KL penalty.

    Munos et al. 2023, "Nash Learning from Human Feedback", arXiv:2312.00886, Sec. 7 (the
    policy-gradient version of Nash-MD). For y ~ pi(.|x) and y' ~ pi_mix(.|x), pi_mix ∝
    pi^(1-beta) mu^beta (the "alternative policy", sampled by
    :func:`preflearn.online.sampling.sample_mixture`), the gradient estimate is::

        g = (P(y > y' | x) - 1/2) grad log pi(y|x) - tau grad KL(pi(.|x) || mu(.|x))

    (1/2 is the control variate that makes the estimate's baseline exact for a symmetric
    preference). We minimise the surrogate::

        L = -(P(y > y'|x) - 1/2) log pi(y|x) + (tau / 2) (log pi(y|x) - log mu(y|x))^2

    whose gradient is -g in expectation over y ~ pi: grad (1/2) h^2 = h grad log pi(y) with
    h = log pi(y)/mu(y), and E_{y~pi}[h grad log pi(y)] = grad KL(pi || mu) (the score-function
    KL gradient; E[grad log pi] = 0). The sequence-level log-ratio is used, not TRL's
    per-token sg(log-ratio_t) * log pi_t (``NashMDTrainer``), which drops the cross-token terms of
    the KL gradient. The squared form needs no stop-gradient, so finite differences see the
    gradient the update uses.

    Parameters
    ----------
    scores : ``logps`` (B, 1) log pi(y|x) of the policy's sample (differentiable);
        ``ref_logps`` (B, 1) log mu(y|x); ``rewards`` (B, 1) the judge's P(y > y' | x) in [0, 1]
        against the mixture's sample y' (its log-probs are not needed).
    tau : float
        KL strength, 0.008 as we read the paper's experiments (Sec. 8; its mixture weight beta =
        0.125 did best there). Small models with few steps may want more.

    Returns rewards = (P - 1/2) - tau h (B, 1), the KL-regularised weight of grad log pi(y);
    metrics ``kl`` (mean h, the k1 estimate of KL(pi || mu)) and ``preference`` (mean P).
    """
    p = _probabilities(scores, "nash_md_pg")
    logp = scores.logps[:, 0]
    h = logp - scores.ref_logps[:, 0]
    per_example = -(p - 0.5) * logp + 0.5 * tau * h**2
    loss = weighted_mean(per_example, scores.weights)
    weight = ((p - 0.5) - tau * h).detach()[:, None]
    metrics = pair_metrics(weight, loss)
    metrics.update({"kl": h.detach().float().mean(), "preference": p.detach().float().mean()})
    return LossOutput(loss=loss, rewards=weight, metrics=metrics, per_example=per_example)


# ----------------------------------------------------------------------------- online IPO
@register(
    "online_ipo",
    family="online",
    k=2,
    reference="required",
    needs=("rewards",),
    defaults={"tau": 0.1},
    paper="Human Alignment of Large Language Models through Online Preference Optimisation",
    arxiv="2403.08635",
)
def online_ipo(scores: Scores, tau: float = 0.1) -> LossOutput:
    """Online IPO: squared regression of the log-ratio margin of two sampled responses onto (P - 1/2)/tau.

    Calandriello et al. 2024, "Human Alignment of Large Language Models through Online
    Preference Optimisation", arXiv:2403.08635, Sec. 4 (online IPO: y, y' ~ sg(pi)) and Sec. 5
    (IPO-MD: y, y' ~ sg(pi_mix)); the same loss is EGPO's (Zhou, Fazel & Du 2025,
    arXiv:2503.08942, Sec. 4)::

        h(y, y') = log pi(y|x)/mu(y|x) - log pi(y'|x)/mu(y'|x)
        L = ( h(y, y') - (P(y > y'|x) - 1/2) / tau )^2

    With a hard label (P = 1 for the preferred response) this is IPO's (h_w - h_l - 1/(2 tau))^2
    (Azar et al. 2023, arXiv:2310.12036, Eq. 17) on on-policy pairs; with the judge's soft P it
    regresses onto the expected label, which gives the same expected gradient. The loss is
    symmetric in the pair's order (h and P - 1/2 both change sign). Sequence-level log-ratios
    (no length normalisation): the paper's equivalence to Nash-MD self-play needs them. Its
    expected gradient over y, y' ~ pi equals the tabular ``online_ipo_step``'s in
    :mod:`preflearn.online.game` (tests/online/test_nash.py checks it on a one-token LM).

    Parameters
    ----------
    scores : ``logps``/``ref_logps`` (B, 2) of the pair (by convention the preferred response
        first); ``rewards`` (B, 2) = [P, 1 - P] with P = P(y_0 > y_1 | x) from the judge.
    tau : float
        KL strength of the game; 0.1 (the target margin 1/(2 tau) = 5 on a sure preference),
        our choice, IPO's default in this library.

    Returns the implicit rewards log pi/mu (B, 2).
    """
    p = _probabilities(scores, "online_ipo")
    ratios = scores.logps - scores.ref_logps
    h = ratios[:, 0] - ratios[:, 1]
    target = (p - 0.5) / tau
    per_example = (h - target) ** 2
    loss = weighted_mean(per_example, scores.weights)
    metrics = pair_metrics(ratios.detach(), loss)
    metrics.update({"h": h.detach().float().mean(), "target": target.detach().float().mean()})
    return LossOutput(loss=loss, rewards=ratios.detach(), metrics=metrics, per_example=per_example)


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class NashConfig:
    """A Nash-seeking online run: every optimizer step samples fresh pairs, judges and updates."""

    name: str = "online-nash"
    output_dir: str = "runs"
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainConfig.model fields (name, lora)"})
    prompts: str = field(default="bundled:hh-rlhf", metadata={"help": "records file whose contexts are the prompt pool"})
    method: str = field(default="nash_md", metadata={"choices": METHODS})
    hparams: dict[str, Any] = field(default_factory=dict, metadata={"help": "the loss's hyperparameters (tau)"})
    mixture: float = field(default=0.125, metadata={"ge": 0, "le": 1,
                                                    "help": "beta of pi^(1-beta) mu^beta (nash_md, ipo_md)"})
    rounds: int = field(default=2, metadata={"ge": 1})
    prompts_per_round: int = field(default=16, metadata={"ge": 1})
    eval_prompts: int = field(default=8, metadata={"ge": 0})
    lr: float = field(default=1e-5, metadata={"gt": 0})
    optimizer: str = field(default="adamw", metadata={"choices": ("adamw", "sgd"),
                                                      "help": "egpo restores the optimizer state after the half step"})
    batch_size: int = field(default=4, metadata={"help": "prompts (one pair each) per optimizer step", "ge": 1})
    max_grad_norm: float = field(default=1.0, metadata={"help": "0 = no clipping", "ge": 0})
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=2),
                                     metadata={"help": "num_samples is ignored: every method samples one pair"})
    eval_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=1, temperature=0.0))

    @property
    def loss(self) -> str:
        return LOSS_OF[self.method]


# ----------------------------------------------------------------------------- one step's data
@dataclass
class Pair:
    """Two responses to one prompt, their sources and the judge's P(y > y')."""

    context: Any
    prompt_ids: list[int]
    y: Sample
    y_prime: Sample
    sources: tuple[str, str]
    p: float = 0.5


def sample_pairs(model: Any, tokenizer: Any, contexts: Sequence[Any], method: str, scfg: SamplingConfig,
                 mixture: float, mixture_reference: Any = None) -> list[Pair]:
    """One pair of responses per prompt, drawn the way ``method`` needs.

    nash_md: y ~ pi and y' ~ pi_mix; online_ipo / egpo: y, y' ~ pi; ipo_md: y, y' ~ pi_mix.
    ``mixture_reference`` is mu for :func:`~preflearn.online.sampling.sample_mixture` (None: the
    LoRA policy with its adapter disabled).
    """
    if method not in METHODS:
        from ..errors import unknown_name_message

        raise ConfigError(unknown_name_message("online Nash method", method, METHODS))
    ids = encode_prompts(tokenizer, contexts, scfg.max_prompt_length)
    if method == "nash_md":
        one = replace(scfg, num_samples=1)
        ys = sample(model, tokenizer, contexts, one)
        yps = sample_mixture(model, tokenizer, contexts, replace(one, seed=one.seed + 7919), beta=mixture,
                             reference=mixture_reference)
        return [Pair(c, i, a[0], b[0], ("policy", "mixture")) for c, i, a, b in zip(contexts, ids, ys, yps)]
    two = replace(scfg, num_samples=2)
    if method == "ipo_md":
        groups = sample_mixture(model, tokenizer, contexts, two, beta=mixture, reference=mixture_reference)
        src = ("mixture", "mixture")
    else:
        groups = sample(model, tokenizer, contexts, two)
        src = ("policy", "policy")
    return [Pair(c, i, g[0], g[1], src) for c, i, g in zip(contexts, ids, groups)]


def judge_pairs(judge: Judge, pairs: list[Pair]) -> None:
    """Fill ``pair.p`` = P(y > y' | x) from the judge (one ``compare_many`` call when it has one)."""
    ctx = [q.context for q in pairs]
    texts = [[q.y.text, q.y_prime.text] for q in pairs]
    if hasattr(judge, "compare_many"):
        Ps = judge.compare_many(ctx, texts)
    else:
        Ps = [judge.compare(c, t) for c, t in zip(ctx, texts)]
    for q, P in zip(pairs, Ps):
        q.p = float(np.asarray(P, dtype=np.float64)[0, 1])


def pair_examples(pairs: list[Pair], method: str, pad_id: int) -> tuple[list[Any], np.ndarray, list[int]]:
    """(tokenized examples, rewards, kept pair indices) for the method's loss.

    nash_md: one candidate y per prompt, rewards (N, 1) = P(y > y'). The pair methods: the two
    responses with the judge's preferred one first, rewards (N, 2) = [P, 1 - P]; pairs of two
    identical token sequences carry no gradient (h = 0, P = 1/2) and are dropped. An empty
    response is scored as one pad token.
    """
    from ..data.tokenize import TokenizedExample

    examples, rewards, kept = [], [], []
    for n, q in enumerate(pairs):
        a, b = q.y.token_ids or [pad_id], q.y_prime.token_ids or [pad_id]
        if method == "nash_md":
            examples.append(TokenizedExample(prompt_ids=list(q.prompt_ids), completion_ids=[a], kind="unpaired"))
            rewards.append([q.p])
        else:
            if q.y.token_ids == q.y_prime.token_ids:
                continue
            first, second, p = (a, b, q.p) if q.p >= 0.5 else (b, a, 1.0 - q.p)
            examples.append(TokenizedExample(prompt_ids=list(q.prompt_ids), completion_ids=[first, second],
                                             kind="pairwise"))
            rewards.append([p, 1.0 - p])
        kept.append(n)
    return examples, np.asarray(rewards, dtype=np.float64).reshape(len(examples), -1), kept


def pair_loss(model: Any, reference: Any, examples: list[Any], rewards: np.ndarray, loss: str,
              hparams: dict[str, Any], pad_id: int) -> LossOutput:
    """The registered ``loss`` on ``examples`` under the policy (differentiable) and the reference."""
    from ..data.collate import collate_shared
    from ..losses import compute
    from ..models.causal_lm import score_batch, to_scores

    batch = collate_shared(examples, pad_token_id=pad_id)
    pol = score_batch(model, batch)
    ref = reference(batch, list(range(len(examples))), False)
    scores = to_scores(batch, pol, ref)
    scores.rewards = torch.tensor(rewards, dtype=scores.logps.dtype, device=scores.logps.device)
    return compute(loss, scores, **hparams)


# ----------------------------------------------------------------------------- the updates
def _clip(params: list[Tensor], max_norm: float) -> float:
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else math.inf))


def _backward(out: LossOutput, optim: torch.optim.Optimizer, params: list[Tensor], max_norm: float) -> float:
    optim.zero_grad(set_to_none=True)
    out.loss.backward()
    return _clip(params, max_norm)


def egpo_step(params: list[Tensor], optim: torch.optim.Optimizer, half_loss, full_loss, max_norm: float = 0.0):
    """One extragradient step (Zhou, Fazel & Du 2025, "Extragradient Preference Optimization",
    arXiv:2503.08942, Algorithm 1, with the online IPO loss as each step's objective)::

        theta_{t+1/2} = theta_t - lr g(theta_t)            g = grad of the online IPO loss on
        theta_{t+1}   = theta_t - lr g(theta_{t+1/2})          pairs sampled at that parameter

    ``half_loss()`` / ``full_loss()`` sample, judge and return the loss at the current
    parameters (None when a batch has no usable pair: then that step is skipped). The
    parameters are snapshot before the half step and restored before the real one, so the real
    step starts from theta_t with the gradient taken at theta_{t+1/2}. With SGD this is the
    paper's update exactly; with AdamW the optimizer state is snapshot and restored too, so the
    moments only ever see the real steps' gradients (the half step uses the current moments; our
    choice). Returns (half LossOutput, full LossOutput, grad norms).
    """
    snap = [p.detach().clone() for p in params]
    state = copy.deepcopy(optim.state_dict())
    half = half_loss()
    g_half = g_full = float("nan")
    if half is not None:
        g_half = _backward(half, optim, params, max_norm)
        optim.step()
    full = full_loss()
    if full is None:
        with torch.no_grad():
            for p, s in zip(params, snap):
                p.copy_(s)
        optim.load_state_dict(state)
        return half, None, (g_half, g_full)
    g_full = _backward(full, optim, params, max_norm)
    with torch.no_grad():
        for p, s in zip(params, snap):
            p.copy_(s)
    optim.load_state_dict(state)
    optim.step()
    return half, full, (g_half, g_full)


def _rows(pairs: list[Pair], r: int, step: int, phase: str) -> list[dict[str, Any]]:
    return [{"round": r, "step": step, "phase": phase, "context": q.context, "y": q.y.text, "y_prime": q.y_prime.text,
             "sources": list(q.sources), "p_y_beats_y_prime": q.p, "logp_y": q.y.logp, "logp_y_prime": q.y_prime.logp}
            for q in pairs]


def _records(pairs: list[Pair], r: int, step: int, phase: str, judge: Judge, method: str) -> list[Any]:
    from ..data import PairwiseRecord

    out = []
    for q in pairs:
        if q.p == 0.5 or not q.y.text.strip() or not q.y_prime.text.strip() or q.y.text == q.y_prime.text:
            continue
        win, lose = (q.y, q.y_prime) if q.p > 0.5 else (q.y_prime, q.y)
        ws, ls = q.sources if q.p > 0.5 else q.sources[::-1]
        out.append(PairwiseRecord(context=q.context, chosen=win.text, rejected=lose.text,
                                  meta={"round": r, "step": step, "phase": phase, "method": method,
                                        "judge": getattr(judge, "name", "judge"), "p_chosen": max(q.p, 1 - q.p),
                                        "chosen_from": ws, "rejected_from": ls}))
    return out


def nash_round(cfg: NashConfig, r: int, model: Any, tokenizer: Any, judge: Judge, reference: Any,
               contexts: Sequence[Any], optim: torch.optim.Optimizer, params: list[Tensor], step: int,
               pad_id: int, progress: bool = False) -> dict[str, Any]:
    """One round: mini-batches of ``cfg.batch_size`` prompts, each sampled, judged and used for one update.

    Returns ``{"summary", "metrics", "rows", "records", "step"}``: the round's summary (mean P
    of the policy's sample over its opponent, mean judge score of the policy's samples when the
    judge scores, losses), per-step metric rows, raw sample rows and pairwise records.
    """
    from ..train.reference import AdapterReference

    mix_ref = None if isinstance(reference, AdapterReference) else getattr(reference, "model", None)
    method, loss_name = cfg.method, cfg.loss
    starts = range(0, len(contexts), cfg.batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description=f"round {r} ({method})")
    metrics, rows, records, losses, p_policy, scores = [], [], [], [], [], []

    def collect(ctx: Sequence[Any], phase: str, seed: int):
        scfg = replace(cfg.sampling, seed=seed)
        pairs = sample_pairs(model, tokenizer, ctx, method, scfg, cfg.mixture, mix_ref)
        judge_pairs(judge, pairs)
        rows.extend(_rows(pairs, r, step, phase))
        records.extend(_records(pairs, r, step, phase, judge, method))
        if phase != "half":
            p_policy.extend(q.p for q in pairs)
            if hasattr(judge, "score"):
                scores.extend(float(judge.score(q.context, [q.y.text])[0]) for q in pairs)
        examples, rewards, _ = pair_examples(pairs, method, pad_id)
        if not examples:
            return None
        model.train()
        return pair_loss(model, reference, examples, rewards, loss_name, cfg.hparams, pad_id)

    for b, s in enumerate(starts):
        ctx = list(contexts[s:s + cfg.batch_size])
        seed = cfg.sampling.seed + 100_003 * r + 2 * b
        step += 1
        if method == "egpo":
            half, out, (gh, gnorm) = egpo_step(params, optim, lambda c=ctx, sd=seed: collect(c, "half", sd),
                                               lambda c=ctx, sd=seed: collect(c, "full", sd + 1), cfg.max_grad_norm)
        else:
            out, half, gh = collect(ctx, "full", seed), None, float("nan")
            gnorm = float("nan")
            if out is not None:
                gnorm = _backward(out, optim, params, cfg.max_grad_norm)
                optim.step()
        row = {"round": r, "step": step, "pairs": len(ctx), "grad_norm": gnorm}
        if out is not None:
            row["loss"] = float(out.loss.detach())
            row.update({k: float(v) for k, v in out.metrics.items() if k != "loss"})
            losses.append(row["loss"])
        if half is not None:
            row.update({"half_loss": float(half.loss.detach()), "half_grad_norm": gh})
        metrics.append(row)
    summary = {"round": r, "prompts": len(contexts), "steps": len(metrics), "losses": losses,
               "mean_p_first_beats_second": float(np.mean(p_policy)) if p_policy else float("nan")}
    if scores:
        summary["mean_score_policy_samples"] = float(np.mean(scores))
    return {"summary": summary, "metrics": metrics, "rows": rows, "records": records, "step": step}


# ----------------------------------------------------------------------------- the loop
def _eval_texts(model: Any, tokenizer: Any, contexts: Sequence[Any], scfg: SamplingConfig) -> list[str]:
    """All ``scfg.num_samples`` eval samples of every prompt, prompt-major (empty without prompts)."""
    if not contexts:
        return []
    return [s.text for g in sample(model, tokenizer, contexts, scfg) for s in g]


def run_online_nash(cfg: NashConfig, judge: Judge, *, model: Any = None, tokenizer: Any = None,
                    contexts: Sequence[Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Run ``cfg.rounds`` rounds of Nash-MD-PG / online IPO / IPO-MD / EGPO; returns a summary.

    ``model``/``tokenizer`` default to ``cfg.model`` (TrainConfig.model fields; LoRA applied when
    enabled) and ``contexts`` to the prompt pool file. The summary holds per-round results and,
    with ``eval_prompts``, the held-out win rate of the final policy's answers over the initial
    policy's (:func:`preflearn.online.loop.win_rate_vs`; all ``eval_sampling.num_samples`` answers
    per prompt, drawn with the same seed before and after, greedy by default) and, for judges
    with scores, the mean score of those answers before and after. Written to
    ``<output_dir>/<name>/summary.json``.
    """
    from ..data.writers import atomic_write, write_records
    from .group import _reference, load_policy, split_prompts
    from .loop import held_out_summary

    if cfg.method not in METHODS:
        from ..errors import unknown_name_message

        raise ConfigError(unknown_name_message("online Nash method", cfg.method, METHODS))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if model is None:
        model, tokenizer = load_policy(cfg.model)
    if contexts is None:
        from .loop import _contexts

        contexts = _contexts(cfg)
    pool, order, eval_ctx, run, pad_id = split_prompts(cfg, contexts, tokenizer, rng)

    baseline = _eval_texts(model, tokenizer, eval_ctx, cfg.eval_sampling)
    reference = _reference(model, "initial")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the policy has no trainable parameters")
    if cfg.optimizer == "sgd":
        optim: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr)
    else:
        optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rounds, metrics, step = [], [], 0
    for r in range(cfg.rounds):
        start = cfg.eval_prompts + r * cfg.prompts_per_round
        ctx = [pool[i] for i in order[start:start + cfg.prompts_per_round]]
        res = nash_round(cfg, r, model, tokenizer, judge, reference, ctx, optim, params, step, pad_id, progress)
        step = res["step"]
        rdir = run / f"round-{r}"
        with atomic_write(rdir / "samples.jsonl", "w") as f:
            for row in res["rows"]:
                f.write(json.dumps(row, default=str) + "\n")
        if res["records"]:
            write_records(rdir / "pairs.jsonl", res["records"])
        rounds.append(res["summary"])
        metrics.extend(res["metrics"])
        if progress:
            s = res["summary"]
            print(f"round {r}: {s['steps']} steps, mean loss {np.mean(s['losses']) if s['losses'] else float('nan'):.4f}, "
                  f"mean P(y > y') {s['mean_p_first_beats_second']:.3f}")
    with atomic_write(run / "metrics.jsonl", "w") as f:
        for row in metrics:
            f.write(json.dumps(row) + "\n")
    model.eval()
    summary: dict[str, Any] = {"method": cfg.method, "loss": cfg.loss, "hparams": dict(cfg.hparams),
                               "mixture": cfg.mixture, "optimizer": cfg.optimizer, "rounds": rounds}
    if eval_ctx:
        # every eval sample k of a prompt: the final policy's vs the initial policy's (same seed)
        final = _eval_texts(model, tokenizer, eval_ctx, cfg.eval_sampling)
        K = cfg.eval_sampling.num_samples
        ctx_k = [c for c in eval_ctx for _ in range(K)]
        summary.update(held_out_summary(judge, ctx_k, final, baseline))
        with atomic_write(run / "eval_samples.jsonl", "w") as f:
            for c, b, a in zip(ctx_k, baseline, final):
                f.write(json.dumps({"context": c, "initial": b, "final": a}, default=str) + "\n")
    with atomic_write(run / "summary.json", "w") as f:
        f.write(json.dumps(summary, indent=2, default=str))
    return summary
