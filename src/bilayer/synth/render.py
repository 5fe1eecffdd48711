"""SynthHeads renderer: poses the head, neck, torso and hair for one frame, rasterises them with a z-buffer,
shades every pixel and returns (image, keypoints, mask).

Camera: a pinhole at ``scene.camera_distance`` head units in front of the head, looking down -z. The focal
length and principal point are chosen once per (identity, scene) so that the neutral frontal face's 68
landmarks span ``scene.extent`` of the image and are centred at ``scene.centre`` — the same framing the
reference crop protocol produces (landmark box half the crop, its centre 1/12 below the crop centre; reference
§6.2). The image is rendered ``supersample`` times larger and averaged down (anti-aliasing, soft mask edges).

Shading: a key light with wrap-around diffuse (softens the terminator on skin), a fill light from the other
side, a sky/ground hemisphere ambient, Blinn-Phong highlights with a per-texel strength, and baked ambient
occlusion; computed in linear RGB and encoded with a 2.2 gamma.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .body import Neck, Torso, background_image, body_rotation
from .head import HeadModel, rotation, to_linear
from .params import FrameParams, IdentityParams, SceneParams, default_scene
from .raster import rasterize

HEAD_PIVOT = np.array([0.0, -0.75, -0.2])  # the head turns about the top of the neck


@functools.lru_cache(maxsize=4)
def head_model(identity: IdentityParams, size: int) -> HeadModel:
    return HeadModel(identity, size)


def sample_texture(texture: np.ndarray, uv: np.ndarray, wrap: bool = True) -> np.ndarray:
    """Bilinear samples (N, C) of a (H, W, C≤4) float32 texture at texel coordinates uv (N, 2)."""
    n = len(uv)
    if n == 0:
        return np.zeros((0, texture.shape[2]), np.float32)
    width = 1024  # cv2.remap wants maps under 32767 on a side, so lay the samples out in rows
    rows = -(-n // width)
    pad = rows * width - n
    mx = np.concatenate([uv[:, 0], np.zeros(pad, np.float32)]).reshape(rows, width).astype(np.float32)
    my = np.concatenate([uv[:, 1], np.zeros(pad, np.float32)]).reshape(rows, width).astype(np.float32)
    border = cv2.BORDER_WRAP if wrap else cv2.BORDER_REPLICATE
    out = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=border)
    return out.reshape(rows * width, -1)[:n]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


class SynthRenderer:
    """Renders frames of one identity in one scene at one output size."""

    def __init__(self, identity: IdentityParams, scene: SceneParams, size: int, supersample: int = 2):
        self.identity, self.scene, self.size, self.ss = identity, scene, int(size), int(supersample)
        self.head = head_model(identity, self.size)
        self.neck = Neck(identity)
        self.torso = Torso(identity, scene, self.size)
        self.background = background_image(scene, self.size * self.ss)
        self.light = _unit(np.asarray(scene.light_direction, np.float64))
        self.fill_dir = _unit(np.array([-self.light[0], 0.15, 0.9]))
        self.half = _unit(self.light + np.array([0.0, 0.0, 1.0]))
        self.light_colour = to_linear(scene.light_colour)
        self.sky = to_linear(scene.ambient_colour) * scene.ambient
        h = self.head
        self.head_attr = np.concatenate([h.uv, h.ao[:, None], h.dirs, h.gap_coord[:, None]], 1).astype(np.float32)
        self.neck_attr = np.concatenate([self.neck.uv, self.neck.ao[:, None]], 1).astype(np.float32)
        self._frame_camera()

    # ---------------------------------------------------------------------------------------- camera
    def _frame_camera(self) -> None:
        neutral = FrameParams()
        kp = self.head.keypoints(neutral, lambda P: np.stack([P[:, 0], -P[:, 1]], 1), lambda v: v)
        lo, hi = kp.min(0), kp.max(0)
        depth = self.scene.camera_distance - 0.75  # the landmarks lie about 0.75 in front of the head centre
        self.distance = self.scene.camera_distance
        self.focal = self.scene.extent * self.size * depth / float(max(hi - lo))
        centre = 0.5 * (lo + hi)
        self.principal = np.array(self.scene.centre) * self.size - self.focal * centre / depth

    def transforms(self, frame: FrameParams):
        """(head_tf, body_tf, R): maps of head-local / body points (N, 3) to camera axes, and the head rotation."""
        rot = rotation(frame.yaw, frame.pitch, frame.roll)
        rb = body_rotation(frame.body_yaw)
        shift = np.array([frame.body_x, 0.0, 0.0])
        origin = HEAD_PIVOT @ rb.T + shift + np.array([frame.tx, frame.ty, 0.0])

        def body_tf(points):
            return points @ rb.T + shift

        def head_tf(points):
            return (points - HEAD_PIVOT) @ rot.T + origin

        return head_tf, body_tf, rot

    def project(self, points: np.ndarray, frame: FrameParams, scale: float = 1.0):
        """Camera-axes points (N, 3) → pixel coordinates (N, 2) (times ``scale``) and depth (N,)."""
        depth = self.distance - points[:, 2]
        f = self.focal * frame.scale
        x = self.principal[0] + f * points[:, 0] / depth
        y = self.principal[1] - f * points[:, 1] / depth
        return np.stack([x, y], 1) * scale, depth

    # ---------------------------------------------------------------------------------------- render
    def keypoints(self, frame: FrameParams) -> np.ndarray:
        head_tf, _, rot = self.transforms(frame)
        return self.head.keypoints(frame, lambda P: self.project(head_tf(P), frame)[0], lambda v: v @ rot.T)

    def render(self, frame: FrameParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        head_tf, body_tf, rot = self.transforms(frame)
        head, neck, torso = self.head, self.neck, self.torso
        parts = []  # (vertices in camera axes, normals, faces, two-sided, static per-vertex attributes)
        hv = head_tf(head.vertices(frame))
        parts.append((hv, head.normals(hv), head.faces, False, self.head_attr))
        w = neck.head_weight[:, None]
        nv = head_tf(neck.rest) * w + body_tf(neck.rest) * (1 - w)
        parts.append((nv, neck.normals(nv), neck.faces, False, self.neck_attr))
        tv = body_tf(torso.rest)
        parts.append((tv, torso.normals(tv), torso.faces, False, torso.uv))
        if head.curtain is not None:
            cv = head_tf(head.curtain.rest)
            parts.append((cv, head.curtain.normals(cv), head.curtain.faces, True, head.curtain.uv))

        xy, depth, faces, two_sided, offsets, face_offsets = [], [], [], [], [0], [0]
        for verts, _, f, both, _ in parts:
            p2, z = self.project(verts, frame, self.ss)
            xy.append(p2)
            depth.append(z)
            faces.append(f + offsets[-1])
            two_sided.append(np.full(len(f), both))
            offsets.append(offsets[-1] + len(verts))
            face_offsets.append(face_offsets[-1] + len(f))
        res = self.size * self.ss
        raster = rasterize(np.concatenate(xy), np.concatenate(depth), np.concatenate(faces), res, res,
                           np.concatenate(two_sided))

        image = self.background.reshape(-1, 3).copy()
        covered = np.zeros(res * res, np.float32)
        covered[raster.pixel] = 1.0
        part_of = np.searchsorted(np.asarray(face_offsets[1:]), raster.triangle, side="right")
        for k, (_, normals, f, _, static) in enumerate(parts):
            sel = np.nonzero(part_of == k)[0]
            if not len(sel):
                continue
            tri = raster.triangle[sel] - face_offsets[k]
            # one gather for everything the shading needs: normal (3) + the part's static attributes
            attr = np.concatenate([normals, static], 1).astype(np.float32)
            fv = f[tri]
            bary = raster.bary[sel]
            px = attr[fv[:, 0]] * bary[:, :1] + attr[fv[:, 1]] * bary[:, 1:2] + attr[fv[:, 2]] * bary[:, 2:]
            n = _unit(px[:, :3])
            if k == 0:
                colour = self._shade_head(frame, rot, tri, px[:, 3:], n)
            elif k == 1:
                tex = sample_texture(neck.texture, px[:, 3:5])
                colour = self._light(tex[:, :3], n, px[:, 5], tex[:, 3], 20.0, 0.35)
            elif k == 2:
                tex = sample_texture(torso.texture, px[:, 3:5])
                skin = tex[:, 3]
                spec = skin * torso.skin_gloss + (1 - skin) * 0.03
                colour = self._light(tex[:, :3], n, np.ones(len(sel), np.float32), spec, 12.0, 0.1 + 0.25 * skin)
            else:
                tex = sample_texture(head.curtain.texture, px[:, 3:5], wrap=False)
                back = n[:, 2] < 0  # the inside of the sheet: flip the normal, and it is in shadow
                n[back] *= -1
                ao = np.where(back, 0.3, 1.0).astype(np.float32)
                colour = self._light(tex[:, :3], n, ao, tex[:, 3], 8.0, 0.25)
            image[raster.pixel[sel]] = colour

        image = image.reshape(res, res, 3)
        mask = covered.reshape(res, res)
        if self.ss > 1:
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (self.size, self.size), interpolation=cv2.INTER_AREA)
        rgb = (np.clip(image, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)
        mask8 = (np.clip(mask, 0, 1) * 255 + 0.5).astype(np.uint8)
        return rgb, self.keypoints(frame), mask8

    # --------------------------------------------------------------------------------------- shading
    def _shade_head(self, frame, rot, tri, attr, n):
        """Head pixels: attr holds the interpolated uv (2), ambient occlusion (1), rest direction (3), gap (1)."""
        head = self.head
        tex = sample_texture(head.texture, attr[:, 0:2])
        albedo, spec = tex[:, :3].copy(), tex[:, 3].copy()
        ao = attr[:, 2]
        d = attr[:, 3:6]
        gap = head.gap_faces[tri]
        if gap.any():
            g = np.clip(attr[gap, 6], 0, 1)
            albedo[gap] = head.mouth_shading(g, d[gap, 0], frame)
            spec[gap] = 0.04
            n[gap] = _unit(n[gap] * 0.3 + rot[:, 2] * 0.7)  # the cavity faces the way the head faces
        front = np.nonzero((d[:, 2] > 0.4) & ~gap)[0]
        eye_spec = None
        if len(front):
            e_alb, cover, ball, is_eye = head.eye_shading(d[front, 0], d[front, 1], frame)
            albedo[front] = albedo[front] * (1 - cover[:, None]) + e_alb * cover[:, None]
            spec[front] *= 1 - cover
            eyes = front[is_eye]
            if len(eyes):
                b = ball[is_eye]
                local = np.stack([b[:, 0], b[:, 1], np.sqrt(np.clip(1 - (b**2).sum(1), 0.05, 1))], 1)
                n_eye = local @ rot.T
                eye_spec = (eyes, 1.6 * np.clip(n_eye @ self.half, 0, 1) ** 120)
        colour = self._light(albedo, n, ao, spec, 24.0, 0.3)
        if eye_spec is not None:
            colour[eye_spec[0]] += eye_spec[1][:, None] * self.light_colour
        return colour

    def _light(self, albedo, n, ao, spec, shininess, wrap):
        ndl = n @ self.light
        wrap = np.asarray(wrap, np.float32)
        diffuse = np.clip((ndl + wrap) / (1 + wrap), 0, 1)
        fill = np.clip(n @ self.fill_dir, 0, 1) * self.scene.fill
        hemi = 0.65 + 0.35 * n[:, 1]
        ao = np.asarray(ao, np.float32)
        irradiance = (self.light_colour[None] * (diffuse * np.sqrt(ao) + fill * ao)[:, None]
                      + self.sky[None] * (hemi * ao)[:, None])
        highlight = spec * np.clip(n @ self.half, 0, 1) ** shininess * (ndl > 0)
        return (albedo * irradiance * 0.9 + highlight[:, None] * self.light_colour[None]).astype(np.float32)


@functools.lru_cache(maxsize=4)
def renderer(identity: IdentityParams, scene: SceneParams, size: int, supersample: int = 2) -> SynthRenderer:
    return SynthRenderer(identity, scene, size, supersample)


def render_frame(identity: IdentityParams, frame: FrameParams, size: int, scene: SceneParams | None = None,
                 supersample: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one frame: (RGB uint8 (size, size, 3), keypoints float32 (68, 2) in pixels, mask uint8 (size, size)).

    Keypoints are continuous pixel coordinates of the returned image (x right, y down, (0, 0) the top-left
    corner of the top-left pixel). Without a ``scene``, a fixed plain scene derived from the identity is used."""
    scene = default_scene(identity) if scene is None else scene
    return renderer(identity, scene, int(size), int(supersample)).render(frame)
