"""PPO for RLHF with a reward model and per-token KL control: the pure pieces.

The recipe of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences",
arXiv:1909.08593) and Ouyang et al. 2022 (InstructGPT, arXiv:2203.02155): a completion is
an episode of token actions; the reward model's score arrives at the last token and every
token pays a KL penalty to the reference; advantages by GAE over a learned value; the policy
by PPO's clipped surrogate, the value by (clipped) regression to the returns. Shapes: B
sequences, T completion tokens, ``mask`` (B, T) 1.0 on completion tokens (a prefix of each row).

These are pure functions of tensors (tested against hand-derived values and a tabular
token MDP in ``tests/online/test_ppo.py``). They do not fit :class:`preflearn.losses.Scores`
(which has no values), so they are not registered losses; the language-model loop with a
value head is :func:`preflearn.online.ppo_loop.run_online_ppo`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["kl_penalized_rewards", "rto_rewards", "rto_token_reward", "gae", "whiten", "ppo_losses",
           "AdaptiveKLController"]


def kl_penalized_rewards(score: Tensor, logps: Tensor, ref_logps: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """(B, T) per-token rewards: -kl_coef (log pi - log pi_ref) per token, plus the score at the last token.

    Ziegler et al. 2019, arXiv:1909.08593, Eq. 2 (R(x, y) = r(x, y) - beta log pi(y|x)/rho(y|x)),
    spread over tokens as in Ouyang et al. 2022, arXiv:2203.02155, Eq. 2: the log-ratio of the
    sequence is the sum of the per-token log-ratios, each paid at its token.

    score : (B,) reward-model scores; logps, ref_logps, mask : (B, T) (logps of the sampling policy,
    no gradient needed).
    """
    r = -kl_coef * (logps - ref_logps) * mask
    last = (mask.sum(-1).long() - 1).clamp_min(0)  # index of each row's last completion token
    has = (mask.sum(-1) > 0).to(r.dtype)
    return r.scatter_add(-1, last[:, None], (score.to(r.dtype) * has)[:, None])


def rto_rewards(score: Tensor, logps: Tensor, ref_logps: Tensor, dpo_logps: Tensor, mask: Tensor, kl_coef: float,
                beta: float = 0.1, score_coef: float = 1.0) -> Tensor:
    """(B, T) RTO's token rewards: the DPO model's dense token reward + the sparse score - the KL penalty.

    Zhong et al. 2024, "DPO Meets PPO: Reinforced Token Optimization for RLHF", arXiv:2404.18922,
    Section 4 (the practical RTO reward; the equation number could not be checked offline)::

        r_t = beta * log( pi_dpo(a_t|s_t) / pi_ref(a_t|s_t) )            (dense: DPO's token-wise implicit reward)
              - kl_coef * log( pi_old(a_t|s_t) / pi_ref(a_t|s_t) )       (the usual per-token KL penalty)
              + [t = last token] * score_coef * r(x, y)                  (the sparse reward-model score)

    then PPO on the token MDP (:func:`gae`, :func:`ppo_losses`). The DPO model is trained first on
    the preference data; its token log-ratio to pi_ref is the token-level reward DPO implicitly
    learns (the paper's argument). beta = 0.1 (DPO's usual beta; our choice), score_coef = 1.

    score : (B,); logps (pi_old), ref_logps, dpo_logps, mask : (B, T).
    """
    dense = beta * (dpo_logps - ref_logps) * mask
    return dense + kl_penalized_rewards(score_coef * score, logps, ref_logps, mask, kl_coef)


def rto_token_reward(dpo_model: torch.nn.Module, beta: float = 0.1,
                     reference_model: torch.nn.Module | None = None):
    """A ``token_reward`` hook for :func:`preflearn.online.ppo_loop.run_online_ppo`: RTO's dense reward.

    Returns ``f(batch, ref_token_logps) -> (B, K, T)`` = beta (log pi_dpo - log pi_ref) per
    completion token (:func:`rto_rewards`' first term). pi_ref is ``reference_model`` when given,
    else the loop's own KL reference (the initial policy, the usual case: DPO and PPO start from
    the same SFT model). ``dpo_model`` is frozen here (scored without gradients).
    """
    from ..train.reference import _eval_scores

    def token_reward(batch, ref_token_logps: Tensor) -> Tensor:
        dpo = _eval_scores(dpo_model, batch, True)["token_logps"]
        ref = ref_token_logps if reference_model is None else _eval_scores(reference_model, batch, True)["token_logps"]
        return beta * (dpo - ref)

    return token_reward

def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation: (advantages, returns), each (B, T).

    Schulman et al. 2015, "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", arXiv:1506.02438, Eq. 16::

        delta_t = r_t + gamma V(s_{t+1}) - V(s_t)          (V = 0 after the last token)
        A_t = sum_l (gamma lam)^l delta_{t+l},   returns_t = A_t + V(s_t)

    gamma = 1 and lam = 0.95 are the InstructGPT-style defaults (Ouyang et al. 2022 use PPO
    with gamma 1; lam 0.95 as in TRL/OpenRLHF; our choice). Masked tokens get 0.
    """
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    running = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m
        adv[:, t] = running
        next_value = values[:, t] * m  # beyond a row's end (m = 0) the next value stays 0
    returns = (adv + values) * mask
    return adv, returns


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries (advantage normalisation, as in PPO implementations)."""
    n = mask.sum().clamp_min(1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + eps) * mask


def ppo_losses(logps: Tensor, old_logps: Tensor, advantages: Tensor, values: Tensor, old_values: Tensor,
               returns: Tensor, mask: Tensor, clip: float = 0.2, value_clip: float = 0.2,
               value_coef: float = 0.1) -> dict[str, Tensor]:
    """PPO's clipped surrogate and clipped value loss, masked token means.

    Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347, Eq. 7 and
    Eq. 9 (without the entropy bonus)::

        L_pi = -E_t[ min( rho_t A_t, clip(rho_t, 1 - clip, 1 + clip) A_t ) ],   rho_t = exp(logp_t - old_logp_t)
        L_V  = 1/2 E_t[ max( (V_t - R_t)^2, (clip(V_t, V_old - value_clip, V_old + value_clip) - R_t)^2 ) ]
        loss = L_pi + value_coef * L_V

    The value clipping is the one of OpenAI's baselines ppo2 used by RLHF implementations (not
    in the paper's equations). clip 0.2 (the paper's Table 3 choice among those tried),
    value_coef 0.1 and value_clip 0.2 (TRL's PPO defaults; our choice).

    ``advantages``/``returns``/``old_*`` carry no gradient. Returns a dict with ``loss``,
    ``policy_loss``, ``value_loss``, ``clip_fraction`` and ``approx_kl`` (mean of the k3 estimate
    of KL(old || new) per token).
    """
    n = mask.sum().clamp_min(1)
    adv, ret = advantages.detach(), returns.detach()
    ratio = torch.exp(logps - old_logps.detach())
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    policy_loss = -(surrogate * mask).sum() / n
    v_clipped = old_values.detach() + torch.clamp(values - old_values.detach(), -value_clip, value_clip)
    v_err = torch.maximum((values - ret) ** 2, (v_clipped - ret) ** 2)
    value_loss = 0.5 * (v_err * mask).sum() / n
    with torch.no_grad():
        log_ratio = logps - old_logps
        clip_fraction = (((ratio - 1).abs() > clip).to(mask.dtype) * mask).sum() / n
        approx_kl = (((torch.exp(log_ratio) - 1) - log_ratio) * mask).sum() / n
    return {"loss": policy_loss + value_coef * value_loss, "policy_loss": policy_loss, "value_loss": value_loss,
            "clip_fraction": clip_fraction, "approx_kl": approx_kl}


@dataclass
class AdaptiveKLController:
    """The KL coefficient that steers the measured KL toward a target.

    Ziegler et al. 2019, arXiv:1909.08593, Section 2.2::

        e_t = clip( (KL_t - KL_target) / KL_target, -0.2, 0.2 ),   beta_{t+1} = beta_t (1 + K_beta e_t)

    with K_beta = 0.1 (the paper's value). ``value`` starts at ``init`` (our default 0.1).
    """

    value: float = 0.1
    target: float = 6.0
    k_beta: float = 0.1

    def update(self, kl: float) -> float:
        e = max(-0.2, min(0.2, (float(kl) - self.target) / self.target))
        self.value *= 1.0 + self.k_beta * e
        return self.value
