"""SynthHeads body and surroundings: neck, torso with clothes, and the background image.

The neck is a tube whose upper rings ride with the head and whose lower rings ride with the torso (blended in
between), so turning the head twists and bends it. The torso is a super-elliptic cylinder whose top curves in
from the shoulder tips to the neck base (a quarter ellipse — the trapezius slope). Both are regular grids in
the same head-local units as the head (1 ≈ 10 cm, the head centre at the origin in the neutral pose).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .head import _value_noise, smoothstep, to_linear
from .params import IdentityParams, SceneParams
from .raster import grid_faces, grid_normals

NECK_TOP, NECK_BOTTOM = -0.5, -2.1


class Neck:
    def __init__(self, p: IdentityParams):
        rows, cols = 40, 64
        y = np.linspace(NECK_BOTTOM, NECK_TOP, rows)  # bottom → top, so the outside faces front
        a = np.linspace(-np.pi, np.pi, cols + 1)
        Y, A = np.meshgrid(y, a, indexing="ij")
        widen = 1.0 + 0.25 * smoothstep(-1.25, -1.8, Y)  # flares into the trapezius
        rx = 0.54 * p.neck_width * widen
        rz = 0.50 * p.neck_width * (1 + 0.15 * smoothstep(-1.2, -1.8, Y))
        adams_apple = 0.1 * max(0.0, p.masculinity - 0.55)
        bump = adams_apple * np.exp(-0.5 * ((Y + 1.2) / 0.12) ** 2) * np.exp(-((A / 0.35) ** 2))
        zc = -0.22 - 0.06 * smoothstep(-0.8, -2.0, Y)
        self.rest = np.stack([(rx + bump) * np.sin(A), Y, zc + (rz + bump) * np.cos(A)], -1).reshape(-1, 3)
        self.rows, self.cols = rows, cols + 1
        self.faces = grid_faces(rows, cols + 1)
        # how much each ring follows the head (1) rather than the torso (0)
        self.head_weight = smoothstep(-1.6, -0.8, Y).ravel()
        # the jaw shades the front of the upper neck
        self.ao = (1.0 - 0.5 * smoothstep(-1.35, -0.85, Y) * np.clip(np.cos(A), 0, 1) ** 0.7).ravel().astype(np.float32)
        tw, th = 128, 128
        self.uv = np.stack([(A + np.pi) / (2 * np.pi) * tw - 0.5, (NECK_TOP - Y) / (NECK_TOP - NECK_BOTTOM) * th - 0.5], -1)
        self.uv = self.uv.reshape(-1, 2).astype(np.float32)
        rng = np.random.default_rng([p.seed, 11])
        variation = 1 + 0.05 * _value_noise(rng, th, tw, 20) + 0.02 * _value_noise(rng, th, tw, 3)
        alb = to_linear(p.skin_colour)[None, None] * variation[..., None]
        spec = np.full((th, tw, 1), p.skin_gloss * 0.8, np.float32)
        self.texture = np.concatenate([alb, spec], -1).astype(np.float32)

    def normals(self, world_vertices: np.ndarray) -> np.ndarray:
        return grid_normals(world_vertices.reshape(self.rows, self.cols, 3)).reshape(-1, 3)


class Torso:
    def __init__(self, p: IdentityParams, scene: SceneParams, size: int):
        rng = np.random.default_rng([scene.seed, 12])
        y_top = -1.35
        drop = rng.uniform(0.4, 0.55)
        width = rng.uniform(1.6, 1.8) + 0.15 * p.masculinity
        r_neck_x, r_neck_z = 0.62 * p.neck_width, 0.55 * p.neck_width
        depth = rng.uniform(0.55, 0.7)
        # the profile from the neck base along the trapezius slope to the shoulder tip, round over the deltoid
        # and down the arm: a polyline through anatomical control points, resampled and smoothed
        ctrl_x = np.array([r_neck_x, r_neck_x + 0.12, 0.55 * width, 0.85 * width, 0.98 * width, width, width, 0.97 * width])
        ctrl_y = y_top - np.array([0.0, 0.1, 0.45, 0.8, 1.0, 1.25, 1.6, 3.2]) * drop
        # the chest front is nearly vertical right below the collar; only the shoulders slope
        ctrl_z = np.array([max(r_neck_z, 0.92 * depth), depth, depth, depth, depth, depth, depth, depth])
        seg = np.concatenate([[0], np.cumsum(np.hypot(np.diff(ctrl_x), np.diff(ctrl_y)))])
        dense = np.linspace(0, seg[-1], 400)
        fine = [np.interp(dense, seg, c) for c in (ctrl_x, ctrl_y, ctrl_z)]
        fine = [np.convolve(np.pad(c, 25, mode="edge"), np.ones(31) / 31, mode="same")[25:-25] for c in fine]
        near = np.linspace(0, 1, 34) ** 1.6 * 0.6  # rows crowd near the neck and shoulders, few down the arm
        at = np.concatenate([near, np.linspace(0.62, 1, 6)]) * seg[-1]
        pick = np.interp(at, dense, np.arange(len(dense))).astype(int)
        prof_x, prof_y, prof_z = (c[pick] for c in fine)
        # rows bottom → top
        prof_x, prof_y, prof_z = prof_x[::-1], prof_y[::-1], prof_z[::-1]
        arclen = np.concatenate([[0], np.cumsum(np.hypot(np.diff(prof_x), np.diff(prof_y)))])
        arclen = arclen[-1] - arclen  # 0 at the neck, growing downwards
        cols = 96
        a = np.linspace(-np.pi, np.pi, cols + 1)
        e = 2.8
        sx = np.sign(np.sin(a)) * np.abs(np.sin(a)) ** (2 / e)
        sz = np.sign(np.cos(a)) * np.abs(np.cos(a)) ** (2 / e)
        X = prof_x[:, None] * sx[None]
        Z = prof_z[:, None] * sz[None] - 0.3
        Y = np.broadcast_to(prof_y[:, None], X.shape)
        self.rest = np.stack([X, Y, Z], -1).reshape(-1, 3)
        self.rows, self.cols = len(prof_y), cols + 1
        self.faces = grid_faces(self.rows, self.cols)

        # clothing texture over (around, down) measured in head units, so patterns keep their size
        around = np.concatenate([[0], np.cumsum(np.hypot(np.diff(X[-8]), np.diff(Z[-8])))])
        perimeter = around[-1]
        tw, th = 4 * size, 2 * size
        self.uv = np.stack([np.broadcast_to(((a + np.pi) / (2 * np.pi))[None], X.shape) * tw - 0.5,
                            np.broadcast_to((arclen / arclen.max())[:, None], X.shape) * th - 0.5], -1)
        self.uv = self.uv.reshape(-1, 2).astype(np.float32)
        ux = (np.arange(tw) + 0.5) / tw * perimeter - perimeter / 2  # 0 at the front centre
        vy = (np.arange(th) + 0.5) / th * arclen.max()
        U, V = np.meshgrid(ux.astype(np.float32), vy.astype(np.float32))
        c1, c2 = to_linear(scene.cloth_colour), to_linear(scene.cloth_colour2)
        period = 0.35 * scene.pattern_scale
        texel = tw / perimeter

        def band(coord, duty=0.5):
            phase = np.mod(coord / period, 1.0)
            soft = 1.0 / (texel * period)
            return smoothstep(duty - soft, duty + soft, phase) * (1 - smoothstep(1 - soft, 1.0, phase))

        pattern = scene.cloth_pattern
        if pattern == "stripes":
            mix = band(V)
        elif pattern == "vstripes":
            mix = band(U, 0.7)
        elif pattern == "checks":
            mix = 0.5 * (band(U) + band(V))
        elif pattern == "dots":
            du = np.mod(U / period, 1.0) - 0.5
            dv = np.mod(V / period + 0.5 * (np.floor(U / period) % 2), 1.0) - 0.5
            mix = 1 - smoothstep(0.18, 0.18 + 1.5 / (texel * period), np.hypot(du, dv))
        elif pattern == "heather":
            mix = np.clip(0.5 + 0.35 * _value_noise(rng, th, tw, 3.0), 0, 1)
        else:
            mix = np.zeros_like(U)
        alb = c1[None, None] * (1 - mix[..., None]) + c2[None, None] * mix[..., None]
        weave = rng.standard_normal((th, tw)).astype(np.float32)
        weave = cv2.GaussianBlur(weave, (0, 0), 0.8)
        folds = _value_noise(rng, th, tw, tw / 12)
        alb *= (1 + 0.05 * weave / (weave.std() + 1e-6) + 0.08 * folds)[..., None]
        skin = np.zeros((th, tw), np.float32)
        if scene.neckline == "vneck":
            dv_ = rng.uniform(0.35, 0.6)
            half = 0.5 * (1 - V / dv_)
            skin = smoothstep(-1.5 / texel, 1.5 / texel, half - np.abs(U)) * (V < dv_)
        elif scene.neckline == "collar":
            collar = (1 - smoothstep(0.12, 0.14, V)) * (np.abs(U) > 0.03)
            alb = alb * (1 - collar[..., None]) + c2 * 0.9 * collar[..., None]
        else:  # crew: a ribbed band around the neck
            rib = (1 - smoothstep(0.06, 0.08, V)) * (0.85 + 0.15 * np.sin(U * texel * 0.8))
            alb = alb * (1 - 0.25 * rib[..., None])
        alb = alb * (1 - skin[..., None]) + to_linear(p.skin_colour) * skin[..., None]
        self.texture = np.concatenate([np.clip(alb, 0, 1), skin[..., None]], -1).astype(np.float32)
        self.skin_gloss = p.skin_gloss

    def normals(self, world_vertices: np.ndarray) -> np.ndarray:
        return grid_normals(world_vertices.reshape(self.rows, self.cols, 3)).reshape(-1, 3)


def background_image(scene: SceneParams, size: int) -> np.ndarray:
    """(size, size, 3) float32 linear background: flat, gradient, or a soft out-of-focus 'room'."""
    rng = np.random.default_rng([scene.seed, 13])
    c0, c1, c2 = (to_linear(c) for c in scene.background_colours)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    img[:] = c0
    if scene.background in ("gradient", "textured"):
        ang = rng.uniform(0, 2 * np.pi)
        ramp = np.clip(0.5 + (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)) * rng.uniform(0.8, 1.4), 0, 1)
        img = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    if scene.background == "textured":
        canvas = img.copy()
        for _ in range(int(rng.integers(4, 10))):
            col = [c0, c1, c2][int(rng.integers(3))] * rng.uniform(0.6, 1.4)
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
            w, h = rng.uniform(0.1, 0.6, 2) * size
            if rng.uniform() < 0.6:
                cv2.rectangle(canvas, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), col.tolist(), -1)
            else:
                cv2.ellipse(canvas, (int(x0), int(y0)), (int(w / 2), int(h / 2)), 0, 0, 360, col.tolist(), -1)
        canvas = cv2.GaussianBlur(canvas, (0, 0), size * rng.uniform(0.006, 0.03))
        wall = 1 + 0.08 * _value_noise(rng, size, size, size / rng.uniform(8, 40))
        if rng.uniform() < 0.4:  # wallpaper stripes
            wall *= 1 + 0.06 * np.sin(2 * np.pi * xx * rng.uniform(6, 20))
        img = canvas * wall[..., None]
    vignette = 1 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * rng.uniform(0, 1.5)
    return np.clip(img * vignette[..., None], 0, 1).astype(np.float32)


def body_rotation(yaw_degrees: float) -> np.ndarray:
    y = math.radians(yaw_degrees)
    return np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
