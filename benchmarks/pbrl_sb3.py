"""PbRL on CartPole-v1 with stable-baselines3 PPO trained on the learned reward (PEBBLE-shaped).

Loop (PEBBLE, arXiv:2106.05091, Algorithm 2, with PPO in place of SAC because CartPole's
actions are discrete; PPO's rollout buffer is refreshed every update, so nothing needs relabelling):

    pool <- 50-step segments of random linear policies
    repeat until the query budget is spent (rounds of `per_round` queries):
        ask the teacher (uniform, or the top ensemble disagreement among 10x candidates)
        refit the Bradley-Terry reward ensemble
        continue PPO for `steps_per_round` env steps on LearnedRewardWrapper(env, ensemble mean)
        record the TRUE return of the deterministic PPO policy (10 episodes)
        add segments of the PPO policy's own (stochastic) rollouts to the pool

Reference: the same PPO (same hyperparameters, seeds and number of env steps) on the true reward.
PPO hyperparameters: rl-baselines3-zoo's CartPole-v1 entry (n_envs 8, n_steps 32, batch 256,
gae_lambda 0.8, gamma 0.98, 20 epochs) with a constant learning rate 5e-4 (the zoo decays 1e-3
linearly; a constant rate keeps rounds comparable).

    nice -n 15 .venv/bin/python benchmarks/pbrl_sb3.py --out runs/pbrl_sb3 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from preflearn.pbrl import cem as C
from preflearn.pbrl.query import active_loop
from preflearn.pbrl.reward import RewardEnsemble, RewardFitConfig
from preflearn.pbrl.sb3 import LearnedRewardWrapper, LinearToZero, StandardizedReward, sb3_act_fn
from preflearn.pbrl.segments import segments_from_episodes
from preflearn.pbrl.teachers import Teacher

TEACHER_LABEL = {"stoc": "beta=1 ", "mistake": "eps=0.1 "}  # the noisy teachers of main(), for the legend
SEG_LEN = 50
FIT_EPOCHS = 20
GAMMA = 0.98
PPO_KW = dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=GAMMA, n_epochs=20, ent_coef=0.0,
              learning_rate=5e-4, verbose=0)


def make_ppo(seed: int, reward_fn=None, vecnormalize: bool = False, schedule_steps: int = 0):
    """SB3 PPO on CartPole-v1; ``schedule_steps`` > 0: rl-zoo's lin_1e-3 learning rate and lin_0.2 clip range
    decaying to 0 over that many env steps (the zoo's CartPole-v1 entry exactly); 0: constant 5e-4 / 0.2."""
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    wrapper = None
    if reward_fn is not None:
        def wrapper(env: gym.Env) -> gym.Env:
            return LearnedRewardWrapper(env, reward_fn, gamma=GAMMA)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed, wrapper_class=wrapper)
    if vecnormalize:  # SB3's running scale of the discounted return (no mean shift), as rl-zoo users do
        from stable_baselines3.common.vec_env import VecNormalize

        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=GAMMA)
    kw = dict(PPO_KW)
    scheds = []
    if schedule_steps:
        scheds = [LinearToZero(1e-3, schedule_steps), LinearToZero(0.2, schedule_steps)]
        kw["learning_rate"], kw["clip_range"] = scheds
    model = PPO("MlpPolicy", env, seed=seed, **kw)
    for sc in scheds:
        sc.model = model
    return model


def initial_pool(seed: int):
    rng = np.random.default_rng(seed)
    thetas = rng.standard_normal((64, 10))
    Obs, A, R, L = C.vector_episodes(thetas, seed=seed, eps=rng.uniform(0.0, 0.5, len(thetas)))
    return segments_from_episodes(C.to_trajectories(Obs, A, R, L, 500), SEG_LEN, per_episode=2, rng=rng)


