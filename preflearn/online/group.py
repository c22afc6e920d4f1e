"""Online RL from a judge with K samples per prompt: RLOO, GRPO, SPPO (any K-wise loss on rewards), XPO, INPO.

XPO and INPO take judged *pairs* instead (see :func:`_xpo_round` and :func:`_pairs_round`):
XPO pairs a policy sample with a reference sample, INPO two policy samples, and both read
log-probs the trainer shell does not provide (the reference sample's, pi_t's).

Each round:

1. sample K completions for each of the round's prompts from the current policy
   (:func:`preflearn.online.sampling.sample`, shared-prompt KV cache); the sampled token ids
   are scored as they are (no re-tokenisation of the decoded text);
2. the judge gives every sample a number: ``judge.score`` (a reward model or oracle; RLOO,
   GRPO) or the estimated win rate P_hat(y_k > pi_t) = mean_{j != k} P[k, j] of its (K, K)
   matrix (:func:`~preflearn.online.judges.win_rates`; SPPO, or judges without scores);
3. the round's (prompt, K samples, rewards) groups update the policy with the registered loss
   (:mod:`preflearn.online.objectives`): ``epochs`` passes over fixed mini-batches of
   ``batch_size`` prompts, one AdamW step each.

Log-probs of the *sampling* policy pi_t (GRPO's pi_old, SPPO's pi_t) are computed for every
mini-batch before the round's first update, so later mini-batches see ratios != 1 as in
PPO-style training. The reference for the KL terms is the initial policy for the whole run
(``reference="initial"``: the LoRA base with the adapter off, or one frozen copy); SPPO uses
pi_t (``reference="previous"``). The optimizer state carries across rounds.

Why not the trainer shell (:class:`preflearn.train.Trainer`): it takes records whose
candidates carry labels/ranks/margins, and refuses losses that need per-sample external
``rewards`` (``check_data_for_loss``); this shell is the thin loop for that case. It reuses
the shell's checkpoint pieces instead (:mod:`preflearn.train.checkpoint`): after every round
``<run>/checkpoints/step-<rounds done>/`` is written atomically (temporary directory, then
rename; the last ``keep_last`` kept) with the trainable weights, the optimizer state, the RNG
states (python, numpy, torch and the loop's own numpy generator), the finished rounds' metrics
and the initial policy's held-out answers. ``run_online_group(..., resume=True)`` (called with
the *initial* policy, as a fresh run would be) rebuilds the reference from it, restores the
last complete round and continues; the result equals the uninterrupted run's (a test checks
weights and metrics exactly). A checkpoint that cannot be read is refused with its path, and a
failed save never touches the previous one (:func:`save_round`, :func:`load_round`).

Every round's samples and rewards are saved as :class:`~preflearn.data.RatedRecord` s
(``round-<r>/rated.jsonl``; score key ``"reward"``) plus per-step metrics
(``metrics.jsonl``), so an online run is also a data set.
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
from .sampling import SamplingConfig, encode_prompts, sample

__all__ = ["GroupConfig", "run_online_group", "group_rewards", "load_policy", "save_round", "load_round"]


@dataclass(frozen=True)
class GroupConfig:
    """An online policy-gradient run: rounds of K samples per prompt -> judge -> update."""

    name: str = "online-group"
    output_dir: str = "runs"
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainConfig.model fields (name, lora)"})
    prompts: str = field(default="bundled:hh-rlhf", metadata={"help": "records file whose contexts are the prompt pool"})
    loss: str = field(default="rloo", metadata={"help": "registered K-wise loss reading Scores.rewards"})
    hparams: dict[str, Any] = field(default_factory=dict, metadata={"help": "the loss's hyperparameters"})
    rounds: int = field(default=2, metadata={"ge": 1})
    prompts_per_round: int = field(default=16, metadata={"ge": 1})
    eval_prompts: int = field(default=8, metadata={"ge": 0})
    reward: str = field(default="auto", metadata={"choices": ("auto", "score", "win_rate"),
                                                  "help": "auto: win_rate for sppo, else score"})
    reference: str = field(default="auto", metadata={"choices": ("auto", "initial", "previous", "none"),
                                                     "help": "auto: previous (pi_t) for sppo, else initial"})
    lr: float = field(default=1e-5, metadata={"gt": 0})
    batch_size: int = field(default=4, metadata={"help": "prompts (x K samples) per optimizer step", "ge": 1})
    epochs: int = field(default=1, metadata={"help": "passes over a round's samples", "ge": 1})
    max_grad_norm: float = field(default=1.0, metadata={"help": "0 = no clipping", "ge": 0})
    checkpoint: bool = field(default=True, metadata={"help": "save a checkpoint after every round (for resume)"})
    keep_last: int = field(default=2, metadata={"help": "checkpoints kept", "ge": 1})
    report: bool = field(default=True, metadata={"help": "write report.html + PNG plots at the end"})
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=1, temperature=0.0))

    def resolved_reward(self) -> str:
        return ("win_rate" if self.loss == "sppo" else "score") if self.reward == "auto" else self.reward

    def resolved_reference(self) -> str:
        return ("previous" if self.loss == "sppo" else "initial") if self.reference == "auto" else self.reference


def group_rewards(judge: Judge, context: Any, texts: Sequence[str], kind: str) -> np.ndarray:
    """(K,) the judge's numbers for one prompt's samples: scores, or win rates vs the other samples."""
    if kind == "score":
        if not hasattr(judge, "score"):
            raise ConfigError(f"judge {getattr(judge, 'name', judge)!r} gives no scores; use reward=win_rate")
        return np.asarray(judge.score(context, list(texts)), dtype=np.float64)
    return win_rates(np.asarray(judge.compare(context, list(texts)), dtype=np.float64))


def split_prompts(cfg: Any, contexts: Sequence[Any], tokenizer: Any, rng: np.random.Generator):
    """What every online loop starts with: the prompt pool, its seeded order, the held-out prompts
    (the first ``cfg.eval_prompts`` of the order; rounds take the following ones), the run folder
    (created) and the pad id. ``cfg`` has ``eval_prompts``, ``rounds``, ``prompts_per_round``,
    ``output_dir`` and ``name``. Returns ``(pool, order, eval_ctx, run, pad_id)``."""
    pool = list(contexts)
    need = cfg.eval_prompts + cfg.rounds * cfg.prompts_per_round
    if len(pool) < need:
        raise ConfigError(f"the prompt pool has {len(pool)} prompts; {need} are needed "
                          "(eval_prompts + rounds x prompts_per_round)")
    order = rng.permutation(len(pool))
    eval_ctx = [pool[i] for i in order[: cfg.eval_prompts]]
    run = Path(cfg.output_dir) / cfg.name
    run.mkdir(parents=True, exist_ok=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return pool, order, eval_ctx, run, pad_id


def load_policy(model: dict[str, Any]) -> tuple[Any, Any]:
    """(model, tokenizer) from ``GroupConfig.model`` (TrainConfig.model fields; LoRA applied when enabled)."""
    from ..train.config import load_config
    from ..train.setup import apply_lora, load_model

    mcfg = load_config({"model": model}).model
    policy, tok = load_model(mcfg)
    if mcfg.lora.enabled:
        policy = apply_lora(policy, mcfg.lora)
    return policy, tok


def _judge_all(judge: Judge, contexts: Sequence[Any], texts: list[list[str]], kind: str) -> list[np.ndarray]:
    """Rewards of every prompt's samples; a judge with ``compare_many`` (the human queue) gets one batch."""
    if kind == "win_rate" and hasattr(judge, "compare_many"):
        return [win_rates(np.asarray(P, dtype=np.float64)) for P in judge.compare_many(contexts, texts)]
    return [group_rewards(judge, c, t, kind) for c, t in zip(contexts, texts)]


