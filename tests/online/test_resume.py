"""Checkpoints and resume of the online loops: an interrupted run, resumed, equals the uninterrupted one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from preflearn.errors import ConfigError
from preflearn.online import group as G
from preflearn.online import judges as J
from preflearn.online.sampling import SamplingConfig

from .test_loop import count_x
from .test_sampling import CharTokenizer, tiny_llama

CONTEXTS = [f"prompt number {i}" for i in range(24)]


class Interrupted(RuntimeError):
    pass


class FailingJudge:
    """The oracle, except that its ``fail_at``-th call raises (a crash in the middle of a round)."""

    name = "oracle"

    def __init__(self, fail_at: int | None = None):
        self.inner, self.calls, self.fail_at = J.OracleJudge(count_x, expected=True), 0, fail_at

    def score(self, context, texts):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise Interrupted(f"injected failure at judge call {self.calls}")
        return self.inner.score(context, texts)

    def compare(self, context, texts):
        return self.inner.compare(context, texts)


def _cfg(tmp_path, name, **over):
    base = dict(name=name, output_dir=str(tmp_path), loss="rloo", rounds=3, prompts_per_round=4, eval_prompts=4,
                lr=3e-3, batch_size=2, epochs=1, report=False,
                sampling=SamplingConfig(num_samples=2, max_new_tokens=6),
                eval_sampling=SamplingConfig(num_samples=1, max_new_tokens=6, temperature=0.0))
    base.update(over)
    return G.GroupConfig(**base)


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _run(cfg, judge, **kw):
    model = tiny_llama(5)
    out = G.run_online_group(cfg, judge, model=model, tokenizer=CharTokenizer(), contexts=CONTEXTS, **kw)
    return out, model


def test_group_loop_resumed_after_a_crash_equals_the_uninterrupted_run(tmp_path):
    full, m_full = _run(_cfg(tmp_path, "full"), FailingJudge())
    # 4 prompts per round -> judge calls 1-4 are round 0, 5-8 round 1: crash in round 1 (the second round)
    with pytest.raises(Interrupted):
        _run(_cfg(tmp_path, "cut"), FailingJudge(fail_at=6))
    ckpts = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert ckpts == ["step-1"]  # only the complete round; no temporary folder left behind
    resumed, m_res = _run(_cfg(tmp_path, "cut"), FailingJudge(), resume=True)
    for n, w in _weights(m_full).items():
        assert torch.equal(w, dict(m_res.named_parameters())[n].detach()), n
    assert resumed == full
    rows = [(tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in ("full", "cut")]
    assert rows[0] == rows[1] and len(rows[0]) == 3 * 2
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step-2", "step-3"]  # keep_last 2


def test_corrupt_checkpoint_is_refused_and_failed_saves_keep_the_previous_one(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "run", rounds=2)
    _run(cfg, FailingJudge())
    ck = tmp_path / "run" / "checkpoints"
    good = (ck / "step-1" / "state.pt").read_bytes()
    # a truncated latest checkpoint: refused with its path, nothing loaded
    data = (ck / "step-2" / "state.pt").read_bytes()
    (ck / "step-2" / "state.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(ConfigError, match=r"step-2.*cannot be read.*corrupt or partial"):
        _run(cfg, FailingJudge(), resume=True)
    # a save that dies half-way leaves the earlier checkpoint byte for byte and no partial folder
    model = tiny_llama(5)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def broken_save(obj, f, *a, **k):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        G.save_round(tmp_path / "run", 1, model=model, optimizer=optim, rng=np.random.default_rng(0), state={})
    monkeypatch.undo()
    assert (ck / "step-1" / "state.pt").read_bytes() == good
    assert sorted(p.name for p in ck.iterdir()) == ["step-1", "step-2"]
    # no checkpoint at all, or a different configuration: clear errors
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        _run(_cfg(tmp_path, "never-ran"), FailingJudge(), resume=True)
    shutil.rmtree(ck / "step-2")
    with pytest.raises(ConfigError, match="differs.*'lr'"):
        _run(_cfg(tmp_path, "run", rounds=2, lr=1e-2), FailingJudge(), resume=True)
    # a leftover temporary folder of an interrupted save is not a checkpoint: resume skips it
    (ck / ".step-2.tmp-leftover").mkdir()
    (ck / ".step-2.tmp-leftover" / "state.pt").write_bytes(b"partial")
    # with the broken one removed the run resumes from step-1 and finishes
    out, _ = _run(cfg, FailingJudge(), resume=True)
    assert [r["round"] for r in out["rounds"]] == [0, 1]


def test_ppo_loop_resumed_after_a_crash_equals_the_uninterrupted_run(tmp_path):
    from preflearn.online.ppo_loop import PPOConfig, run_online_ppo

    def cfg(name):
        return PPOConfig(name=name, output_dir=str(tmp_path), rounds=2, prompts_per_round=4, eval_prompts=4, lr=3e-3,
                         batch_size=2, ppo_epochs=2, kl_target=2.0, report=False,
                         sampling=SamplingConfig(num_samples=2, max_new_tokens=6),
                         eval_sampling=SamplingConfig(num_samples=1, max_new_tokens=6, temperature=0.0))

    def run(name, judge, **kw):
        model = tiny_llama(5)
        out = run_online_ppo(cfg(name), judge, model=model, tokenizer=CharTokenizer(), contexts=CONTEXTS, **kw)
        return out, model

    full, m_full = run("full", FailingJudge())
    with pytest.raises(Interrupted):
        run("cut", FailingJudge(fail_at=6))
    resumed, m_res = run("cut", FailingJudge(), resume=True)
    for n, w in _weights(m_full).items():
        assert torch.equal(w, dict(m_res.named_parameters())[n].detach()), n
    for n, w in full.pop("value_head").state_dict().items():
        assert torch.equal(w, resumed["value_head"].state_dict()[n]), n
    resumed.pop("value_head")
    assert resumed == full and full["rounds"][1]["kl_coef"] != 0.05  # the adaptive coefficient was restored too
    a, b = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()], \
        [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert a == b and len(a) == 2 * 2 * 2
