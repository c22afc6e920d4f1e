"""A small DDPM over flat vectors (action sequences, plans, single actions), with classifier-free guidance.

Shared by :mod:`preflearn.pbrl.aligndiff` (a planner over short state/action
sequences conditioned on attribute strengths) and :mod:`preflearn.pbrl.diff_uapa`
(a diffusion policy pi(a | s) aligned to segment preferences). CPU-sized: an
MLP epsilon-model, tens of diffusion steps.

Equations (Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models",
arXiv:2006.11239)::

    alpha_i = 1 - beta_i,   abar_i = prod_{j <= i} alpha_j                       (Sec. 2)
    x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) eps,  eps ~ N(0, I)                (Eq. 4)
    L_simple = E_{i, x_0, eps} || eps - eps_theta(x_i, i, c) ||^2                 (Eq. 14)
    x_{i-1} = (x_i - beta_i / sqrt(1 - abar_i) eps_theta) / sqrt(alpha_i) + sigma_i z   (Eq. 11, Alg. 2)

with sigma_i^2 = beta_i (1 - abar_{i-1}) / (1 - abar_i) (the "beta tilde" choice of
Sec. 3.2) and the cosine schedule of Nichol & Dhariwal 2021, "Improved
Denoising Diffusion Probabilistic Models", arXiv:2102.09672, Eq. 17
(abar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2), s = 0.008,
beta clipped at 0.999). Diffusion steps are indexed i = 1..I in the papers and
0..I-1 here (``i`` in code = paper's i - 1).

Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion
Guidance", arXiv:2207.12598, Eq. 6, written with w' = 1 + w)::

    eps_guided = w eps_theta(x_i, i, c, m) + (1 - w) eps_theta(x_i, i, c, 0)

``w = 1`` is the plain conditional model, ``w = 0`` the unconditional one.
Conditions are vectors ``c`` (B, C) with a *mask* ``m`` (B, C) in {0, 1}: the
model sees ``[c * m, m]`` so a masked-out entry carries no value, and the
all-zero mask is the unconditional model. Training drops each entry of the mask
independently with probability ``p_drop`` (AlignDiff's attribute masking; its
authors' code keeps each attribute with probability 0.8). A model built with
``maskable=False`` sees ``c`` directly (e.g. the state of a policy pi(a | s)).

Inpainting: ``fixed`` (B, X) values with a boolean ``fixed_mask`` (X,) are
written into x after every reverse step (Janner et al. 2022, "Planning with
Diffusion", arXiv:2205.09991, Sec. 3.3; AlignDiff pins the first observation the
same way).

Shapes: B batch, X flat sample size, C condition size, I diffusion steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "NoiseSchedule",
    "cosine_schedule",
    "linear_schedule",
    "q_sample",
    "EpsMLP",
    "denoising_errors",
    "guided_eps",
    "ddpm_sample",
    "train_denoiser",
]


@dataclass(frozen=True)
class NoiseSchedule:
    """betas (I,) and the derived alphas, cumulative products abar (I,) and posterior std sigma (I,)."""

    betas: Tensor

    @property
    def steps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alphas(self) -> Tensor:
        return 1.0 - self.betas

    @property
    def abar(self) -> Tensor:
        return torch.cumprod(self.alphas, 0)

    @property
    def sigmas(self) -> Tensor:
        """sigma_i = sqrt(beta_i (1 - abar_{i-1}) / (1 - abar_i)), 0 at the last step (i = 0 in code)."""
        abar = self.abar
        prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return torch.sqrt(self.betas * (1.0 - prev) / (1.0 - abar))


def cosine_schedule(steps: int = 20, s: float = 0.008) -> NoiseSchedule:
    """Cosine schedule (Nichol & Dhariwal 2021, Eq. 17), betas clipped to 0.999."""
    if steps < 1:
        raise ValueError(f"need at least one diffusion step, got {steps}")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = (1.0 - abar[1:] / abar[:-1]).clamp(max=0.999)
    return NoiseSchedule(betas.float())


def linear_schedule(steps: int = 20, beta_1: float = 1e-4, beta_T: float = 0.02) -> NoiseSchedule:
    """Linear betas from beta_1 to beta_T (DDPM Sec. 4 uses 1e-4 .. 0.02 over T = 1000)."""
    return NoiseSchedule(torch.linspace(beta_1, beta_T, steps))


def q_sample(sched: NoiseSchedule, x0: Tensor, i: Tensor, noise: Tensor) -> Tensor:
    """x_i = sqrt(abar_i) x0 + sqrt(1 - abar_i) noise (DDPM Eq. 4); ``i`` (B,) long, x0 (B, X)."""
    ab = sched.abar.to(x0.dtype)[i].unsqueeze(-1)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def _time_embedding(i: Tensor, dim: int, steps: int) -> Tensor:
    """(B, dim) sinusoidal embedding of the step index scaled to [0, 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    ang = (i.float() * (1000.0 / steps)).unsqueeze(-1) * freqs
    return torch.cat([ang.sin(), ang.cos()], -1)


class EpsMLP(nn.Module):
    """epsilon_theta(x_i, i, c[, m]): an MLP on [x_i, time embedding, condition features].

    Parameters
    ----------
    x_dim : size X of a flat sample.
    cond_dim : size C of the condition (0 for none).
    steps : number I of diffusion steps (scales the time embedding).
    hidden : width of the two hidden layers (Mish activations).
    maskable : the condition enters as ``[c * m, m]`` (classifier-free guidance, attribute masking);
        otherwise as ``c``.
    """

    def __init__(self, x_dim: int, cond_dim: int = 0, *, steps: int = 20, hidden: int = 128,
                 time_dim: int = 32, maskable: bool = False) -> None:
        super().__init__()
        self.x_dim, self.cond_dim, self.steps, self.time_dim, self.maskable = x_dim, cond_dim, steps, time_dim, maskable
        c_in = cond_dim * (2 if maskable else 1)
        self.net = nn.Sequential(
            nn.Linear(x_dim + time_dim + c_in, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(),
            nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, x_dim),
        )

    def forward(self, x: Tensor, i: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        parts = [x, _time_embedding(i, self.time_dim, self.steps).to(x.dtype)]
        if self.cond_dim:
            if cond is None:
                raise ValueError("this epsilon-model is conditional: pass cond")
            if self.maskable:
                mask = torch.ones_like(cond) if mask is None else mask.to(cond.dtype)
                parts += [cond * mask, mask]
            else:
                parts.append(cond)
        return self.net(torch.cat(parts, -1))


def denoising_errors(model: nn.Module, sched: NoiseSchedule, x0: Tensor, cond: Tensor | None = None,
                     mask: Tensor | None = None, *, i: Tensor | None = None, noise: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
    """(B,) per-sample ||eps - eps_theta(x_i, i, c)||^2 summed over the X dims (DDPM Eq. 14, unreduced).

    ``i`` (B,) and ``noise`` (B, X) are drawn uniformly / from N(0, I) when not given; pass the same
    ones to two models to compare them on identical noised inputs (Diffusion-DPO style).
    """
    B = x0.shape[0]
    if i is None:
        i = torch.randint(0, sched.steps, (B,), generator=generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    xi = q_sample(sched, x0, i, noise)
    return ((noise - model(xi, i, cond, mask)) ** 2).sum(-1)


def guided_eps(model: nn.Module, x: Tensor, i: Tensor, cond: Tensor | None, mask: Tensor | None,
               guidance: float) -> Tensor:
    """w eps(x, i, c, m) + (1 - w) eps(x, i, c, 0) for a maskable model; eps(x, i, c) otherwise."""
    if cond is None or not getattr(model, "maskable", False) or guidance == 1.0:
        return model(x, i, cond, mask)
    m = torch.ones_like(cond) if mask is None else mask
    both = model(torch.cat([x, x]), torch.cat([i, i]), torch.cat([cond, cond]), torch.cat([m, torch.zeros_like(m)]))
    eps_c, eps_u = both.chunk(2)
    return guidance * eps_c + (1.0 - guidance) * eps_u


@torch.no_grad()
def ddpm_sample(model: nn.Module, sched: NoiseSchedule, n: int, cond: Tensor | None = None,
                mask: Tensor | None = None, *, guidance: float = 1.0, fixed: Tensor | None = None,
                fixed_mask: Tensor | None = None, clip_x0: float | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """(n, X) samples by ancestral sampling (DDPM Alg. 2) with optional guidance and inpainting.

    With ``clip_x0`` the step goes through the predicted x_0 = (x_i - sqrt(1 - abar_i) eps) / sqrt(abar_i),
    clamped to [-clip_x0, clip_x0], and the posterior mean of DDPM Eq. 7,
    mu = (sqrt(abar_{i-1}) beta_i x_0 + sqrt(alpha_i) (1 - abar_{i-1}) x_i) / (1 - abar_i)
    (identical to Eq. 11 without the clamp; the clamp keeps an imperfect model's first steps, where
    alpha_i is near 0 under the cosine schedule, from blowing up, as DDPM's and Diffuser's samplers do).

    ``cond``/``mask`` are (n, C) (or (1, C), broadcast); ``fixed`` (n or 1, X) values are written
    where ``fixed_mask`` (X,) is true after every step.
    """
    X = model.x_dim
    if cond is not None and cond.shape[0] == 1 and n > 1:
        cond = cond.expand(n, -1)
        mask = None if mask is None else mask.expand(n, -1)
    x = torch.randn((n, X), generator=generator)
    alphas, abar, betas, sigmas = sched.alphas, sched.abar, sched.betas, sched.sigmas
    if fixed is not None:
        x = torch.where(fixed_mask, fixed.expand(n, -1), x)
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    for step in reversed(range(sched.steps)):
        i = torch.full((n,), step, dtype=torch.long)
        eps = guided_eps(model, x, i, cond, mask, guidance)
        if clip_x0 is None:
            x = (x - betas[step] / (1.0 - abar[step]).sqrt() * eps) / alphas[step].sqrt()
        else:
            x0 = ((x - (1.0 - abar[step]).sqrt() * eps) / abar[step].sqrt()).clamp(-clip_x0, clip_x0)
            x = (prev[step].sqrt() * betas[step] * x0 + alphas[step].sqrt() * (1.0 - prev[step]) * x) \
                / (1.0 - abar[step])
        if step > 0:
            x = x + sigmas[step] * torch.randn(x.shape, generator=generator)
        if fixed is not None:
            x = torch.where(fixed_mask, fixed.expand(n, -1), x)
    return x


def train_denoiser(model: nn.Module, sched: NoiseSchedule, x0: Tensor, cond: Tensor | None = None, *,
                   steps: int = 1000, batch_size: int = 256, lr: float = 2e-3, p_drop: float = 0.2,
                   seed: int = 0) -> list[float]:
    """Fit eps_theta by L_simple (DDPM Eq. 14) on rows of ``x0`` (N, X) with conditions ``cond`` (N, C).

    For a maskable model each condition entry is masked out with probability ``p_drop`` (0.2: the
    AlignDiff authors' code). Adam with cosine learning-rate decay; returns the loss per step.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched_lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    curve = []
    N = x0.shape[0]
    for _ in range(steps):
        idx = torch.randint(0, N, (min(batch_size, N),), generator=gen)
        c = None if cond is None else cond[idx]
        m = None
        if c is not None and getattr(model, "maskable", False):
            m = (torch.rand(c.shape, generator=gen) >= p_drop).float()
        loss = denoising_errors(model, sched, x0[idx], c, m, generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched_lr.step()
        curve.append(loss.item())
    return curve