def reset_critic(model) -> None:
    """Re-initialise PPO's value network (SB3's own orthogonal init, gains sqrt 2 / 1) and its Adam moments.

    After a reward refit the old critic estimates the value of the OLD reward; starting it afresh
    avoids advantages computed from a stale baseline (an option; the policy network is kept).
    """
    from functools import partial

    pol = model.policy
    pol.mlp_extractor.value_net.apply(partial(pol.init_weights, gain=np.sqrt(2)))
    pol.value_net.apply(partial(pol.init_weights, gain=1.0))
    for m in (pol.mlp_extractor.value_net, pol.value_net):
        for prm in m.parameters():
            pol.optimizer.state.pop(prm, None)


def evaluate(model, episodes: int) -> float:
    """Mean true return of the deterministic policy (fixed evaluation seed, the same for every run)."""
    return C.policy_return(sb3_act_fn(model), episodes=episodes)


def run_true(seed: int, chunks: int, steps: int, episodes: int, schedule_steps: int = 0):
    torch.manual_seed(seed)
    model = make_ppo(seed, schedule_steps=schedule_steps)
    out = []
    for _ in range(chunks):
        model.learn(steps, reset_num_timesteps=False)
        out.append(evaluate(model, episodes))
    return out, model


def learned_returns(reward_fn, model, episodes: int, gamma: float) -> dict[str, float]:
    """True and learned return of ``model``'s deterministic episodes (absorbing convention, H = 500).

    ``learned`` sums r_hat over the 500 steps (the quantity the Bradley-Terry model ranks segments by);
    ``learned_disc`` discounts it with the PPO gamma from the first step (what PPO maximises).
    """
    Obs, A, R, L = C.vector_episodes(np.zeros((episodes, 1)), seed=12345, act_fn=sb3_act_fn(model))
    r = np.asarray(reward_fn(Obs[:, :-1].reshape(-1, Obs.shape[-1]), A.reshape(-1)), np.float64).reshape(A.shape)
    disc = gamma ** np.arange(A.shape[1])
    return {"true": float(R.sum(1).mean()), "learned": float(r.sum(1).mean()),
            "learned_disc": float((r * disc).sum(1).mean()), "length": float(L.mean())}


