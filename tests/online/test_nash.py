"""Nash-MD-PG, online IPO / IPO-MD and EGPO at language-model level (preflearn.online.nash)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import preflearn.losses as L
from preflearn.errors import ConfigError
from preflearn.losses import Scores
from preflearn.online import game as G
from preflearn.online import judges as J
from preflearn.online import nash as N
from preflearn.online.sampling import SamplingConfig

from .test_loop import count_x
from .test_sampling import CharTokenizer, tiny_llama


# ----------------------------------------------------------------------------- losses by hand
def test_nash_md_pg_by_hand():
    logps = torch.tensor([[-2.0], [-3.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-2.5], [-1.0]], dtype=torch.float64)
    p = torch.tensor([[1.0], [0.2]], dtype=torch.float64)
    out = L.compute("nash_md_pg", Scores(logps=logps, ref_logps=ref, rewards=p), tau=0.1)
    # row 1: h = 0.5:  -(1 - 0.5)(-2) + 0.05 * 0.25 = 1.0125
    # row 2: h = -2:   -(0.2 - 0.5)(-3) + 0.05 * 4  = -0.9 + 0.2 = -0.7
    assert float(out.loss) == pytest.approx((1.0125 - 0.7) / 2)
    out.loss.backward()
    # d/dlogp = (-(p - 1/2) + tau h) / B
    np.testing.assert_allclose(logps.grad[:, 0].numpy(), [(-0.5 + 0.05) / 2, (0.3 - 0.2) / 2])
    np.testing.assert_allclose(out.rewards[:, 0].numpy(), [0.5 - 0.05, -0.3 + 0.2])
    assert float(out.metrics["kl"]) == pytest.approx(-0.75)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        L.compute("nash_md_pg", Scores(logps=logps, ref_logps=ref, rewards=p + 1))


def test_online_ipo_by_hand_and_equal_to_ipo_with_a_hard_label():
    logps = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    rewards = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    out = L.compute("online_ipo", Scores(logps=logps, ref_logps=ref, rewards=rewards), tau=0.25)
    # h = 0.5 - (-1.0) = 1.5; target = (0.9 - 0.5) / 0.25 = 1.6; loss = 0.01, dL/dh = 2 (h - target) = -0.2
    assert float(out.loss) == pytest.approx(0.01)
    out.loss.backward()
    np.testing.assert_allclose(logps.grad.numpy(), [[-0.2, 0.2]])
    # symmetric in the pair's order
    swapped = Scores(logps=logps.detach().flip(1), ref_logps=ref.flip(1), rewards=rewards.flip(1))
    assert float(L.compute("online_ipo", swapped, tau=0.25).loss) == pytest.approx(0.01)
    # P = 1: IPO's (h_w - h_l - 1/(2 tau))^2 as printed (sequence sums)
    hard = Scores(logps=logps.detach(), ref_logps=ref, rewards=torch.tensor([[1.0, 0.0]], dtype=torch.float64),
                  lengths=torch.tensor([[3.0, 5.0]], dtype=torch.float64))
    ipo = L.compute("ipo", hard, tau=0.25, length_normalize=False)
    assert float(L.compute("online_ipo", hard, tau=0.25).loss) == pytest.approx(float(ipo.loss))


def test_registered_with_the_library_whatever_the_import_order():
    """preflearn.losses imports preflearn.online.nash, so tests/losses/test_common.py runs its
    registry-wide checks (contract, extremes, gradcheck, batch invariance, gradient sign) on both."""
    import subprocess
    import sys

    code = "import preflearn.losses as L; print(sorted(n for n in L.names() if n in ('nash_md_pg', 'online_ipo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['nash_md_pg', 'online_ipo']"
    assert L.spec("nash_md_pg").k == 1 and L.spec("online_ipo").k == 2


# ----------------------------------------------------------------------------- consistency with the tabular game
def _game(n=5, seed=0, tau=0.2):
    rng = np.random.default_rng(seed)
    return G.PreferenceGame(G.random_preference_matrix(n, seed), rng.dirichlet(2 * np.ones(n)), tau)


def _all_pairs(logits, pi_a, pi_b, game):
    """Every (y, y') with weight pi_a(y) pi_b(y') as one batch of pairs for online_ipo (y first)."""
    n = game.n
    ys, yps = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ys, yps = torch.tensor(ys.ravel()), torch.tensor(yps.ravel())
    logp = torch.log_softmax(logits, 0)
    logmu = torch.tensor(np.log(game.ref))
    P = torch.tensor(game.P)[ys, yps]
    w = (torch.tensor(pi_a)[ys] * torch.tensor(pi_b)[yps])
    return Scores(logps=torch.stack([logp[ys], logp[yps]], 1), ref_logps=torch.stack([logmu[ys], logmu[yps]], 1),
                  rewards=torch.stack([P, 1 - P], 1), weights=w), ys, yps


def test_online_ipo_expected_update_equals_the_tabular_step():
    """A one-token "LM" (vocabulary = the game's n responses): one SGD step on the exact expectation
    of the online IPO loss over y, y' ~ sg(pi) is game.online_ipo_step (to 1e-10); a sampled batch
    with judge-ordered pairs and hard labels moves the logits in the same direction."""
    game, eta = _game(), 0.05
    theta0 = np.random.default_rng(1).normal(size=game.n)
    pi = G._normalise_log(theta0)
    theta = torch.tensor(theta0, requires_grad=True)
    s, _, _ = _all_pairs(theta, pi, pi, game)
    L.compute("online_ipo", s, tau=game.tau).loss.backward()
    state = {"logits": theta0.copy()}
    expected = G.online_ipo_step(pi, game, eta, 0, state)
    got = G._normalise_log((theta - eta * theta.grad).detach().numpy())
    np.testing.assert_allclose(got, expected, atol=1e-10)
    # sampled: y, y' ~ pi, a Bernoulli(P) label orders them, loss with hard P = 1
    exact = theta.grad.numpy().copy()
    g = torch.Generator().manual_seed(0)
    ys = torch.multinomial(torch.tensor(pi), 40000, replacement=True, generator=g)
    yps = torch.multinomial(torch.tensor(pi), 40000, replacement=True, generator=g)
    win = torch.rand(40000, generator=g, dtype=torch.float64) < torch.tensor(game.P)[ys, yps]
    w_, l_ = torch.where(win, ys, yps), torch.where(win, yps, ys)
    theta2 = torch.tensor(theta0, requires_grad=True)
    logp, logmu = torch.log_softmax(theta2, 0), torch.tensor(np.log(game.ref))
    hard = Scores(logps=torch.stack([logp[w_], logp[l_]], 1), ref_logps=torch.stack([logmu[w_], logmu[l_]], 1),
                  rewards=torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(40000, 2))
    L.compute("online_ipo", hard, tau=game.tau).loss.backward()
    sampled = theta2.grad.numpy()
    cos = exact @ sampled / np.linalg.norm(exact) / np.linalg.norm(sampled)
    assert cos > 0.98, cos


def test_nash_md_pg_expected_gradient_is_the_regularised_game_gradient():
    """E_{y~pi, y'~pi_mix} of nash_md_pg's gradient = -grad_theta [pi^T P sg(pi_mix) - tau KL(pi || mu)]."""
    game, beta = _game(seed=3), 0.3
    theta0 = np.random.default_rng(2).normal(size=game.n)
    pi = G._normalise_log(theta0)
    mix = G._geometric_mixture(pi, game.ref, beta)
    theta = torch.tensor(theta0, requires_grad=True)
    pairs, ys, yps = _all_pairs(theta, pi, mix, game)
    s = Scores(logps=pairs.logps[:, :1], ref_logps=pairs.ref_logps[:, :1], rewards=pairs.rewards[:, :1],
               weights=pairs.weights)
    L.compute("nash_md_pg", s, tau=game.tau).loss.backward()
    t2 = torch.tensor(theta0, requires_grad=True)
    p2 = torch.softmax(t2, 0)
    mu = torch.tensor(game.ref)
    objective = p2 @ torch.tensor(game.P) @ torch.tensor(mix) - game.tau * (p2 * (p2.log() - mu.log())).sum()
    (-objective).backward()
    np.testing.assert_allclose(theta.grad.numpy(), t2.grad.numpy(), atol=1e-12)


def test_egpo_step_is_extragradient_and_restores_the_optimizer_state():
    """On f(theta) = 1/2 theta^T A theta with SGD: theta' = theta - lr A (theta - lr A theta)."""
    A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]], dtype=torch.float64)
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    seen = []

    def loss():
        seen.append(theta.detach().clone())
        v = 0.5 * theta @ A @ theta
        return type("Out", (), {"loss": v})()

    lr = 0.1
    opt = torch.optim.SGD([theta], lr=lr)
    t0 = theta.detach().clone()
    N.egpo_step([theta], opt, loss, loss)
    sym = (A + A.T) / 2
    half = t0 - lr * sym @ t0
    torch.testing.assert_close(seen[1], half)  # the second gradient is taken at theta_{t+1/2}
    torch.testing.assert_close(theta.detach(), t0 - lr * sym @ half)
    # AdamW: its state after the extragradient step has seen exactly one step
    adam = torch.optim.AdamW([theta], lr=lr)
    N.egpo_step([theta], adam, loss, loss)
    assert int(adam.state[theta]["step"]) == 1


