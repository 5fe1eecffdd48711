"""CSIM: cosine similarity of ArcFace embeddings (reference §3.4, paper §4).

The embedder is InsightFace's IR-SE-50 (``Backbone(50, drop_ratio=0.6, mode='ir_se')``), written by hand with the
state-dict keys of the authors' ``insight_face.pth``. Both images are aligned to the 112×112 ArcFace template with
a similarity transform estimated from five points of the *ground-truth* target keypoints (cross-person
reenactment: each image with its own keypoints, see :func:`csim`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses.vgg import load_foreign_state
from .weights import MetricUnavailable, require_file

ARCFACE_FILE = "insight_face.pth"
ARCFACE_SIZE = 112
# Five-point template in 112×112 pixels (reference §3.4): eye (36–41), eye (42–47), nose tip, mouth corners.
ARCFACE_TEMPLATE = np.array(
    [[35.34, 51.70], [76.45, 51.50], [56.03, 71.74], [39.14, 92.37], [73.18, 92.20]], dtype=np.float64
)
# (in channels, depth, units) of the four IR-SE-50 stages; the first unit of each stage has stride 2.
STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


# ================================================================================================ network
class SEModule(nn.Module):
    """Squeeze-and-excitation: global average → 1×1 conv C → C/r → ReLU → 1×1 conv → sigmoid → scale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """Improved residual unit with SE: BN → conv3 → PReLU → conv3 (stride) → BN → SE, plus the shortcut."""

    def __init__(self, in_channels: int, depth: int, stride: int) -> None:
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE-50: (N, 3, 112, 112) RGB in [-1, 1] → (N, 512) unit-norm embeddings."""

    def __init__(self, drop_ratio: float = 0.6) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        for in_channels, depth, count in STAGES:
            units.append(BottleneckIRSE(in_channels, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(count - 1)]
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, 512),
            nn.BatchNorm1d(512),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, ARCFACE_SIZE, ARCFACE_SIZE):
            raise ValueError(f"IRSE50 expects (N, 3, 112, 112) images; got {tuple(x.shape)}.")
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` restricted to ``model``'s keys, after a strict check of names and shapes (one-sentence errors).

    ``num_batches_tracked`` counters are optional: files saved before PyTorch 0.4.1 do not have them.
    """
    own = model.state_dict()
    optional = lambda key: key.endswith("num_batches_tracked")  # noqa: E731
    missing = [k for k in own if k not in state and not optional(k)]
    if missing:
        raise ValueError(f"{source} is not an ArcFace IR-SE-50 state dict: it lacks {missing[0]} "
                         f"({len(missing)} tensors missing).")
    unexpected = [k for k in state if k not in own and not optional(k)]
    if unexpected:
        raise ValueError(f"{source} is not an ArcFace IR-SE-50 state dict: it has the unexpected tensor "
                         f"{unexpected[0]} ({len(unexpected)} unexpected).")
    for key, value in own.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(f"{source}: {key} has shape {tuple(state[key].shape)}; expected {tuple(value.shape)}.")
    return {k: state[k] for k in own if k in state}


