"""The single place where the shared fused feature Z reaches the task heads.

The model calls ``z_det, z_pred = self.task_fork(z)`` exactly once per forward. The default fork
returns the same tensor twice (autograd then sums the two task gradients into the encoder). The
conflict-suppression balancer (``models.balancer``) replaces it with a fork whose backward sees
each task's gradient separately and combines them by a rule.
"""

from __future__ import annotations

from torch import Tensor, nn


class TaskFork(nn.Module):
    """Identity fork: one alias of ``z`` per task head; gradients add up (plain sum)."""

    num_tasks: int = 2

    def forward(self, z: Tensor) -> tuple[Tensor, ...]:
        """z: [B, C, H, W] -> ``num_tasks`` tensors of the same shape (detection first, then prediction)."""
        return (z,) * self.num_tasks
