"""The online loop end to end on a tiny random model with a simulated oracle judge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preflearn.errors import ConfigError
from preflearn.online import judges as J
from preflearn.online import loop as O
from preflearn.online.sampling import SamplingConfig

from .test_sampling import CharTokenizer, tiny_llama

pytest.importorskip("peft")


def test_pair_builders_by_hand():
    P = np.array([[0.5, 0.9, 0.2], [0.1, 0.5, 0.6], [0.8, 0.4, 0.5]])
    rng = np.random.default_rng(0)
    # win rates: (0.9+0.2)/2=0.55, (0.1+0.6)/2=0.35, (0.8+0.4)/2=0.6 -> best 2, worst 1
    assert O.best_vs_worst(P, rng) == [(2, 1, pytest.approx(0.4))]
    assert sorted(O.all_pairs(P, rng)) == [(0, 1, 0.9), (1, 2, 0.6), (2, 0, 0.8)]
    i, j, p = O.random_pair(P, rng)[0]
    assert P[i, j] == p and p > 0.5
    # RSO with a huge beta accepts everything it draws: the first two draws, ordered by P
    picked = O.rso_pairs(P, np.random.default_rng(1), scores=np.array([1.0, 0.0, 0.5]), beta=1e9)
    assert len(picked) == 1 and picked[0][2] > 0.5


def test_rso_acceptance_follows_the_tilted_distribution():
    """RSO's first accepted candidate is distributed as uniform(y) * exp(r/beta) / Z."""
    r, beta = np.array([0.0, 0.5, 1.0]), 0.5
    rng = np.random.default_rng(0)
    counts = np.bincount([O.rso_accept(r, beta, 1, rng)[0] for _ in range(4000)], minlength=3)
    target = np.exp(r / beta) / np.exp(r / beta).sum()
    np.testing.assert_allclose(counts / counts.sum(), target, atol=0.03)
    assert len(O.rso_pairs(J.bt_matrix(r), rng, r, beta=beta)) == 1


def test_oracle_judge_noise_and_expected_probabilities():
    judge = J.OracleJudge(lambda c, y: len(y), beta=float("inf"), flip=0.2, expected=True)
    P = judge.compare("x", ["aa", "a", "aaa"])
    assert P[0, 1] == pytest.approx(0.8) and P[2, 0] == pytest.approx(0.8) and P[1, 1] == 0.5
    noisy = J.OracleJudge(lambda c, y: len(y), flip=0.2, seed=0)
    wins = np.mean([noisy.compare("x", ["aa", "a"])[0, 1] for _ in range(2000)])
    assert wins == pytest.approx(0.8, abs=0.03)


def test_preference_model_judge_is_antisymmetric():
    judge = J.PreferenceModelJudge(lambda c, a, b: np.array([len(x) - 2 * len(y) for x, y in zip(a, b)], float))
    P = judge.compare("x", ["a", "bbb", "cc"])
    np.testing.assert_allclose(P + P.T, 1.0)
    # f(a,b) - f(b,a) = 3 (len a - len b); P = sigmoid(1.5 (len a - len b))
    assert P[1, 0] == pytest.approx(1 / (1 + np.exp(-3.0)))


def count_x(context, completion):
    """The oracle's reward: letters from the first half of the alphabet minus the others."""
    return sum(1 if "a" <= ch <= "m" else -1 for ch in completion.lower() if ch.isalpha())


