"""AlignDiff: attribute strengths from multi-perspective comparisons, then an attribute-conditioned diffusion planner.

Dong, Yuan, Hao, Ni, Mu, Zheng, Hu, Lv, Fan, Hu 2024, "AlignDiff: Aligning
Diverse Human Preferences via Behavior-Customisable Diffusion Model", ICLR 2024,
arXiv:2310.02054, Section 4. Four stages:

1. **Multi-perspective comparisons.** For a pair of trajectory segments
   (tau_0, tau_1) a teacher answers, *per attribute* i = 1..k, which segment shows
   more of attribute i (y_i in {1, 0, 0.5}; NaN when skipped). Here one simulated
   B-Pref teacher per attribute (:class:`preflearn.pbrl.teachers.Teacher`) labels
   from the true per-step attribute values (the teacher's "reward").
2. **Attribute strength model** zeta_theta(tau) in R^k, one Bradley-Terry model per
   attribute over the segment's states::

       P^i[tau_0 > tau_1] = exp zeta^i(tau_0) / (exp zeta^i(tau_0) + exp zeta^i(tau_1))
                          = sigmoid(zeta^i(tau_0) - zeta^i(tau_1))
       L(theta) = - sum_(tau_0, tau_1, y) sum_i [ y_i log P^i[tau_0 > tau_1] + (1 - y_i) log P^i[tau_1 > tau_0] ]

3. **Relabelling.** Every window of the offline dataset gets zeta(tau); strengths are
   mapped to [0, 1] per attribute by the dataset's min and max ("relative strengths"
   v in [0, 1]^k).
4. **Attribute-conditioned diffusion planner.** A diffusion model over windows
   x = (s_0, a_0, ..., s_{H-1}, a_{H-1}) conditioned on (v, m): strengths v and an
   attribute mask m in {0, 1}^k (masked attributes are "don't care"), trained with
   each attribute masked out with probability 0.2; sampled with classifier-free
   guidance (w eps(x, v, m) + (1 - w) eps(x, v, 0)) and the first state pinned to the
   current state (inpainting). **Inference** samples N plans, scores each with the
   attribute strength model and keeps the one closest to the target on the
   unmasked attributes: argmin_n sum_i m_i (v_hat^i(x_n) - v*_i)^2.

Equation numbers are not quoted (the PDF's numbering could not be checked
offline); the forms above were settled against the authors' released code
(github.com/ZibinDong/AlignDiff-ICLR2024: ``utils/attrfunc_utils.py``,
``train_attr_func.py``, ``diffusion/ode.py``, ``diffusion/planner.py``; read, not
copied): per-attribute BT on an ensemble of 3 state-only strength models with
outputs soft-clipped as c * tanh(z / c), c = 20; relabelling by min-max over
all dataset windows; mask keep probability 0.8 in training; guidance
w * D_cond + (1 - w) * D_uncond with the unconditional pass given an all-zero mask;
the first observation pinned; the candidate whose masked squared error to the
target is smallest is chosen and its first action executed (MPC).

Our choices (not the paper's): the paper uses a transformer strength model and a
DiT denoiser (EDM-parameterised in the code) on MuJoCo locomotion; here both are
MLPs over flattened windows and the denoiser is the DDPM of
:mod:`preflearn.pbrl.diffusion_policy`. Strengths condition the model as
continuous values (the authors discretise them into 100 bins for an embedding).
The demo environment is a 2-D point mass (s' = s + dt * clip(a, -1, 1)) whose
attributes are obvious: **speed** (mean ||s_{t+1} - s_t|| / dt) and **climb**
(mean (y_{t+1} - y_t) / dt).

Shapes: N windows, H steps per window, D state dims, A action dims, k attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .diffusion_policy import EpsMLP, NoiseSchedule, cosine_schedule, ddpm_sample, train_denoiser
from .segments import sample_pairs
from .teachers import Teacher

__all__ = [
    "POINT_MASS_ATTRIBUTES",
    "point_mass_step",
    "point_mass_rollout",
    "point_mass_dataset",
    "point_mass_attributes",
    "windows",
    "multi_perspective_labels",
    "attribute_bt_loss",
    "AttributeStrengthModel",
    "fit_attribute_model",
    "normalise_strengths",
    "AlignDiffConfig",
    "AlignDiffPlanner",
    "train_aligndiff",
    "select_closest",
]

POINT_MASS_ATTRIBUTES = ("speed", "climb")
DT = 0.1


# ----------------------------------------------------------------------------- a tiny environment

def point_mass_step(s: np.ndarray, a: np.ndarray, dt: float = DT) -> np.ndarray:
    """s' = s + dt * clip(a, -1, 1) for (..., 2) positions and velocities-as-actions."""
    return s + dt * np.clip(a, -1.0, 1.0)


