"""Pose matching: normalised mean error of 68 facial keypoints (reference §3.4, paper §4).

The error is the mean Euclidean point distance divided by the inter-ocular distance of the *target* (real)
keypoints, the eye centres being the means of points 36–41 and 42–47. The paper reports this "multiplied by
10"; the released code has no ×10. Both are exposed.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_tensor(kp: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 68, 2) keypoints as a float tensor: float64 stays float64, anything else becomes float32."""
    t = torch.as_tensor(kp)
    t = t.double() if t.dtype == torch.float64 else t.float()
    if t.dim() != 3 or tuple(t.shape[1:]) != (68, 2):
        raise ValueError(f"expected keypoints of shape (N, 68, 2); got {tuple(t.shape)}.")
    return t


def eye_distance(kp: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,) distance between the eye centres, the means of points 36–41 and 42–47."""
    t = _as_tensor(kp)
    return (t[:, 36:42].mean(1) - t[:, 42:48].mean(1)).norm(dim=-1)


def nme(pred_kp: np.ndarray | torch.Tensor, target_kp: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,) mean point error over the 68 points / eye distance of ``target_kp`` (the released code's scale)."""
    pred, target = _as_tensor(pred_kp), _as_tensor(target_kp)
    if pred.shape != target.shape:
        raise ValueError(f"predicted keypoints {tuple(pred.shape)} and target keypoints {tuple(target.shape)} "
                         "differ in shape.")
    if pred.dtype != target.dtype:
        pred, target = pred.double(), target.double()
    error = (pred - target.to(pred.device)).norm(dim=-1).mean(1)
    return error / eye_distance(target).to(error.device)


def nme_both(pred_kp: np.ndarray | torch.Tensor, target_kp: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"nme": 10 × NME (paper §4), "nme_released": NME (released code)}``, each (N,)."""
    released = nme(pred_kp, target_kp)
    return {"nme": 10 * released, "nme_released": released}
