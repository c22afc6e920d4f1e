"""Causal-LM scorer: summed completion log-probabilities log pi(y_k | x) for K candidates per prompt.

For a prompt x and completion y = (y_1..y_T) the scorer returns

    log pi(y | x) = sum_{t=1..T} log softmax(W h_{t-1})[y_t]                       (1)

where h_{t-1} is the final hidden state (after the last norm) at the position before y_t and W the
output embedding (lm_head). This is the sequence log-likelihood every DPO-family loss consumes
(Rafailov et al., "Direct Preference Optimization", arXiv:2305.18290, Eq. 7 uses
log pi(y|x) / pi_ref(y|x) of whole responses).

Efficiency, following DESIGN.md's performance principles:

* **Prefix sharing.** With a :func:`preflearn.data.collate.collate_shared` batch the prompt is
  run once for its K completions, through a custom 4D block attention mask (additive float:
  0 = attend, dtype-min = blocked) and position ids that restart at len(prompt) for each
  completion. transformers (>= 4.48, 5.x) passes a 4D mask through unchanged to the ``eager``
  and ``sdpa`` attention implementations; the equivalence with separate forwards is tested to
  1e-5. ``flash_attention_2`` cannot take such a mask: use ``collate_padded`` there.
* **Only completion tokens meet the vocabulary.** The backbone (``model.model``) gives hidden
  states; only the N rows that predict completion tokens are gathered (N x H) and projected.
* **Chunked log-softmax.** Eq. (1) is evaluated ``chunk_size`` targets at a time:
  ``logits = lm_head(h_chunk)`` (chunk x V, float32), ``logsumexp``, ``gather``. Backward
  recomputes each chunk's logits instead of storing an (N x V) tensor: for a plain linear head a
  fused autograd function keeps only h and the N log-normalisers and forms the logit gradient
  g * (onehot(y) - softmax) in place, so one (chunk x V) block is the peak extra memory; other
  heads (LoRA on the head) use ``torch.utils.checkpoint`` per chunk.

Works unchanged on peft-wrapped models (LoRA layers live inside the backbone), including the
adapter-disabled base as a reference (``with peft_model.disable_adapter(): score_batch(...)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError

__all__ = [
    "score_batch",
    "completion_hidden",
    "target_logps",
    "split_model",
    "block_mask_to_additive",
    "CausalLMScorer",
    "to_scores",
]

DEFAULT_CHUNK = 1024


def split_model(model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(backbone, lm_head) of a causal LM, unwrapping a peft ``PeftModel`` first.

    The backbone returns final (normed) hidden states; ``lm_head`` maps them to logits.
    """
    m = model
    if hasattr(m, "get_base_model") and callable(m.get_base_model):  # peft.PeftModel
        m = m.get_base_model()
    head = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
    prefix = getattr(m, "base_model_prefix", None)
    backbone = getattr(m, prefix, None) if prefix else None
    if head is None or backbone is None or backbone is m:
        raise ConfigError(
            f"cannot find the backbone and lm_head of {type(m).__name__}; "
            "expected a transformers *ForCausalLM model (optionally wrapped by peft)"
        )
    return backbone, head