def point_mass_rollout(s0: np.ndarray, actions: np.ndarray, dt: float = DT) -> np.ndarray:
    """(..., T + 1, 2) states from (..., 2) start states and (..., T, 2) actions (open loop)."""
    out = [np.asarray(s0, np.float64)]
    for t in range(actions.shape[-2]):
        out.append(point_mass_step(out[-1], actions[..., t, :], dt))
    return np.stack(out, -2)


def point_mass_dataset(episodes: int = 200, length: int = 32, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Offline behaviour: (E, T + 1, 2) states and (E, T, 2) actions of diverse straight-ish motions.

    Each episode starts uniformly in [-1, 1]^2 and moves with its own speed v ~ U[0, 1] along a heading
    that drifts slowly (random walk, std 0.1 rad per step); actions get N(0, 0.05^2) noise.
    """
    rng = np.random.default_rng(seed)
    s0 = rng.uniform(-1, 1, size=(episodes, 2))
    v = rng.uniform(0, 1, size=(episodes, 1))
    heading = rng.uniform(-np.pi, np.pi, size=(episodes, 1)) + np.cumsum(rng.normal(0, 0.1, (episodes, length)), 1)
    act = v[..., None] * np.stack([np.cos(heading), np.sin(heading)], -1) + rng.normal(0, 0.05, (episodes, length, 2))
    act = np.clip(act, -1, 1)
    return point_mass_rollout(s0, act).astype(np.float32), act.astype(np.float32)


def point_mass_attributes(states: np.ndarray, dt: float = DT) -> dict[str, np.ndarray]:
    """Per-step true attribute values of (..., H, 2) state windows: each (..., H - 1).

    speed_t = ||s_{t+1} - s_t|| / dt;  climb_t = (y_{t+1} - y_t) / dt.
    """
    d = np.diff(states, axis=-2) / dt
    return {"speed": np.linalg.norm(d, axis=-1), "climb": d[..., 1]}


def windows(states: np.ndarray, actions: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows of ``horizon`` steps: (N, H, D) states s_t..s_{t+H-1} and (N, H, A) actions a_t..a_{t+H-1}."""
    E, T1, _ = states.shape
    T = T1 - 1
    if horizon > T:
        raise ValueError(f"horizon {horizon} is longer than the episodes ({T} steps)")
    S = [states[:, t:t + horizon] for t in range(T - horizon + 1)]
    A = [actions[:, t:t + horizon] for t in range(T - horizon + 1)]
    return np.concatenate(S), np.concatenate(A)


def multi_perspective_labels(per_step: Sequence[np.ndarray], teachers: Sequence[Teacher], a: np.ndarray,
                             b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(M, k) labels: teacher i compares segments a[m] and b[m] on attribute i's per-step values (N, L_i)."""
    if len(per_step) != len(teachers):
        raise ValueError(f"{len(per_step)} attributes but {len(teachers)} teachers")
    return np.stack([t.label(v[a], v[b], rng) for v, t in zip(per_step, teachers)], -1)


# ----------------------------------------------------------------------------- attribute strength model

def attribute_bt_loss(z_a: Tensor, z_b: Tensor, y: Tensor) -> Tensor:
    """Per-attribute Bradley-Terry loss summed over attributes, mean over pairs.

    L = mean_m sum_i -[ y_mi log sigmoid(z_a,mi - z_b,mi) + (1 - y_mi) log sigmoid(z_b,mi - z_a,mi) ]

    ``z_a``, ``z_b`` (M, k) strengths, ``y`` (M, k) P(a shows more of attribute i); NaN labels
    (skipped queries) contribute nothing.
    """
    keep = torch.isfinite(y)
    yy = torch.where(keep, y, torch.zeros_like(y))
    d = z_a - z_b
    per = -(yy * F.logsigmoid(d) + (1.0 - yy) * F.logsigmoid(-d)) * keep
    return per.sum(-1).mean()


class AttributeStrengthModel(nn.Module):
    """zeta(tau) in R^k from a window's states (N, H, D): ensemble mean of MLPs, outputs c * tanh(z / c).

    State-only, as in the authors' code; the MLP sees the normalised states and their first
    differences (our choice: an MLP over raw positions learns speed-like attributes poorly).
    """

    def __init__(self, obs_dim: int, horizon: int, n_attributes: int, *, hidden: int = 64, n_members: int = 3,
                 clip: float = 20.0, seed: int = 0) -> None:
        super().__init__()
        self.horizon, self.clip = horizon, clip
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.members = nn.ModuleList(
                nn.Sequential(nn.Linear(obs_dim * (2 * horizon - 1), hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(),
                              nn.Linear(hidden, n_attributes))
                for _ in range(n_members)
            )
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))
        self.register_buffer("dstd", torch.ones(obs_dim))

    def features(self, states: Tensor) -> Tensor:
        """(N, (2H - 1) D): normalised states and normalised first differences s_{t+1} - s_t."""
        d = (states[..., 1:, :] - states[..., :-1, :]) / self.dstd
        return torch.cat([((states - self.mean) / self.std).flatten(-2), d.flatten(-2)], -1)

    def set_normaliser(self, states: Tensor) -> None:
        """Per-dimension mean/std of states and std of first differences from (N, H, D) windows."""
        flat = states.reshape(-1, states.shape[-1])
        diffs = (states[..., 1:, :] - states[..., :-1, :]).reshape(-1, states.shape[-1])
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-6))
        self.dstd.copy_(diffs.std(0).clamp_min(1e-6))

    def member(self, states: Tensor, k: int) -> Tensor:
        """(N, k_attr) strengths of member ``k``."""
        return self.clip * torch.tanh(self.members[k](self.features(states)) / self.clip)

    def forward(self, states: Tensor) -> Tensor:
        return torch.stack([self.member(states, k) for k in range(len(self.members))]).mean(0)


