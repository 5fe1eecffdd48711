"""Input validation shared by the networks: one clear sentence per mistake (DESIGN principle 11)."""

from __future__ import annotations

import torch


def check_shape(name: str, x: torch.Tensor, expected: tuple, where: str) -> None:
    """``expected`` holds ints or None (any size); raises ValueError naming the tensor and both shapes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(x).__name__}.")
    shape = tuple(x.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if not ok:
        pretty = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{where}: {name} has shape {shape}; expected {pretty}.")


def check_finite(name: str, x: torch.Tensor, where: str) -> None:
    if x.device.type == "meta":  # shape-only tracing (complexity accounting)
        return
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{where}: {name} contains {bad} NaN or infinite value(s); expected finite numbers.")