def test_two_rounds_of_online_dpo_raise_the_oracle_reward(tmp_path):
    model, tok = tiny_llama(5), CharTokenizer()
    contexts = [f"prompt number {i}" for i in range(40)]
    cfg = O.OnlineConfig(
        name="t", output_dir=str(tmp_path), seed=0, prompts_per_round=16, eval_prompts=8, rounds=2,
        pairs="best_vs_worst", reference="previous",
        sampling=SamplingConfig(num_samples=4, max_new_tokens=8, temperature=1.0),
        eval_sampling=SamplingConfig(num_samples=1, max_new_tokens=8, temperature=0.0),
        train={"loss": {"name": "dpo", "beta": 0.1}, "optim": {"lr": 3e-3, "schedule": "constant"},
               "batch_size": 4, "max_steps": 8, "progress": False, "tensorboard": False, "report": False,
               "save_model": False, "data": {"max_prompt_length": 32, "max_completion_length": 16}},
    )
    judge = J.OracleJudge(count_x, expected=True)
    out = O.run_online(cfg, judge, model=model, tokenizer=tok, contexts=contexts, progress=False)
    assert [r["round"] for r in out["rounds"]] == [0, 1]
    assert all(r["pairs"] > 0 for r in out["rounds"])
    # the round's data were saved as records the data layer reads back
    from preflearn.data import load

    pairs = load(tmp_path / "t" / "round-1" / "pairs.jsonl")
    assert len(pairs) == out["rounds"][1]["pairs"]
    assert all(count_x(None, p.chosen) > count_x(None, p.rejected) for p in pairs)
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["mean_score_final"] > summary["mean_score_initial"]
    assert summary["win_rate_vs_initial"]["win_rate"] > 0.5


def test_initial_reference_over_rounds_without_lora_is_refused(tmp_path):
    """Each round's Trainer copies the current policy as its reference, so a fixed initial
    reference across rounds is only possible with LoRA (the adapter-disabled base)."""
    from preflearn.errors import ConfigError

    cfg = O.OnlineConfig(name="t", output_dir=str(tmp_path), rounds=2, reference="initial",
                         train={"loss": {"name": "dpo"}, "progress": False})
    with pytest.raises(ConfigError, match="needs LoRA"):
        O.run_online(cfg, J.OracleJudge(count_x), model=tiny_llama(), tokenizer=CharTokenizer(),
                     contexts=["a"] * 100, progress=False)


def test_apo_extrapolated_reference_equals_a_hand_computation():
    """(1 + a) log pi_t - a log pi_{t-1} per token, renormalised over the vocabulary, summed over the
    completion: computed here from each model's full logits on the plain concatenated sequence."""
    import torch

    from preflearn.data.collate import collate_shared
    from preflearn.data.tokenize import TokenizedExample
    from preflearn.models.causal_lm import score_batch

    cur, prev = tiny_llama(1).eval(), tiny_llama(2).eval()
    examples = [TokenizedExample(prompt_ids=[1, 5, 6, 7], completion_ids=[[8, 9, 2], [10, 2]], kind="pairwise"),
                TokenizedExample(prompt_ids=[1, 11], completion_ids=[[12, 13, 14, 2], [15]], kind="pairwise")]
    batch = collate_shared(examples, pad_token_id=0)
    alpha = 0.7
    out = O.extrapolated_reference_scores(cur, prev, batch, alpha, token_level=True, chunk_size=3)
    with torch.no_grad():
        for b, ex in enumerate(examples):
            for k, comp in enumerate(ex.completion_ids):
                ids = torch.tensor([ex.prompt_ids + comp])
                lc = torch.log_softmax(cur(input_ids=ids).logits[0].double(), -1)
                lp = torch.log_softmax(prev(input_ids=ids).logits[0].double(), -1)
                total, P0 = 0.0, len(ex.prompt_ids)
                for s, tok in enumerate(comp):
                    comb = (1 + alpha) * lc[P0 + s - 1] - alpha * lp[P0 + s - 1]
                    val = float(comb[tok] - torch.logsumexp(comb, -1))
                    assert float(out["token_logps"][b, k, s]) == pytest.approx(val, abs=2e-5)
                    total += val
                assert float(out["logps"][b, k]) == pytest.approx(total, abs=5e-5)
        # alpha = 0: the current policy's own log-probs
        zero = O.extrapolated_reference_scores(cur, prev, batch, 0.0)
        torch.testing.assert_close(zero["logps"], score_batch(cur, batch)["logps"], atol=1e-5, rtol=0)
    ref = O.ExtrapolatedReference(cur, prev, alpha)
    torch.testing.assert_close(ref(batch, [0, 1])["logps"], out["logps"])