def block_mask_to_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(R, L, L) bool (True = attend) -> (R, 1, L, L) additive float mask (0 or dtype-min)."""
    neg = torch.finfo(dtype).min
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    out.masked_fill_(~mask, neg)
    return out[:, None]


def _chunk_logps(h: Tensor, targets: Tensor, weight_module: torch.nn.Module) -> Tensor:
    logits = weight_module(h).float()  # (n, V) float32
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class _LinearTargetLogProb(torch.autograd.Function):
    """log softmax(h W^T + b)[y] for a plain linear head, chunked, recomputing logits in backward.

    Forward keeps only h, the targets and the per-row log-normaliser lse (N floats); backward
    recomputes each chunk's logits and turns them, in place, into the logit gradient
    g * (onehot(y) - softmax) = g * (onehot(y) - exp(logits - lse)). So at most one
    (chunk, V) float32 block is alive at a time, in forward and in backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):  # noqa: D401
        n = hidden.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk_size):
            logits = torch.nn.functional.linear(hidden[s : s + chunk_size], weight, bias).float()  # (c, V)
            t = targets[s : s + chunk_size]
            lse[s : s + chunk_size] = torch.logsumexp(logits, dim=-1)
            out[s : s + chunk_size] = logits.gather(-1, t[:, None]).squeeze(-1) - lse[s : s + chunk_size]
            del logits
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = (
            torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
            if need_b and bias is not None
            else None
        )
        g_all = grad_out.float()
        c = ctx.chunk_size
        for s in range(0, hidden.shape[0], c):
            h = hidden[s : s + c]
            g = g_all[s : s + c, None]  # (c, 1)
            d = torch.nn.functional.linear(h, weight, bias).float()  # (c, V) logits
            d.sub_(lse[s : s + c, None]).exp_().mul_(-g)  # -g * softmax
            d.scatter_add_(1, targets[s : s + c, None], g)  # + g * onehot(y)
            if need_h:
                grad_h[s : s + c] = (d.to(weight.dtype) @ weight).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(d.t(), h.float())
            if grad_b is not None:
                grad_b.add_(d.sum(0))
            del d
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None


