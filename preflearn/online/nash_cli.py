"""`preflearn online nash`: Nash-MD-PG, online IPO, IPO-MD and EGPO on a language model.

Wired into the ``online`` sub-app by ``preflearn/online/cli.py``: ``nash_cli.register(online_app)``.
Torch and the models are imported inside the command, so ``preflearn --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

_JUDGE_HELP = ("rm:<saved reward model dir> | llm:<bundled causal LM name> | "
               "human:<app url>#<project id> (token in $PREFLEARN_TOKEN)")


def nash_cmd(
    judge: str = typer.Option(..., help=_JUDGE_HELP),
    config: Path = typer.Option(None, "--config", help="YAML NashConfig (model:, method:, hparams:, sampling: ...)"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. method=egpo hparams.tau=0.05 rounds=3"),
) -> None:
    """Nash-seeking online alignment: nash_md (y ~ pi vs y' ~ pi^(1-b) mu^b), online_ipo, ipo_md, egpo."""
    import json

    from .. import config as C
    from .cli import _judge
    from .nash import NashConfig, run_online_nash

    cfg = C.load(NashConfig, config, overrides or [])
    out = run_online_nash(cfg, _judge(judge), progress=True)
    typer.echo(json.dumps({k: v for k, v in out.items() if k != "rounds"}, indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Add ``nash`` to ``app`` (the ``preflearn online`` sub-app)."""
    app.command("nash")(nash_cmd)
