"""Multi-seed measurements for ICPL (CartPole, mutation proposer) and the hybrid cooperative learner.

    nice -n 15 .venv/bin/python benchmarks/pbrl_icpl_coop.py --seeds 8

ICPL: true return (200-step limit) of the preferred candidate per round, with the simulated human
(prefers longer episodes) and, as a control, the reversed preference; K = 4, 4 rounds.
Cooperative: soups per episode and steps in the human's half with an unseen A-style partner
(idles 25% of the time), for the hybrid learner, the same schedule without the preference
reward (lam = 0), online-only and offline-only ablations, and the scripted always-B AI as a
reference; also soups with a B-style and a complementing partner (generalization).
Reports CPU time (time.process_time), since the machine is shared.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def icpl_rows(seeds: int) -> None:
    from preflearn.pbrl.icpl import CARTPOLE, MutationProposer, SimulatedHuman, run_icpl

    seed_code = (
        "def compute_reward(cart_position, pole_angle, pole_angular_velocity, action):\n"
        "    alive = -0.5\n"
        "    upright = 0.3 * np.abs(pole_angle)\n"
        "    spin = 0.1 * np.abs(pole_angular_velocity)\n"
        "    return alive + upright + spin, {\"upright\": upright, \"spin\": spin}\n"
    )
    for label, human in [("preference", SimulatedHuman()),
                         ("reversed", SimulatedHuman(score_fn=lambda o, a, n: -n.astype(float)))]:
        t = time.process_time()
        curves = np.array([run_icpl(CARTPOLE, MutationProposer([seed_code], seed=s), human, rounds=4, k=4,
                                    seed=s).chosen_returns for s in range(seeds)])
        mean = " ".join(f"{v:6.1f}" for v in curves.mean(0))
        print(f"ICPL {label:10s} rounds 1-4 mean true return: {mean}  "
              f"(improved in {(curves[:, -1] > curves[:, 0]).sum()}/{seeds} seeds; "
              f"already 200 in round 1: {(curves[:, 0] >= 199.9).sum()}) cpu {time.process_time() - t:.1f}s")


def coop_rows(seeds: int) -> None:
    import torch

    from preflearn.pbrl.coop import (
        ITEM_A,
        ITEM_B,
        ComplementPartner,
        FetchPartner,
        HybridConfig,
        Kitchen,
        evaluate,
        feedback_pairs,
        fetch_ai,
        fit_style_reward,
        human_games,
        hybrid_train,
    )

    torch.set_num_threads(1)
    k = Kitchen()
    pool = [FetchPartner(ITEM_A), FetchPartner(ITEM_B), ComplementPartner()]
    configs = {"hybrid": HybridConfig(), "no preference (lam=0)": HybridConfig(lam=0.0),
               "online only": HybridConfig(offline=False), "offline only": HybridConfig(online=False)}
    rows: dict[str, list] = {n: [] for n in configs}
    rows["scripted always-B"] = []
    accs = []
    t = time.process_time()
    for s in range(seeds):
        games = human_games(k, FetchPartner(ITEM_A, p_idle=0.1), seed=s)
        r_hat, m = fit_style_reward(k, feedback_pairs(k, games, n_pairs=100, seed=s), seed=s)
        accs.append(m["accuracy"])
        for name, cfg in configs.items():
            Q, _ = hybrid_train(k, pool, games, r_hat if cfg.lam else None, cfg, seed=s)
            e, eb, ec = (evaluate(Q, k, p) for p in (FetchPartner(ITEM_A, p_idle=0.25), FetchPartner(ITEM_B),
                                                     ComplementPartner()))
            rows[name].append((e.team_return, e.style_violations, e.utility, eb.team_return, ec.team_return))
        # reference: the always-B AI (what the human's style asks for), as a Q-free policy
        Qb = np.zeros((k.n_states, 3))
        ai = fetch_ai(k, ITEM_B)
        for st in range(k.n_states):
            Qb[st, ai(st, np.random.default_rng(0))] = 1.0
        e, eb, ec = (evaluate(Qb, k, p) for p in (FetchPartner(ITEM_A, p_idle=0.25), FetchPartner(ITEM_B),
                                                  ComplementPartner()))
        rows["scripted always-B"].append((e.team_return, e.style_violations, e.utility, eb.team_return,
                                          ec.team_return))
    print(f"coop: BT reward train accuracy {np.mean(accs):.3f}; cpu {time.process_time() - t:.1f}s; "
          f"{seeds} seeds, mean (min)")
    print("| agent | soups, unseen A-style human | steps in human's half | human utility | soups, B partner |"
          " soups, complement partner |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        a = np.array(r)
        cells = " | ".join(f"{a[:, i].mean():.2f} ({a[:, i].min():.2f})" for i in range(5))
        print(f"| {name} | {cells} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--only", choices=["icpl", "coop"], default=None)
    args = ap.parse_args()
    if args.only in (None, "icpl"):
        icpl_rows(args.seeds)
    if args.only in (None, "coop"):
        coop_rows(args.seeds)


if __name__ == "__main__":
    main()
