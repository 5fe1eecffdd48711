"""`bilayer demo`: the main job on built-in data, in about a minute on 2 CPU cores.

1. Loads the ``synth-quick`` model committed under ``assets/synth-quick`` (trained on SynthHeads at 128 px; the
   command that reproduces it is in ``assets/synth-quick/README.md``).
2. Renders two SynthHeads identities the model never saw (the held-out test people of its training set): one
   photo of the first becomes the avatar (texture enhancer included), a talking-head video of the second drives it.
3. Writes ``demo/animation.mp4`` (driver | result, H.264) through the same streamed pipeline as ``bilayer animate``,
   and ``demo/overview.png``: source, target, texture, LF, HF, mask and result for self- and cross-reenactment
   (as in paper Fig. 7).

``--random-weights`` instead runs a random-weight tiny model through every stage (the data flow without
training).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .config import preset
from .data.face import posed_keypoints
from .data.stickman import draw_stickman
from .io import write_image_atomic
from .models.bilayer import BilayerModel
from .outputs import claim_folder
from .runtime.avatar import Avatar
from .animate.compose import to_uint8

ASSET_MODEL = Path(__file__).resolve().parents[2] / "assets" / "synth-quick"
# SynthHeads people of the asset's training data (seed 0, 1025 people): 1000–1024 are its held-out test split.
DATA_SEED, SOURCE_PERSON, DRIVER_PERSON = 0, 1005, 1008


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] or a (1, H, W) mask in [0, 1] → (H, W, 3) uint8 RGB."""
    return to_uint8(x.repeat(3, 1, 1) * 2 - 1 if x.shape[0] == 1 else x)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    scale = tile.shape[0] / 256
    cv2.putText(out, text, (int(6 * scale) + 1, int(22 * scale) + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(out, text, (int(6 * scale), int(22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def trained_demo(out_dir: Path, model_dir: Path = ASSET_MODEL, frames: int = 100, progress: bool = True) -> dict:
    from .keypoints import normalize_keypoints
    from .synth import render_sequence
    from .animate.pipeline import render_workers, stream
    from .animate.driver import open_driver
    from .animate.motion import MotionTransfer
    from .animate.videoio import VideoWriter

    model = BilayerModel.from_pretrained(model_dir).eval()
    size = model.config.image_size
    claim_folder(out_dir, "demo")

    # the avatar: the first frame of a held-out person
    src_frames, src_kps, src_masks = render_sequence(DATA_SEED, SOURCE_PERSON, 40, size)
    avatar = Avatar.create(model, src_frames[0], keypoints=src_kps[0], mask=src_masks[0] / 255.0, crop=False)

    # the driver: another held-out person talking, written as a real video with its keypoint track
    drv_frames, drv_kps, _ = render_sequence(DATA_SEED, DRIVER_PERSON, frames, size)
    driver_path, kp_path = out_dir / "driver.mp4", out_dir / "driver_keypoints.npy"
    with VideoWriter(driver_path, 25.0, (size, size)) as w:
        for f in drv_frames:
            w.write(f)
    np.save(kp_path, drv_kps)
    with render_workers(None) as workers, open_driver(driver_path, keypoints=kp_path) as driver:
        report = stream(avatar, avatar.renderer(model, "eager"), driver, out_dir / "animation.mp4", side=True,
                         progress=progress, workers=workers)

    # the overview: self-reenactment (targets: later frames of the source person) and cross-reenactment
    rows = []
    cases = [(src_frames[i], src_kps[i], "target") for i in (12, 30)]
    cases += [(drv_frames[i], drv_kps[i], "driver") for i in (min(20, frames // 3), min(60, frames - 1))]
    for image, kp, kind in cases:
        if kind == "driver":  # relative motion, as animate does
            kp = MotionTransfer("relative", avatar.source_keypoints, drv_kps[0])(kp)
        pose = normalize_keypoints(kp, float(size))
        r = avatar.render(model, pose)
        cells = [
            _label(_to_uint8(avatar.source_image), "source"), _label(image, kind),
            _label(draw_stickman(pose, size), "keypoints"), _label(_to_uint8(avatar.texture[0]), "texture"),
            _label(_to_uint8(r.lf[0, 0]), "LF"), _label(_to_uint8(r.hf[0, 0]), "HF"),
            _label(_to_uint8(r.mask[0, 0]), "mask"), _label(_to_uint8(r.masked()[0, 0]), "result"),
        ]
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    overview = write_image_atomic(out_dir / "overview.png", grid)
    return {"animation": report, "overview": overview}


def random_weight_demo(out_dir: Path, seed: int = 0) -> Path:
    """A random-weight tiny model through every stage: avatar (personalize → enhance) → render (data flow, not
    quality)."""
    torch.manual_seed(seed)
    config = preset("tiny")
    size = config.image_size
    model = BilayerModel(config).eval()

    kp = (posed_keypoints().reshape(-1, 2) + 1) / 2 * size  # pixels
    px = kp.astype(np.int32)
    photo = np.full((size, size, 3), (60, 90, 140), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.concatenate([px[0:17], px[17:27] - [0, size // 10]]))
    cv2.fillConvexPoly(photo, hull, (224, 172, 140))
    cv2.fillConvexPoly(mask, hull, 255)
    avatar = Avatar.create(model, photo, keypoints=kp, mask=mask / 255.0, crop=False)
    poses = [posed_keypoints(yaw, roll, mouth) for yaw, roll, mouth in ((-0.4, 0, 0), (0, 0.2, 0.6), (0.4, -0.1, 1.0))]
    render = avatar.render(model, np.stack(poses))
    rows = []
    for j in range(len(poses)):
        cells = [photo, draw_stickman(poses[j].reshape(-1), size), _to_uint8(avatar.texture[0])] + [
            _to_uint8(t[0, j]) for t in (render.lf, render.hf, render.mask, render.masked())
        ]
        rows.append(np.concatenate(cells, axis=1))
    grid = cv2.resize(np.concatenate(rows, axis=0), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    claim_folder(out_dir, "demo")
    return write_image_atomic(out_dir / "overview_random_weights.png", grid)