def _xpo_round(model: Any, reference: Any, tokenizer: Any, judge: Judge, ctx: Sequence[Any], scfg: SamplingConfig,
               pad_id: int, rdir: Path, r: int):
    """XPO's data (Xie et al. 2024, Algorithm 1): y ~ pi_t and y_tilde ~ pi_ref per prompt, ordered by the judge.

    Returns (pairwise examples (chosen, rejected), rewards [P, 1 - P], position of y_tilde in each pair);
    ties and identical responses are dropped. The pairs are saved as records (``pairs.jsonl``).
    """
    from ..data import PairwiseRecord
    from ..data.tokenize import TokenizedExample
    from ..data.writers import write_records
    from ..train.reference import _unwrap

    one = SamplingConfig(**{**scfg.__dict__, "num_samples": 1})
    ys = [g[0] for g in sample(model, tokenizer, ctx, one)]
    ref_cfg = SamplingConfig(**{**one.__dict__, "seed": one.seed + 7919})
    if hasattr(_unwrap(model), "disable_adapter"):
        with _unwrap(model).disable_adapter():
            yts = [g[0] for g in sample(model, tokenizer, ctx, ref_cfg)]
    else:
        yts = [g[0] for g in sample(reference.model, tokenizer, ctx, ref_cfg)]
    pairs = [[y.text, yt.text] for y, yt in zip(ys, yts)]
    Ps = judge.compare_many(ctx, pairs) if hasattr(judge, "compare_many") else [judge.compare(c, t)
                                                                                 for c, t in zip(ctx, pairs)]
    prompt_ids = encode_prompts(tokenizer, ctx, scfg.max_prompt_length)
    examples, rewards, explore, records = [], [], [], []
    for c, ids, y, yt, P in zip(ctx, prompt_ids, ys, yts, Ps):
        p = float(np.asarray(P)[0, 1])
        if p == 0.5 or y.token_ids == yt.token_ids:
            continue
        first, second, pos = ((y, yt, 1) if p > 0.5 else (yt, y, 0))
        comps = [first.token_ids or [pad_id], second.token_ids or [pad_id]]
        examples.append(TokenizedExample(prompt_ids=list(ids), completion_ids=comps, kind="pairwise"))
        rewards.append(np.array([max(p, 1 - p), min(p, 1 - p)]))
        explore.append(pos)
        if first.text.strip() and second.text.strip():
            records.append(PairwiseRecord(context=c, chosen=first.text, rejected=second.text,
                                          meta={"round": r, "judge": getattr(judge, "name", "judge"),
                                                "p_chosen": max(p, 1 - p),
                                                "reference_sample": "chosen" if pos == 0 else "rejected"}))
    if not examples:
        raise ConfigError(f"round {r}: the judge separated no (policy, reference) pair; raise temperature")
    if records:
        write_records(rdir / "pairs.jsonl", records)
    return examples, rewards, explore


