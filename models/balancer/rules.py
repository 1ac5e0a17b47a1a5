"""Pure rules that combine two task gradients on the shared feature into one.

Every rule works on a pair ``g1`` (detection), ``g2`` (prediction) of the same shape, typically
dL/dZ with Z: [B, C, H, W]. Dot products and squared norms are taken per *group*:

- ``sample``: over all dims but the first -> moments of shape [B, 1, 1, 1];
- ``cell``: over dim 1 (channels) -> [B, 1, H, W];
- ``batch``: over everything -> [1, 1, 1, 1], summed across ranks by the injected ``all_reduce``.

Each rule reduces to per-group weights ``w1, w2`` with result ``w1 * g1 + w2 * g2``; the weights
are ratios of moments, so every rule is degree-1 homogeneous (a loss scale commutes with it).
Everything is computed in fp32 (float64 stays float64) and the result is cast back to the dtype of ``g1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

AllReduce = Callable[[Tensor], Tensor]
"""Sums a tensor across data-parallel ranks and returns the sum (identity in one process)."""


@dataclass(frozen=True)
class PairMoments:
    """Per-group moments of a gradient pair, fp32, broadcastable against the gradients."""

    dot: Tensor
    """g1 · g2 per group."""
    sq1: Tensor
    """|g1|^2 per group."""
    sq2: Tensor
    """|g2|^2 per group."""

    def scaled(self, s1: Tensor, s2: Tensor) -> PairMoments:
        """Moments of the pair ``(s1 * g1, s2 * g2)`` for per-group scales s1, s2."""
        return PairMoments(dot=self.dot * s1 * s2, sq1=self.sq1 * s1 * s1, sq2=self.sq2 * s2 * s2)


def upcast(t: Tensor) -> Tensor:
    """``t`` in fp32, or unchanged if it is already fp32 or wider (float64)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def reduce_dims(ndim: int, granularity: str) -> tuple[int, ...]:
    """Dimensions summed over for ``granularity`` on a gradient with ``ndim`` dims."""
    if granularity == "batch":
        return tuple(range(ndim))
    if ndim < 2:
        raise ValueError(f"granularity {granularity!r} needs a gradient with a batch dim, got {ndim} dims")
    if granularity == "sample":
        return tuple(range(1, ndim))
    if granularity == "cell":
        return (1,)
    raise ValueError(f"unknown granularity {granularity!r}; expected sample, cell or batch")


def pair_moments(
    g1: Tensor, g2: Tensor, *, granularity: str, all_reduce: AllReduce | None = None
) -> PairMoments:
    """Dot product and squared norms of ``g1``, ``g2`` per group (fp32, keepdim).

    For ``batch`` granularity the three sums are all-reduced in one call, so every rank sees the
    moments of the global micro-batch; finer groups are local to a sample and never reduced.
    """
    if g1.shape != g2.shape:
        raise ValueError(f"task gradients must have the same shape, got {tuple(g1.shape)} and {tuple(g2.shape)}")
    a, b = upcast(g1), upcast(g2)
    dims = reduce_dims(a.dim(), granularity)
    stacked = torch.stack([(a * b).sum(dims, keepdim=True), (a * a).sum(dims, keepdim=True), (b * b).sum(dims, keepdim=True)])
    if granularity == "batch" and all_reduce is not None:
        stacked = all_reduce(stacked)
    return PairMoments(dot=stacked[0], sq1=stacked[1], sq2=stacked[2])


def magnitude_scales(m: PairMoments, *, eps: float) -> tuple[Tensor, Tensor]:
    """Per-group scales that bring |g1| and |g2| to their mean norm; 1 where either is zero."""
    both = (m.sq1 > 0) & (m.sq2 > 0)
    r1, r2 = m.sq1.clamp_min(eps).sqrt(), m.sq2.clamp_min(eps).sqrt()
    target = 0.5 * (r1 + r2)
    one = torch.ones_like(target)
    return torch.where(both, target / r1, one), torch.where(both, target / r2, one)


def pcgrad_weights(m: PairMoments, *, eps: float) -> tuple[Tensor, Tensor]:
    """PCGrad on the original vectors: where g1·g2 < 0,
    g1' = g1 - (g1·g2/|g2|^2) g2 and g2' = g2 - (g1·g2/|g1|^2) g1; returns weights of g1' + g2'."""
    conflict = m.dot < 0
    zero = torch.zeros_like(m.dot)
    c_of_g2 = torch.where(conflict, m.dot / m.sq2.clamp_min(eps), zero)
    c_of_g1 = torch.where(conflict, m.dot / m.sq1.clamp_min(eps), zero)
    return 1.0 - c_of_g1, 1.0 - c_of_g2


