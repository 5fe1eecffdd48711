"""Random-weight models with realistic buffers, for tests and speed benchmarks (no trained weights needed)."""

from __future__ import annotations

import torch


def randomize_buffers(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every buffer off its initial value, in a well-conditioned way: BatchNorm running statistics to
    mean ~ U(-0.2, 0.2), var ~ U(0.5, 2), and one power-iteration step for every spectral-norm layer (u, v).

    (Not a train-mode forward: with the released bn_momentum = 1 the running statistics would be those of a single
    small batch, some channels with a tiny variance; float32 rounding is then amplified enough that the warped HF
    layer of a random-weight model differs by ~2e-4 relative between mathematically equal models.)
    """
    g = torch.Generator().manual_seed(seed)
    training = model.training
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(7)
        model.train()
        for m in model.modules():
            if torch.nn.utils.parametrize.is_parametrized(m, "weight"):
                m.weight  # noqa: B018 - one power-iteration step in train mode
    return model.train(training)
