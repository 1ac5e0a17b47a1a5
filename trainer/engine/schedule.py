"""Learning-rate schedule: linear warm-up then cosine decay (a pure function of the step)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Rises linearly from 1/(warmup_steps+1) to 1 over ``warmup_steps``, then follows a half cosine
    from 1 down to ``min_ratio`` at ``total_steps``; stays at ``min_ratio`` afterwards.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
