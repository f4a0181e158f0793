"""The learning-rate schedule every training stage uses: linear warm-up, then linear decay to zero.

scheduler, warmup_steps = warmup_then_decay(optimizer, steps=300, warmup_share=0.06)
...optimizer.step(); scheduler.step()   # once per optimizer step
"""

from __future__ import annotations

import torch


def warmup_then_decay(
    optimizer: torch.optim.Optimizer, steps: int, warmup_share: float
) -> tuple[torch.optim.lr_scheduler.LambdaLR, int]:
    """The rate rises over the first `warmup_share` of `steps` (the first step already at 1/warm-up
    of it, not 0: no step is wasted), then falls linearly to zero at `steps`. Returns the scheduler
    and the number of warm-up steps."""
    warmup = max(1, round(warmup_share * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), warmup
