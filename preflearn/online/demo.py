"""``preflearn online demo``: two rounds of online (iterative) DPO on the bundled SmolLM2-135M-Instruct.

The judge is a Bradley-Terry reward model on the bundled MiniLM encoder, trained on
one half of the bundled HH-RLHF harmless pairs (cached after the first run); the
prompt pool is the single-turn prompts of the other half, shown to SmolLM2 as chat
messages, with 32 of them held out. Each round samples K = 4 completions per prompt
from the current policy (T = 0.7, top-p 0.9), the reward model picks the best and the
worst of them (iterative DPO with best-vs-worst pairs: Xiong et al. 2024, "Iterative
Preference Learning from Human Feedback", arXiv:2312.11456; Dong et al. 2024, "RLHF
Workflow", arXiv:2405.07863; ``pairs="random_pair"`` is online DPO, Guo et al. 2024,
arXiv:2402.04792), and LoRA DPO updates the policy against the initial model (the
adapter-disabled base). At the end, 4 sampled completions per held-out prompt from the
final policy and from the initial model are compared by the judge
(:func:`sampled_win_rate`: win rate and reward gain with bootstrap CIs over prompts).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_online_demo", "demo_config", "sampled_win_rate"]


def _single_turn_prompts(records: Sequence[Any]) -> list[list[dict]]:
    from ..data.hh import hh_to_messages

    out, seen = [], set()
    for r in records:
        ctx = r.context if isinstance(r.context, str) else None
        if ctx is None:
            continue
        msgs = hh_to_messages(ctx)
        msgs = [m for m in msgs if m["content"].strip()]
        if len(msgs) == 1 and msgs[0]["role"] == "user" and len(msgs[0]["content"]) < 300:
            key = msgs[0]["content"]
            if key not in seen:
                seen.add(key)
                out.append(msgs)
    return out


def train_judge(records: Sequence[Any], cache: Path, max_pairs: int = 1200, seed: int = 0, progress: bool = True):
    """A MiniLM Bradley-Terry reward model on HH-RLHF pairs, cached under ``cache``."""
    import torch

    from ..models.bundled import load_bundled
    from ..reward.data import pairs_from_records
    from ..reward.model import RewardModel
    from ..reward.train import RMTrainConfig, train_reward_model

    recs = list(records)[:max_pairs]
    key = hashlib.sha256(json.dumps([len(recs), seed, recs[0].chosen if recs else ""]).encode()).hexdigest()[:12]
    path = cache / f"rm-minilm-{key}"
    if (path / "config.json").exists():
        return RewardModel.from_pretrained(path)
    torch.manual_seed(seed)
    backbone, tok = load_bundled("minilm-l6")
    rm = RewardModel.from_backbone(backbone, tok, pooling="mean", max_length=192)
    train_reward_model(rm, pairs_from_records(recs), RMTrainConfig(lr=3e-5, batch_size=16, epochs=1.0, seed=seed,
                                                                   progress=progress, log_every=20))
    rm.save_pretrained(path)
    return rm


def sampled_win_rate(judge: Any, contexts: Sequence[Any], policy: Sequence[Sequence[str]],
                     baseline: Sequence[Sequence[str]], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Judge win rate of a policy's *samples* over a baseline's on the same prompts, with a 95% CI.

    For prompt x with policy samples a_1..a_S and baseline samples b_1..b_S and judge rewards r,
    the prompt's win rate is ``w(x) = mean_{i,j} (1[r(a_i) > r(b_j)] + 1/2 1[r(a_i) = r(b_j)])``
    (every policy sample against every baseline sample; identical texts tie). The win rate is the
    mean of w(x) over prompts, and its 95% CI the percentile bootstrap over prompts (prompts are
    the independent units; samples of one prompt are not). The same is reported for the mean
    reward difference ``mean_i r(a_i) - mean_j r(b_j)``.
    """
    w, d, ra_all, rb_all = [], [], [], []
    for c, a, b in zip(contexts, policy, baseline):
        r = np.asarray(judge.score(c, list(a) + list(b)), dtype=np.float64)
        ra, rb = r[: len(a)], r[len(a):]
        w.append(float((ra[:, None] > rb[None, :]).mean() + 0.5 * (ra[:, None] == rb[None, :]).mean()))
        d.append(float(ra.mean() - rb.mean()))
        ra_all.extend(ra.tolist())
        rb_all.extend(rb.tolist())
    w_arr, d_arr = np.asarray(w), np.asarray(d)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(w_arr), size=(n_boot, len(w_arr)))
    wb, db = w_arr[idx].mean(1), d_arr[idx].mean(1)
    return {"win_rate": float(w_arr.mean()), "ci_low": float(np.quantile(wb, 0.025)),
            "ci_high": float(np.quantile(wb, 0.975)), "n": len(w_arr), "samples_per_prompt": len(policy[0]),
            "mean_reward_policy": float(np.mean(ra_all)), "mean_reward_baseline": float(np.mean(rb_all)),
            "reward_gain": float(d_arr.mean()), "reward_gain_ci_low": float(np.quantile(db, 0.025)),
            "reward_gain_ci_high": float(np.quantile(db, 0.975))}


