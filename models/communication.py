"""What collaborators send for intermediate fusion, and what it costs: precision, sparsification, bytes.

Each collaborator sends its own feature now (``V2XModel.agent_features``: [C, H, W] in its BEV frame) at a
message precision, either whole (dense) or only the cells its confidence picks (sparse, as Where2comm does:
the top ``keep_ratio`` of the cells, or those with confidence >= ``threshold``). The ego sends nothing.

Bytes of one collaborator's message (the feature payload only; poses and headers are not counted):

- dense:  ``H * W * C * value_bytes``;
- sparse: ``n_sent * C * value_bytes + ceil(H * W / 8)`` (the cells' values plus a one-bit-per-cell map of
  which cells they are).

Late fusion sends decoded detections instead: ``n_detections * detection_values(K, T_f) * value_bytes``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MESSAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""Message precision name -> the dtype the values travel in."""
SPARSIFY_MODES = ("none", "topk", "threshold")
"""``none``: dense messages; ``topk``: the ``keep_ratio`` most confident cells; ``threshold``: cells whose
confidence is >= ``threshold``."""


def value_bytes(precision: str) -> int:
    """Bytes of one value at ``precision`` (a key of ``MESSAGE_DTYPES``)."""
    return torch.empty(0, dtype=MESSAGE_DTYPES[precision]).element_size()


def cell_confidence(heatmap_logits: Tensor, factor: int) -> Tensor:
    """Per-cell confidence of detection heatmaps: [N, K, H*f, W*f] logits -> [N, H, W] the highest class
    probability in each block of ``factor`` x ``factor`` head cells (the head grid is the fusion grid
    up-sampled by ``factor``)."""
    probability = torch.sigmoid(heatmap_logits.float()).amax(dim=1, keepdim=True)
    return F.max_pool2d(probability, factor)[:, 0] if factor > 1 else probability[:, 0]


def select_cells(confidence: Tensor, *, mode: str, keep_ratio: float, threshold: float) -> Tensor | None:
    """The cells each map sends: confidence [N, H, W] -> [N, H, W] bool, or None for ``mode`` ``none`` (all).

    ``topk`` keeps ``ceil(keep_ratio * H * W)`` cells of each map (the most confident; ties as ``torch.topk``
    breaks them), ``threshold`` the cells with confidence >= ``threshold``.
    """
    if mode == "none":
        return None
    if mode == "threshold":
        return confidence >= threshold
    if mode != "topk":
        raise ValueError(f"sparsify mode must be one of {SPARSIFY_MODES}, got {mode!r}")
    n, h, w = confidence.shape
    k = min(h * w, max(1, math.ceil(keep_ratio * h * w)))
    flat = confidence.reshape(n, h * w)
    sent = torch.zeros_like(flat, dtype=torch.bool)
    sent.scatter_(1, flat.topk(k, dim=1).indices, True)
    return sent.view(n, h, w)


def transmit(features: Tensor, sent: Tensor | None, dtype: torch.dtype) -> Tensor:
    """What the ego receives: features [B, A, C, H, W] with every collaborator's (a >= 1) values sent at
    ``dtype`` (rounded to it and back) and zero at the cells it did not send (``sent`` [B, A, H, W] bool; None =
    all). The ego's own features (a = 0) are its own, untouched. Returns ``features`` itself when nothing
    changes (full precision, dense)."""
    if sent is None and dtype == features.dtype:
        return features
    others = features[:, 1:].to(dtype).to(features.dtype)
    if sent is not None:
        others = others * sent[:, 1:, None].to(others.dtype)
    return torch.cat([features[:, :1], others], dim=1)


def collaborator_mask(agent_mask: Tensor) -> Tensor:
    """[B, A] bool: the real agents that send (all but the ego)."""
    senders = agent_mask.clone()
    senders[:, 0] = False
    return senders


def feature_message_bytes(sent: Tensor | None, agent_mask: Tensor, *, channels: int, height: int, width: int,
                          bytes_per_value: int) -> Tensor:
    """[B, A] int64 bytes each agent sends for intermediate fusion (0 for the ego and absent agents).

    sent: [B, A, H, W] bool, the cells sent (None = dense messages); agent_mask: [B, A] bool.
    """
    senders = collaborator_mask(agent_mask)
    if sent is None:
        per_agent = torch.full(senders.shape, height * width * channels * bytes_per_value, dtype=torch.int64,
                               device=senders.device)
    else:
        cells = sent.flatten(2).sum(dim=2).to(torch.int64)
        per_agent = cells * channels * bytes_per_value + math.ceil(height * width / 8)
    return per_agent * senders


def detection_values(num_modes: int, future_steps: int) -> int:
    """Values of one detection in a late-fusion message: box (7), score, label, K trajectories of T_f (x, y)
    points and K mode scores."""
    return 7 + 1 + 1 + num_modes * future_steps * 2 + num_modes


def detection_message_bytes(counts: Tensor, agent_mask: Tensor, *, values_per_detection: int,
                            bytes_per_value: int) -> Tensor:
    """[B, A] int64 bytes each agent sends for late fusion: its ``counts`` [B, A] decoded detections of
    ``values_per_detection`` values each (0 for the ego and absent agents)."""
    return counts.to(torch.int64) * values_per_detection * bytes_per_value * collaborator_mask(agent_mask)