def _pairs_round(model: Any, tokenizer: Any, judge: Judge, ctx: Sequence[Any], scfg: SamplingConfig, pad_id: int,
                 rdir: Path, r: int, rng: np.random.Generator):
    """Two of pi_t's K samples per prompt, ordered by the judge (INPO's data; online DPO's random pair).

    Returns (pairwise examples (chosen, rejected), rewards [P, 1 - P]); pairs are saved as records.
    """
    from ..data import PairwiseRecord
    from ..data.tokenize import TokenizedExample
    from ..data.writers import write_records
    from .loop import random_pair

    groups = sample(model, tokenizer, ctx, scfg)
    texts = [[s.text for s in g] for g in groups]
    Ps = judge.compare_many(ctx, texts) if hasattr(judge, "compare_many") else [judge.compare(c, t)
                                                                                 for c, t in zip(ctx, texts)]
    examples, rewards, records = [], [], []
    for c, ids, g, P in zip(ctx, encode_prompts(tokenizer, ctx, scfg.max_prompt_length), groups, Ps):
        for i, j, p in random_pair(np.asarray(P, dtype=np.float64), rng):
            if g[i].token_ids == g[j].token_ids:
                continue
            examples.append(TokenizedExample(prompt_ids=list(ids), kind="pairwise",
                                             completion_ids=[g[i].token_ids or [pad_id], g[j].token_ids or [pad_id]]))
            rewards.append(np.array([p, 1 - p]))
            if g[i].text.strip() and g[j].text.strip():
                records.append(PairwiseRecord(context=c, chosen=g[i].text, rejected=g[j].text,
                                              meta={"round": r, "judge": getattr(judge, "name", "judge"), "p_chosen": p}))
    if not examples:
        raise ConfigError(f"round {r}: the judge separated no pair; raise temperature or K")
    if records:
        write_records(rdir / "pairs.jsonl", records)
    return examples, rewards