def mgda_weights(m: PairMoments, *, eps: float) -> tuple[Tensor, Tensor]:
    """Two-task MGDA: alpha = clip(((g2 - g1)·g2) / |g1 - g2|^2, 0, 1); result 2 (alpha g1 + (1 - alpha) g2).

    The factor 2 makes identical gradients give their sum (as ``sum`` does). Degenerate groups
    (g1 == g2 up to rounding) take alpha = 1/2; groups where either gradient is zero keep the plain
    sum (the min-norm point would be zero and silently drop the other task there).
    """
    diff_sq = m.sq1 + m.sq2 - 2.0 * m.dot
    degenerate = diff_sq <= 1e-6 * (m.sq1 + m.sq2) + eps
    alpha = torch.where(degenerate, torch.full_like(diff_sq, 0.5), ((m.sq2 - m.dot) / diff_sq.clamp_min(eps)).clamp(0.0, 1.0))
    both = (m.sq1 > 0) & (m.sq2 > 0)
    one = torch.ones_like(alpha)
    return torch.where(both, 2.0 * alpha, one), torch.where(both, 2.0 * (1.0 - alpha), one)


def rule_weights(rule: str, m: PairMoments, *, eps: float) -> tuple[Tensor, Tensor]:
    """Per-group weights ``(w1, w2)`` of ``rule`` given the moments of the pair it is applied to."""
    if rule == "sum":
        one = torch.ones_like(m.dot)
        return one, one
    if rule == "pcgrad":
        return pcgrad_weights(m, eps=eps)
    if rule == "mgda":
        return mgda_weights(m, eps=eps)
    raise ValueError(f"unknown rule {rule!r}; expected sum, pcgrad or mgda")


def combine_with_moments(
    g1: Tensor, g2: Tensor, m: PairMoments, *, rule: str, balance_magnitude: bool, eps: float
) -> Tensor:
    """Apply ``rule`` (after optional magnitude balancing) given precomputed moments of (g1, g2)."""
    if rule == "sum" and not balance_magnitude:
        return (upcast(g1) + upcast(g2)).to(g1.dtype)
    s1 = s2 = None
    if balance_magnitude:
        s1, s2 = magnitude_scales(m, eps=eps)
        m = m.scaled(s1, s2)
    w1, w2 = rule_weights(rule, m, eps=eps)
    if s1 is not None:
        w1, w2 = w1 * s1, w2 * s2
    return (w1 * upcast(g1) + w2 * upcast(g2)).to(g1.dtype)


def combine(
    g1: Tensor,
    g2: Tensor,
    *,
    rule: str,
    granularity: str = "sample",
    balance_magnitude: bool = False,
    eps: float = 1e-30,
    all_reduce: AllReduce | None = None,
) -> Tensor:
    """One gradient from the pair ``(g1, g2)`` [B, ...] by ``rule`` at ``granularity`` (pure)."""
    m = pair_moments(g1, g2, granularity=granularity, all_reduce=all_reduce)
    return combine_with_moments(g1, g2, m, rule=rule, balance_magnitude=balance_magnitude, eps=eps)


def sum_rule(g1: Tensor, g2: Tensor) -> Tensor:
    """Equal weights: g1 + g2 (what autograd does without a balancer)."""
    return combine(g1, g2, rule="sum", granularity="batch")


def pcgrad(g1: Tensor, g2: Tensor, *, granularity: str = "sample", balance_magnitude: bool = False,
           eps: float = 1e-30, all_reduce: AllReduce | None = None) -> Tensor:
    """PCGrad projection of conflicting components per group, then the sum (see ``pcgrad_weights``)."""
    return combine(g1, g2, rule="pcgrad", granularity=granularity, balance_magnitude=balance_magnitude,
                   eps=eps, all_reduce=all_reduce)


def mgda(g1: Tensor, g2: Tensor, *, granularity: str = "sample", balance_magnitude: bool = False,
         eps: float = 1e-30, all_reduce: AllReduce | None = None) -> Tensor:
    """Feature-level two-task MGDA per group (see ``mgda_weights``)."""
    return combine(g1, g2, rule="mgda", granularity=granularity, balance_magnitude=balance_magnitude,
                   eps=eps, all_reduce=all_reduce)
