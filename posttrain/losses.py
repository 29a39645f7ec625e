"""Pure loss functions for post-training, registered by name in `LOSSES` and composed by `combine`.

Shapes: B batch, T sequence length, V vocabulary. `labels[b, t]` is the token at position t, or
`ignore_index` where no loss is wanted (prompt, image and padding tokens). Logits at position t predict
the token at t + 1, so every function shifts by one: the logits at t are scored against `labels[:, t + 1]`.
A "response token" is a position t + 1 whose label is not `ignore_index`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _shift(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,T,V), (B,T) -> logits (B,T-1,V) aligned with targets (B,T-1) and their validity mask (B,T-1)."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    shifted = logits[:, :-1, :]
    targets = labels[:, 1:]
    return shifted, targets, targets != ignore_index


def _zero(logits: torch.Tensor) -> torch.Tensor:
    # A zero that keeps the graph connected, so a batch without response tokens never yields NaN.
    return logits.sum() * 0.0


def next_token_ce(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Next-token cross-entropy, mean over all response tokens of the batch.

    logits: (B, T, V); labels: (B, T) -> scalar. `logits[:, t]` is scored against `labels[:, t + 1]`;
    positions whose target is `ignore_index` are excluded. Returns 0 (with a graph) when none is valid.
    """
    shifted, targets, valid = _shift(logits, labels, ignore_index)
    if not bool(valid.any()):
        return _zero(logits)
    return F.cross_entropy(shifted[valid].float(), targets[valid])


