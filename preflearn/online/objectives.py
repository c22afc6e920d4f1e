"""Language-model losses of the online methods: SPPO, INPO, XPO, RLOO, GRPO and P3O.

Each is a pure function of :class:`preflearn.losses.Scores` registered in the loss
registry (so ``preflearn.losses.compute("rloo", scores)`` works and the registry-wide
checks in ``tests/losses/test_common.py`` run on them). They differ from the offline
losses in what ``Scores`` carries:

* ``rewards`` (B, K): the judge's numbers for the K samples of each prompt. For RLOO and
  GRPO a reward model's (or oracle's) scores; for SPPO the estimated win probabilities
  P_hat(y_k > pi_t | x) of :func:`preflearn.online.judges.win_rates`.
* ``ref_logps``: pi_ref for RLOO / GRPO / XPO; for SPPO the *previous iterate* pi_t (the
  policy the samples were drawn from).

The online loop that feeds them (K samples per prompt -> judge -> update) is
:func:`preflearn.online.group.run_online_group`. PPO (value head, GAE) is in
:mod:`preflearn.online.ppo`: it needs per-token values, which ``Scores`` does not carry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..losses.base import LossOutput, Scores, pair_metrics, register, weighted_mean

__all__ = ["sppo", "inpo", "xpo", "rloo", "grpo", "p3o", "leave_one_out_advantages", "group_advantages",
           "k3_kl"]


def _finish(per_example: Tensor, scores: Scores, rewards: Tensor, **extra: Tensor) -> LossOutput:
    loss = weighted_mean(per_example, scores.weights)
    metrics = pair_metrics(rewards.detach(), loss)
    metrics.update({k: v.detach().float().mean() for k, v in extra.items()})
    return LossOutput(loss=loss, rewards=rewards.detach(), metrics=metrics, per_example=per_example)


def _need_k(scores: Scores, name: str, k_min: int = 2) -> int:
    k = scores.num_candidates
    if k < k_min:
        raise ConfigError(f"loss {name!r} compares the K samples of one prompt: needs K >= {k_min}, got K={k}")
    return k


# ----------------------------------------------------------------------------- SPPO
@register(
    "sppo",
    family="online",
    k="any",
    reference="required",
    needs=("rewards",),
    defaults={"eta": 1000.0},
    paper="Self-Play Preference Optimization for Language Model Alignment",
    arxiv="2405.00675",
)
def sppo(scores: Scores, eta: float = 1000.0) -> LossOutput:
    """SPPO: square loss of each sample's log-ratio to eta * (P_hat(y > pi_t) - 1/2).

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment",
    arXiv:2405.00675, Algorithm 1 (the SPPO objective, Eq. 4.7 of v5; log Z approximated by
    eta/2)::

        theta_{t+1} = argmin E_{y ~ pi_t} [ ( log pi_theta(y|x)/pi_t(y|x) - eta (P_hat(y > pi_t|x) - 1/2) )^2 ]

    Per prompt the expectation over y ~ pi_t is the mean over its K samples:
    ``L_b = (1/K) sum_k (h_bk - eta (p_bk - 1/2))^2``, h = logps - ref_logps.

    Parameters
    ----------
    scores : ``logps`` (B, K) under pi_theta; ``ref_logps`` (B, K) under the *sampling*
        policy pi_t (the previous iterate, not a fixed reference); ``rewards`` (B, K) the
        estimated win probabilities P_hat(y_k > pi_t | x) in [0, 1]
        (:func:`preflearn.online.judges.win_rates` of the judge's (K, K) matrix).
    eta : float
        Step size of the multiplicative-weights update; 1e3 as in the paper's experiments
        (their ``beta = 1e-3`` = 1/eta), like ``sppo_hard``. For small models or few steps a
        much smaller eta (e.g. 1-10) keeps the targets reachable.

    Returns rewards = the targets' implicit rewards h / eta (B, K). ``sppo_hard`` (offline, in
    ``preflearn.losses.pairwise``) is the K = 2 case with hard P_hat in {0, 1}, summed over the
    two candidates instead of averaged.
    """
    p = scores.rewards
    if bool(((p < 0) | (p > 1)).any()):
        raise ConfigError("loss 'sppo' reads Scores.rewards as win probabilities P_hat(y > pi_t): they must lie in [0, 1]")
    h = scores.logps - scores.ref_logps  # (B, K)
    target = eta * (p - 0.5)
    per_example = ((h - target) ** 2).mean(1)
    return _finish(per_example, scores, h / eta, target=target.abs())


# ----------------------------------------------------------------------------- INPO
@register(
    "inpo",
    family="online",
    k=2,
    reference="required",
    defaults={"eta": 10.0, "tau": 0.01},
    paper="Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via No-Regret Learning",
    arxiv="2407.00617",
    aux=("previous_logps",),
    aux_shapes={"previous_logps": "B,2:logp"},
)
def inpo(scores: Scores, eta: float = 10.0, tau: float = 0.01) -> LossOutput:
    """INPO: square loss of a mixed log-ratio to eta/2 on pairs sampled from pi_t and ordered by the judge.

    Zhang et al. 2024, "Iterative Nash Policy Optimization: Aligning LLMs with General
    Preferences via No-Regret Learning", arXiv:2407.00617, the per-round loss (Algorithm 1)::

        h_t(y_w, y_l) = log pi(y_w)/pi(y_l) - eta tau log pi_ref(y_w)/pi_ref(y_l) - (1 - eta tau) log pi_t(y_w)/pi_t(y_l)
        L = ( h_t(y_w, y_l) - eta/2 )^2

    Its population minimiser is the online-mirror-descent step
    pi_{t+1} ∝ pi_t^(1 - eta tau) pi_ref^(eta tau) exp(eta P(y > pi_t)) (the tabular
    ``preflearn.online.game.inpo_step``; tests/online/test_objectives.py checks the two agree).

    Parameters
    ----------
    scores : ``logps``/``ref_logps`` (B, 2) of (chosen, rejected) under pi_theta / pi_ref;
        ``aux["previous_logps"]`` (B, 2) under pi_t, the policy that sampled the pair (fixed).
    eta, tau : step size and KL strength; eta tau must lie in [0, 1]. eta = 10 (the target margin
        eta/2 = 5 = IPO's 1/(2 tau) at tau 0.1) and tau = 0.01 (eta tau = 0.1) are our choice.
    """
    w = eta * tau
    if not 0.0 <= w <= 1.0:
        raise ConfigError(f"loss 'inpo' needs 0 <= eta * tau <= 1, got eta={eta}, tau={tau}")
    prev = scores.aux["previous_logps"]
    d = scores.logps[:, 0] - scores.logps[:, 1]
    d_ref = scores.ref_logps[:, 0] - scores.ref_logps[:, 1]
    d_prev = prev[:, 0] - prev[:, 1]
    h = d - w * d_ref - (1.0 - w) * d_prev
    per_example = (h - eta / 2) ** 2
    implicit = scores.logps - w * scores.ref_logps - (1.0 - w) * prev
    return _finish(per_example, scores, implicit, h=h)


# ----------------------------------------------------------------------------- XPO
@register(
    "xpo",
    family="online",
    k=2,
    reference="required",
    defaults={"beta": 0.1, "alpha": 1e-5},
    paper="Exploratory Preference Optimization: Harnessing Implicit Q*-Approximation for Sample-Efficient RLHF",
    arxiv="2405.21046",
    aux=("explore_logps",),
    aux_shapes={"explore_logps": "B,1:policy"},
)
def xpo(scores: Scores, beta: float = 0.1, alpha: float = 1e-5) -> LossOutput:
    """XPO: the DPO loss plus an exploration bonus alpha * log pi(y_tilde|x) on a reference sample.

    Xie et al. 2024, "Exploratory Preference Optimization: Harnessing Implicit
    Q*-Approximation for Sample-Efficient RLHF", arXiv:2405.21046, Algorithm 1 (the policy
    update, line "pi^(t+1) <- argmin ...")::

        L = alpha * log pi(y_tilde|x) - log sigmoid( beta [ log pi(y_w|x)/pi_ref(y_w|x) - log pi(y_l|x)/pi_ref(y_l|x) ] )

    where y_tilde ~ pi_tilde (default pi_ref) is the *exploration* response of the round, i.e.
    the pair is (y ~ pi_t, y_tilde ~ pi_ref) ordered by the judge. Minimising alpha log pi(y_tilde)
    lowers the probability of what the reference would say, which pushes the policy to explore
    outside the reference's support (the "optimism" bonus). alpha = 0 is online DPO.

    Parameters
    ----------
    scores : ``logps``/``ref_logps`` (B, 2) of (chosen, rejected); ``aux["explore_logps"]``
        (B, 1) log pi_theta(y_tilde|x) of the exploration response (differentiable).
    beta : float
        DPO's KL strength (0.1, DPO's default).
    alpha : float
        Exploration coefficient. The paper tunes it; 1e-5 is TRL's ``XPOConfig`` default
        (our choice, marked).
    """
    hw = scores.logps[:, 0] - scores.ref_logps[:, 0]
    hl = scores.logps[:, 1] - scores.ref_logps[:, 1]
    explore = scores.aux["explore_logps"][:, 0]
    dpo = -F.logsigmoid(beta * (hw - hl))
    per_example = dpo + alpha * explore
    return _finish(per_example, scores, beta * (scores.logps - scores.ref_logps), dpo=dpo, explore_logps=explore)


# ----------------------------------------------------------------------------- RLOO
def leave_one_out_advantages(rewards: Tensor) -> Tensor:
    """(B, K) A_k = R_k - mean_{j != k} R_j (RLOO's baseline; Kool et al. 2019, Ahmadian et al. 2024 Eq. 6).

    Equals K/(K-1) (R_k - mean_j R_j). Needs K >= 2.
    """
    K = rewards.shape[-1]
    if K < 2:
        raise ConfigError("the leave-one-out baseline needs K >= 2 samples per prompt")
    return rewards - (rewards.sum(-1, keepdim=True) - rewards) / (K - 1)


_RLOO_PAPER = "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs"


@register(
    "rloo",
    family="online",
    k="any",
    reference="optional",
    needs=("rewards",),
    defaults={"beta": 0.05},
    paper=_RLOO_PAPER,
    arxiv="2402.14740",
    exempt={
        "equality": "a policy-gradient surrogate: its value (-A log pi) carries no meaning, only its gradient",
        "gradcheck": "the KL-shaped reward uses sg(log pi) (a reward, not a path for gradients), which finite "
                     "differences do see; tests/online/test_objectives.py gradchecks it without the KL term",
    },
)
def rloo(scores: Scores, beta: float = 0.05) -> LossOutput:
    """RLOO: REINFORCE with the leave-one-out baseline over the K samples of a prompt.

    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
    Learning from Human Feedback in LLMs", arXiv:2402.14740, Eq. 6 (the RLOO estimator) with the
    KL-shaped sequence reward of Eq. 2::

        R(y_k, x) = r(x, y_k) - beta * (log pi(y_k|x) - log pi_ref(y_k|x))        (sg: no gradient)
        grad = (1/K) sum_k [ R(y_k) - 1/(K-1) sum_{j != k} R(y_j) ] grad log pi(y_k|x)

    implemented as the surrogate ``L_b = -(1/K) sum_k sg(A_bk) * logps_bk`` whose gradient is
    minus the estimator. Whole responses are single actions (the paper's bandit view).

    Parameters
    ----------
    scores : ``logps`` (B, K) of K samples of the same prompt drawn from the current policy;
        ``rewards`` (B, K) the judge's scores; ``ref_logps`` (B, K) optional: with it and
        beta > 0 the KL penalty shapes the reward.
    beta : float
        KL coefficient; 0.05 is TRL's ``RLOOConfig`` default (the paper sweeps it; our choice).

    Returns rewards = the shaped rewards R (B, K); metric ``advantage_abs`` = mean |A|.
    """
    _need_k(scores, "rloo")
    R = scores.rewards.to(scores.logps.dtype)
    if scores.ref_logps is not None and beta:
        R = R - beta * (scores.logps.detach() - scores.ref_logps)
    A = leave_one_out_advantages(R).detach()
    per_example = -(A * scores.logps).mean(1)
    return _finish(per_example, scores, R, advantage_abs=A.abs())


# ----------------------------------------------------------------------------- GRPO
def group_advantages(rewards: Tensor, eps: float = 1e-4, scale: bool = True) -> Tensor:
    """(B, K) GRPO's outcome advantages A_k = (r_k - mean(r)) / (std(r) + eps) over each group.

    Shao et al. 2024 (DeepSeekMath), arXiv:2402.03300, Section 4.1.2 ("outcome supervision").
    std is the unbiased sample standard deviation (as TRL and OpenRLHF compute it; the paper
    writes std(r)); eps = 1e-4 keeps all-equal groups at A = 0 (our choice). ``scale=False``
    keeps only the mean baseline (Dr. GRPO's variant, arXiv:2503.20783).
    """
    if rewards.shape[-1] < 2:
        raise ConfigError("group-normalised advantages need K >= 2 samples per prompt")
    centred = rewards - rewards.mean(-1, keepdim=True)
    if not scale:
        return centred
    return centred / (rewards.std(-1, keepdim=True) + eps)


def k3_kl(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token KL estimate pi_ref/pi - log(pi_ref/pi) - 1 >= 0 (DeepSeekMath Eq. 4; Schulman's k3).

    Unbiased for KL(pi || pi_ref) when the tokens are sampled from pi; zero where the two agree.
    """
    d = ref_logps - logps
    return torch.exp(d) - d - 1.0


@register(
    "grpo",
    family="online",
    k="any",
    reference="required",
    needs=("token_logps", "rewards"),
    defaults={"beta": 0.04, "epsilon": 0.2, "scale_rewards": True},
    paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
    arxiv="2402.03300",
    at_equality=0.0,
    exempt={
        "extreme": "the k3 KL term exp(log pi_ref - log pi) is exponential in the log-ratio by definition (Eq. 4)",
        "gradcheck": "without aux old_token_logps the ratio is exp(logp - sg(logp)) = 1 at every input, so finite "
                     "differences see a constant while the gradient is grad logp by design; tests/online/"
                     "test_objectives.py gradchecks it with fixed old log-probs",
    },
)
def grpo(scores: Scores, beta: float = 0.04, epsilon: float = 0.2, scale_rewards: bool = True) -> LossOutput:
    """GRPO: clipped-ratio surrogate with group-normalised advantages and a k3 KL penalty.

    Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
    Language Models", arXiv:2402.03300, Eq. 3 (objective) and Eq. 4 (KL estimator)::

        J = E (1/G) sum_i (1/|o_i|) sum_t { min( rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i ) - beta D_KL,it }
        rho_it = pi_theta(o_it | q, o_i,<t) / pi_old(o_it | q, o_i,<t)
        D_KL,it = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1          (per token)
        A_i = (r_i - mean(r)) / std(r)                                 (outcome supervision)

    The loss is -J: per sample the masked token mean, then the mean over the G = K samples.

    Parameters
    ----------
    scores : ``token_logps``/``ref_token_logps``/``mask`` (B, K, T), ``rewards`` (B, K).
        Optional ``aux["old_token_logps"]`` (B, K, T): log pi_old of the sampling policy; absent,
        pi_old = sg(pi_theta) (one update per batch of samples, the usual on-policy case, where
        rho = 1 and only its gradient matters).
    beta : float
        KL coefficient, 0.04 (the paper's RL setup, Section 4.2).
    epsilon : float
        Ratio clip 0.2 (PPO's default, Schulman et al. 2017; the paper does not list it).
    scale_rewards : bool
        Divide by the group std (True, the paper); False = mean baseline only.
    """
    _need_k(scores, "grpo")
    tok, mask = scores.token_logps, scores.mask
    old = scores.aux.get("old_token_logps")
    old = tok.detach() if old is None else old
    A = group_advantages(scores.rewards.to(tok.dtype), scale=scale_rewards).detach()[..., None]  # (B, K, 1)
    ratio = torch.exp(tok - old)
    surrogate = torch.minimum(ratio * A, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * A)
    kl = k3_kl(tok, scores.ref_token_logps)
    per_token = -(surrogate - beta * kl)
    n = mask.sum(-1).clamp_min(1)
    per_sample = (per_token * mask).sum(-1) / n  # (B, K)
    per_example = per_sample.mean(1)
    clipped = ((ratio - 1).abs() > epsilon).to(tok.dtype)
    return _finish(
        per_example, scores, A[..., 0].expand_as(per_sample),
        kl=(kl * mask).sum(-1) / n, clip_fraction=(clipped * mask).sum(-1) / n,
    )


# ----------------------------------------------------------------------------- P3O
_P3O_PAPER = "Pairwise Proximal Policy Optimization: Harnessing Relative Feedback for LLM Alignment"


@register(
    "p3o",
    family="online",
    k=2,
    reference="optional",
    needs=("rewards",),
    defaults={"beta": 0.05, "epsilon": 0.2, "weight_clip": 5.0, "clip": "joint"},
    paper=_P3O_PAPER,
    arxiv="2310.00212",
    exempt={
        "gradcheck": "the importance weight w = clamp(rho_1 rho_2) is a stop-gradient factor by design (finite "
                     "differences see it); tests/online/test_objectives.py checks the gradient against the "
                     "hand-derived -Q w / 2 per unclipped term instead",
    },
)
def p3o(scores: Scores, beta: float = 0.05, epsilon: float = 0.2, weight_clip: float = 5.0,
        clip: str = "joint") -> LossOutput:
    """P3O: the pairwise (relative) policy gradient of two samples of a prompt, with PPO-style clipping.

    Wu et al. 2023, "Pairwise Proximal Policy Optimization: Harnessing Relative Feedback for LLM
    Alignment", arXiv:2310.00212, Section 4. The pairwise policy gradient (PPG) of two responses
    y1, y2 ~ pi_theta(.|x) replaces PPO's absolute reward by the reward *difference*::

        grad = E_{y1, y2 ~ pi} [ (r(y1|x) - r(y2|x)) * grad( log pi(y1|x) - log pi(y2|x) ) / 2 ]

    so adding any per-prompt shift delta(x) to the reward changes nothing (the invariance to
    equivalent rewards that motivates the method; tests/online/test_objectives.py checks it).
    Samples come from pi_old (the round's sampling policy) and are reused for several updates,
    so the paper adds importance sampling and PPO-style clipping, in two variants: V1 "separate"
    (each response's log-prob is clipped on its own) and V2 "joint" (the pair's log-ratio
    difference is clipped). The equation numbers could not be read on this offline machine; the
    form below was settled against a trlx-based P3O trainer found by code search (its
    ``p3o_loss``; read, not copied) and the BAIR blog post of the paper. With
    h_i = log pi(y_i|x) - log pi_ref(y_i|x)::

        Q   = sg[ (r(y1) - r(y2)) - beta (h_1 - h_2) ]                    (KL-regularised reward gap)
        w   = sg[ clip( rho_1 rho_2, 1/weight_clip, weight_clip ) ],      rho_i = pi(y_i|x) / pi_old(y_i|x)
        joint (V2):    L = 1/2 max( -Q w d, -Q w clip(d, d_old - eps, d_old + eps) ),   d = log pi(y1) - log pi(y2)
        separate (V1): L = 1/2 [ max( -Q w l_1, -Q w clip(l_1, l_1^old +- eps) ) + max( Q w l_2, Q w clip(l_2, l_2^old +- eps) ) ]

    with l_i = log pi(y_i|x) (the same pessimistic max of the unclipped and the clipped loss as
    PPO, but the surrogate is linear in the log-probs and the pair's joint ratio enters as a
    clipped, stop-gradient weight). Both give the PPG at theta = theta_old (w = 1, nothing clipped).
    The trainer we read clips per *token* in its separate mode; ``Scores`` here carries sequence
    log-probs, so "separate" clips each response's sequence log-prob (our adaptation).

    Parameters
    ----------
    scores : ``logps`` (B, 2) of two samples of the same prompt under pi_theta; ``rewards``
        (B, 2) the judge's scores; ``ref_logps`` (B, 2) optional (with beta > 0: the KL term of Q);
        optional ``aux["old_logps"]`` (B, 2) log pi_old (absent: sg(logps), the on-policy case).
    beta : float
        KL coefficient; 0.05 as our ``rloo`` (the paper sweeps the KL-reward frontier; our choice).
    epsilon : float
        Clip range of the log-prob (difference) around its pi_old value; 0.2 (PPO's; our choice).
    weight_clip : float
        The joint importance weight is clipped to [1/weight_clip, weight_clip]; 5 (our choice).
    clip : "joint" | "separate"
        V2 (the default here) or V1.

    Returns rewards = the KL-shaped rewards r - beta h (B, 2); metrics ``clip_fraction``,
    ``importance_weight`` and ``reward_gap`` |Q|.
    """
    if clip not in ("separate", "joint"):
        raise ConfigError(f"loss 'p3o': clip must be 'separate' or 'joint', got {clip!r}")
    if weight_clip < 1:
        raise ConfigError(f"loss 'p3o': weight_clip must be >= 1, got {weight_clip}")
    _need_k(scores, "p3o")
    lp = scores.logps
    old = scores.aux.get("old_logps")
    old = lp.detach() if old is None else old.to(lp.dtype).detach()
    R = scores.rewards.to(lp.dtype)
    if scores.ref_logps is not None and beta:
        R = R - beta * (lp.detach() - scores.ref_logps)
    q = (R[:, 0] - R[:, 1]).detach()  # (B,): a per-prompt shift of r cancels here
    w = torch.exp((lp - old).sum(1)).detach().clamp(1.0 / weight_clip, weight_clip)
    qw = q * w

    def pessimistic(coef: Tensor, x: Tensor, x_old: Tensor) -> tuple[Tensor, Tensor]:
        plain = coef * x
        clipped = coef * torch.minimum(torch.maximum(x, x_old - epsilon), x_old + epsilon)
        return torch.maximum(plain, clipped), (clipped > plain).to(lp.dtype)

    if clip == "joint":
        per_example, frac = pessimistic(-qw, lp[:, 0] - lp[:, 1], old[:, 0] - old[:, 1])
        per_example = per_example / 2
    else:
        l1, c1 = pessimistic(-qw, lp[:, 0], old[:, 0])
        l2, c2 = pessimistic(qw, lp[:, 1], old[:, 1])
        per_example, frac = (l1 + l2) / 2, (c1 + c2) / 2
    return _finish(per_example, scores, R, clip_fraction=frac, importance_weight=w, reward_gap=q.abs())
