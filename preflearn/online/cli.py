"""`preflearn online ...` commands."""

from __future__ import annotations

from pathlib import Path

import typer

_JUDGE_HELP = ("rm:<saved reward model dir> | llm:<bundled causal LM name> | "
               "human:<app url>#<project id> (token in $PREFLEARN_TOKEN)")


online_app = typer.Typer(help="Online, iterative and game-theoretic alignment.", no_args_is_help=True)


@online_app.command("game")
def game_cmd(
    n: int = typer.Option(10, help="number of responses (random intransitive P); 3 = rock-paper-scissors variant"),
    seed: int = typer.Option(0, help="seed of the random preference matrix and reference"),
    tau: float = typer.Option(0.1, help="KL regularisation strength"),
    iterations: int = typer.Option(2000, help="exact updates per method (x30 for average-iterate methods)"),
    eps: float = typer.Option(1e-3, help="exploitability target"),
    out: Path = typer.Option(Path("game-exploitability.png"), help="PNG plot of exploitability per iteration"),
) -> None:
    """Run every method on a tabular preference game and report iterations to exploitability < eps."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from . import game as G

    rng = np.random.default_rng(seed)
    P = G.rock_paper_scissors((0.9, 0.6, 0.3)) if n == 3 else G.random_preference_matrix(n, seed)
    game = G.PreferenceGame(P, rng.dirichlet(2 * np.ones(n)), tau)
    rows = G.compare(game, iterations=iterations, eps=eps, record_every=max(1, iterations // 500))
    table = Table(title=f"Tabular preference game: n={n}, tau={tau}, seed={seed} (exploitability target {eps:g})")
    for col in ("method", "iterate measured", "Nash-seeking", f"iterations to < {eps:g}", "final gap"):
        table.add_column(col)
    for r in rows:
        hit = r["iterations_to_eps"]
        table.add_row(r["method"], r["iterate"], "yes" if r["nash_seeking"] else "no",
                      "never" if hit is None else str(hit), f"{r['final_gap']:.2e}")
    Console().print(table)
    G.plot_traces(rows, str(out), title=f"n={n}, tau={tau}")
    typer.echo(f"plot: {out}")


@online_app.command("demo")
def demo_cmd(
    output_dir: str = typer.Option("runs", help="parent folder of the run directory"),
    rounds: int = typer.Option(2, help="online rounds"),
    prompts_per_round: int = typer.Option(32, help="prompts sampled per round (K=4 samples each)"),
    eval_prompts: int = typer.Option(32, help="held-out prompts for the win rate"),
    eval_samples: int = typer.Option(4, help="samples per held-out prompt from each of the final and initial policy"),
    steps_per_round: int = typer.Option(8, help="DPO steps (4 pairs each) per round"),
    pairs: str = typer.Option("best_vs_worst", help="pair builder: best_vs_worst (iterative DPO) or random_pair"),
    lr: float = typer.Option(2e-4, help="LoRA learning rate"),
    temperature: float = typer.Option(0.7, help="sampling temperature (training rounds and held-out samples)"),
    top_p: float = typer.Option(0.9, help="nucleus mass kept when sampling"),
    seed: int = typer.Option(0),
    rm_pairs: int = typer.Option(1200, help="HH-RLHF pairs the MiniLM judge is trained on (cached per setting)"),
    judge_dir: str = typer.Option(None, help="judge with this saved reward model instead of training one"),
) -> None:
    """Online DPO on the bundled SmolLM2 judged by a MiniLM reward model trained on HH-RLHF."""
    import json

    from .demo import run_online_demo

    out = run_online_demo(output_dir=output_dir, rounds=rounds, prompts_per_round=prompts_per_round,
                          eval_prompts=eval_prompts, steps_per_round=steps_per_round, seed=seed, rm_pairs=rm_pairs,
                          judge_dir=judge_dir, eval_samples=eval_samples, pairs=pairs, lr=lr,
                          temperature=temperature, top_p=top_p)
    typer.echo(json.dumps({k: v for k, v in out.items() if k != "rounds"}, default=str))


@online_app.command("run")
def run_cmd(
    config: Path = typer.Option(..., "--config", help="YAML OnlineConfig (train: holds a TrainConfig)"),
    judge: str = typer.Option(..., help=_JUDGE_HELP),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. rounds=3 train.loss.name=ipo"),
) -> None:
    """Rounds of sample -> judge -> update with any registered loss; every round's data saved as records."""
    import json

    from .. import config as C
    from .loop import OnlineConfig, run_online

    cfg = C.load(OnlineConfig, config, overrides or [])
    out = run_online(cfg, _judge(judge))
    out.pop("model", None)
    typer.echo(json.dumps({k: v for k, v in out.items() if k != "rounds"}, indent=2, default=str))


def _judge(spec: str):
    """A judge from ``rm:DIR``, ``llm:NAME`` or ``human:URL#PROJECT`` (bearer token in $PREFLEARN_TOKEN)."""
    import os

    from ..errors import ConfigError
    from .judges import LLMJudge, RewardModelJudge

    kind, _, where = spec.partition(":")
    if kind == "rm":
        from ..reward.model import RewardModel

        return RewardModelJudge(RewardModel.from_pretrained(where))
    if kind == "llm":
        from ..models.bundled import load_bundled

        return LLMJudge(*load_bundled(where))
    if kind == "human":
        from .human import HumanQueueJudge

        url, _, pid = where.rpartition("#")
        if not url or not pid.isdigit():
            raise ConfigError(f"--judge {spec!r}: expected human:<app url>#<project id>, e.g. human:http://localhost:8000#3")
        return HumanQueueJudge(url, project_id=int(pid), token=os.environ.get("PREFLEARN_TOKEN"))
    raise ConfigError(f"--judge {spec!r}: expected {_JUDGE_HELP}")


@online_app.command("rl")
def rl_cmd(
    judge: str = typer.Option(..., help=_JUDGE_HELP),
    config: Path = typer.Option(None, "--config", help="YAML GroupConfig (model:, loss:, hparams:, sampling: ...)"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. loss=grpo hparams.beta=0.02 rounds=3"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run's last complete round"),
) -> None:
    """RLOO / GRPO / SPPO / P3O / XPO / INPO: K samples per prompt, judged, policy-gradient updates."""
    import json

    from .. import config as C
    from .group import GroupConfig, run_online_group

    cfg = C.load(GroupConfig, config, overrides or [])
    out = run_online_group(cfg, _judge(judge), progress=True, resume=resume)
    typer.echo(json.dumps({k: v for k, v in out.items() if k != "rounds"}, indent=2, default=str))


def _register_nash() -> None:
    from . import nash_cli

    nash_cli.register(online_app)


_register_nash()


def register(app: typer.Typer) -> None:
    app.add_typer(online_app, name="online")