def fit_attribute_model(model: AttributeStrengthModel, states: Tensor, a: np.ndarray, b: np.ndarray, y: np.ndarray,
                        *, steps: int = 300, batch_size: int = 128, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Train each member on the labelled pairs with :func:`attribute_bt_loss` (Adam, own minibatches)."""
    model.set_normaliser(states)
    a_t, b_t = torch.as_tensor(a), torch.as_tensor(b)
    y_t = torch.as_tensor(y, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for k, member in enumerate(model.members):
        opt = torch.optim.Adam(member.parameters(), lr=lr)
        for _ in range(steps):
            idx = torch.randint(0, len(a_t), (min(batch_size, len(a_t)),), generator=gen)
            loss = attribute_bt_loss(model.member(states[a_t[idx]], k), model.member(states[b_t[idx]], k), y_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if k == 0:
                curve.append(loss.item())
    return curve


def normalise_strengths(raw: Tensor, lo: Tensor | None = None, hi: Tensor | None = None
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """(v, lo, hi): v = (raw - lo) / (hi - lo) per attribute, lo/hi = column min/max of ``raw`` unless given."""
    lo = raw.min(0).values if lo is None else lo
    hi = raw.max(0).values if hi is None else hi
    return (raw - lo) / (hi - lo).clamp_min(1e-8), lo, hi


def select_closest(pred: Tensor, target: Tensor, mask: Tensor) -> int:
    """Index n minimising sum_i mask_i (pred[n, i] - target_i)^2 (AlignDiff's inference-time choice)."""
    return int((((pred - target) ** 2) * mask).sum(-1).argmin())


# ----------------------------------------------------------------------------- planner

@dataclass(frozen=True)
class AlignDiffConfig:
    horizon: int = 8
    n_pairs: int = 1500  # comparisons per attribute (one query answered from every perspective)
    asm_steps: int = 150
    diffusion_steps: int = 20  # I, diffusion steps
    train_steps: int = 600
    batch_size: int = 256
    hidden: int = 128
    lr: float = 2e-3
    p_drop: float = 0.2  # per-attribute mask-out probability in training (authors' code)
    guidance: float = 1.5  # w (authors use 1.5-3)
    n_samples: int = 64  # candidate plans per query


@dataclass
class AlignDiffPlanner:
    """The trained pieces; :meth:`plan` returns the candidate closest to the target strengths."""

    asm: AttributeStrengthModel
    eps_model: EpsMLP
    sched: NoiseSchedule
    x_mean: Tensor  # (D + A,) per-dimension normaliser of (state, action) rows
    x_std: Tensor
    lo: Tensor  # (k,) strength range used for [0, 1] relabelling
    hi: Tensor
    horizon: int
    obs_dim: int
    act_dim: int
    clip_x0: float | None = 4.0  # clamp of the predicted x_0 in normalised units while sampling

    def to_x(self, states: Tensor, actions: Tensor) -> Tensor:
        """(N, H*(D+A)) flat normalised windows, states relative to the window's first state."""
        rel = states - states[..., :1, :]
        return ((torch.cat([rel, actions], -1) - self.x_mean) / self.x_std).flatten(-2)

    def from_x(self, x: Tensor, start: Tensor) -> tuple[Tensor, Tensor]:
        """(states (N, H, D), actions (N, H, A)) back from flat windows and the (D,) or (N, D) start state."""
        rows = x.view(x.shape[0], self.horizon, -1) * self.x_std + self.x_mean
        return rows[..., :self.obs_dim] + start.reshape(-1, 1, self.obs_dim), rows[..., self.obs_dim:]

    @torch.no_grad()
    def strengths(self, states: Tensor) -> Tensor:
        """(N, k) relative strengths in the relabelling's [0, 1] scale (may leave it for unseen behaviour)."""
        return normalise_strengths(self.asm(states), self.lo, self.hi)[0]

    @torch.no_grad()
    def plan(self, start: np.ndarray, target: Sequence[float], mask: Sequence[float] | None = None, *,
             n_samples: int = 64, guidance: float = 1.5, seed: int = 0) -> dict[str, np.ndarray]:
        """Sample ``n_samples`` plans from ``start`` (D,) for target strengths (k,) and keep the closest.

        Returns ``states`` (H, D), ``actions`` (H, A) of the chosen plan and its ``predicted`` strengths (k,).
        """
        target_t = torch.as_tensor(np.asarray(target, np.float32)).reshape(1, -1)
        k = self.eps_model.cond_dim
        mask_t = torch.ones(1, k) if mask is None else torch.as_tensor(np.asarray(mask, np.float32)).reshape(1, -1)
        if target_t.shape[1] != k or mask_t.shape[1] != k:
            raise ValueError(f"target and mask need {k} attribute entries, got {target_t.shape[1]} and "
                             f"{mask_t.shape[1]}")
        gen = torch.Generator().manual_seed(seed)
        X = self.eps_model.x_dim
        row = self.obs_dim + self.act_dim
        fixed_mask = torch.zeros(X, dtype=torch.bool)
        fixed_mask[:self.obs_dim] = True
        fixed = torch.zeros(1, X)
        fixed[0, :self.obs_dim] = -self.x_mean[:self.obs_dim] / self.x_std[:self.obs_dim]  # s_0 - s_0 = 0
        x = ddpm_sample(self.eps_model, self.sched, n_samples, target_t, mask_t, guidance=guidance, fixed=fixed,
                        fixed_mask=fixed_mask, clip_x0=self.clip_x0, generator=gen)
        assert x.shape[1] == self.horizon * row
        states, actions = self.from_x(x, torch.as_tensor(np.asarray(start, np.float32)))
        pred = self.strengths(states)
        n = select_closest(pred, target_t[0], mask_t[0])
        return {"states": states[n].numpy(), "actions": actions[n].numpy(), "predicted": pred[n].numpy()}


def train_aligndiff(states: np.ndarray, actions: np.ndarray, teachers: Sequence[Teacher],
                    cfg: AlignDiffConfig = AlignDiffConfig(), *, seed: int = 0) -> tuple[AlignDiffPlanner, dict]:
    """Stages 1-4 on point-mass episodes (E, T + 1, 2) / (E, T, 2) with one teacher per attribute.

    Returns the planner and a report: BT training curve, held-out per-attribute pair accuracy of the
    strength model, and the denoiser's loss curve.
    """
    rng = np.random.default_rng(seed)
    S, A = windows(states, actions, cfg.horizon)
    true = point_mass_attributes(S)
    per_step = [true[name] for name in POINT_MASS_ATTRIBUTES][:len(teachers)]
    a, b = sample_pairs(len(S), cfg.n_pairs, rng)
    y = multi_perspective_labels(per_step, teachers, a, b, rng)
    S_t, A_t = torch.as_tensor(S), torch.as_tensor(A)
    asm = AttributeStrengthModel(S.shape[-1], cfg.horizon, len(teachers), seed=seed)
    bt_curve = fit_attribute_model(asm, S_t, a, b, y, steps=cfg.asm_steps, seed=seed)
    # held-out agreement with the true attribute ordering
    ha, hb = sample_pairs(len(S), 1000, rng)
    with torch.no_grad():
        z = asm(S_t)
    acc = {}
    for i, v in enumerate(per_step):
        tv = v.sum(-1)
        decided = tv[ha] != tv[hb]
        acc[POINT_MASS_ATTRIBUTES[i]] = float(((z[ha, i] > z[hb, i]).numpy() == (tv[ha] > tv[hb]))[decided].mean())
    v, lo, hi = normalise_strengths(z)
    rows = torch.cat([S_t - S_t[:, :1], A_t], -1)
    x_mean = rows.reshape(-1, rows.shape[-1]).mean(0)
    x_std = rows.reshape(-1, rows.shape[-1]).std(0).clamp_min(1e-6)
    sched = cosine_schedule(cfg.diffusion_steps)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        eps_model = EpsMLP(cfg.horizon * rows.shape[-1], len(teachers), steps=cfg.diffusion_steps,
                           hidden=cfg.hidden, maskable=True)
    planner = AlignDiffPlanner(asm, eps_model, sched, x_mean, x_std, lo, hi, cfg.horizon, S.shape[-1], A.shape[-1])
    x0 = planner.to_x(S_t, A_t)
    dn_curve = train_denoiser(eps_model, sched, x0, v, steps=cfg.train_steps, batch_size=cfg.batch_size,
                              lr=cfg.lr, p_drop=cfg.p_drop, seed=seed)
    return planner, {"bt_curve": bt_curve, "heldout_accuracy": acc, "denoise_curve": dn_curve}