def rda_kl(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    direction: Literal["forward", "reverse"] = "forward",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Response distribution alignment (VITask, arXiv 2410.06456: L_RDA = D_KL(p_E || p), the exemplar-prompted
    distribution first), mean over response tokens, temperature 1.

    p = softmax(logits): the plain model p(y | image, instruction), the student that gets the gradient.
    q = softmax(teacher_logits.detach()): the exemplar-prompted model p(y | image, exemplar, instruction),
    the teacher; it is detached, so no gradient reaches the teacher pass (nor the connector through it).
    Per response position, over the full vocabulary:
      "forward" (the paper's; distillation from the exemplar-prompted model): KL(q || p) = sum_v q_v (log q_v - log p_v)
      "reverse": KL(p || q) = sum_v p_v (log p_v - log q_v).

    logits, teacher_logits: (B, T, V) over the same token sequence; labels: (B, T) -> scalar.
    """
    if logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(logits.shape)} and teacher {tuple(teacher_logits.shape)} shapes differ")
    if direction not in ("forward", "reverse"):
        raise ValueError(f"unknown RDA direction {direction!r}")
    shifted, _, valid = _shift(logits, labels, ignore_index)
    if not bool(valid.any()):
        return _zero(logits)
    log_p = F.log_softmax(shifted[valid].float(), dim=-1)
    log_q = F.log_softmax(teacher_logits.detach()[:, :-1, :][valid].float(), dim=-1)
    if direction == "forward":
        kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    else:
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl.mean()


@dataclass(frozen=True)
class CRTLoss:
    """Result of `crt`: the loss plus the bookkeeping that shows no sample vanished unnoticed."""

    loss: torch.Tensor  # scalar; 0 (with a graph) when no sample contributes
    n_used: int  # samples that contributed
    n_without_negative: int  # samples masked out because no negative exists for them
    n_without_tokens: int  # samples with a negative but no response token (e.g. truncated away)
    n_tokens: int  # response tokens that contributed; n_used + n_without_* == B always


def crt(
    logits: torch.Tensor,
    neg_logits: torch.Tensor,
    labels: torch.Tensor,
    has_negative: torch.Tensor,
    *,
    form: Literal["vocab", "binary"] = "vocab",
    score: Literal["logit", "logprob"] = "logit",
    ignore_index: int = IGNORE_INDEX,
) -> CRTLoss:
    """Contrastive response tuning: prefer the response under its own image over a negative image
    (same instruction and response, the image of another sample with a different answer).

    With z+ and z- the logits (V,) at a response position under the own and the negative image, and y_t the
    target token:
      form="vocab" (the paper's L_CRT, VITask arXiv 2410.06456): l_t = -log softmax_v(z+ - z-)[y_t],
        a softmax over the whole vocabulary of the logit difference. `score` does not matter: log-softmax
        differs from the logit by a per-position constant, which this softmax cancels.
      form="binary": l_t = -log softmax([s+, s-])[0] = softplus(s- - s+) with s the target token's raw logit
        (`score="logit"`) or log-probability (`score="logprob"`).
    The loss is the mean of l_t over the valid tokens of each sample, then the mean over samples with a
    negative. Samples without a negative are masked out and counted.

    logits, neg_logits: (B, T, V), aligned so that position t of both predicts labels[:, t + 1];
    labels: (B, T); has_negative: (B,) bool.
    """
    if logits.shape != neg_logits.shape:
        raise ValueError(f"positive {tuple(logits.shape)} and negative {tuple(neg_logits.shape)} shapes differ")
    if has_negative.shape != labels.shape[:1]:
        raise ValueError(f"has_negative {tuple(has_negative.shape)} must be (B,) with B={labels.shape[0]}")
    if form not in ("vocab", "binary"):
        raise ValueError(f"unknown CRT form {form!r}")
    has_negative = has_negative.to(torch.bool)
    shifted, targets, valid = _shift(logits, labels, ignore_index)
    neg_shifted = neg_logits[:, :-1, :]
    safe_targets = targets.masked_fill(~valid, 0).unsqueeze(-1)
    if form == "vocab":
        diff = F.log_softmax((shifted.float() - neg_shifted.float()), dim=-1)
        per_token = -diff.gather(-1, safe_targets).squeeze(-1)
    else:
        if score == "logprob":
            shifted = F.log_softmax(shifted.float(), dim=-1)
            neg_shifted = F.log_softmax(neg_shifted.float(), dim=-1)
        elif score != "logit":
            raise ValueError(f"unknown CRT score {score!r}")
        pos = shifted.gather(-1, safe_targets).squeeze(-1).float()  # (B, T-1)
        neg = neg_shifted.gather(-1, safe_targets).squeeze(-1).float()
        per_token = F.softplus(neg - pos)
    use = valid & has_negative.unsqueeze(-1)
    n_tok = use.sum(-1)  # (B,)
    contributing = n_tok > 0
    n_used = int(contributing.sum())
    n_without = int((~has_negative).sum())
    counts = dict(n_used=n_used, n_without_negative=n_without, n_without_tokens=labels.shape[0] - n_used - n_without)
    if n_used == 0:
        return CRTLoss(_zero(logits) + _zero(neg_logits), n_tokens=0, **counts)
    per_sample = (per_token * use).sum(-1)[contributing] / n_tok[contributing]
    return CRTLoss(per_sample.mean(), n_tokens=int(n_tok.sum()), **counts)


LOSSES: dict[str, Callable[..., torch.Tensor | CRTLoss]] = {
    "next_token_ce": next_token_ce,
    "rda_kl": rda_kl,
    "crt": crt,
}


def combine(
    components: Mapping[str, torch.Tensor], weights: Mapping[str, float]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of named scalar losses: total = sum_k weights[k] * components[k].

    Every weight must name a component (a typo must not silently drop a term). Components without a
    weight are logged but not added. Returns (total, {name: value, ..., "total": value}).
    """
    missing = sorted(set(weights) - set(components))
    if missing:
        raise KeyError(f"weights name components that were not computed: {missing}")
    if not weights:
        raise ValueError("combine needs at least one weighted component")
    total = sum(float(weights[k]) * components[k] for k in weights)
    logged = {k: float(v.detach()) for k, v in components.items()}
    logged["total"] = float(total.detach())
    return total, logged
