"""ICPL (arXiv:2410.17233, Algorithm 1): the safe reward-code executor, the prompt, the preferences, the loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from preflearn.errors import ConfigError
from preflearn.pbrl.cem import CEMConfig
from preflearn.pbrl.icpl import (
    BAD_HEADER,
    CARTPOLE,
    GOOD_HEADER,
    CandidateResult,
    LLMProposer,
    MutationProposer,
    ScriptedProposer,
    SimulatedHuman,
    build_prompt,
    run_icpl,
    train_linear_policy,
)
from preflearn.pbrl.icpl_code import (
    CodeLimits,
    RewardCodeError,
    compile_reward,
    extract_code,
    numeric_constants,
    replace_constants,
)

NAMES = CARTPOLE.obs_names
GOOD = '''def compute_reward(cart_position, pole_angle, action):
    """Upright and centred."""
    upright = 1 - np.abs(pole_angle) / 0.2
    centred = -0.5 * cart_position ** 2
    total = upright + centred + 0.1 * action
    return total, {"upright": upright, "centred": centred}
'''


def test_executor_values_match_a_hand_formula_and_leave_inputs_alone():
    rc = compile_reward(GOOD, NAMES, name="c0")
    obs = np.array([[[0.5, 9.0, 0.1, 9.0], [-2.0, 9.0, -0.05, 9.0]]])  # (1, 2, 4)
    act = np.array([[1, 0]])
    before = obs.copy()
    rew, comps = rc(obs, act)
    # step 1: 1 - 0.1/0.2 = 0.5; -0.5*0.25 = -0.125; +0.1 -> 0.475
    # step 2: 1 - 0.05/0.2 = 0.75; -0.5*4 = -2; +0 -> -1.25
    np.testing.assert_allclose(rew, [[0.475, -1.25]])
    np.testing.assert_allclose(comps["upright"], [[0.5, 0.75]])
    np.testing.assert_allclose(comps["centred"], [[-0.125, -2.0]])
    np.testing.assert_array_equal(obs, before)
    # math.<f> is mapped onto numpy (works on arrays); a scalar reward is broadcast to every step
    rc2 = compile_reward("def compute_reward(obs):\n    return math.exp(obs[..., 2]) + max(obs[..., 0], 0) + 2\n",
                         NAMES, name="c1")
    r2, c2 = rc2(obs, act)
    np.testing.assert_allclose(r2, np.exp(obs[..., 2]) + np.maximum(obs[..., 0], 0) + 2)
    assert c2 == {}
    r3, _ = compile_reward("def compute_reward(obs):\n    return 3\n", NAMES)(obs, act)
    assert r3.shape == (1, 2) and (r3 == 3).all()


@pytest.mark.parametrize("code, line, fragment", [
    ("import os\ndef compute_reward(obs):\n    return 1\n", 1, "only one function"),
    ("def compute_reward(obs):\n    return obs.__class__\n", 2, "attribute access"),
    ("def compute_reward(obs):\n    x = 1\n    return open('f')\n", 3, "call to 'open'"),
    ("def compute_reward(obs):\n    return sum([o for o in obs])\n", 2, "not allowed"),
    ("def compute_reward(obs):\n    for i in obs:\n        pass\n    return 1\n", 2, "For is not allowed"),
    ("def compute_reward(obs):\n    f = lambda x: x\n    return 1\n", 2, "Lambda"),
    ("def compute_reward(obs):\n    y = 2\n    return obs[..., 0] + z\n", 3, "unknown name 'z'"),
    ("def compute_reward(obs):\n    return np.load('x')\n", 2, "np.load is not in the allow-list"),
    ("def compute_reward(obs):\n    return np.clip(obs, 0, 1, out=obs)\n", 2, "keyword 'out'"),
    ("def compute_reward(obs):\n    s = 'hi'\n    return 1\n", 2, "string constants"),
    ("def compute_reward(velocity):\n    return 1\n", 1, "not an observation name"),
    ("def compute_reward(obs):\n    x = obs[..., 0]\n", 1, "never returns"),
    ("def reward(obs):\n    return 1\n", 1, "compute_reward"),
    ("def compute_reward(obs):\n    return __import__('os')\n", 2, "call to '__import__'"),
    ("def compute_reward(obs):\n    _x = 1\n    return 1\n", 2, "start with '_'"),
    ("def compute_reward(obs)\n    return 1\n", 1, "syntax error"),
])
def test_refused_before_running_with_candidate_and_line(code, line, fragment):
    with pytest.raises(RewardCodeError) as info:
        compile_reward(code, NAMES, name="iter2-3")
    err = info.value
    assert err.file == "iter2-3" and err.line == line, str(err)
    assert fragment in str(err) and str(err).startswith(f"iter2-3:{line}: ")


def test_runtime_failures_and_limits_are_named():
    obs = np.zeros((2, 3, 4))
    obs[..., 2] = 0.1
    act = np.zeros((2, 3))
    bad_if = "def compute_reward(pole_angle):\n    y = pole_angle * 2\n    if y > 0:\n        return 1\n    return 0\n"
    with pytest.raises(RewardCodeError, match=r"^c7:3: ValueError"):
        compile_reward(bad_if, NAMES, name="c7")(obs, act)
    with pytest.raises(RewardCodeError, match="not finite"):
        compile_reward("def compute_reward(obs):\n    return np.log(obs[..., 0])\n", NAMES, name="c8")(obs, act)
    with pytest.raises(RewardCodeError, match="expected"):
        compile_reward("def compute_reward(obs):\n    return obs\n", NAMES, name="c9")(obs, act)
    with pytest.raises(RewardCodeError, match=r"^c10: reward is NoneType"):
        compile_reward("def compute_reward(obs):\n    x = 1\n    return\n", NAMES, name="c10")(obs, act)
    with pytest.raises(RewardCodeError, match="OverflowError"):  # integers became floats: no huge-int hang
        compile_reward("def compute_reward(obs):\n    return 9 ** 9 ** 9\n", NAMES)(obs, act)
    with pytest.raises(RewardCodeError, match="limit is 50"):
        compile_reward(GOOD, NAMES, limits=CodeLimits(max_chars=50))
    with pytest.raises(RewardCodeError, match="syntax nodes"):
        compile_reward(GOOD, NAMES, limits=CodeLimits(max_nodes=10))


def test_extract_and_mutate_code():
    text = "Sure! Here it is:\n```python\nimport numpy as np\n\ndef compute_reward(obs):\n    return 1.0\n```\nEnjoy."
    assert extract_code(text) == "def compute_reward(obs):\n    return 1.0\n"
    assert extract_code("def compute_reward(obs):\n    return 2\n").startswith("def compute_reward")
    code = "def compute_reward(obs):\n    return -0.5 * obs[..., 2] + 3 - 2 * np.abs(obs[..., 0])\n"
    assert numeric_constants(code) == [-0.5, 3.0, 2.0]  # signed, subscript indices skipped
    new = replace_constants(code, [1.0, -2.0, 0.25])
    assert numeric_constants(new) == [1.0, -2.0, 0.25]
    obs = np.arange(8.0).reshape(2, 4)
    r, _ = compile_reward(new, NAMES)(obs, np.zeros(2))
    np.testing.assert_allclose(r, 1.0 * obs[:, 2] - 2.0 - 0.25 * np.abs(obs[:, 0]))


def _cand(name: str, code: str, ret: float) -> CandidateResult:
    return CandidateResult(name, code, np.zeros(10), np.array([ret]), np.zeros((1, 2, 4)), np.zeros((1, 1)),
                           np.array([1]), f"total: mean {ret}")


def test_prompt_holds_task_history_good_bad_and_errors():
    from preflearn.pbrl.icpl import RoundRecord

    p0 = build_prompt(CARTPOLE)
    assert CARTPOLE.task in p0 and "cart_position" in p0 and "def compute_reward(" in p0
    assert GOOD_HEADER not in p0
    code_a = "def compute_reward(obs):\n    return 1.0\n"
    code_b = "def compute_reward(obs):\n    return 2.0\n"
    code_c = "def compute_reward(obs):\n    return -1.0\n"
    h = [RoundRecord(0, p0, [_cand("a", code_a, 50), _cand("c", code_c, 9)], 0, 1, [], 2),
         RoundRecord(1, "", [_cand("b", code_b, 90), _cand("c", code_c, 9)], 0, 1, ["iter2-5:2: call to 'open'"], 3)]
    p = build_prompt(CARTPOLE, h)
    assert "iterated 2 round(s)" in p
    assert "-    return 1.0" in p and "+    return 2.0" in p  # diff iter1-good -> iter2-good
    good_at, bad_at = p.index(GOOD_HEADER + " (iter2-good)"), p.index(BAD_HEADER + " (iter2-bad)")
    assert good_at < bad_at
    assert "return 2.0" in p[good_at:bad_at] and "return -1.0" in p[bad_at:]
    assert "total: mean 90" in p and "iter2-5:2: call to 'open'" in p
    assert p.rstrip().endswith("code block.")


def test_simulated_human_choices():
    cands = [_cand(str(i), "", r) for i, r in enumerate([10.0, 50.0, 30.0])]
    assert SimulatedHuman().choose(cands) == (1, 0)
    # proxy score of the rollouts (here: prefers short episodes) instead of the true return
    proxy = SimulatedHuman(score_fn=lambda obs, act, length: -length.astype(float))
    short = [_cand(str(i), "", 0.0) for i in range(3)]
    for c, n in zip(short, [5, 2, 9]):
        c.eval_length = np.array([n])
    assert proxy.choose(short) == (1, 2)
    # Plackett-Luce with rationality beta: P(best = i) = softmax(beta * s)_i (independent formula)
    s = np.array([1.0, 2.0, 0.0])
    cands = [_cand(str(i), "", v) for i, v in enumerate(s)]
    human = SimulatedHuman(beta=1.0, seed=0)
    picks = np.array([human.choose(cands) for _ in range(6000)])
    p_best = np.exp(s) / np.exp(s).sum()
    np.testing.assert_allclose(np.bincount(picks[:, 0], minlength=3) / len(picks), p_best, atol=0.02)
    assert (picks[:, 0] != picks[:, 1]).all()
    # worst among the others: P(worst = 2 | best = 1) = e^0 / (e^0 + e^-1)
    sel = picks[picks[:, 0] == 1]
    assert abs((sel[:, 1] == 2).mean() - 1 / (1 + math.exp(-1))) < 0.03
    with pytest.raises(ConfigError):
        SimulatedHuman(beta=0.0)


def test_training_accumulates_only_running_steps():
    cfg = CEMConfig(iterations=5, population=20, episodes=1, horizon=150)
    from preflearn.pbrl.cem import true_return

    live = compile_reward("def compute_reward(obs):\n    return 1\n", NAMES)
    die = compile_reward("def compute_reward(obs):\n    return -1\n", NAMES)
    r_live = true_return(train_linear_policy(live, 4, cfg, seed=0), episodes=5, horizon=150)
    r_die = true_return(train_linear_policy(die, 4, cfg, seed=0), episodes=5, horizon=150)
    # +1 per running step pays for staying alive, -1 for dying early (with absorbing steps counted, both
    # rewards would be constant over the horizon and give no signal at all)
    assert r_live > 100 and r_die < 20, (r_live, r_die)


SEED_CODE = '''def compute_reward(cart_position, pole_angle, pole_angular_velocity, action):
    alive = -0.5
    upright = 0.3 * np.abs(pole_angle)
    spin = 0.1 * np.abs(pole_angular_velocity)
    return alive + upright + spin, {"upright": upright, "spin": spin}
'''


def test_rounds_improve_the_true_return_with_preferences():
    res = run_icpl(CARTPOLE, MutationProposer([SEED_CODE], seed=1), SimulatedHuman(), rounds=4, k=4, seed=1)
    curve = res.chosen_returns
    # the seed code pays -0.5 per step: round 1's preferred policy falls early; the preferred mutations flip
    # the sign and survive to the 200-step limit
    assert curve[0] < 50 and curve[-1] > curve[0] + 100, curve  # [41.8, 200, 200, 200] when written
    assert res.best.true_return == curve[-1]
    assert all(len(r.candidates) == 4 for r in res.rounds)
    # the good example fed back is the preferred candidate's code
    assert res.rounds[1].prompt.count(res.rounds[0].candidates[res.rounds[0].best].code.strip()) == 1
    # control: the same search fed the *reversed* preference (the person prefers short episodes) never improves,
    # so the gain comes from the preferences, not from mutation alone
    rev = run_icpl(CARTPOLE, MutationProposer([SEED_CODE], seed=1),
                   SimulatedHuman(score_fn=lambda obs, act, length: -length.astype(float)), rounds=4, k=4, seed=1)
    assert max(rev.chosen_returns) < 20, rev.chosen_returns  # [9.1, 9.1, 9.1, 9.1]


def test_refused_answers_are_resampled_and_reported():
    bad = "```python\ndef compute_reward(obs):\n    return open('x')\n```"
    ok = "```python\ndef compute_reward(obs):\n    return 1\n```"
    prop = ScriptedProposer([[bad, ok], [ok]])
    res = run_icpl(CARTPOLE, prop, SimulatedHuman(), rounds=2, k=2,
                   cem_cfg=CEMConfig(iterations=1, population=4, episodes=1, horizon=20), eval_episodes=2)
    r0 = res.rounds[0]
    assert len(r0.candidates) == 2 and r0.answers == 3 and len(r0.errors) == 1
    assert r0.errors[0].startswith("iter1-0:2: ")
    assert "iter1-0:2: call to 'open'" in prop.prompts[-1]  # the error goes into the next prompt
    nothing = run_icpl(CARTPOLE, ScriptedProposer([[bad]]), SimulatedHuman(), rounds=1, k=2, max_attempts=2,
                       cem_cfg=CEMConfig(iterations=1, population=4, episodes=1, horizon=20))
    assert nothing.rounds[0].best is None and nothing.rounds[0].answers == 4
    with pytest.raises(ConfigError, match="no round"):
        _ = nothing.best


class _CharTokenizer:
    """A byte-level stand-in tokenizer (no chat template) so the LLM proposer runs on a tiny random model."""

    chat_template = None
    pad_token_id = 0

    def __call__(self, text, return_tensors="pt"):
        import torch

        ids = [min(b, 127) for b in text.encode()[-64:]]
        return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(i)) for i in ids)


def test_llm_proposer_runs_mechanically_on_a_tiny_random_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    prop = LLMProposer(LlamaForCausalLM(cfg).eval(), _CharTokenizer(), max_new_tokens=12)
    answers = prop.propose(build_prompt(CARTPOLE), 3)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    # its random text is refused by the checker, never executed
    res = run_icpl(CARTPOLE, prop, SimulatedHuman(), rounds=1, k=2, max_attempts=1)
    assert res.rounds[0].best is None and len(res.rounds[0].errors) == 2


def test_time_limit_gives_an_enclosing_timer_back():
    import signal

    rc = compile_reward(GOOD, NAMES, name="c0")
    saved_handler = signal.signal(signal.SIGALRM, lambda *a: None)
    saved_timer = signal.setitimer(signal.ITIMER_REAL, 100.0)  # stands in for e.g. pytest-timeout's alarm
    try:
        rc(np.zeros((2, 4)), np.zeros(2))
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 99.0 < remaining <= 100.0, remaining
    finally:
        signal.setitimer(signal.ITIMER_REAL, *saved_timer)
        signal.signal(signal.SIGALRM, saved_handler)
