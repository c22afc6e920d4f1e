"""The offline preference-loss library: pure functions of :class:`Scores`, one registry.

>>> import preflearn.losses as L
>>> "dpo" in L.names()
True
"""

from __future__ import annotations

from .base import LossOutput, LossSpec, Scores, compute, get, names, register, spec, specs

# Importing a family module registers its losses.
from . import combine, divergence, listwise, pairwise, regularized, reference_free, token_level, unpaired, weighted  # noqa: E402,F401  isort: skip
from .combine import combined  # noqa: E402  isort: skip
# The online methods' LM losses (sppo, xpo, rloo, grpo) live with the online loop that feeds them.
from ..online import objectives as _online_objectives  # noqa: E402,F401  isort: skip
# Nash-MD-PG and online IPO (IPO-MD, EGPO) live with the Nash online loop (preflearn.online.nash).
from ..online import nash as _online_nash  # noqa: E402,F401  isort: skip
# Contrastive Preference Learning lives with the trajectory PbRL code that feeds it.
from ..pbrl import cpl as _pbrl_cpl  # noqa: E402,F401  isort: skip

__all__ = ["Scores", "LossOutput", "LossSpec", "register", "get", "spec", "names", "specs", "compute", "combined"]