class _NoScheduler:
    """The online loops use a constant learning rate; the shell's checkpoint format wants a scheduler."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def save_round(run_dir: str | Path, rounds_done: int, *, model: Any, optimizer: Any, rng: np.random.Generator,
               state: dict[str, Any], modules: dict[str, Any] | None = None, keep_last: int = 2) -> Path:
    """Checkpoint an online run after ``rounds_done`` complete rounds: ``<run>/checkpoints/step-<rounds_done>``.

    Written by :func:`preflearn.train.checkpoint.save_checkpoint` (trainable weights, optimizer,
    RNG states; a temporary directory renamed into place, so a crash mid-save leaves the previous
    checkpoint as it was), plus in ``extra``: the loop's numpy generator state, ``state`` (rounds,
    metric rows, step, baseline answers, ...) and the ``state_dict`` of each extra module (the PPO
    value head).
    """
    from ..train.checkpoint import save_checkpoint

    extra = {"online": {"rounds_done": int(rounds_done), "generator": rng.bit_generator.state, "state": state,
                        "modules": {k: m.state_dict() for k, m in (modules or {}).items()}}}
    return save_checkpoint(run_dir, step=int(rounds_done), model=model, optimizer=optimizer, scheduler=_NoScheduler(),
                           micro_batches=0, extra=extra, keep_last=keep_last)


def load_round(run_dir: str | Path, *, model: Any, optimizer: Any, rng: np.random.Generator,
               modules: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """Restore the latest complete checkpoint of an online run in place; returns (rounds done, saved state).

    Raises :class:`~preflearn.errors.ConfigError` naming the file when there is none, when it
    cannot be read (truncated or corrupt ``state.pt``), or when it does not fit the model.
    """
    import torch

    from ..train.checkpoint import latest_checkpoint, set_rng_state

    last = latest_checkpoint(run_dir)
    if last is None:
        raise ConfigError(f"resume: no complete checkpoint in {Path(run_dir) / 'checkpoints'}")
    path = last / "state.pt"
    try:
        saved = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # a truncated zip, a pickling error, a zero-byte file
        raise ConfigError(f"resume: checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:120]}); "
                          "it is corrupt or partial. Delete that folder to resume from an earlier checkpoint, "
                          "or start over without resume") from None
    online = saved.get("extra", {}).get("online") if isinstance(saved, dict) else None
    if online is None or "model" not in saved or "optimizer" not in saved:
        raise ConfigError(f"resume: {path} is not a checkpoint of an online run (no 'online' state)")
    params = dict(model.named_parameters())
    unknown = [n for n in saved["model"] if n not in params or params[n].shape != saved["model"][n].shape]
    trainable = {n for n, p in params.items() if p.requires_grad}
    if unknown or trainable != set(saved["model"]):
        which = unknown[0] if unknown else sorted(trainable ^ set(saved["model"]))[0]
        raise ConfigError(f"resume: checkpoint {path} does not match the model (parameter {which!r})")
    with torch.no_grad():
        for n, t in saved["model"].items():
            params[n].copy_(t)
    optimizer.load_state_dict(saved["optimizer"])
    for k, m in (modules or {}).items():
        m.load_state_dict(online["modules"][k])
    set_rng_state(saved["rng"])
    rng.bit_generator.state = online["generator"]
    return int(online["rounds_done"]), online["state"]


def _write_config(run: Path, cfg: Any) -> None:
    """``<run>/config.yaml``: the resolved configuration (as the trainer shell writes it)."""
    from .. import config as C
    from ..data.writers import atomic_write

    with atomic_write(run / "config.yaml", "w") as f:
        f.write(C.dump(cfg))


def _report(run: Path, method: str, summary: dict[str, Any], key: str) -> None:
    """The trainer shell's ``report.html`` (loss plots of ``metrics.jsonl``) with the rounds' figures as notes."""
    from ..train.report import write_report

    per_round = ", ".join(f"round {r['round']}: {r[key]:.4f}" for r in summary["rounds"])
    notes = f"{method}: {key} of the samples per round: {per_round}."
    if "win_rate_vs_initial" in summary:
        w = summary["win_rate_vs_initial"]
        notes += f" Held-out win rate of the final policy over the initial one: {w.get('win_rate', float('nan')):.3f}."
    if "mean_score_final" in summary:
        notes += f" Mean held-out judge score {summary['mean_score_initial']:.4f} -> {summary['mean_score_final']:.4f}."
    write_report(run, title=f"online {method}: {run.name}", notes=notes)


def _fingerprint(cfg: Any) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues (all but rounds, output and checkpointing)."""
    import dataclasses

    d = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    for k in ("rounds", "checkpoint", "keep_last", "report", "output_dir"):
        d.pop(k, None)
    return d


