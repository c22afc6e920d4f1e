"""The demo's held-out metric: win rate of sampled completions with a bootstrap CI over prompts."""

from __future__ import annotations

import numpy as np
import pytest

from preflearn.online.demo import sampled_win_rate


class LengthJudge:
    name = "length"

    def score(self, context, completions):
        return np.array([float(len(c)) for c in completions])


def test_sampled_win_rate_by_hand():
    judge = LengthJudge()
    # prompt 1: policy lengths (3, 1) vs baseline (2, 2): wins 1[3>2]x2 + 1[1>2]x2 = 2 of 4 -> 0.5
    # prompt 2: policy (2, 4) vs baseline (2, 1): (2 vs 2 tie .5, 2>1 1, 4>2 1, 4>1 1) -> 3.5 / 4
    out = sampled_win_rate(judge, ["x", "y"], [["aaa", "a"], ["aa", "aaaa"]], [["bb", "bb"], ["bb", "b"]],
                           n_boot=4000, seed=0)
    assert out["win_rate"] == pytest.approx((0.5 + 0.875) / 2)
    assert out["n"] == 2 and out["samples_per_prompt"] == 2
    assert out["mean_reward_policy"] == pytest.approx(2.5) and out["mean_reward_baseline"] == pytest.approx(1.75)
    assert out["reward_gain"] == pytest.approx(((2 - 2) + (3 - 1.5)) / 2)
    # two prompts: the bootstrap can only produce means of {0.5, 0.875} resamples
    assert out["ci_low"] == pytest.approx(0.5) and out["ci_high"] == pytest.approx(0.875)


def test_identical_policies_tie_and_ci_covers_half():
    judge = LengthJudge()
    rng = np.random.default_rng(0)
    texts = [["x" * int(n) for n in rng.integers(1, 30, size=4)] for _ in range(40)]
    out = sampled_win_rate(judge, ["p"] * 40, texts, texts)
    assert out["win_rate"] == pytest.approx(0.5) and out["reward_gain"] == 0.0
    better = [[t + "yy" for t in g] for g in texts]
    up = sampled_win_rate(judge, ["p"] * 40, better, texts)
    assert up["win_rate"] > 0.5 and up["ci_low"] > 0.5 and up["reward_gain"] == pytest.approx(2.0)
