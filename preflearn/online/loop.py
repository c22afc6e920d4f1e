"""The online loop: sample K completions -> judge -> build preference records -> update.

Each round (Guo et al. 2024, "Direct Language Model Alignment from Online AI
Feedback", arXiv:2402.04792, Algorithm 1; Xiong et al. 2024, "Iterative Preference
Learning from Human Feedback", arXiv:2312.11456):

1. sample K completions for each of the round's prompts from the current policy
   (:func:`preflearn.online.sampling.sample`, shared-prompt KV cache);
2. a :mod:`judge <preflearn.online.judges>` returns a (K, K) preference matrix per prompt;
3. a *pair builder* turns it into :class:`~preflearn.data.PairwiseRecord`s
   (``random_pair`` = online DPO, ``best_vs_worst`` = iterative DPO, ``all_pairs``,
   ``rso`` = statistical rejection sampling (Liu et al. 2023, arXiv:2309.06657, Alg. 1));
4. the records update the policy with ANY registered loss through the one trainer
   shell (:class:`preflearn.train.Trainer`): checkpoints, progress, metrics, report.

Each round builds a fresh trainer, so the optimizer state starts anew every round (as in
iterative-DPO recipes). The reference is either the initial policy for every round (``reference="initial"``,
online DPO / online IPO), the previous round's policy (``"previous"``, iterative DPO), or APO's
extrapolated reference (``"apo"``, :class:`ExtrapolatedReference`; He, Yuan & Gu 2024, arXiv:2410.06293).
Everything a round generated and judged is saved under ``<run>/round-<r>/`` as
records (``pairs.jsonl``) plus the raw samples and judgments (``samples.jsonl``), so an
online run is also a data set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .judges import Judge, win_rates
from .sampling import Sample, SamplingConfig, sample

__all__ = ["OnlineConfig", "PAIR_BUILDERS", "build_pairs", "run_online", "win_rate_vs", "RoundResult",
           "ExtrapolatedReference", "extrapolated_reference_scores", "drift_chosen", "held_out_summary"]


# ----------------------------------------------------------------------------- pair builders
def random_pair(P: np.ndarray, rng: np.random.Generator, scores: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """Online DPO: two distinct samples, ordered by the judge (Guo et al. 2024). (chosen, rejected, P(chosen>rejected))."""
    i, j = rng.choice(P.shape[0], size=2, replace=False)
    if P[i, j] == 0.5:
        return []
    return [(int(i), int(j), float(P[i, j]))] if P[i, j] > 0.5 else [(int(j), int(i), float(P[j, i]))]


def best_vs_worst(P: np.ndarray, rng: np.random.Generator, scores: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """Iterative DPO: the sample with the highest average win rate vs the lowest (Xiong et al. 2024)."""
    w = win_rates(P) if scores is None else scores
    i, j = int(np.argmax(w)), int(np.argmin(w))
    if i == j or w[i] == w[j]:
        return []
    return [(i, j, float(P[i, j]))]


def all_pairs(P: np.ndarray, rng: np.random.Generator, scores: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """Every pair the judge separates, winner first."""
    K = P.shape[0]
    out = []
    for i in range(K):
        for j in range(i + 1, K):
            if P[i, j] > 0.5:
                out.append((i, j, float(P[i, j])))
            elif P[i, j] < 0.5:
                out.append((j, i, float(P[j, i])))
    return out


def rso_accept(r: np.ndarray, beta: float, keep: int, rng: np.random.Generator) -> list[int]:
    """RSO's statistical rejection sampling (Liu et al. 2023, arXiv:2309.06657, Algorithm 1).

    Draw a remaining candidate uniformly and accept it with probability
    exp((r(y) - r_max) / beta), r_max over the remaining ones, until ``keep`` are accepted;
    the first accepted candidate is distributed as pi* ∝ pi_sft exp(r / beta) restricted
    to the drawn set (pi_sft = the empirical distribution of the samples).
    """
    pool = list(range(len(r)))
    accepted: list[int] = []
    while pool and len(accepted) < keep:
        r_max = max(r[k] for k in pool)
        idx = int(rng.integers(len(pool)))
        cand = pool[idx]
        if rng.uniform() < math.exp((r[cand] - r_max) / beta):
            accepted.append(cand)
            pool.pop(idx)
    return accepted


def rso_pairs(P: np.ndarray, rng: np.random.Generator, scores: np.ndarray | None = None,
              beta: float = 0.5, keep: int = 2) -> list[tuple[int, int, float]]:
    """RSO pairs: ``keep`` candidates accepted by :func:`rso_accept` (rewards = ``scores``,
    default the win rates), then ordered pairwise by the judge."""
    r = win_rates(P) if scores is None else np.asarray(scores, dtype=np.float64)
    accepted = rso_accept(r, beta, keep, rng)
    if len(accepted) < 2:
        return []
    sub = P[np.ix_(accepted, accepted)]
    return [(accepted[i], accepted[j], p) for i, j, p in all_pairs(sub, rng)]


PAIR_BUILDERS = {"random_pair": random_pair, "best_vs_worst": best_vs_worst, "all_pairs": all_pairs, "rso": rso_pairs}


def drift_chosen(P: np.ndarray, scores: np.ndarray | None = None) -> int:
    """DRIFT's positive (Wang et al. 2025, "DRIFT: Learning from Abundant User Dissatisfaction in
    Real-World Preference Learning", arXiv:2510.02341): a fresh sample of the current policy.
    With K = 1 it is that sample (no judge needed, the paper's setting); with K > 1, the judge's
    best of the K (``scores``, else the win rates of P) -- an option beyond the paper. The
    rejected side is the logged user-dissatisfied (DSAT) response, fixed across rounds."""
    if P.shape[0] == 1:
        return 0
    return int(np.argmax(win_rates(P) if scores is None else scores))


def build_pairs(strategy: str, P: np.ndarray, rng: np.random.Generator, scores: np.ndarray | None = None):
    if strategy not in PAIR_BUILDERS:
        from ..errors import unknown_name_message

        raise ConfigError(unknown_name_message("pair strategy", strategy, PAIR_BUILDERS))
    return PAIR_BUILDERS[strategy](P, rng, scores)


# ----------------------------------------------------------------------------- APO reference
def extrapolated_reference_scores(current: Any, previous: Any, batch: Any, alpha: float, *,
                                  token_level: bool = False, chunk_size: int = 256) -> dict:
    """APO's extrapolated reference, per token (He, Yuan & Gu 2024, "Accelerated Preference
    Optimization for Large Language Model Alignment", arXiv:2410.06293, Section 3 / Algorithm 1,
    equation numbers not checked offline: the Nesterov step pi_hat_{t+1} ∝ pi_{t+1}
    (pi_{t+1} / pi_t)^alpha), applied to every next-token
    distribution and renormalised over the vocabulary V:

        log pi_hat(y_s | x, y_<s) = (1 + alpha) log pi_t(y_s | .) - alpha log pi_{t-1}(y_s | .)
                                    - log sum_{v in V} pi_t(v | .)^(1 + alpha) pi_{t-1}(v | .)^(-alpha)

    summed over the completion's tokens. ``current`` = pi_t (the round's starting policy),
    ``previous`` = pi_{t-1}. The paper extrapolates whole-sequence distributions; its
    normaliser is the same for y_w and y_l and cancels in DPO, while the per-token one here
    does not (it makes pi_hat an autoregressive model, so it could also be sampled).
    alpha = 0 gives pi_t's own log-probs. Computed without gradients, ``chunk_size`` target
    tokens x V at a time. Returns what :func:`score_batch` returns (``logps`` (B, K),
    ``lengths``; with ``token_level`` also ``token_logps`` / ``mask`` (B, K, T)).
    """
    import torch

    from ..models.causal_lm import completion_hidden

    with torch.no_grad():
        h_cur, head_cur, batch = completion_hidden(current, batch)
        h_prev, head_prev, _ = completion_hidden(previous, batch)
        targets = batch.target_ids
        parts = []
        for s in range(0, len(targets), chunk_size):
            lc = torch.log_softmax(head_cur(h_cur[s:s + chunk_size]).float(), -1)
            lp = torch.log_softmax(head_prev(h_prev[s:s + chunk_size]).float(), -1)
            comb = (1 + alpha) * lc - alpha * lp
            t = targets[s:s + chunk_size, None]
            parts.append(comb.gather(-1, t).squeeze(-1) - torch.logsumexp(comb, -1))
        tok = torch.cat(parts) if parts else h_cur.new_zeros(0, dtype=torch.float32)
        b, k = batch.num_examples, batch.num_candidates
        logps = tok.new_zeros(b * k).index_add(0, batch.target_cand, tok).view(b, k)
        out = {"logps": logps, "lengths": batch.lengths.to(device=tok.device, dtype=torch.float32)}
        if token_level:
            T = batch.max_completion_length
            idx = (batch.target_cand, batch.target_step)
            out["token_logps"] = tok.new_zeros(b * k, T).index_put(idx, tok).view(b, k, T)
            out["mask"] = tok.new_zeros(b * k, T).index_put(idx, torch.ones_like(tok)).view(b, k, T)
    return out


def _frozen_copy(model: Any) -> Any:
    import copy

    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


class ExtrapolatedReference:
    """Reference provider (``provider(batch, indices, token_level)``, as in
    :mod:`preflearn.train.reference`) giving APO's extrapolated reference from two frozen
    policies; see :func:`extrapolated_reference_scores`."""

    kind = "apo"

    def __init__(self, current: Any, previous: Any, alpha: float):
        self.current, self.previous, self.alpha = current, previous, float(alpha)

    def __call__(self, batch: Any, indices: Sequence[int], token_level: bool = False) -> dict:
        return extrapolated_reference_scores(self.current, self.previous, batch, self.alpha, token_level=token_level)

    def after_step(self, step: int, policy: Any) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class OnlineConfig:
    """An online run: rounds of sample -> judge -> update. ``train`` is a full TrainConfig
    (model, LoRA, loss, optimizer, batch, steps per round)."""

    name: str = "online"
    output_dir: str = "runs"
    seed: int = 0
    prompts: str = field(default="bundled:hh-rlhf", metadata={"help": "records file whose contexts are the prompt pool"})
    prompts_per_round: int = field(default=32, metadata={"ge": 1})
    eval_prompts: int = field(default=32, metadata={"help": "held-out prompts for the win rate", "ge": 0})
    rounds: int = field(default=2, metadata={"ge": 1})
    pairs: str = field(default="random_pair", metadata={"choices": (*PAIR_BUILDERS, "drift"),
                                                         "help": "drift: fresh sample vs the logged DSAT response"})
    reference: str = field(default="initial", metadata={"choices": ("initial", "previous", "apo"),
                                                        "help": "apo: Nesterov-extrapolated previous policies"})
    apo_alpha: float = field(default=0.3, metadata={"help": "APO momentum alpha (reference=apo)", "ge": 0})
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=1, temperature=0.0))
    train: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainConfig fields (train.loss.name=...)"})

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


@dataclass
class RoundResult:
    round: int
    pairs: int
    judged_prompts: int
    mean_judge_win_rate_of_chosen: float
    train_losses: list[float]
    run_dir: Path
    reference: str = ""  # the kind of reference provider the round trained against


# ----------------------------------------------------------------------------- evaluation
def win_rate_vs(judge: Judge, contexts: Sequence[Any], policy: Sequence[str], baseline: Sequence[str]) -> dict[str, float]:
    """Mean judge probability that the policy's completion beats the baseline's, with a 95% CI.

    CI: normal approximation mean ± 1.96 sd / sqrt(n) over prompts (each prompt's
    probability is one observation), clipped to [0, 1].
    """
    p = np.array([judge.compare(c, [a, b])[0, 1] for c, a, b in zip(contexts, policy, baseline)], dtype=np.float64)
    n = len(p)
    mean = float(p.mean()) if n else float("nan")
    half = 1.96 * float(p.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return {"win_rate": mean, "ci_low": max(0.0, mean - half), "ci_high": min(1.0, mean + half), "n": n}


def held_out_summary(judge: Judge, contexts: Sequence[Any], final: Sequence[str], baseline: Sequence[str]) -> dict:
    """The online loops' held-out figures: ``win_rate_vs_initial`` (:func:`win_rate_vs`) and, for
    judges with scores, the mean judge score of the initial and of the final completions."""
    out: dict[str, Any] = {"win_rate_vs_initial": win_rate_vs(judge, contexts, final, baseline)}
    if hasattr(judge, "score"):
        out["mean_score_initial"] = float(np.mean([judge.score(c, [b])[0] for c, b in zip(contexts, baseline)]))
        out["mean_score_final"] = float(np.mean([judge.score(c, [a])[0] for c, a in zip(contexts, final)]))
    return out


def _first_samples(groups: list[list[Sample]]) -> list[str]:
    return [g[0].text for g in groups]


def _contexts(cfg: OnlineConfig) -> list[Any]:
    from ..data import bundled_path, load

    path = cfg.prompts
    if path.startswith("bundled:"):
        path = str(bundled_path(path.split(":", 1)[1]))
    records = load(path)
    seen, out = set(), []
    for r in records:
        ctx = getattr(r, "context", None)
        key = json.dumps(ctx, sort_keys=True, default=str)
        if ctx is not None and key not in seen:
            seen.add(key)
            out.append(ctx)
    return out


def _dissatisfied_pool(cfg: OnlineConfig) -> tuple[list[Any], list[str]]:
    """(contexts, DSAT responses) for ``pairs=drift`` from the prompt file: a pairwise record's
    ``rejected``, or an unpaired record with ``label=False``; other records are skipped."""
    from ..data import PairwiseRecord, UnpairedRecord, bundled_path, load

    path = cfg.prompts
    if path.startswith("bundled:"):
        path = str(bundled_path(path.split(":", 1)[1]))
    ctx, bad = [], []
    for rec in load(path):
        text = rec.rejected if isinstance(rec, PairwiseRecord) else (
            rec.completion if isinstance(rec, UnpairedRecord) and not rec.label else None)
        if isinstance(text, str) and text.strip():
            ctx.append(rec.context)
            bad.append(text)
    return ctx, bad


# ----------------------------------------------------------------------------- the loop
def run_online(cfg: OnlineConfig, judge: Judge, *, model: Any = None, tokenizer: Any = None,
               contexts: Sequence[Any] | None = None, progress: bool = True,
               dissatisfied: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``cfg.rounds`` rounds; returns per-round results and the held-out win rate.

    ``model``/``tokenizer`` default to ``cfg.train['model']`` (a bundled name); ``contexts``
    default to the prompt pool file. ``pairs=drift`` pairs a fresh sample (chosen) with the
    context's logged dissatisfied response (rejected): ``dissatisfied[i]`` for ``contexts[i]``,
    or the rejected/undesirable completions of the prompt file.
    """
    import torch

    from ..data import PairwiseRecord
    from ..data.tokenize import TokenizeSettings, tokenize_records
    from ..data.writers import atomic_write, write_records
    from ..train.config import load_config
    from ..train.setup import load_model
    from ..train.trainer import Trainer

    base = load_config({**cfg.train, "name": cfg.name, "output_dir": cfg.output_dir, "seed": cfg.seed})
    if cfg.reference == "initial" and not base.model.lora.enabled and cfg.rounds > 1:
        # a fresh Trainer per round copies the *current* policy as its reference; only the LoRA base
        # (adapter disabled) stays the initial model across rounds
        raise ConfigError("reference=initial over several rounds needs LoRA (train.model.lora.enabled=true: the "
                          "adapter-disabled base is the initial policy); with full fine-tuning use reference=previous")
    if model is None:
        model, tokenizer = load_model(base.model)
    rng = np.random.default_rng(cfg.seed)
    drift = cfg.pairs == "drift"
    dsat_pool: list[str] = []
    if drift and contexts is None:
        pool, dsat_pool = _dissatisfied_pool(cfg)
    else:
        pool = list(contexts) if contexts is not None else _contexts(cfg)
        if drift:
            if dissatisfied is None or len(dissatisfied) != len(pool):
                raise ConfigError("pairs=drift needs one dissatisfied (rejected) response per context: "
                                  "pass dissatisfied= aligned with contexts")
            dsat_pool = [str(t) for t in dissatisfied]
    order = rng.permutation(len(pool))
    need = cfg.eval_prompts + cfg.rounds * cfg.prompts_per_round
    if len(pool) < need:
        raise ConfigError(f"the prompt pool has {len(pool)} prompts; {need} are needed "
                          f"(eval_prompts + rounds x prompts_per_round)")
    eval_ctx = [pool[i] for i in order[: cfg.eval_prompts]]
    run = cfg.run_dir
    run.mkdir(parents=True, exist_ok=True)
    settings = TokenizeSettings(max_prompt_length=base.data.max_prompt_length,
                                max_completion_length=base.data.max_completion_length)

    baseline = _first_samples(sample(model, tokenizer, eval_ctx, cfg.eval_sampling)) if eval_ctx else []
    lora = base.model.lora.enabled
    results: list[RoundResult] = []
    apo_previous = None  # reference=apo: frozen pi_{r-1}
    for r in range(cfg.rounds):
        start = cfg.eval_prompts + r * cfg.prompts_per_round
        ctx = [pool[i] for i in order[start:start + cfg.prompts_per_round]]
        scfg = SamplingConfig(**{**cfg.sampling.__dict__, "seed": cfg.sampling.seed + r})
        groups = sample(model, tokenizer, ctx, scfg, progress=progress)
        records, rows, chosen_p = [], [], []
        all_texts = [[s.text for s in g] for g in groups]
        # a judge with compare_many (the human queue) gets the whole round at once
        no_judge = drift and scfg.num_samples == 1  # DRIFT with one fresh sample needs no judgment
        Ps = judge.compare_many(ctx, all_texts) if hasattr(judge, "compare_many") and not no_judge else None
        round_dsat = [dsat_pool[i] for i in order[start:start + cfg.prompts_per_round]] if drift else []
        for n, (c, g) in enumerate(zip(ctx, groups)):
            texts = all_texts[n]
            P = np.full((1, 1), 0.5) if no_judge else Ps[n] if Ps is not None else judge.compare(c, texts)
            scores = judge.score(c, texts) if hasattr(judge, "score") and not no_judge else None
            rows.append({"context": c, "completions": texts, "logps": [s.logp for s in g], "P": P.tolist(),
                         "scores": None if scores is None else list(map(float, scores))})
            if drift:
                chosen, rejected = texts[drift_chosen(P, scores)], round_dsat[n]
                if chosen.strip() and chosen.strip() != rejected.strip():
                    records.append(PairwiseRecord(context=c, chosen=chosen, rejected=rejected,
                                                  meta={"round": r, "pairs": "drift", "rejected": "dissatisfied"}))
                continue
            for i, j, p in build_pairs(cfg.pairs, P, rng, scores):
                if texts[i].strip() == texts[j].strip():
                    continue
                records.append(PairwiseRecord(context=c, chosen=texts[i], rejected=texts[j],
                                              meta={"round": r, "judge": judge.name, "p_chosen": p}))
                chosen_p.append(p)
        rdir = run / f"round-{r}"
        with atomic_write(rdir / "samples.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")
        if not records:
            raise ConfigError(f"round {r}: the judge separated no pair; raise temperature or K")
        write_records(rdir / "pairs.jsonl", records)
        examples = tokenize_records(tokenizer, records, settings)
        overrides = {"name": f"{cfg.name}/round-{r}"}
        if lora and r > 0:
            # the policy is already a peft model: keep training the same adapter
            overrides["model"] = {**cfg.train.get("model", {}), "lora": {"enabled": False}}
            if cfg.reference == "initial":
                overrides["reference"] = {**cfg.train.get("reference", {}), "mode": "adapter"}
        if cfg.reference == "previous" and (not lora or r == 0):
            overrides.setdefault("reference", {**cfg.train.get("reference", {}), "mode": "model"})
        if cfg.reference == "previous" and lora and r > 0:
            raise ConfigError("reference=previous with LoRA needs a merged policy per round; use full fine-tuning")
        if cfg.reference == "apo":  # the trainer's own provider is replaced below (from round 1 on)
            overrides["reference"] = {**cfg.train.get("reference", {}), "mode": "adapter" if lora else "model"}
        tcfg = load_config({**cfg.train, "output_dir": cfg.output_dir, "seed": cfg.seed + r, **overrides,
                            "data": {**cfg.train.get("data", {}), "eval_size": 0}})
        trainer = Trainer(tcfg, model=model, tokenizer=tokenizer, examples=(examples, []))
        if cfg.reference == "apo":
            # pi_r: a frozen copy of the round's starting policy (the trainer's own copy with full fine-tuning)
            from ..train.reference import ModelReference

            ref = trainer.reference
            current = ref.model if isinstance(ref, ModelReference) else _frozen_copy(trainer.model)
            if apo_previous is not None:  # round 0 trains against pi_0 itself (pi_hat_0 = pi_0)
                trainer.reference = ExtrapolatedReference(current, apo_previous, cfg.apo_alpha)
            apo_previous = current
        res = trainer.fit()
        model = trainer.model
        results.append(RoundResult(r, len(records), len(ctx), float(np.mean(chosen_p)) if chosen_p else float("nan"),
                                   res.losses, res.run_dir,
                                   getattr(trainer.reference, "kind", "")))
        torch.manual_seed(cfg.seed + r)

    model.eval()
    final = _first_samples(sample(model, tokenizer, eval_ctx, cfg.eval_sampling)) if eval_ctx else []
    summary: dict[str, Any] = {"rounds": [r.__dict__ | {"run_dir": str(r.run_dir)} for r in results]}
    if eval_ctx:
        summary.update(held_out_summary(judge, eval_ctx, final, baseline))
        with atomic_write(run / "eval_samples.jsonl", "w") as f:
            for c, b, a in zip(eval_ctx, baseline, final):
                f.write(json.dumps({"context": c, "initial": b, "final": a}, default=str) + "\n")
    with atomic_write(run / "summary.json", "w") as f:
        f.write(json.dumps(summary, indent=2, default=str))
    summary["model"] = model
    return summary