def _egpo_last_iterate_gap(game, lr, iterations):
    """EGPO through the registered loss and nash.egpo_step (SGD) on a one-token "LM" whose logits are
    the parameters; each gradient is the exact expectation over y, y' ~ sg(pi). Returns the gap."""
    n = game.n
    theta = torch.nn.Parameter(torch.tensor(np.log(game.ref)))
    opt = torch.optim.SGD([theta], lr=lr)
    ys, yps = (t.ravel() for t in torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))
    P, logmu = torch.tensor(game.P)[ys, yps], torch.tensor(np.log(game.ref))

    def loss():
        logp = torch.log_softmax(theta, 0)
        pi = logp.detach().exp()
        s = Scores(logps=torch.stack([logp[ys], logp[yps]], 1), ref_logps=torch.stack([logmu[ys], logmu[yps]], 1),
                   rewards=torch.stack([P, 1 - P], 1), weights=pi[ys] * pi[yps])
        return L.compute("online_ipo", s, tau=game.tau)

    for _ in range(iterations):
        N.egpo_step([theta], opt, loss, loss)
    return G.exploitability(game, torch.softmax(theta.detach(), 0).numpy())


def test_egpo_at_lm_level_reaches_the_regularised_nash_equilibrium():
    """Last iterate, exploitability < 1e-3 (measured: RPS 2e-4 after 50 steps, 10x10 1e-3 after 250)."""
    rps = G.PreferenceGame(G.rock_paper_scissors((0.9, 0.6, 0.3)), np.array([0.5, 0.3, 0.2]), 0.1)
    assert _egpo_last_iterate_gap(rps, 0.05, 100) < 1e-3
    rng = np.random.default_rng(0)
    ten = G.PreferenceGame(G.random_preference_matrix(10, 0), rng.dirichlet(2 * np.ones(10)), 0.1)
    assert _egpo_last_iterate_gap(ten, 0.05, 300) < 1e-3
    assert _egpo_last_iterate_gap(ten, 0.05, 20) > 1e-2  # not there at the start: the check can fail


