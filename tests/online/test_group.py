"""The K-samples-per-prompt online loop (RLOO, GRPO, SPPO) on a tiny random model with an oracle judge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preflearn.errors import ConfigError
from preflearn.online import group as G
from preflearn.online import judges as J
from preflearn.online.sampling import SamplingConfig

from .test_loop import count_x
from .test_sampling import CharTokenizer, tiny_llama

CONTEXTS = [f"prompt number {i}" for i in range(48)]


def _cfg(tmp_path, loss, **over):
    base = dict(name=loss, output_dir=str(tmp_path), loss=loss, rounds=2, prompts_per_round=16, eval_prompts=16,
                lr=3e-3, batch_size=4, epochs=2, report=False, sampling=SamplingConfig(num_samples=4, max_new_tokens=8),
                eval_sampling=SamplingConfig(num_samples=1, max_new_tokens=8, temperature=0.0))
    base.update(over)
    return G.GroupConfig(**base)


@pytest.mark.parametrize("loss,hparams", [("rloo", {}), ("grpo", {}), ("sppo", {"eta": 5.0})])
def test_two_rounds_raise_the_oracle_reward(tmp_path, loss, hparams):
    judge = J.OracleJudge(count_x, expected=True)
    out = G.run_online_group(_cfg(tmp_path, loss, hparams=hparams, report=loss == "rloo"), judge, model=tiny_llama(5),
                             tokenizer=CharTokenizer(), contexts=CONTEXTS)
    if loss == "rloo":  # the trainer shell's report and resolved config, with the rounds' figures
        page = (tmp_path / loss / "report.html").read_text()
        assert "mean_reward of the samples per round: round 0" in page and (tmp_path / loss / "loss.png").exists()
        assert "loss: rloo" in (tmp_path / loss / "config.yaml").read_text()
    assert out["reference"] == ("previous" if loss == "sppo" else "initial")
    assert out["reward"] == ("win_rate" if loss == "sppo" else "score")
    # greedy answers to 16 held-out prompts: the oracle's mean reward rises, and the judge prefers the final policy
    assert out["mean_score_final"] > out["mean_score_initial"] + 1.0
    assert out["win_rate_vs_initial"]["win_rate"] > 0.5
    # the round's samples were saved as rated records with the judge's numbers
    from preflearn.data import load

    rated = load(tmp_path / loss / "round-1" / "rated.jsonl")
    assert 12 <= len(rated) <= 16 and all(len(r.candidates) + r.meta["empty_samples_dropped"] == 4 for r in rated)
    if loss != "sppo":
        assert all(r.scores[k]["reward"] == count_x(None, c) for r in rated for k, c in enumerate(r.candidates))
    else:  # win rates of the K samples of a prompt average to 1/2
        full = [r for r in rated if len(r.candidates) == 4]
        assert full and all(np.mean([s["reward"] for s in r.scores]) == pytest.approx(0.5) for r in full)
    rows = [json.loads(x) for x in (tmp_path / loss / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 4 and all(np.isfinite(r["loss"]) for r in rows)


def test_group_rewards_and_refusals(tmp_path):
    oracle = J.OracleJudge(lambda c, y: len(y), expected=True)
    np.testing.assert_allclose(G.group_rewards(oracle, "x", ["a", "aaa", "aa"], "score"), [1, 3, 2])
    # win rates vs the other two: "a" loses both, "aaa" wins both, "aa" one of two
    np.testing.assert_allclose(G.group_rewards(oracle, "x", ["a", "aaa", "aa"], "win_rate"), [0, 1, 0.5])
    pm = J.PreferenceModelJudge(lambda c, a, b: np.zeros(len(a)))
    with pytest.raises(ConfigError, match="no scores"):
        G.group_rewards(pm, "x", ["a", "b"], "score")
    kw = dict(model=tiny_llama(), tokenizer=CharTokenizer(), contexts=CONTEXTS)
    with pytest.raises(ConfigError, match="not a K-wise loss on rewards"):
        G.run_online_group(_cfg(tmp_path, "dpo"), oracle, **kw)
    with pytest.raises(ConfigError, match="needs a reference"):
        G.run_online_group(_cfg(tmp_path, "grpo", reference="none"), oracle, **kw)
    with pytest.raises(ConfigError, match="prompt pool"):
        G.run_online_group(_cfg(tmp_path, "rloo", rounds=9), oracle, **kw)


@pytest.mark.parametrize("loss,hparams,k", [("xpo", {"alpha": 0.01}, 1), ("inpo", {"eta": 4.0, "tau": 0.05}, 2)])
def test_pairwise_online_methods_raise_the_reward(tmp_path, loss, hparams, k):
    """XPO: y ~ pi_t vs y_tilde ~ pi_ref; INPO: two samples of pi_t with pi_t's log-probs; both judged."""
    judge = J.OracleJudge(count_x, expected=True)
    cfg = _cfg(tmp_path, loss, hparams=hparams, sampling=SamplingConfig(num_samples=k, max_new_tokens=8))
    out = G.run_online_group(cfg, judge, model=tiny_llama(5), tokenizer=CharTokenizer(), contexts=CONTEXTS)
    assert out["mean_score_final"] > out["mean_score_initial"] + 1.0
    from preflearn.data import load

    pairs = load(tmp_path / loss / "round-1" / "pairs.jsonl")
    assert pairs and all(count_x(None, p.chosen) > count_x(None, p.rejected) for p in pairs)
    if loss == "xpo":
        assert {p.meta["reference_sample"] for p in pairs} <= {"chosen", "rejected"}
    with pytest.raises(ConfigError, match="reference=initial"):
        G.run_online_group(_cfg(tmp_path, loss, reference="previous"), judge, model=tiny_llama(),
                           tokenizer=CharTokenizer(), contexts=CONTEXTS)


@pytest.mark.parametrize("clip", ["separate", "joint"])
def test_p3o_runs_as_a_two_sample_group_loss_and_raises_the_reward(tmp_path, clip):
    """P3O (arXiv:2310.00212) through run_online_group: K = 2 samples per prompt, pi_old ratios, KL-shaped reward."""
    judge = J.OracleJudge(count_x, expected=True)
    cfg = _cfg(tmp_path, "p3o", hparams={"clip": clip}, sampling=SamplingConfig(num_samples=2, max_new_tokens=8))
    out = G.run_online_group(cfg, judge, model=tiny_llama(5), tokenizer=CharTokenizer(), contexts=CONTEXTS)
    assert out["mean_score_final"] > out["mean_score_initial"] + 1.0
    rows = [json.loads(x) for x in (tmp_path / "p3o" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["clip_fraction"] > 0 for r in rows)  # the second epoch's ratios differ from 1 and some clip
    with pytest.raises(ConfigError, match="num_samples=2"):
        G.run_online_group(_cfg(tmp_path, "p3o"), judge, model=tiny_llama(), tokenizer=CharTokenizer(),
                           contexts=CONTEXTS)