def test_apo_reference_in_the_online_loop(tmp_path):
    """reference=apo: round 0 trains against pi_0 (a frozen copy), round 1 against the extrapolation."""
    cfg = O.OnlineConfig(
        name="apo", output_dir=str(tmp_path), seed=0, prompts_per_round=6, eval_prompts=0, rounds=2,
        pairs="best_vs_worst", reference="apo", apo_alpha=0.5,
        sampling=SamplingConfig(num_samples=3, max_new_tokens=6, temperature=1.0),
        train={"loss": {"name": "dpo", "beta": 0.1}, "optim": {"lr": 3e-3, "schedule": "constant"},
               "batch_size": 4, "max_steps": 2, "progress": False, "tensorboard": False, "report": False,
               "save_model": False, "data": {"max_prompt_length": 32, "max_completion_length": 16}},
    )
    out = O.run_online(cfg, J.OracleJudge(count_x, expected=True), model=tiny_llama(5), tokenizer=CharTokenizer(),
                       contexts=[f"prompt number {i}" for i in range(12)], progress=False)
    assert [r["reference"] for r in out["rounds"]] == ["model", "apo"]
    first = [r["train_losses"][0] for r in out["rounds"]]
    # round 0 starts at the policy = its reference (DPO loss log 2); round 1's reference is pi_hat != pi_1
    assert first[0] == pytest.approx(np.log(2), abs=1e-5) and abs(first[1] - np.log(2)) > 1e-4


def test_drift_pairs_a_fresh_sample_with_the_dissatisfied_response(tmp_path):
    """DRIFT (arXiv:2510.02341): rejected = the logged DSAT response, chosen = the policy's fresh sample
    (K = 1: that sample, no judgment; K = 3: the judge's best of the three)."""
    from preflearn.data import load

    assert O.drift_chosen(np.full((1, 1), 0.5)) == 0
    assert O.drift_chosen(np.array([[0.5, 0.2, 0.4], [0.8, 0.5, 0.9], [0.6, 0.1, 0.5]])) == 1
    contexts = [f"prompt number {i}" for i in range(6)]
    dsat = [f"bad answer {i}" for i in range(6)]
    for k in (1, 3):
        cfg = O.OnlineConfig(
            name=f"drift{k}", output_dir=str(tmp_path), seed=0, prompts_per_round=6, eval_prompts=0, rounds=1,
            pairs="drift", reference="previous", sampling=SamplingConfig(num_samples=k, max_new_tokens=6),
            train={"loss": {"name": "dpo"}, "batch_size": 4, "max_steps": 1, "progress": False,
                   "tensorboard": False, "report": False, "save_model": False},
        )
        judge = J.OracleJudge(count_x, expected=True)
        O.run_online(cfg, judge, model=tiny_llama(5), tokenizer=CharTokenizer(), contexts=contexts,
                     dissatisfied=dsat, progress=False)
        rows = [json.loads(x) for x in (tmp_path / f"drift{k}" / "round-0" / "samples.jsonl").read_text().splitlines()]
        pairs = load(tmp_path / f"drift{k}" / "round-0" / "pairs.jsonl")
        by_ctx = {r["context"]: r["completions"] for r in rows}
        assert pairs and all(p.rejected == dsat[contexts.index(p.context)] for p in pairs)
        for p in pairs:
            comps = by_ctx[p.context]
            best = comps[0] if k == 1 else max(comps, key=lambda t: count_x(None, t))
            assert count_x(None, p.chosen) == count_x(None, best) and p.chosen in comps
    with pytest.raises(ConfigError, match="dissatisfied"):
        O.run_online(cfg, judge, model=tiny_llama(5), tokenizer=CharTokenizer(), contexts=contexts, progress=False)


def test_drift_reads_dissatisfied_responses_from_records(tmp_path):
    from preflearn.data import PairwiseRecord, UnpairedRecord
    from preflearn.data.writers import write_records

    write_records(tmp_path / "p.jsonl", [PairwiseRecord(context="q1", chosen="good", rejected="bad one")])
    write_records(tmp_path / "u.jsonl", [UnpairedRecord(context="q2", completion="fine", label=True),
                                         UnpairedRecord(context="q3", completion="awful", label=False)])
    assert O._dissatisfied_pool(O.OnlineConfig(prompts=str(tmp_path / "p.jsonl"))) == (["q1"], ["bad one"])
    assert O._dissatisfied_pool(O.OnlineConfig(prompts=str(tmp_path / "u.jsonl"))) == (["q3"], ["awful"])