def demo_config(**over: Any):
    from .loop import OnlineConfig
    from .sampling import SamplingConfig

    train = {
        "model": {"name": "smollm2-135m-instruct", "lora": {"enabled": True, "r": 16, "alpha": 32}},
        "loss": {"name": "dpo", "beta": 0.1},
        "optim": {"lr": 2e-4, "schedule": "constant", "warmup_steps": 0},
        "batch_size": 4, "max_steps": 8, "report": True, "save_model": False, "tensorboard": False,
        "data": {"max_prompt_length": 128, "max_completion_length": 48},
    }
    base = dict(name="online-demo", prompts_per_round=32, eval_prompts=0, rounds=2, pairs="best_vs_worst",
                reference="initial", sampling=SamplingConfig(num_samples=4, max_new_tokens=48, temperature=0.7, top_p=0.9),
                train=train)
    base.update(over)
    return OnlineConfig(**base)


def run_online_demo(output_dir: str = "runs", rounds: int = 2, prompts_per_round: int = 32, eval_prompts: int = 32,
                    steps_per_round: int = 8, rm_pairs: int = 1200, seed: int = 0, console: Any = None,
                    judge_dir: str | None = None, eval_samples: int = 4, pairs: str = "best_vs_worst",
                    lr: float = 2e-4, temperature: float = 0.7, top_p: float = 0.9) -> dict[str, Any]:
    """Run the demo; ``judge_dir``: a saved reward model to judge with instead of training (or reusing
    the cached) MiniLM one. Reports wall time, this process's CPU time and the load average.

    Held-out evaluation: ``eval_samples`` completions per held-out prompt from the final policy and
    from the initial model (the same LoRA model with the adapter off), at the training temperature,
    compared by the judge (:func:`sampled_win_rate`).
    """
    import torch
    from rich.console import Console
    from rich.table import Table

    from ..data import bundled_path, load
    from ..data.writers import atomic_write
    from ..models.bundled import cache_root, load_bundled
    from .judges import RewardModelJudge
    from .loop import run_online
    from .sampling import SamplingConfig, sample

    console = console or Console()
    t0, c0 = time.perf_counter(), time.process_time()
    records = load(bundled_path("hh-rlhf"))
    half = len(records) // 2
    if judge_dir:
        from ..reward.model import RewardModel

        console.print(f"[bold]judge[/]: the saved reward model in {judge_dir}")
        rm = RewardModel.from_pretrained(judge_dir)
    else:
        console.print(f"[bold]judge[/]: MiniLM Bradley-Terry reward model on {min(rm_pairs, half)} HH-RLHF pairs")
        rm = train_judge(records[:half], cache_root() / "online-demo", max_pairs=rm_pairs, seed=seed)
    judge = RewardModelJudge(rm)
    prompts = _single_turn_prompts(records[half:])
    order = np.random.default_rng(seed).permutation(len(prompts))
    held_out = [prompts[i] for i in order[:eval_prompts]]
    pool = [prompts[i] for i in order[eval_prompts:]]
    t_judge, c_judge = time.perf_counter() - t0, time.process_time() - c0
    model, tok = load_bundled("smollm2-135m-instruct")
    base_cfg = demo_config()
    cfg = demo_config(output_dir=output_dir, rounds=rounds, prompts_per_round=prompts_per_round, seed=seed,
                      pairs=pairs, sampling=SamplingConfig(**{**base_cfg.sampling.__dict__, "temperature": temperature,
                                                              "top_p": top_p}), train={**base_cfg.train, "max_steps": steps_per_round,
                                          "optim": {**base_cfg.train["optim"], "lr": lr}})
    console.print(f"[bold]policy[/]: SmolLM2-135M-Instruct + LoRA; {rounds} rounds x {prompts_per_round} prompts x "
                  f"K={cfg.sampling.num_samples}, pairs {pairs}; {len(pool)} training prompts, {len(held_out)} held out")
    out = run_online(cfg, judge, model=model, tokenizer=tok, contexts=pool)
    model = out.pop("model")
    model.eval()
    ecfg = SamplingConfig(**{**cfg.sampling.__dict__, "num_samples": eval_samples, "seed": cfg.sampling.seed + 1000})
    with torch.no_grad():
        final = [[s.text for s in g] for g in sample(model, tok, held_out, ecfg)]
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                initial = [[s.text for s in g] for g in sample(model, tok, held_out, ecfg)]
        else:  # pragma: no cover - the demo always trains LoRA
            raise RuntimeError("the demo compares against the adapter-disabled base; train.model.lora must be on")
    wr = sampled_win_rate(judge, held_out, final, initial, seed=seed)
    run = cfg.run_dir
    with atomic_write(run / "eval_samples.jsonl", "w") as f:
        for c, a, b in zip(held_out, final, initial):
            f.write(json.dumps({"context": c, "final": a, "initial": b}, default=str) + "\n")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    table = Table(title="online DPO rounds (judge: MiniLM reward model)")
    for col in ("round", "pairs", "mean P(chosen > rejected)", "first loss", "last loss"):
        table.add_column(col)
    for r in out["rounds"]:
        table.add_row(str(r["round"]), str(r["pairs"]), f"{r['mean_judge_win_rate_of_chosen']:.3f}",
                      f"{r['train_losses'][0]:.4f}", f"{r['train_losses'][-1]:.4f}")
    console.print(table)
    console.print(f"held-out prompts: {wr['n']} x {eval_samples} samples; judge win rate of the final policy's samples "
                  f"over the initial model's: [bold]{wr['win_rate']:.3f}[/] (95% CI {wr['ci_low']:.3f}-"
                  f"{wr['ci_high']:.3f}); mean reward {wr['mean_reward_baseline']:.3f} -> {wr['mean_reward_policy']:.3f} "
                  f"(gain {wr['reward_gain']:+.3f}, 95% CI {wr['reward_gain_ci_low']:+.3f} to {wr['reward_gain_ci_high']:+.3f})")
    load_avg = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    console.print(f"total {seconds:.0f} s wall, {cpu:.0f} s CPU of this process (judge {t_judge:.0f} s wall, "
                  f"{c_judge:.0f} s CPU); load average {load_avg[0]:.1f} {load_avg[1]:.1f} {load_avg[2]:.1f}; "
                  f"outputs in {run}")
    out.update(win_rate_vs_initial=wr, mean_score_initial=wr["mean_reward_baseline"],
               mean_score_final=wr["mean_reward_policy"], seconds=seconds, cpu_seconds=cpu, judge_seconds=t_judge,
               judge_cpu_seconds=c_judge, load_average=list(load_avg))
    with atomic_write(run / "summary.json", "w") as f:
        f.write(json.dumps(out, indent=2, default=str))
    return out