def _check_fingerprint(saved: dict[str, Any], now: dict[str, Any], run: Path) -> None:
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(f"resume: the configuration differs from the one {run} started with in {diff[0]!r} "
                          f"({saved.get(diff[0])!r} then, {now.get(diff[0])!r} now)")


def _reference(model: Any, mode: str):
    from ..train.reference import AdapterReference, ModelReference, NoReference

    if mode == "initial":
        return AdapterReference(model) if hasattr(model, "disable_adapter") else ModelReference(model)
    return NoReference()


def run_online_group(cfg: GroupConfig, judge: Judge, *, model: Any = None, tokenizer: Any = None,
                     contexts: Sequence[Any] | None = None, progress: bool = False,
                     resume: bool = False) -> dict[str, Any]:
    """Run ``cfg.rounds`` rounds of sample -> judge -> policy-gradient update; returns a summary.

    ``resume=True`` continues from the run directory's last complete round (pass the *initial*
    policy, as for a fresh run: the reference is rebuilt from it before the checkpoint's weights
    are loaded); the configuration must be the one the run started with (``rounds`` may grow).

    The summary holds per-round mean rewards of the samples, the loss per step, and (with
    ``eval_prompts``) the held-out win rate of the final policy's greedy answers over the
    initial policy's (:func:`preflearn.online.loop.win_rate_vs`) and, for judges with scores,
    the mean score before and after.
    """
    import torch

    from ..data import RatedRecord
    from ..data.collate import collate_shared
    from ..data.tokenize import TokenizedExample
    from ..data.writers import atomic_write, write_records
    from ..losses import compute, spec
    from ..models.causal_lm import score_batch, to_scores
    from ..train.reference import _eval_scores
    from .loop import held_out_summary

    lspec = spec(cfg.loss)
    xpo = "explore_logps" in lspec.aux  # (y ~ pi_t, y_tilde ~ pi_ref) pairs with the exploration term
    inpo = "previous_logps" in lspec.aux  # judged pairs of pi_t's samples, with pi_t's log-probs
    if not (xpo or inpo) and ("rewards" not in lspec.needs or lspec.k not in ("any", 2)):
        raise ConfigError(f"loss {cfg.loss!r} is not a K-wise loss on rewards (k='any' or 2, needs rewards) nor XPO; "
                          "pairwise losses run through preflearn.online.loop.run_online")
    if lspec.k == 2 and not (xpo or inpo) and cfg.sampling.num_samples != 2:
        raise ConfigError(f"loss {cfg.loss!r} compares two samples per prompt: set sampling.num_samples=2")
    ref_mode, reward_kind = cfg.resolved_reference(), cfg.resolved_reward()
    if lspec.reference == "required" and ref_mode == "none":
        raise ConfigError(f"loss {cfg.loss!r} needs a reference; reference cannot be 'none'")
    if (xpo or inpo) and ref_mode != "initial":
        raise ConfigError(f"loss {cfg.loss!r} reads pi_ref (and pi_t from the samples): use reference=initial")
    if cfg.sampling.num_samples < 2 and not xpo:
        raise ConfigError("K-wise online losses need sampling.num_samples >= 2")
    token_level = lspec.needs_token_logps
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if model is None:
        model, tokenizer = load_policy(cfg.model)
    if contexts is None:
        from .loop import _contexts

        contexts = _contexts(cfg)  # the prompt pool file (cfg.prompts)
    pool, order, eval_ctx, run, pad_id = split_prompts(cfg, contexts, tokenizer, rng)

    reference = _reference(model, ref_mode)  # from the initial policy, also on resume (before loading weights)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the policy has no trainable parameters")
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rounds, metrics_rows, step, first = [], [], 0, 0
    fingerprint = _fingerprint(cfg)
    _write_config(run, cfg)
    if resume:
        first, saved = load_round(run, model=model, optimizer=optim, rng=rng)
        _check_fingerprint(saved["config"], fingerprint, run)
        rounds, metrics_rows, step, baseline = saved["rounds"], saved["metrics"], saved["step"], saved["baseline"]
        if progress:
            print(f"resumed after round {first - 1} (step {step})")
    else:
        baseline = [g[0].text for g in sample(model, tokenizer, eval_ctx, cfg.eval_sampling)] if eval_ctx else []
    for r in range(first, cfg.rounds):
        start = cfg.eval_prompts + r * cfg.prompts_per_round
        ctx = [pool[i] for i in order[start:start + cfg.prompts_per_round]]
        scfg = SamplingConfig(**{**cfg.sampling.__dict__, "seed": cfg.sampling.seed + r})
        if xpo:
            examples, rewards, explore = _xpo_round(model, reference, tokenizer, judge, ctx, scfg, pad_id,
                                                    run / f"round-{r}", r)
            groups = []
        elif inpo:
            examples, rewards = _pairs_round(model, tokenizer, judge, ctx, scfg, pad_id, run / f"round-{r}", r, rng)
            groups = []
        else:
            examples, groups = [], sample(model, tokenizer, ctx, scfg, progress=progress)
            rewards = _judge_all(judge, ctx, [[s.text for s in g] for g in groups], reward_kind)
        prompt_ids = encode_prompts(tokenizer, ctx, scfg.max_prompt_length)
        records = []
        for c, ids, g, rw in zip(ctx, prompt_ids, groups, rewards):
            texts = [s.text for s in g]
            comps = [s.token_ids if s.token_ids else [pad_id] for s in g]  # an empty sample scores one pad token
            examples.append(TokenizedExample(prompt_ids=list(ids), completion_ids=comps, kind="ranked"))
            keep = [k for k, text in enumerate(texts) if text.strip()]  # the data layer refuses empty completions
            if len(keep) >= 2:
                records.append(RatedRecord(context=c, candidates=tuple(texts[k] for k in keep),
                                           scores=tuple({"reward": float(rw[k])} for k in keep),
                                           meta={"round": r, "judge": getattr(judge, "name", "judge"),
                                                 "reward_kind": reward_kind, "logps": [g[k].logp for k in keep],
                                                 "empty_samples_dropped": len(texts) - len(keep)}))
        if records:
            write_records(run / f"round-{r}" / "rated.jsonl", records)
        # fixed mini-batches for the round, and pi_t's scores on each (GRPO's pi_old, SPPO's pi_t)
        idx = rng.permutation(len(examples))
        batches = [idx[s:s + cfg.batch_size].tolist() for s in range(0, len(idx), cfg.batch_size)]
        collated = [collate_shared([examples[i] for i in b], pad_token_id=pad_id) for b in batches]
        old = [_eval_scores(model, batch, token_level) for batch in collated]
        losses = []
        model.train()
        for _ in range(cfg.epochs):
            for bi in rng.permutation(len(batches)):
                batch, b = collated[bi], batches[bi]
                pol = score_batch(model, batch, token_level=token_level)
                ref = old[bi] if ref_mode == "previous" else reference(batch, b, token_level)
                scores = to_scores(batch, pol, ref)
                dev = scores.logps.device
                scores.rewards = torch.tensor(np.stack([rewards[i] for i in b]), dtype=scores.logps.dtype, device=dev)
                scores.aux["old_logps"] = old[bi]["logps"]  # pi_old of the sequence (P3O's ratios)
                if token_level:
                    scores.aux["old_token_logps"] = old[bi]["token_logps"]
                if inpo:  # log pi_t of the pair (the sampling policy's, before this round's updates)
                    scores.aux["previous_logps"] = old[bi]["logps"]
                if xpo:  # log pi_theta of each pair's reference sample, differentiable
                    pos = torch.tensor([explore[i] for i in b], device=dev)
                    scores.aux["explore_logps"] = scores.logps[torch.arange(len(b), device=dev), pos][:, None]
                out = compute(cfg.loss, scores, **cfg.hparams)
                optim.zero_grad(set_to_none=True)
                out.loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm else math.inf)
                optim.step()
                step += 1
                row = {"split": "train", "round": r, "step": step, "loss": float(out.loss.detach()),
                       "grad_norm": float(gnorm)}
                row.update({k: float(v) for k, v in out.metrics.items() if k != "loss"})
                metrics_rows.append(row)
                losses.append(row["loss"])
        mean_reward = float(np.mean([x[0] if xpo or inpo else np.mean(x) for x in rewards]))  # pairs: P(chosen > rejected)
        rounds.append({"round": r, "prompts": len(ctx), "mean_reward": mean_reward, "losses": losses})
        if progress:
            print(f"round {r}: mean {reward_kind} of the samples {mean_reward:.4f}; {len(losses)} steps")
        if cfg.checkpoint:
            save_round(run, r + 1, model=model, optimizer=optim, rng=rng, keep_last=cfg.keep_last,
                       state={"rounds": rounds, "metrics": metrics_rows, "step": step, "baseline": baseline,
                              "config": fingerprint})
    with atomic_write(run / "metrics.jsonl", "w") as f:
        for row in metrics_rows:
            f.write(json.dumps(row) + "\n")
    model.eval()
    summary: dict[str, Any] = {"loss": cfg.loss, "reference": ref_mode, "reward": reward_kind, "rounds": rounds}
    if eval_ctx:
        final = [g[0].text for g in sample(model, tokenizer, eval_ctx, cfg.eval_sampling)]
        summary.update(held_out_summary(judge, eval_ctx, final, baseline))
        with atomic_write(run / "eval_samples.jsonl", "w") as f:
            for c, b, a in zip(eval_ctx, baseline, final):
                f.write(json.dumps({"context": c, "initial": b, "final": a}, default=str) + "\n")
    with atomic_write(run / "summary.json", "w") as f:
        f.write(json.dumps(summary, indent=2, default=str))
    if cfg.report:
        _report(run, cfg.loss, summary, "mean_reward")
    return summary
