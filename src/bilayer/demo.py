"""A demo that runs today: a tiny random-weight avatar through every stage, saved as an overview picture.

Random weights show the data flow (personalize → enhance → render: texture, LF, HF, mask, image), not quality;
the trained-model animation demo arrives with the runtime issue.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .config import preset
from .io import write_image_atomic
from .data.face import posed_keypoints
from .data.stickman import draw_stickman
from .models.bilayer import BilayerModel


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3|1, H, W) in [-1, 1] (or [0, 1] for masks) → (H, W, 3) uint8 RGB."""
    x = x.detach().float()
    if x.shape[0] == 1:
        x = x.repeat(3, 1, 1) * 2 - 1
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def _source_photo(keypoints: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A flat-shaded drawing of a face with its mask, standing in for a photograph."""
    px = ((keypoints + 1) / 2 * size).astype(np.int32)
    image = np.full((size, size, 3), (60, 90, 140), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.concatenate([px[0:17], px[17:27] - [0, size // 10]]))
    cv2.fillConvexPoly(image, hull, (224, 172, 140))
    cv2.fillConvexPoly(mask, hull, 255)
    for eye in (px[36:42], px[42:48]):
        cv2.fillPoly(image, [eye], (40, 40, 40))
    cv2.fillPoly(image, [px[48:60]], (170, 60, 70))
    return image, mask


def random_weight_demo(out_dir: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = preset("tiny")
    size = config.image_size
    model = BilayerModel(config).eval()

    kp = posed_keypoints()
    photo, mask = _source_photo(kp, size)
    image = torch.from_numpy(photo).permute(2, 0, 1).float().div(127.5).sub(1)[None, None]
    source_mask = torch.from_numpy(mask).float().div(255)[None, None, None]
    source_kp = torch.from_numpy(kp).reshape(1, 1, -1)
    poses = [posed_keypoints(yaw, roll, mouth) for yaw, roll, mouth in ((-0.4, 0, 0), (0, 0.2, 0.6), (0.4, -0.1, 1.0))]
    target_kp = torch.from_numpy(np.stack(poses)).reshape(1, len(poses), -1)

    with torch.no_grad():
        state = model.enhance(model.personalize(image, source_kp, source_mask))
        render = model.render(state, target_kp)

    row0 = [photo, draw_stickman(kp.reshape(-1), size), _to_uint8(state.base_texture[0]), _to_uint8(state.texture[0])]
    rows = [np.concatenate(row0 + [np.zeros_like(photo)] * 2, axis=1)]
    for j in range(len(poses)):
        cells = [draw_stickman(poses[j].reshape(-1), size)] + [
            _to_uint8(t[0, j]) for t in (render.lf, render.hf, render.mask, render.image, render.masked())
        ]
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    grid = cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)

    return write_image_atomic(out_dir / "overview_random_weights.png", grid)
