"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): a loss-level balancing baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class UncertaintyWeighting(nn.Module):
    """Learned homoscedastic-uncertainty weights for ``num_tasks`` losses.

    total = sum_i ( L_i / (2 exp(s_i)) + s_i / 2 ), with s_i = log sigma_i^2 learnable (LibMTL's
    form). The log-variances are parameters: register this module inside the model that the
    optimizer / DeepSpeed engine owns, so ZeRO shards and updates them like any other weight.
    """

    def __init__(self, num_tasks: int = 2, *, init_log_var: float = 0.0) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init_log_var)))

    def forward(self, losses: Sequence[Tensor]) -> Tensor:
        """losses: ``num_tasks`` scalar losses -> one scalar total loss."""
        if len(losses) != self.log_vars.numel():
            raise ValueError(f"expected {self.log_vars.numel()} task losses, got {len(losses)}")
        for i, loss in enumerate(losses):
            if loss.dim() != 0:
                raise ValueError(f"task loss {i} must be a scalar, got shape {tuple(loss.shape)}")
        stacked = torch.stack([loss.float() for loss in losses])
        log_vars = self.log_vars.float()
        return (0.5 * torch.exp(-log_vars) * stacked + 0.5 * log_vars).sum()

    def task_weights(self) -> Tensor:
        """[num_tasks] current effective weights 1 / (2 sigma_i^2), detached (for logging)."""
        return (0.5 * torch.exp(-self.log_vars.detach())).float()