def run_pbrl(selector: str, teacher: Teacher, budget: int, per_round: int, steps: int, seed: int,
             reward_norm: str = "none", chunks: int = 0, episodes: int = 10, ref_model=None,
             schedule_steps: int = 0, value_reset: bool = False):
    """One PbRL run; returns (history rows, diagnostics).

    After the query budget is spent, PPO keeps training on the final (frozen) learned reward for
    ``chunks - rounds`` more chunks of ``steps`` env steps, so that it gets the same env-step budget as
    the true-reward reference (queries spread over the first part of training, as in PEBBLE/B-Pref).
    """
    torch.manual_seed(seed)
    ens = RewardEnsemble(4, 1, n_actions=2, n_members=3, seed=seed)
    norm = StandardizedReward(ens.reward_fn)
    model = make_ppo(seed, norm if reward_norm == "standardize" else ens.reward_fn,
                     vecnormalize=reward_norm == "vecnormalize", schedule_steps=schedule_steps)
    rng = np.random.default_rng(seed + 7)
    pool = initial_pool(seed)
    state: dict = {"seen": [pool]}

    def grow(n: int, ens: RewardEnsemble):
        new = state.pop("new", None)
        if new is not None:
            state["seen"].append(new)
        return new

    def on_round(n: int, ens: RewardEnsemble) -> dict[str, float]:
        t0 = time.process_time()
        if reward_norm == "standardize":  # Christiano et al. 2017 Sec. 2.2.1, on every real step of the pool
            v = np.concatenate([s.valid.reshape(-1) for s in state["seen"]]) > 0
            obs = np.concatenate([s.obs.reshape(-1, s.obs.shape[-1]) for s in state["seen"]])[v]
            act = np.concatenate([s.act.reshape(-1) for s in state["seen"]])[v]
            norm.update(obs, act)
        if value_reset:
            reset_critic(model)
        model.learn(steps, reset_num_timesteps=False)
        stoch = sb3_act_fn(model, deterministic=False)
        Obs, A, R, L = C.vector_episodes(np.zeros((16, 1)), seed=seed * 100 + n, act_fn=stoch,
                                         eps=rng.uniform(0.0, 0.3, 16))
        state["new"] = segments_from_episodes(C.to_trajectories(Obs, A, R, L, 500), SEG_LEN, per_episode=4, rng=rng)
        return {"true_return": evaluate(model, episodes), "ppo_cpu_s": time.process_time() - t0}

    res = active_loop(pool, teacher, ens, budget=budget, per_round=per_round, selector=selector,
                      fit=RewardFitConfig(epochs=FIT_EPOCHS), seed=seed, on_round=on_round,
                      grow=grow)
    hist = res.history
    last = dict(hist[-1])
    for _ in range(len(hist), chunks):  # the reward is frozen from here on
        t0 = time.process_time()
        model.learn(steps, reset_num_timesteps=False)
        last = {"round": last["round"] + 1, "queries": last["queries"], "true_return": evaluate(model, episodes),
                "ppo_cpu_s": time.process_time() - t0}
        hist.append(last)
    fn = norm if reward_norm == "standardize" else ens.reward_fn
    diag = {"own": learned_returns(fn, model, episodes, GAMMA)}
    if ref_model is not None:  # is a shortfall the reward's fault (ranks the true-reward policy lower) or PPO's?
        diag["ref"] = learned_returns(fn, ref_model, episodes, GAMMA)
    return hist, diag


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/pbrl_sb3")
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--per-round", type=int, default=50)
    ap.add_argument("--steps-per-round", type=int, default=10240)
    ap.add_argument("--total-steps", type=int, default=0,
                    help="env steps for every learner (0: one chunk per query round); after the budget is spent "
                         "PPO continues on the frozen learned reward")
    ap.add_argument("--lr-schedule", default="constant", choices=["constant", "linear"],
                    help="constant 5e-4 / clip 0.2, or rl-zoo's lin_1e-3 / lin_0.2 to 0 over the total env steps "
                         "(the same for the true-reward and the learned-reward PPO)")
    ap.add_argument("--eval-episodes", type=int, default=10, help="deterministic evaluation episodes per point")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1 (run seeds in parallel)")
    ap.add_argument("--reward-norm", default="none", choices=["standardize", "vecnormalize", "none"],
                    help="standardise the learned reward after every refit (Christiano et al. 2017 Sec. 2.2.1)")
    ap.add_argument("--configs", default="oracle/disagreement,oracle/uniform,mistake/disagreement")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG and table from results.json")
    ap.add_argument("--merge", default="", help="comma-separated result folders (e.g. one per seed) to merge "
                                               "into --out and plot")
    ap.add_argument("--value-reset", action="store_true",
                    help="re-initialise PPO's value network after every reward refit")
    ap.add_argument("--fit-epochs", type=int, default=20)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    global FIT_EPOCHS
    FIT_EPOCHS = args.fit_epochs
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teachers = {"oracle": Teacher(), "mistake": Teacher(eps=0.1), "stoc": Teacher(beta=1.0)}
    rounds = -(-args.budget // args.per_round)
    chunks = max(rounds, -(-args.total_steps // args.steps_per_round))
    sched = chunks * args.steps_per_round if args.lr_schedule == "linear" else 0
    if args.merge:
        merge(out, [Path(d) for d in args.merge.split(",")])
    if args.plot_only or args.merge:
        finish(out, json.loads((out / "results.json").read_text()), rounds, args)
        return
    t0, c0 = time.time(), time.process_time()
    ref: list[list[float]] = []
    results: dict[str, list] = {name: [] for name in args.configs.split(",")}
    diags: dict[str, list] = {name: [] for name in results}
    result_seeds: dict[str, list] = {name: [] for name in results}
    seeds: list[int] = []

    def save() -> None:  # after every run, so an interrupted benchmark still leaves its finished seeds
        summary = {"true_reward_ppo": ref, "results": results, "diagnostics": diags, "seeds": seeds,
                   "result_seeds": result_seeds,
                   "wall_s": time.time() - t0, "cpu_s": time.process_time() - c0, "load_avg": os.getloadavg(),
                   "args": vars(args)}
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(out / "results.json")

    for s in range(args.first_seed, args.first_seed + args.seeds):  # seeds outer: each finished seed is a complete comparison
        seeds.append(s)
        ref_model = None
        if args.skip_reference:
            ref.append([float("nan")] * chunks)
        else:
            r, ref_model = run_true(s, chunks, args.steps_per_round, args.eval_episodes, sched)
            ref.append(r)
        print(f"[{time.time() - t0:6.0f}s] true-reward PPO seed {s}: " + " ".join(f"{v:.0f}" for v in ref[-1]),
              flush=True)
        save()
        for name in results:
            tname, sel = name.split("/")
            hist, diag = run_pbrl(sel, teachers[tname], args.budget, args.per_round, args.steps_per_round, s,
                                  args.reward_norm, chunks, args.eval_episodes, ref_model, sched,
                                  args.value_reset)
            results[name].append(hist)
            diags[name].append(diag)
            result_seeds[name].append(s)
            print(f"[{time.time() - t0:6.0f}s] {name} seed {s}: "
                  + " ".join(f"{h['true_return']:.0f}" for h in hist) + f"  diag {json.dumps(diag)}", flush=True)
            save()
    finish(out, json.loads((out / "results.json").read_text()), rounds, args)


def finish(out: Path, data: dict, rounds: int, args: argparse.Namespace) -> None:
    a = argparse.Namespace(**{**vars(args), **data["args"]})
    ref = [r for r in data["true_reward_ppo"] if np.isfinite(r).all()]
    plot(out, ref, {k: v for k, v in data["results"].items() if v}, rounds, a)
    report(data)


def merge(out: Path, dirs: list[Path]) -> None:
    """Merge several results.json (same arguments, different seeds or configs) into ``out``, by seed.

    True-reward runs skipped with ``--skip-reference`` (NaN) are dropped; another folder supplies them.
    """
    parts = [json.loads((d / "results.json").read_text()) for d in dirs]
    ref: dict[int, list] = {}
    res: dict[str, dict] = {}
    diag: dict[str, dict] = {}
    for p in parts:
        seeds = p.get("seeds") or list(range(p["args"]["first_seed"], p["args"]["first_seed"]
                                             + len(p["true_reward_ppo"])))
        for sd, r in zip(seeds, p["true_reward_ppo"]):
            if np.isfinite(r).all():
                ref[sd] = r
        for k, runs in p["results"].items():
            rs = p.get("result_seeds", {}).get(k, seeds)
            res.setdefault(k, {}).update(zip(rs, runs))
            diag.setdefault(k, {}).update(zip(rs, p.get("diagnostics", {}).get(k, [])))
    seeds = sorted(ref)
    m = {"true_reward_ppo": [ref[sd] for sd in seeds], "seeds": seeds,
         "results": {k: [v[sd] for sd in sorted(v)] for k, v in res.items()},
         "result_seeds": {k: sorted(v) for k, v in res.items()},
         "diagnostics": {k: [diag[k].get(sd, {}) for sd in sorted(v)] for k, v in res.items()},
         "cpu_s": sum(p["cpu_s"] for p in parts), "wall_s": max(p["wall_s"] for p in parts),
         "load_avg": [p.get("load_avg") for p in parts],
         "args": {**parts[0]["args"], "seeds": len(seeds), "merged_from": [str(d) for d in dirs]}}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(m, indent=1))
    tmp.replace(out / "results.json")


def report(data: dict) -> None:
    """Final true returns per seed, the ratio to the true-reward PPO on the same seeds, and the diagnostics."""
    seeds = data.get("seeds") or list(range(len(data["true_reward_ppo"])))
    ref = {sd: r for sd, r in zip(seeds, data["true_reward_ppo"]) if np.isfinite(r).all()}
    if ref:
        f = np.array([r[-1] for r in ref.values()])
        last5 = np.mean([np.mean(r[-5:]) for r in ref.values()])
        print(f"true-reward PPO, seeds {list(ref)}: final {f.mean():.1f} ({', '.join(f'{v:.0f}' for v in f)}); "
              f"mean of the last 5 evaluations {last5:.1f}")
    for name, runs in data["results"].items():
        if not runs:
            continue
        rs = data.get("result_seeds", {}).get(name, seeds[:len(runs)])
        v = np.array([h[-1]["true_return"] for h in runs])
        q = int(max(h["queries"] for h in runs[0]))
        line = f"{name}, seeds {rs}: final {v.mean():.1f} ({', '.join(f'{x:.0f}' for x in v)}), {q} queries"
        paired = [sd for sd in rs if sd in ref]
        if paired:
            rv = np.mean([ref[sd][-1] for sd in paired])
            mv = np.mean([h[-1]["true_return"] for sd, h in zip(rs, runs) if sd in ref])
            l5 = np.mean([np.mean([x["true_return"] for x in h[-5:]]) for sd, h in zip(rs, runs) if sd in ref])
            r5 = np.mean([np.mean(ref[sd][-5:]) for sd in paired])
            line += (f"; = {100 * mv / rv:.1f}% of the true-reward PPO on the same seeds (final), "
                     f"{100 * l5 / r5:.1f}% (mean of the last 5 evaluations)")
        print(line)
        for sd, d in zip(rs, data.get("diagnostics", {}).get(name, [])):
            if d and "ref" in d:
                print(f"  seed {sd}: learned return (sum over 500 steps / discounted) of its own policy "
                      f"{d['own']['learned']:.1f} / {d['own']['learned_disc']:.2f} (true {d['own']['true']:.0f}); "
                      f"of the true-reward policy {d['ref']['learned']:.1f} / {d['ref']['learned_disc']:.2f} "
                      f"(true {d['ref']['true']:.0f})")
    print(f"CPU {data['cpu_s']:.0f} s, load average {data.get('load_avg')}")


def plot(out: Path, ref: list[list[float]], results: dict[str, list], rounds: int, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chunks = len(ref[0]) if ref else max(len(h) for runs in results.values() for h in runs)
    steps = (np.arange(chunks) + 1) * args.steps_per_round
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    r = np.array(ref).reshape(len(ref), chunks)
    if ref:
        ax.plot(steps, r.mean(0), "k--", marker="s", ms=3, label=f"PPO on the true reward ({len(ref)} seeds)")
    for name, runs in results.items():
        v = np.array([[h["true_return"] for h in hist] for hist in runs])
        q = int(max(h["queries"] for h in runs[0]))
        ax.plot(steps, v.mean(0), marker="o", ms=3, label=f"PbRL {TEACHER_LABEL.get(name.split('/')[0], '')}{name} "
                f"({q} queries, {len(runs)} seed{'s' * (len(runs) > 1)})")
        ax.fill_between(steps, v.min(0), v.max(0), alpha=0.10)
    if chunks > rounds:
        ax.axvline(rounds * args.steps_per_round, color="grey", lw=0.8, ls=":")
        ax.text(rounds * args.steps_per_round, 0.02, " queries end; reward frozen", fontsize=7, color="grey",
                transform=ax.get_xaxis_transform())
    ax.set_xlabel(f"PPO env steps (a round of {args.per_round} queries per {args.steps_per_round} steps)")
    ax.set_ylabel(f"true return, {args.eval_episodes} episodes (mean over seeds; band: min..max)")
    ax.set_title("CartPole-v1: SB3 PPO on the preference-learned reward")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pbrl_sb3.png", dpi=120)
    print("| config | " + " | ".join(f"{s / 1000:.1f}k" for s in steps) + " |")
    if ref:
        print("| true-reward PPO | " + " | ".join(f"{v:.0f}" for v in r.mean(0)) + " |")
    for name, runs in results.items():
        v = np.array([[h["true_return"] for h in hist] for hist in runs]).mean(0)
        print(f"| {name} | " + " | ".join(f"{x:.0f}" for x in v) + " |")
    print(f"wrote {out / 'pbrl_sb3.png'} and results.json")


if __name__ == "__main__":
    main()