def target_logps(
    hidden: Tensor,
    lm_head: torch.nn.Module,
    targets: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    checkpoint_chunks: bool | None = None,
) -> Tensor:
    """log softmax(lm_head(hidden))[targets] computed ``chunk_size`` rows at a time.

    Parameters
    ----------
    hidden: (N, H) final hidden states, one per target token.
    lm_head: the output projection (an ``nn.Linear``, or a peft-wrapped one).
    targets: (N,) long token ids.
    chunk_size: rows per chunk; the (chunk, V) float32 logits block is the largest temporary.
    checkpoint_chunks: recompute each chunk's logits in backward instead of storing them
        (default None = True). For a plain ``nn.Linear`` head this uses a fused autograd function
        (one (chunk, V) buffer, gradients formed in place); for other heads (e.g. LoRA on the
        head) ``torch.utils.checkpoint`` per chunk. False keeps every chunk's logits for backward
        (more memory, for comparison).

    Returns
    -------
    (N,) float32 log-probabilities, differentiable w.r.t. ``hidden`` and the head's weights.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    n = hidden.shape[0]
    if n == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in lm_head.parameters())
    )
    recompute = checkpoint_chunks is None or checkpoint_chunks
    if type(lm_head) is torch.nn.Linear and (recompute or not needs_grad):
        return _LinearTargetLogProb.apply(hidden, lm_head.weight, lm_head.bias, targets, chunk_size)
    parts = []
    for s in range(0, n, chunk_size):
        h, t = hidden[s : s + chunk_size], targets[s : s + chunk_size]
        if recompute and needs_grad:
            parts.append(checkpoint(_chunk_logps, h, t, lm_head, use_reentrant=False))
        else:
            parts.append(_chunk_logps(h, t, lm_head))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def completion_hidden(model: Any, batch: Any) -> tuple[Tensor, Any, Any]:
    """One backbone forward over a :class:`~preflearn.data.collate.ScoringBatch` (moved to the
    model's device): the (N, H) final hidden states that predict each of the N completion tokens,
    the output head, and the moved batch. The first half of :func:`score_batch`; loops that need
    more than log-probs from the same forward (values, a second model's logits) start here."""
    backbone, head = split_model(model)
    param = next(backbone.parameters())
    batch = batch.to(param.device)
    if batch.layout == "shared":
        impl = getattr(getattr(backbone, "config", None), "_attn_implementation", "eager")
        if impl not in ("eager", "sdpa"):
            raise ConfigError(
                f"prefix-shared scoring needs a custom attention mask, which attn_implementation={impl!r} "
                "does not take; load the model with attn_implementation='sdpa' or collate with collate_padded"
            )
        attn = block_mask_to_additive(batch.attention_mask, param.dtype)  # (R, 1, L, L)
    elif batch.layout == "padded":
        attn = batch.attention_mask  # (R, L)
    else:
        raise ConfigError(f"unknown batch layout {batch.layout!r}; expected 'shared' or 'padded'")
    out = backbone(
        input_ids=batch.input_ids,
        attention_mask=attn,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (R, L, H)
    return hidden[batch.target_rows, batch.target_cols], head, batch


def score_batch(
    model: Any,
    batch: Any,
    *,
    token_level: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    checkpoint_chunks: bool | None = None,
) -> dict[str, Tensor]:
    """Score the K candidates of each example in ``batch`` (a :class:`~preflearn.data.collate.ScoringBatch`).

    Returns a dict with the fields of :class:`preflearn.losses.Scores` a scorer provides:

    * ``logps`` (B, K) float32: Eq. (1), summed over completion tokens;
    * ``lengths`` (B, K) float32: completion lengths in tokens;
    * when ``token_level``: ``token_logps`` (B, K, T) per-token log-probs (0 on padding) and
      ``mask`` (B, K, T) float, 1.0 on completion tokens.

    Differentiable (call under ``torch.no_grad()`` for a reference pass). The batch is moved to
    the model's device.
    """
    h, head, batch = completion_hidden(model, batch)  # (N, H)
    device = h.device
    tok = target_logps(h, head, batch.target_ids, chunk_size=chunk_size, checkpoint_chunks=checkpoint_chunks)
    b, k = batch.num_examples, batch.num_candidates
    logps = tok.new_zeros(b * k).index_add(0, batch.target_cand, tok).view(b, k)
    result = {"logps": logps, "lengths": batch.lengths.to(device=device, dtype=torch.float32)}
    if token_level:
        t = batch.max_completion_length
        idx = (batch.target_cand, batch.target_step)
        result["token_logps"] = tok.new_zeros(b * k, t).index_put(idx, tok).view(b, k, t)
        ones = torch.ones_like(tok, requires_grad=False).detach()
        result["mask"] = ones.new_zeros(b * k, t).index_put(idx, ones).view(b, k, t)
    return result


def to_scores(batch: Any, policy: dict[str, Tensor], reference: dict[str, Tensor] | None = None):
    """Build :class:`preflearn.losses.Scores` from a policy and an optional reference ``score_batch`` call.

    Labels, 0-based ranks and margins come from the batch.
    """
    from ..losses.base import Scores

    ref = reference or {}
    device = policy["logps"].device

    def mv(x: Any) -> Any:
        return None if x is None else x.to(device)

    return Scores(
        logps=policy["logps"],
        ref_logps=ref.get("logps"),
        lengths=policy["lengths"],
        token_logps=policy.get("token_logps"),
        ref_token_logps=ref.get("token_logps"),
        mask=policy.get("mask"),
        labels=mv(batch.labels),
        ranks=mv(batch.ranks),
        margins=mv(batch.margins),
    )


@dataclass
class CausalLMScorer:
    """A causal LM plus scoring settings; ``scorer(batch)`` = :func:`score_batch`.

    ``gradient_checkpointing`` (default False: on CPU it costs ~30% more time for memory that
    135M-parameter models do not need) enables the backbone's activation checkpointing.
    """

    model: Any
    chunk_size: int = DEFAULT_CHUNK
    checkpoint_chunks: bool | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.gradient_checkpointing:
            target = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def __call__(self, batch: Any, *, token_level: bool = False) -> dict[str, Tensor]:
        return score_batch(
            self.model,
            batch,
            token_level=token_level,
            chunk_size=self.chunk_size,
            checkpoint_chunks=self.checkpoint_chunks,
        )

    @torch.no_grad()
    def reference(self, batch: Any, *, token_level: bool = False) -> dict[str, Tensor]:
        """The same scores without gradients (for a frozen reference model)."""
        return self(batch, token_level=token_level)