# ----------------------------------------------------------------------------- the loop on a tiny model
CONTEXTS = [f"prompt number {i}" for i in range(96)]


def _cfg(tmp_path, method, seed, **over):
    base = dict(name=f"{method}-{seed}", output_dir=str(tmp_path), seed=seed, method=method, rounds=2,
                prompts_per_round=32, eval_prompts=32, lr=3e-3, batch_size=8,
                sampling=SamplingConfig(num_samples=2, max_new_tokens=8, seed=seed),
                # 8 samples per held-out prompt, the same seed before and after: a low-variance score
                eval_sampling=SamplingConfig(num_samples=8, max_new_tokens=8, temperature=1.0, seed=123))
    base.update(over)
    return N.NashConfig(**base)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("method", ["nash_md", "ipo_md", "egpo"])
def test_two_rounds_raise_the_oracle_score(tmp_path, method, seed):
    torch.set_num_threads(1)
    judge = J.OracleJudge(count_x, expected=True)
    cfg = _cfg(tmp_path, method, seed)
    out = N.run_online_nash(cfg, judge, model=tiny_llama(5), tokenizer=CharTokenizer(), contexts=CONTEXTS)
    # 256 held-out samples (32 prompts x 8): the oracle's mean score rises (before: 0.03)
    assert out["mean_score_final"] > out["mean_score_initial"] + 0.25, out
    assert out["win_rate_vs_initial"]["win_rate"] > 0.5 and out["win_rate_vs_initial"]["n"] == 256
    run = tmp_path / cfg.name
    assert json.loads((run / "summary.json").read_text())["method"] == method
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4 and all(np.isfinite(r["loss"]) for r in rows)
    samples = [json.loads(x) for x in (run / "round-1" / "samples.jsonl").read_text().splitlines()]
    want = {"nash_md": ["policy", "mixture"], "ipo_md": ["mixture", "mixture"], "egpo": ["policy", "policy"]}[method]
    assert all(s["sources"] == want for s in samples)
    assert len(samples) == 32 * (2 if method == "egpo" else 1)  # EGPO samples again at theta_{t+1/2}
    if method == "egpo":
        assert {s["phase"] for s in samples} == {"half", "full"} and all("half_loss" in r for r in rows)
    from preflearn.data import load

    pairs = load(run / "round-1" / "pairs.jsonl")
    assert pairs and all(count_x(None, p.chosen) > count_x(None, p.rejected) for p in pairs)