def load_arcface(weights_dir: Path) -> IRSE50:
    """IR-SE-50 with the authors' ``insight_face.pth``, in eval mode and frozen."""
    path = require_file(weights_dir, ARCFACE_FILE, "CSIM",
                        "the ArcFace IR-SE-50 weights (insight_face.pth of the authors' release)")
    model = IRSE50()
    try:
        state = _check_state(model, load_foreign_state(path), str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise MetricUnavailable(f"CSIM cannot use its weights: {exc}") from None
    model.load_state_dict(state, strict=False)
    model.requires_grad_(False)
    return model.eval()


# ============================================================================================== alignment
def five_points(keypoints: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(..., 68, 2) keypoints → (..., 5, 2): eye means (36–41, 42–47), nose tip 30, mouth corners 48 and 54."""
    points = [keypoints[..., 36:42, :].mean(-2), keypoints[..., 42:48, :].mean(-2),
              keypoints[..., 30, :], keypoints[..., 48, :], keypoints[..., 54, :]]
    if isinstance(keypoints, torch.Tensor):
        return torch.stack(points, dim=-2)
    return np.stack(points, axis=-2)


def _float64(points: np.ndarray | torch.Tensor) -> np.ndarray:
    """Points as a float64 NumPy array; a tensor may live on any device and have any float dtype (bfloat16 too)."""
    if isinstance(points, torch.Tensor):
        return points.detach().to("cpu", torch.float64).numpy()
    return np.asarray(points, dtype=np.float64)


def similarity_from_template(points: np.ndarray | torch.Tensor) -> np.ndarray:
    """The least-squares similarity transform (3, 3) mapping ARCFACE_TEMPLATE onto ``points`` (5, 2).

    Umeyama's closed form (rotation, uniform scale, translation), the same estimate as scikit-image's
    ``SimilarityTransform.estimate(template, points)``.
    """
    dst = _float64(points)
    src = ARCFACE_TEMPLATE
    if dst.shape != src.shape:
        raise ValueError(f"expected five (x, y) points, shape (5, 2); got {dst.shape}.")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, sing, vt = np.linalg.svd(cov)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection: flip the weakest axis
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float(sing @ signs) / src_c.var(0).sum()
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def _normalise(size_x: float, size_y: float) -> np.ndarray:
    """Pixel (centre convention) → normalised coordinates of ``align_corners=False``: (2c + 1) / size − 1."""
    return np.array([[2 / size_x, 0, 1 / size_x - 1], [0, 2 / size_y, 1 / size_y - 1], [0, 0, 1]])


def _theta(keypoints: np.ndarray | torch.Tensor, height: int, width: int) -> np.ndarray:
    """:func:`arcface_theta` in float64 NumPy."""
    points = _float64(five_points(keypoints))
    if points.ndim != 3:
        raise ValueError(f"expected keypoints of shape (N, 68, 2); got five points of shape {points.shape}.")
    out_to_pixel = np.linalg.inv(_normalise(ARCFACE_SIZE, ARCFACE_SIZE))
    image_to_norm = _normalise(width, height)
    return np.stack([(image_to_norm @ similarity_from_template(p) @ out_to_pixel)[:2] for p in points])


def arcface_theta(keypoints: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 68, 2) pixel keypoints of (H, W) images → (N, 2, 3) float32 ``affine_grid`` matrices for a 112×112
    crop, on the keypoints' device.

    Output normalised → output pixel → (template → image similarity) → image normalised, all with
    ``align_corners=False`` and pixel coordinate c at the centre of pixel c.
    """
    device = keypoints.device if isinstance(keypoints, torch.Tensor) else torch.device("cpu")
    return torch.as_tensor(_theta(keypoints, height, width), dtype=torch.float32, device=device)


def align_arcface(images: torch.Tensor, keypoints: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) images → (N, 3, 112, 112) ArcFace crops (bilinear, zero padding, values unchanged)."""
    n, c, h, w = images.shape
    theta = torch.as_tensor(_theta(keypoints, h, w), dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, [n, c, ARCFACE_SIZE, ARCFACE_SIZE], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def csim(net: IRSE50, pred: torch.Tensor, target: torch.Tensor, keypoints: np.ndarray | torch.Tensor,
         target_keypoints: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Per-image cosine similarity (N,) of the embeddings of ``pred`` and ``target`` (N, 3, H, W) in [-1, 1], both
    aligned by the ground-truth target ``keypoints`` (N, 68, 2) in px (reference §3.4). With ``target_keypoints``,
    ``target`` is aligned with those instead: cross-person reenactment, where the prediction has the driver's pose
    and the reference (the source) its own."""
    param = next(net.parameters())
    reference_keypoints = keypoints if target_keypoints is None else target_keypoints
    a = net(align_arcface(pred, keypoints).to(param))
    b = net(align_arcface(target, reference_keypoints).to(param))
    return F.cosine_similarity(a, b, dim=1)