def test_pair_examples_order_and_refusals(tmp_path):
    from preflearn.online.sampling import Sample

    def s(ids):
        return Sample(0, "x" * len(ids), ids, -1.0, True)

    pairs = [N.Pair("c", [1], s([3, 4]), s([5]), ("policy", "policy"), p=0.2),
             N.Pair("c", [1], s([3]), s([3]), ("policy", "policy"), p=0.5),
             N.Pair("c", [1], s([]), s([6]), ("policy", "policy"), p=1.0)]
    ex, rw, kept = N.pair_examples(pairs, "online_ipo", pad_id=0)
    assert kept == [0, 2]  # identical responses dropped
    assert ex[0].completion_ids == [[5], [3, 4]] and rw[0] == pytest.approx([0.8, 0.2])  # preferred first
    assert ex[1].completion_ids == [[0], [6]]  # an empty response is one pad token
    ex, rw, kept = N.pair_examples(pairs, "nash_md", pad_id=0)
    assert kept == [0, 1, 2] and [e.completion_ids for e in ex] == [[[3, 4]], [[3]], [[0]]]
    assert rw[:, 0].tolist() == [0.2, 0.5, 1.0]
    judge = J.OracleJudge(count_x, expected=True)
    kw = dict(model=tiny_llama(), tokenizer=CharTokenizer(), contexts=CONTEXTS[:10])
    with pytest.raises(ConfigError, match="prompt pool"):
        N.run_online_nash(_cfg(tmp_path, "nash_md", 0), judge, **kw)
    with pytest.raises(ConfigError, match="nash_md"):
        N.run_online_nash(_cfg(tmp_path, "nash_mdd", 0), judge, **kw)


def test_cli_command_registers_and_validates_the_config():
    import typer
    from typer.testing import CliRunner

    from preflearn.online import nash_cli

    app = typer.Typer()
    nash_cli.register(app)
    app.command("other")(lambda: None)  # two commands: typer keeps "nash" as a sub-command name
    runner = CliRunner()
    res = runner.invoke(app, ["nash", "--help"])
    assert res.exit_code == 0 and "nash_md" in res.output and "--judge" in res.output
    res = runner.invoke(app, ["nash", "--judge", "rm:nowhere", "method=nashmd"])
    assert isinstance(res.exception, ConfigError) and "method" in str(res.exception)
    res = runner.invoke(app, ["nash", "--judge", "rm:nowhere", "mixtur=0.2"])
    assert isinstance(res.exception, ConfigError) and "mixture" in str(res.exception)  # nearest valid key
