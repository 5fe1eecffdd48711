"""SynthHeads head: the geometry, identity texture and 68 landmarks of one synthetic person.

The head is a star-shaped surface around the head centre: along every direction d the skin lies at radius
r(d) = smooth-max of three super-ellipsoids (cranium, face, chin) + smooth facial relief (eye sockets, brow
ridge, nose, lips, cheekbones, ears) + hair thickness. It is meshed as a (rows × columns) grid over the
angles (s = azimuth, 0 facing the camera; t = elevation), denser over the face. One grid row is bent to follow
the line between the lips and duplicated, so that the jaw can open the mouth: the rows below it rotate with
the jaw, and the strip of triangles between the two copies becomes the mouth interior.

Texture (albedo and specular strength) lives on the same (s, t) angles and is computed once per identity;
eyes (lids, iris, gaze, blinks) and the mouth interior are shaded per pixel because they change every frame.
Landmarks are points on the same surface, so they move exactly with the rendered face; the jaw line
(points 0–16) marches along fixed surface arcs to the occluding contour when the cheek turns away.

Head-local units: 1 ≈ 10 cm; x to the subject's left (image right when frontal), y up, z out of the face.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .params import FrameParams, IdentityParams
from .raster import grid_faces, grid_normals

JAW_MAX_DEGREES = 17.0
JAW_PIVOT = np.array([0.0, -0.12, -0.15])
ARC_SAMPLES = 80


# ------------------------------------------------------------------------------------------------ helpers
def smoothstep(e0: float, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def to_linear(colour) -> np.ndarray:
    """sRGB → linear with a plain 2.2 gamma (the renderer encodes with the same gamma)."""
    return np.asarray(colour, np.float32) ** 2.2


def directions(s, t) -> np.ndarray:
    """Unit vectors (..., 3) for azimuth s (0 = facing the camera, > 0 towards +x) and elevation t."""
    ct = np.cos(t)
    return np.stack([ct * np.sin(s), np.sin(t), ct * np.cos(s)], -1)


def angles_of(fx, fy):
    """(s, t) of the front-facing direction whose x, y components are (fx, fy)."""
    fy = np.clip(fy, -0.999, 0.999)
    t = np.arcsin(fy)
    s = np.arcsin(np.clip(fx / np.cos(t), -1.0, 1.0))
    return s, t


def front_direction(fx, fy) -> np.ndarray:
    fx, fy = np.broadcast_arrays(np.asarray(fx, np.float64), np.asarray(fy, np.float64))
    fz = np.sqrt(np.clip(1.0 - fx**2 - fy**2, 0.0, None))
    return np.stack([fx, fy, fz], -1)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head rotation (degrees) in head-local axes: yaw about y, then pitch about x, then roll about z."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    # pitch > 0 lifts the chin: the face normal (0, 0, 1) tilts towards +y
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    # roll > 0 is clockwise in the image (y up in these axes, so a negative rotation about z)
    rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _superellipsoid_hit(d: np.ndarray, centre, pos, neg, e: float) -> np.ndarray:
    """Distance λ along unit rays d (N, 3) from the origin to where they leave a super-ellipsoid
    Σ|p_i / R_i|^e = 1 whose half-axes may differ on the two sides of the centre (``pos`` / ``neg``); 0 for
    rays that miss it. Newton from outside converges monotonically to the exit point because the function
    is convex along the ray; rays that miss end with F > 1 and are reported as 0."""
    centre, pos, neg = (np.asarray(v, np.float64) for v in (centre, pos, neg))
    lam = np.full(len(d), 3.0)
    for _ in range(18):
        p = lam[:, None] * d - centre
        radius = np.where(p >= 0, pos, neg)
        q = np.abs(p) / radius
        f = (q**e).sum(1)
        df = (e * q ** (e - 1) * np.sign(p) * d / radius).sum(1)
        step = np.where(df > 1e-9, (f - 1.0) / np.maximum(df, 1e-9), 0.0)
        lam = np.clip(lam - step, 0.0, 3.0)
    p = lam[:, None] * d - centre
    f = ((np.abs(p) / np.where(p >= 0, pos, neg)) ** e).sum(1)
    return np.where(np.abs(f - 1.0) < 1e-3, lam, 0.0)


def _smooth_max(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.maximum(a, b) + 0.25 * k * h * h


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise (h, w) with features about ``cell`` texels across, unit std, wrapping horizontally."""
    gh, gw = max(2, int(math.ceil(h / cell)) + 1), max(3, int(math.ceil(w / cell)))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    grid = np.concatenate([grid, grid[:, :2]], 1)  # wrap so the s = ±π seam matches
    big = cv2.resize(grid, (int(round(w * (gw + 2) / gw)), h), interpolation=cv2.INTER_CUBIC)[:, :w]
    return (big - big.mean()) / (big.std() + 1e-6)


def _streaks(rng: np.random.Generator, h: int, w: int, sx: float, sy: float) -> np.ndarray:
    """Anisotropic noise: fine across (sx texels), long along the columns (sy) — hair strands."""
    n = rng.standard_normal((h, w)).astype(np.float32)
    pad = int(4 * sx) + 2
    n = np.pad(n, ((0, 0), (pad, pad)), mode="wrap")
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_REFLECT)[:, pad:-pad]
    return (n - n.mean()) / (n.std() + 1e-6)


class HeadModel:
    """Mesh, fields, texture and landmark supports of one identity at one output resolution."""

    def __init__(self, identity: IdentityParams, size: int):
        self.p = identity
        self.size = int(size)
        self._layout()
        self._build_grid()
        self._build_texture()
        self._build_jaw_arcs()
        self.curtain = HairCurtain(self) if identity.hair_style == "long" else None

    # -------------------------------------------------------------------------------------- layout
    def _layout(self) -> None:
        p = self.p
        self.eye_x = np.array([-p.eye_spacing, p.eye_spacing])  # image-left eye first (landmarks 36–41)
        self.mw = p.mouth_width
        # the nasion sits a little above the eye centres, the brows above that
        self.nasion_y = p.eye_y + 0.035
        rng = np.random.default_rng([p.seed, 5])
        self.iris_freq = (int(rng.integers(15, 30)), float(rng.uniform(0, 2 * np.pi)))
        self._hair_tables(rng)

    def seam_y(self, fx):
        """fy of the line between the lips (direction space)."""
        u = np.asarray(fx) / self.mw
        return self.p.mouth_y + self.p.mouth_curve * u * u * np.exp(-((u / 1.6) ** 4))

    def lip_heights(self, u):
        """Heights (direction space) of the upper lip above and the lower lip below the lips' line at
        u = fx / mouth half-width: the upper lip dips in the middle (Cupid's bow), both vanish at the corners."""
        p = self.p
        u = np.asarray(u)
        ul = p.upper_lip * np.clip(1 - np.abs(u) ** 2.2, 0, 1) ** 0.6 * (1 - 0.35 * p.cupid_bow * np.exp(-((u / 0.13) ** 2)))
        ll = p.lower_lip * np.clip(1 - u * u, 0, 1) ** 0.7
        return ul, ll

    def mouth_open_profile(self, fx):
        """1 over the middle of the mouth, 0 at and beyond the corners: how far the lips part."""
        return 1.0 - smoothstep(0.45, 1.0, np.abs(np.asarray(fx)) / self.mw)

    # ------------------------------------------------------------------------------------ geometry
    def shape_radius(self, d: np.ndarray) -> np.ndarray:
        p = self.p
        w, h, dep = p.head_width, p.head_height, p.head_depth
        cranium = _superellipsoid_hit(d, (0, 0.16, -0.1), (0.75 * w, 0.93 * h, 0.97 * dep), (0.75 * w, 0.78, 0.97 * dep),
                                      2.3)
        face = _superellipsoid_hit(d, (0, -0.32, 0.12), (0.74, 0.70, 0.80 * dep), (0.74, 0.60 * p.chin_length, 0.45), 2.5)
        chin = _superellipsoid_hit(d, (0, -0.62 * p.chin_length, 0.50 * p.chin_forward), (0.36 * p.chin_width, 0.3, 0.36),
                                   (0.36 * p.chin_width, 0.28 * p.chin_length, 0.25), 2.3)
        return _smooth_max(_smooth_max(cranium, face, 0.12), chin, 0.10)

    def place(self, d: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Surface points r·d, with the lower face narrowed towards the jaw (the cheekbones are the widest
        part of the face, the jaw angles much narrower) — a taper of x by height."""
        pts = r[:, None] * d
        k = 0.24 - 0.5 * (self.p.jaw_width - 0.94)
        pts[:, 0] *= 1.0 - k * smoothstep(-0.12, -0.85, pts[:, 1])
        return pts

    def relief(self, d: np.ndarray, ears: bool = True) -> np.ndarray:
        """Radial offsets of the facial features along directions d (N, 3)."""
        p = self.p
        fx, fy, fz = d[:, 0], d[:, 1], d[:, 2]

        def g(cx, cy, sx, sy):
            return np.exp(-0.5 * (((fx - cx) / sx) ** 2 + ((fy - cy) / sy) ** 2))

        ey, nw, tip, my = p.eye_y, p.nose_width, p.nose_tip_y, p.mouth_y
        dr = np.zeros(len(d))
        for side in (-1.0, 1.0):
            ex = side * p.eye_spacing
            dr += -0.06 * g(ex, ey + 0.01, 0.13, 0.09)  # eye socket
            dr += 0.032 * g(ex, ey, 0.08, 0.045)  # eyeball under the lids
            dr += 0.045 * p.brow_ridge * g(ex * 0.95, ey + 0.12, 0.15, 0.045)
            dr += 0.04 * p.cheekbones * g(side * 0.42, ey - 0.24, 0.14, 0.09)
            dr += 0.05 * g(side * 0.078 * nw, tip - 0.02, 0.038 * nw, 0.032)  # nostril wing
            dr -= 0.012 * g(side * self.mw * 1.05, my, 0.03, 0.03)  # mouth corner
        dr += 0.02 * g(0, ey + 0.1, 0.12, 0.05)  # glabella between the brows
        # nose: a ridge from the nasion to the tip, growing in height and width, then a tip ball
        yn = self.nasion_y
        q = (yn - fy) / (yn - tip)
        qc = np.clip(q, 0, 1)
        height = p.nose_projection * (0.03 + 0.15 * qc**1.4 + 0.02 * p.nose_hump * np.sin(np.pi * qc))
        width = nw * (0.045 + 0.04 * qc)
        along = np.where(q < 0, np.exp(-((q / 0.3) ** 2)), np.where(q > 1, np.exp(-(((tip - fy) / 0.028) ** 2)), 1.0))
        dr += height * np.exp(-0.5 * (fx / width) ** 2) * along
        dr += 0.035 * p.nose_projection * g(0, tip + 0.012, 0.06 * nw, 0.045)
        dr += 0.012 * g(0, 0.5 * (tip + my), 0.2, 0.06)  # the maxilla bulge under the nose
        # lips around the seam: upper and lower lip cushions, then the groove above the chin
        rel = fy - self.seam_y(fx)
        ul, ll = p.upper_lip, p.lower_lip
        dr += 0.022 * np.exp(-((fx / (0.95 * self.mw)) ** 4)) * np.exp(-0.5 * ((rel - 0.5 * ul) / (0.7 * ul)) ** 2)
        dr += 0.030 * np.exp(-((fx / (0.9 * self.mw)) ** 4)) * np.exp(-0.5 * ((rel + 0.5 * ll) / (0.7 * ll)) ** 2)
        dr -= 0.014 * g(0, my - ll - 0.05, 0.12, 0.03)
        dr *= smoothstep(0.05, 0.45, fz)
        if ears:
            dr += self._ears(d)
        return dr

    def _ears(self, d: np.ndarray) -> np.ndarray:
        p = self.p
        fy, fz = d[:, 1], d[:, 2]
        rho = np.sqrt(((fz + 0.12) / (0.10 * p.ear_size)) ** 2 + ((fy - (p.eye_y - 0.13)) / (0.2 * p.ear_size)) ** 2)
        disk = 1.0 - smoothstep(0.7, 1.1, rho)
        rim = np.exp(-(((rho - 0.8) / 0.15) ** 2))
        bowl = np.exp(-((rho / 0.4) ** 2))
        return smoothstep(0.55, 0.85, np.abs(d[:, 0])) * p.ear_out * (0.05 * disk + 0.035 * rim - 0.03 * bowl)

    def skin_radius(self, d: np.ndarray, ears: bool = True) -> np.ndarray:
        return self.shape_radius(d) + self.relief(d, ears)

    # ---------------------------------------------------------------------------------------- hair
    def _hair_tables(self, rng: np.random.Generator) -> None:
        """Per-azimuth tables of where hair starts (lower elevation limit) and, for balding heads, stops."""
        p = self.p
        deg = np.array([0, 35, 60, 78, 95, 112, 140, 180], np.float64)
        front = math.asin(p.hairline)
        if p.hair_style in ("medium", "long"):
            low = [front, front - 0.06, 0.40, -0.12, -0.25, -0.40, -0.60, -0.66]
        elif p.hair_style == "curly":
            low = [front, front - 0.06, 0.40, 0.0, 0.08, -0.3, -0.55, -0.62]
        else:
            low = [front, front - 0.06, 0.42, 0.02, 0.16, -0.22, -0.50, -0.60]
        low = np.array(low) + rng.normal(0, 0.03, len(low))
        # a receding hairline: the corners above the temples go back (M shape), more often on men
        low[1] += rng.uniform(0, 0.28) * p.masculinity if p.hair_style in ("short", "buzz", "bald", "curly") else 0.0
        if p.fringe:
            low[:2] = math.asin(min(0.9, p.eye_y + p.brow_offset + 0.09))
            low[2] = min(low[2], 0.32)
        table_s = np.linspace(-np.pi, np.pi, 721)
        t_low = np.interp(np.abs(np.degrees(table_s)), deg, low)
        # hair swept to one side: the front boundary tilts, lower on the side the hair falls to
        self._sweep = float(rng.uniform(-1, 1))
        front_w = np.exp(-((np.degrees(table_s) / 45.0) ** 2))
        t_low = t_low - 0.07 * self._sweep * np.sin(table_s) * front_w
        # smooth the polyline and give the hairline a slightly irregular edge
        t_low = _circular_smooth(t_low, 10) + 0.012 * _circular_smooth(rng.standard_normal(721), 2)
        top = np.full(721, 9.0)
        if p.hair_style == "bald":  # horseshoe: sides and back only
            top = np.interp(np.abs(np.degrees(table_s)), [0, 70, 95, 140, 180], [-2.0, -2.0, 0.30, 0.40, 0.42])
            top = _circular_smooth(top, 10)
        self._hair_s, self._hair_low, self._hair_top = table_s, t_low, top
        self._hair_lumps = _circular_smooth(rng.standard_normal(721), 12)
        self._hair_lumps /= np.abs(self._hair_lumps).max() + 1e-6
        self._part_s = 0.35 * p.parting

    def hair_alpha(self, s, t, edge: float = 0.015) -> np.ndarray:
        low = np.interp(s, self._hair_s, self._hair_low)
        top = np.interp(s, self._hair_s, self._hair_top)
        return smoothstep(-edge, edge, t - low) * (1.0 - smoothstep(-edge, edge, t - top))

    def hair_thickness(self, s, t) -> np.ndarray:
        p = self.p
        if p.hair_volume <= 0:
            return np.zeros(np.shape(s))
        low = np.interp(s, self._hair_s, self._hair_low)
        a = self.hair_alpha(s, t, 0.03)
        ramp = smoothstep(-0.02, 0.3, t - low)  # nothing at the hairline, full volume above it
        if p.hair_style in ("short", "buzz", "bald"):
            ramp = ramp * (0.35 + 0.65 * smoothstep(0.1, 0.9, t))  # short sides, volume on top
        elif p.hair_style == "curly":
            ramp = smoothstep(-0.02, 0.15, t - low) * (0.8 + 0.2 * smoothstep(-0.2, 0.8, t))
        # more volume on the side the hair is swept to
        ramp = ramp * (1.0 + 0.3 * self._sweep * np.sin(s) * smoothstep(0.2, 0.9, t))
        h = p.hair_volume * a * ramp
        if p.hair_style == "curly":  # lumpy silhouette
            h *= 1.0 + 0.25 * np.interp(s * 3 + t * 2, np.linspace(-4 * np.pi, 4 * np.pi, 721), self._hair_lumps)
        if p.hair_style == "bun":
            ds = np.angle(np.exp(1j * (s - np.pi)))
            h += 0.30 * np.exp(-0.5 * ((ds / 0.32) ** 2 + ((t - 0.55) / 0.3) ** 2))
        return h

    # ---------------------------------------------------------------------------------- expressions
    def fields(self, d: np.ndarray, side) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-point expression fields: smile and brow-raise displacements (N, 3) and jaw weight (N,).

        ``side`` is +1 above the lips' line, -1 below it, 0 on it (the mouth corners): inside the mouth the
        jaw weight jumps from 0 to 1 across the line, which is what parts the lips."""
        p = self.p
        fx, fy, fz = d[:, 0], d[:, 1], d[:, 2]
        side = np.broadcast_to(np.asarray(side, np.float64), fx.shape)
        front = smoothstep(0.05, 0.45, fz)

        def g(cx, cy, sx, sy):
            return np.exp(-0.5 * (((fx - cx) / sx) ** 2 + ((fy - cy) / sy) ** 2))

        smile = np.zeros((len(d), 3))
        corner_y = self.seam_y(self.mw)
        for sgn in (-1.0, 1.0):
            w = g(sgn * self.mw, corner_y, 0.09, 0.07) * front
            smile += w[:, None] * np.array([sgn * 0.035, 0.04, -0.02])
            cheek = 0.03 * g(sgn * 0.34, p.mouth_y + 0.17, 0.1, 0.08) * front
            smile += cheek[:, None] * d
        brow_w = np.exp(-0.5 * ((fy - (p.eye_y + p.brow_offset + 0.02)) / 0.09) ** 2) * np.exp(-((fx / 0.55) ** 4)) * front
        brow = brow_w[:, None] * np.array([0.0, 0.045, 0.0])

        rel = fy - self.seam_y(fx)
        m = self.mouth_open_profile(fx)
        below = 1.0 - smoothstep(-0.16, 0.05, rel)  # cheeks stretch smoothly around the mouth
        jump = 0.5 - 0.5 * np.sign(side)  # 1 below the line, 0 above, ½ on it
        jaw = ((1.0 - m) * below + m * jump) * smoothstep(-0.35, 0.25, fz)
        return smile, brow, jaw

    def deform(self, points: np.ndarray, smile: np.ndarray, brow: np.ndarray, jaw: np.ndarray,
               frame: FrameParams) -> np.ndarray:
        """Apply one frame's expression to head-local points (N, 3) with their fields."""
        out = points + frame.smile * smile + frame.brow * brow
        angle = math.radians(JAW_MAX_DEGREES) * float(np.clip(frame.jaw, 0.0, 1.0))
        if angle > 0:
            c, s = math.cos(angle), math.sin(angle)
            rel = out - JAW_PIVOT
            rot = np.stack([rel[:, 0], c * rel[:, 1] - s * rel[:, 2], s * rel[:, 1] + c * rel[:, 2]], 1)
            out = out + jaw[:, None] * (rot - rel)
        return out

    def surface_points(self, d: np.ndarray, side=0.0, ears: bool = False):
        """Skin points along directions d (no hair, by default no ears) with their expression fields."""
        return (self.place(d, self.skin_radius(d, ears)), *self.fields(d, side))

    # ----------------------------------------------------------------------------------------- grid
    def _build_grid(self) -> None:
        # about one vertex per 1.3 output pixels over the face: finer buys nothing once shading is per pixel
        ns = int(np.clip(round(self.size * 0.64 / 2) * 2, 64, 400))
        nt = int(round(ns * 0.8))
        sig = np.linspace(-1, 1, ns + 1)
        s = np.pi * (0.45 * sig + 0.55 * sig**3)  # columns crowd over the face
        tau = np.linspace(-1, 1, nt)
        tc = -0.25  # rows crowd around the middle of the face
        f = 0.6 * tau + 0.4 * tau**3
        t_base = np.where(f < 0, tc + (np.pi / 2 + tc) * f, tc + (np.pi / 2 - tc) * f)
        t_base[0], t_base[-1] = -np.pi / 2, np.pi / 2

        # bend the rows near the mouth so that one row follows the line between the lips exactly
        t_m = math.asin(self.p.mouth_y)
        im = int(np.argmin(np.abs(t_base - t_m)))
        t_seam = np.full(ns + 1, t_m)
        for _ in range(4):
            t_seam = np.arcsin(np.clip(self.seam_y(np.cos(t_seam) * np.sin(s)), -0.99, 0.99))
        tent = np.clip(1.0 - np.abs(np.arange(nt) - im) / 6.0, 0.0, 1.0)
        t_rows = t_base[:, None] + tent[:, None] * (t_seam[None, :] - t_base[im])
        # duplicate the seam row: rows 0..im below the lips (side -1), rows im+1.. above (side +1)
        t_grid = np.concatenate([t_rows[: im + 1], t_rows[im:]], 0)
        side = np.concatenate([np.full(im + 1, -1.0), np.full(nt - im, 1.0)])
        rows, cols = t_grid.shape
        s_grid = np.broadcast_to(s[None, :], (rows, cols))
        self.rows, self.cols, self.seam_row = rows, cols, im

        d = directions(s_grid, t_grid).reshape(-1, 3)
        self.dirs = d.astype(np.float32)
        skin = self.skin_radius(d)
        hair = self.hair_thickness(s_grid.ravel(), t_grid.ravel())
        self.rest = self.place(d, skin + hair)
        self.f_smile, self.f_brow, self.f_jaw = self.fields(d, np.repeat(side, cols))
        self.faces = grid_faces(rows, cols)
        row_of = self.faces // cols
        self.gap_faces = (row_of.min(1) == im) & (row_of.max(1) == im + 1)
        # gap coordinate: 0 on the upper lip's edge, 1 on the lower lip's edge
        gap = np.zeros((rows, cols), np.float32)
        gap[im] = 1.0
        self.gap_coord = gap.ravel()

        # ambient occlusion from concavity: the skin lies below its blurred neighbourhood in creases
        # (eye sockets, under the nose, lip line, inner ear) — baked per vertex once
        r = (skin + hair).reshape(rows, cols).astype(np.float32)
        pad = 12
        blurred = cv2.GaussianBlur(np.pad(r[:, :-1], ((0, 0), (pad, pad)), mode="wrap"), (0, 0), 3.0)[:, pad:-pad]
        blurred = np.concatenate([blurred, blurred[:, :1]], 1)
        self.ao = np.clip(1.0 - 4.0 * np.maximum(blurred - r, 0.0), 0.5, 1.0).ravel().astype(np.float32)

        tw, th = self.texture_shape()
        self.uv = np.stack([(s_grid + np.pi) / (2 * np.pi) * tw - 0.5, (np.pi / 2 - t_grid) / np.pi * th - 0.5], -1)
        self.uv = self.uv.reshape(-1, 2).astype(np.float32)

    def texture_shape(self) -> tuple[int, int]:
        return 4 * self.size, 2 * self.size

    def vertices(self, frame: FrameParams) -> np.ndarray:
        """Deformed head-local vertices (rows·cols, 3) for one frame."""
        return self.deform(self.rest, self.f_smile, self.f_brow, self.f_jaw, frame)

    def normals(self, world_vertices: np.ndarray) -> np.ndarray:
        """Vertex normals of the (transformed) grid; above and below the lips' line separately, so that an
        open mouth does not bend the lips' shading."""
        grid = world_vertices.reshape(self.rows, self.cols, 3)
        cut = self.seam_row + 1
        return np.concatenate([grid_normals(grid[:cut]), grid_normals(grid[cut:])], 0).reshape(-1, 3)

    # -------------------------------------------------------------------------------------- texture
    def _build_texture(self) -> None:
        p = self.p
        tw, th = self.texture_shape()
        rng = np.random.default_rng([p.seed, 2])
        s = (np.arange(tw) + 0.5) / tw * 2 * np.pi - np.pi
        t = np.pi / 2 - (np.arange(th) + 0.5) / th * np.pi
        S, T = np.meshgrid(s.astype(np.float32), t.astype(np.float32))
        fx, fy, fz = np.cos(T) * np.sin(S), np.sin(T), np.cos(T) * np.cos(S)
        front = smoothstep(0.0, 0.3, fz)
        texel = tw / (2 * np.pi)  # texels per radian (also per direction unit near the face centre)

        def g(cx, cy, sx, sy):
            return np.exp(-0.5 * (((fx - cx) / sx) ** 2 + ((fy - cy) / sy) ** 2)) * front

        ey, tip, my, mw = p.eye_y, p.nose_tip_y, p.mouth_y, self.mw
        alb = np.empty((th, tw, 3), np.float32)
        alb[:] = to_linear(p.skin_colour)
        grain = rng.standard_normal((th, tw)).astype(np.float32)
        grain = cv2.GaussianBlur(grain, (0, 0), 0.7)
        grain /= grain.std() + 1e-6
        mottle = 0.06 * _value_noise(rng, th, tw, tw / 20) + 0.035 * _value_noise(rng, th, tw, tw / 90) + 0.03 * grain
        alb *= (1.0 + mottle)[..., None]
        # blood under the skin: cheeks, nose, ears, lips' surroundings
        red = g(-0.36, my + 0.2, 0.12, 0.09) + g(0.36, my + 0.2, 0.12, 0.09) + 0.7 * g(0, tip + 0.02, 0.07, 0.06)
        red += 0.6 * smoothstep(0.7, 0.9, np.abs(fx)) * np.exp(-(((fy - ey + 0.13) / 0.25) ** 2))
        red *= 0.35 + 0.65 * p.skin_redness
        alb *= 1.0 - red[..., None] * np.array([0.0, 0.2, 0.17], np.float32)
        # around the eyes the skin is thinner and darker
        for ex in self.eye_x:
            shade = np.exp(-0.5 * (((fx - ex) / 0.14) ** 2 + ((fy - ey + 0.02) / 0.07) ** 2)) * front
            alb *= 1.0 - 0.18 * shade[..., None] * np.array([0.9, 1.0, 0.85], np.float32)
        spec = np.full((th, tw), p.skin_gloss, np.float32)
        spec *= 1.0 + 0.8 * (g(0, ey + 0.3, 0.18, 0.2) + g(0, tip, 0.07, 0.15))  # the oily T-zone

        # upper-lid crease
        for ex in self.eye_x:
            u = (fx - ex) / p.eye_width
            up, _ = self.lid_curves(np.clip(u, -1, 1), ex, 0.0)
            crease = np.exp(-(((fy - up - 0.03) / 0.008) ** 2)) * np.clip(1 - u * u, 0, 1) * front
            alb *= 1.0 - 0.22 * crease[..., None]

        # nostrils (seen from below) and the shadowed corners of the mouth
        nostril = g(-0.038 * p.nose_width, tip - 0.048, 0.022, 0.012) + g(0.038 * p.nose_width, tip - 0.048, 0.022, 0.012)
        alb *= 1.0 - 0.8 * np.clip(nostril, 0, 1)[..., None]
        corner = g(-mw, self.seam_y(mw), 0.015, 0.012) + g(mw, self.seam_y(mw), 0.015, 0.012)
        alb *= 1.0 - 0.35 * np.clip(corner, 0, 1)[..., None]

        # lips
        rel = fy - self.seam_y(fx)
        u = fx / mw
        ul, ll = self.lip_heights(u)
        soft = 1.2 / texel
        lips = (smoothstep(-soft, soft, ul - rel) * smoothstep(-soft, soft, rel + ll)) * (np.abs(u) < 1.05) * front
        lip_col = to_linear(p.lip_colour) * (1 + 0.04 * grain[..., None])
        lip_col = lip_col * (1.0 - 0.3 * np.exp(-((rel / 0.01) ** 2)))[..., None]  # darker where the lips meet
        seam_line = np.exp(-((rel / 0.006) ** 2)) * (1 - smoothstep(0.9, 1.15, np.abs(u))) * front
        alb *= 1.0 - 0.45 * seam_line[..., None]
        alb = alb * (1 - lips[..., None]) + lip_col * lips[..., None]
        spec = spec * (1 - lips) + 0.25 * lips

        # stubble: dark dots over the beard area (below a line from the sideburns to the nose)
        if p.stubble > 0:
            top = np.interp(np.abs(fx), [0.0, mw, 0.5, 0.72, 0.9], [tip - 0.04, my + 0.09, my + 0.12, ey - 0.12, ey - 0.05])
            beard = smoothstep(-0.08, 0.05, top - fy) * smoothstep(-0.45, -0.1, fz + 0.3 * (fy < -0.6)) * (1 - lips)
            beard *= 0.9 + 0.1 * _value_noise(rng, th, tw, 12)
            dots = (rng.uniform(size=(th, tw)) < 0.1 + 0.2 * p.stubble).astype(np.float32)
            dots = cv2.GaussianBlur(dots, (0, 0), 0.5)
            dark = to_linear(p.brow_colour) * 0.8
            amount = np.clip(beard * p.stubble * 0.5 * dots, 0, 0.6)[..., None]
            # shaved skin looks a little blue-grey; the stubble itself is sharp dark dots
            alb = alb * (1 - 0.18 * beard[..., None] * p.stubble * np.array([0.35, 0.25, 0.1], np.float32))
            alb = alb * (1 - amount) + dark * amount

        # freckles and moles: sharp spots that a blurry model cannot fake
        spots = np.zeros((th, tw), np.uint8)
        n_freckles = int(p.freckles * 420)
        if n_freckles:
            centres = np.concatenate([
                rng.normal([-0.3, ey - 0.16], [0.12, 0.08], (n_freckles // 3, 2)),
                rng.normal([0.3, ey - 0.16], [0.12, 0.08], (n_freckles // 3, 2)),
                rng.normal([0.0, ey - 0.12], [0.06, 0.09], (n_freckles - 2 * (n_freckles // 3), 2)),
            ])
            radii = rng.uniform(0.004, 0.011, len(centres))
            _draw_spots(spots, centres, radii, rng.uniform(90, 200, len(centres)), texel, tw, th)
        freckle = spots.astype(np.float32) / 255.0
        alb *= 1.0 - freckle[..., None] * np.array([0.3, 0.42, 0.5], np.float32)
        if p.moles:
            spots[:] = 0
            centres = np.stack([rng.uniform(-0.6, 0.6, p.moles), rng.uniform(-0.8, 0.45, p.moles)], 1)
            _draw_spots(spots, centres, rng.uniform(0.008, 0.016, p.moles), np.full(p.moles, 255.0), texel, tw, th)
            mole = cv2.GaussianBlur(spots.astype(np.float32) / 255.0, (0, 0), 0.6)
            alb = alb * (1 - mole[..., None]) + to_linear((0.25, 0.15, 0.1)) * mole[..., None]

        # eyebrows: a tapered band along an arched curve, filled with slanted hair strokes
        strokes = _streaks(rng, th, tw, 0.6, 2.5)
        strokes = cv2.warpAffine(strokes, np.float32([[1, 0.6, 0], [0, 1, 0]]), (tw, th), borderMode=cv2.BORDER_REFLECT)
        brow_cov = np.zeros((th, tw), np.float32)
        for k, ex in enumerate(self.eye_x):
            a, centre, thick = self.brow_coords(fx, k)
            inside = smoothstep(-0.08, 0.05, a) * smoothstep(-0.08, 0.05, 1.0 - a)
            band = smoothstep(-1.0 / texel, 1.0 / texel, 0.5 * thick - np.abs(fy - centre))
            brow_cov = np.maximum(brow_cov, inside * band * front)
        brow_alpha = np.clip(brow_cov * p.brow_density * (0.8 + 0.25 * strokes), 0, 1)
        alb = alb * (1 - brow_alpha[..., None]) + to_linear(p.brow_colour) * brow_alpha[..., None]
        spec *= 1 - 0.7 * brow_alpha

        # scalp hair: coverage with strands flowing down from the crown, a parting line on top
        # (every style has some coverage: bald heads keep a horseshoe at the sides and back)
        strands = _streaks(rng, th, tw, 0.7, 9.0)
        if p.curl > 0.5:
            curls = _value_noise(rng, th, tw, 5.0)
            strands = 0.35 * strands + 0.9 * np.abs(np.sin(2.2 * curls)) * 2 - 1
        wisp = 0.02 * strands
        alpha = self.hair_alpha(S + 0.0, T + wisp, 0.01).astype(np.float32)
        part = np.exp(-(((np.angle(np.exp(1j * (S - self._part_s)))) * np.cos(T) * texel / 1.2) ** 2))
        part *= smoothstep(0.75, 1.0, T) * (1 - smoothstep(1.35, 1.5, T))
        part *= p.hair_style in ("short", "medium", "long", "bun")
        alpha *= 1 - 0.85 * part
        if p.hair_style == "buzz":
            alpha *= 0.55 + 0.45 * (rng.uniform(size=(th, tw)) < 0.6)
        base = to_linear(p.hair_colour)
        hair_col = base[None, None] * (0.62 + 0.38 * np.tanh(strands))[..., None] * (1 + 0.12 * mottle[..., None])
        alb = alb * (1 - alpha[..., None]) + hair_col * alpha[..., None]
        spec = spec * (1 - alpha) + alpha * (0.10 + 0.06 * np.tanh(strands))
        self.texture = np.concatenate([np.clip(alb, 0, 1), np.clip(spec, 0, 1)[..., None]], -1).astype(np.float32)

    # ----------------------------------------------------------------------------- eyes and brows
    def lid_curves(self, u, eye_x: float, blink: float):
        """fy of the upper and lower lid at eye coordinate u ∈ [-1, 1] (image left → right)."""
        p = self.p
        outer = np.where(eye_x < 0, -u, u)  # 1 at the outer corner
        centre = p.eye_y + 0.5 * p.eye_tilt * outer
        w = np.clip(1 - u * u, 0, 1)
        up = centre + p.eye_open * w**0.6 * (1 - 0.12 * outer)
        lo = centre - 0.55 * p.eye_open * w**0.8 * (1 + 0.1 * outer)
        close = lo + 0.25 * (up - lo)
        b = float(np.clip(blink, 0, 1))
        return up + b * (close - up), lo + b * (close - lo)

    def brow_coords(self, fx, k: int):
        """For brow k (0 = image left): position a along the brow (0 inner end, 1 outer end), the fy of its
        centre line there and its thickness."""
        p = self.p
        sgn = -1.0 if k == 0 else 1.0
        inner = p.eye_spacing - p.eye_width - 0.015
        outer = p.eye_spacing + p.eye_width + 0.04
        a = (sgn * np.asarray(fx) - inner) / (outer - inner)
        ac = np.clip(a, 0, 1)
        centre = p.eye_y + p.brow_offset + p.brow_arch * np.sin(np.pi * np.clip(ac * 0.8, 0, 1)) - 0.015 * ac
        thick = p.brow_thickness * (1.0 - 0.55 * ac)
        return a, centre, thick

    def eye_shading(self, fx, fy, frame: FrameParams):
        """Per-pixel eyes for front head pixels at direction coordinates (fx, fy).

        Returns (albedo (N, 3), cover (N,) in [0, 1] to blend over the skin, eyeball normal xy (N, 2) in
        head-local axes for the specular highlight, eye (N,) bool)."""
        p = self.p
        n = len(fx)
        albedo = np.zeros((n, 3), np.float32)
        cover = np.zeros(n, np.float32)
        ball = np.zeros((n, 2), np.float32)
        is_eye = np.zeros(n, bool)
        sclera = to_linear((0.88, 0.84, 0.80))
        iris_col = to_linear(p.iris_colour)
        lash_col = to_linear(p.brow_colour) * 0.4
        for ex in self.eye_x:
            u = (fx - ex) / p.eye_width
            near = (np.abs(u) < 1.1) & (np.abs(fy - p.eye_y) < 3 * p.eye_open)
            idx = np.nonzero(near)[0]
            if not len(idx):
                continue
            uu, yy = u[idx], fy[idx]
            up, lo = self.lid_curves(np.clip(uu, -1, 1), ex, frame.blink)
            edge = 0.004
            inside = smoothstep(-edge, edge, up - yy) * smoothstep(-edge, edge, yy - lo) * (np.abs(uu) < 1)
            # eyeball: iris follows the gaze, partly hidden by the upper lid
            ix = ex + 0.42 * p.eye_width * np.clip(frame.gaze_x, -1, 1)
            iy = p.eye_y + 0.1 * p.eye_open + 0.5 * p.eye_open * np.clip(frame.gaze_y, -1, 1)
            r_iris = p.iris_size * p.eye_width
            dx, dy = fx[idx] - ix, yy - iy
            rad = np.sqrt(dx * dx + dy * dy) / r_iris
            ang = np.arctan2(dy, dx)
            fibres = 0.5 + 0.5 * np.sin(self.iris_freq[0] * ang + 2.5 * np.sin(5 * ang + self.iris_freq[1]))
            iris = iris_col * (0.6 + 0.55 * fibres * (0.4 + 0.6 * rad))[:, None]
            iris *= (1.0 - 0.7 * smoothstep(0.7, 1.0, rad))[:, None]  # dark limbal ring
            iris = iris * (1.0 - 0.97 * (1 - smoothstep(0.33, 0.40, rad)))[:, None]  # pupil
            white = sclera * (1.0 - 0.35 * uu * uu)[:, None]
            col = white + (iris - white) * (1 - smoothstep(0.95, 1.05, rad))[:, None]
            # the upper lid and lashes shade the top of the eyeball
            col *= (1.0 - 0.45 * (1 - smoothstep(0.0, 0.35 * p.eye_open, up - yy)))[:, None]
            lash = smoothstep(-0.002, 0.002, yy - up) * (1 - smoothstep(0.006, 0.014 + 0.004 * (1 - uu * uu), yy - up))
            lash *= (np.abs(uu) < 1.05) * (1 - 0.3 * uu * uu)
            cov = np.maximum(inside, lash)
            share = inside / np.maximum(cov, 1e-6)  # eyeball vs lashes where both cover the pixel
            col = col * share[:, None] + lash_col * ((1 - share) * (cov > 0))[:, None]
            take = cov > cover[idx]
            sel = idx[take]
            albedo[sel], cover[sel] = col[take], cov[take]
            radius = 1.3 * p.eye_width
            ball[sel] = np.stack([(fx[sel] - ex) / radius, (fy[sel] - p.eye_y) / radius], 1)
            is_eye[sel] = inside[take] > 0.5
        return albedo, cover, ball, is_eye

    def mouth_shading(self, gap: np.ndarray, fx: np.ndarray, frame: FrameParams) -> np.ndarray:
        """Albedo of the mouth interior at gap coordinate (0 upper lip … 1 lower lip) and fx."""
        u = np.clip(fx / self.mw, -1, 1)
        opening = 0.8 * math.radians(JAW_MAX_DEGREES) * frame.jaw * self.mouth_open_profile(fx) + 1e-4
        upper = np.clip(0.06 / opening, 0, 0.8)  # teeth are ~6 mm of visible height
        lower = np.clip(0.035 / opening, 0, 0.5)
        cavity = to_linear((0.22, 0.06, 0.06)) * (0.35 + 0.65 * np.abs(2 * gap - 1))[:, None] * (1 - 0.5 * u * u)[:, None]
        tongue = to_linear((0.62, 0.28, 0.28)) * smoothstep(0.45, 0.8, gap)[:, None] * (1 - u * u)[:, None]
        col = cavity + tongue * 0.8
        tooth = to_linear((0.86, 0.83, 0.74)) * (0.55 + 0.45 * np.abs(np.cos(np.pi * u * 3.5)) ** 0.3)[:, None]
        tooth *= (1 - 0.55 * u * u)[:, None]
        up_t = (1 - smoothstep(upper - 0.05, upper, gap)) * (np.abs(u) < 0.85)
        lo_t = smoothstep(1 - lower, 1 - lower + 0.05, gap) * (np.abs(u) < 0.75)
        t = np.maximum(up_t, lo_t)[:, None]
        return (col * (1 - t) + tooth * t).astype(np.float32)

    # ------------------------------------------------------------------------------------ landmarks
    def _build_jaw_arcs(self) -> None:
        """Surface arcs along which jaw points 0–16 slide to the occluding contour (landmark marching).

        Each arc starts inside the face and runs outwards past the frontal silhouette; the point where it
        crosses the frontal silhouette is the anatomical jaw point (capped in front of the ear). In a frame,
        the point is the most outward projection on the arc up to that anatomical point: the anatomical
        point itself when that side of the face is visible, the cheek's occluding contour when it turns away."""
        p = self.p
        top = p.eye_y - 0.1
        phi = np.linspace(0, np.pi, 17)
        out2 = np.stack([-np.cos(phi), -np.sin(phi)], 1)  # outward in the face plane, image-left first
        inner = front_direction(0.36 * out2[:, 0], top + (top - (p.mouth_y - 0.05)) * out2[:, 1])
        outward = np.concatenate([out2, np.zeros((17, 1))], 1)
        tangent = outward - (outward * inner).sum(1, keepdims=True) * inner
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        theta = np.linspace(0, np.radians(105), ARC_SAMPLES)
        d = np.cos(theta)[None, :, None] * inner[:, None] + np.sin(theta)[None, :, None] * tangent[:, None]
        d = d.reshape(-1, 3)
        pts, smile, brow, jaw = self.surface_points(d, side=-1.0)
        proj = (pts[:, :2].reshape(17, ARC_SAMPLES, 2) * out2[:, None]).sum(-1)
        ahead = d.reshape(17, ARC_SAMPLES, 3)[..., 2] > 0.22  # stay in front of the ear
        proj = np.where(ahead, proj, -np.inf)
        self.arc_limit = np.argmax(proj, axis=1)
        self.arc_points, self.arc_smile, self.arc_brow, self.arc_jaw = pts, smile, brow, jaw
        self.arc_outward = outward

    def landmark_directions(self, frame: FrameParams) -> tuple[np.ndarray, np.ndarray]:
        """Directions and lip sides of landmarks 17–67 (51 points) for this frame (eyelids follow blinks)."""
        p = self.p
        pts = np.zeros((51, 2))
        side = np.zeros(51)
        # brows 17–21 (image left, outer → inner), 22–26 (inner → outer)
        for k in (0, 1):
            inner = p.eye_spacing - p.eye_width - 0.015
            outer = p.eye_spacing + p.eye_width + 0.04
            a = np.array([1, 0.75, 0.5, 0.25, 0]) if k == 0 else np.array([0, 0.25, 0.5, 0.75, 1])
            x = (inner + a * (outer - inner)) * (-1 if k == 0 else 1)
            _, centre, thick = self.brow_coords(x, k)
            pts[5 * k: 5 * k + 5] = np.stack([x, centre + 0.2 * thick], 1)
        # nose bridge 27–30, then the nostril base 31–35
        tip, nw = p.nose_tip_y, p.nose_width
        pts[10:14] = np.stack([np.zeros(4), np.linspace(self.nasion_y, tip + 0.01, 4)], 1)
        pts[14:19] = np.stack([np.array([-0.085, -0.042, 0, 0.042, 0.085]) * nw,
                               tip - np.array([0.045, 0.065, 0.075, 0.065, 0.045])], 1)
        # eyes 36–47: corners and two points on each lid, in the iBUG order
        u = np.array([-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3])
        for k, ex in enumerate(self.eye_x):
            up, lo = self.lid_curves(u, ex, frame.blink)
            y = np.where(np.arange(6) < 3, up, lo)
            y[0], y[3] = up[0], up[3]
            pts[19 + 6 * k: 25 + 6 * k] = np.stack([ex + u * p.eye_width, y], 1)
        # outer lips 48–59 and inner lips 60–67
        mw = self.mw
        uo = np.array([-1, -0.6, -0.28, 0, 0.28, 0.6, 1, 0.6, 0.28, 0, -0.28, -0.6])
        ul, ll = self.lip_heights(uo)
        rel = np.where(np.arange(12) <= 6, ul, -ll)
        rel[0] = rel[6] = 0
        pts[31:43] = np.stack([uo * mw, self.seam_y(uo * mw) + rel], 1)
        side[31:43] = np.where(np.arange(12) <= 6, 1.0, -1.0)
        side[31] = side[37] = 0.0
        ui = np.array([-0.9, -0.45, 0, 0.45, 0.9, 0.45, 0, -0.45])
        pts[43:51] = np.stack([ui * mw, self.seam_y(ui * mw)], 1)
        side[43:51] = [0, 1, 1, 1, 0, -1, -1, -1]
        return front_direction(pts[:, 0], pts[:, 1]), side

    def keypoints(self, frame: FrameParams, to_image, rotate) -> np.ndarray:
        """(68, 2) image keypoints. ``to_image`` maps head-local points (N, 3) to pixels (N, 2) for this frame;
        ``rotate`` maps head-local vectors (N, 3) to camera axes (x right, y up, z towards the camera)."""
        d, side = self.landmark_directions(frame)
        pts, smile, brow, jaw = self.surface_points(d, side)
        face = to_image(self.deform(pts, smile, brow, jaw, frame))
        arcs = to_image(self.deform(self.arc_points, self.arc_smile, self.arc_brow, self.arc_jaw, frame))
        arcs = arcs.reshape(17, ARC_SAMPLES, 2)
        out = rotate(self.arc_outward)
        out2 = np.stack([out[:, 0], -out[:, 1]], 1)  # image y points down
        out2 /= np.linalg.norm(out2, axis=1, keepdims=True) + 1e-9
        jaw_pts = np.zeros((17, 2))
        for j in range(17):
            lim = self.arc_limit[j]
            v = arcs[j, : lim + 1] @ out2[j]
            k = int(np.argmax(v))
            if 0 < k < lim:  # parabolic refinement between samples keeps the contour point smooth in time
                den = v[k - 1] - 2 * v[k] + v[k + 1]
                delta = float(np.clip(0.5 * (v[k - 1] - v[k + 1]) / den, -0.5, 0.5)) if den < -1e-12 else 0.0
                nb = k + (1 if delta > 0 else -1)
                jaw_pts[j] = arcs[j, k] + abs(delta) * (arcs[j, nb] - arcs[j, k])
            else:
                jaw_pts[j] = arcs[j, k]
        return np.concatenate([jaw_pts, face], 0).astype(np.float32)


def _circular_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    k = np.arange(-int(3 * sigma) - 1, int(3 * sigma) + 2)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w /= w.sum()
    core = x[:-1] if np.isclose(x[0], x[-1]) else x
    padded = np.concatenate([core[-len(k):], core, core[: len(k)]])
    out = np.convolve(padded, w, mode="same")[len(k): len(k) + len(core)]
    return np.concatenate([out, out[:1]]) if len(core) < len(x) else out


def _draw_spots(canvas: np.ndarray, centres: np.ndarray, radii: np.ndarray, values: np.ndarray, texel: float,
                tw: int, th: int) -> None:
    """Anti-aliased round spots at direction-space centres (fx, fy) on a (th, tw) uint8 texture."""
    s, t = angles_of(centres[:, 0], centres[:, 1])
    x = (s + np.pi) / (2 * np.pi) * tw - 0.5
    y = (np.pi / 2 - t) / np.pi * th - 0.5
    shift = 4
    for xi, yi, ri, vi, ti in zip(x, y, radii, values, t):
        axes = (max(1, int(ri * texel / math.cos(ti) * 16)), max(1, int(ri * texel * 16)))
        cv2.ellipse(canvas, (int(xi * 16), int(yi * 16)), axes, 0, 0, 360, int(vi), -1, cv2.LINE_AA, shift)


class HairCurtain:
    """Long hair: an open sheet around the back and sides of the head. Its upper rows hug the scalp's hair
    shell (just outside it) from ear level down to the jaw; from there it hangs straight down, flaring a
    little, to ``hair_length`` below the head centre (behind the shoulders, which hide the rest)."""

    def __init__(self, head: HeadModel):
        p = head.p
        rng = np.random.default_rng([p.seed, 3])
        cols, n_hug, n_hang = 72, 14, 26
        front = np.radians(rng.uniform(52, 64))  # the curtain leaves the face open by this much each side
        alpha = np.linspace(front, 2 * np.pi - front, cols)
        alpha = np.angle(np.exp(1j * alpha))  # azimuth in (-π, π], as on the head
        # each column starts just inside the scalp hair's lower edge, so the sheet emerges from under it
        t_top = np.clip(np.interp(alpha, head._hair_s, head._hair_low) + 0.08, -0.4, 0.5)
        A = np.broadcast_to(alpha[None], (n_hug, cols))
        T = t_top[None] + (-0.55 - t_top[None]) * np.linspace(0, 1, n_hug)[:, None]
        d = directions(A, T).reshape(-1, 3)
        r = head.skin_radius(d, ears=False) + head.hair_thickness(A.ravel(), T.ravel()) + 0.015
        r += 0.05 * p.ear_out * smoothstep(0.6, 0.9, np.abs(d[:, 0]))  # room for the ears underneath
        hug = head.place(d, r).reshape(n_hug, cols, 3)
        # hang from the lowest hugging ring, pushed out enough to clear the neck
        last = hug[-1].copy()
        centre = np.array([0.0, 0.0, -0.2])
        radial = last[:, [0, 2]] - centre[[0, 2]]
        dist = np.linalg.norm(radial, axis=1, keepdims=True)
        radial = radial / dist * np.maximum(dist, 0.66 * p.neck_width + 0.06)
        length = p.hair_length * (1 + 0.05 * _circular_smooth(rng.standard_normal(cols), 1.5))
        v = np.linspace(0, 1, n_hang + 1)[1:, None]
        y = last[None, :, 1] + (-0.45 - length[None] - last[None, :, 1]) * v
        flare = 1 + 0.35 * np.sqrt(v)
        hang = np.stack([centre[0] + radial[None, :, 0] * flare, y, centre[2] + radial[None, :, 1] * flare], -1)
        grid = np.concatenate([hug, hang], 0)[::-1]  # rows bottom → top
        self.rest = grid.reshape(-1, 3)
        self.rows, self.cols = grid.shape[0], cols
        self.faces = grid_faces(self.rows, cols)
        tw, th = 256, 128
        vv = np.linspace(1, 0, self.rows)
        uu, vv = np.meshgrid(np.arange(cols) / (cols - 1), vv)
        self.uv = np.stack([uu * tw - 0.5, vv * th - 0.5], -1).reshape(-1, 2).astype(np.float32)
        strands = _streaks(rng, th, tw, 0.7, 14.0)
        base = to_linear(p.hair_colour)
        col = base[None, None] * (0.62 + 0.38 * np.tanh(strands))[..., None]
        col *= (1.0 - 0.2 * np.linspace(0, 1, th))[:, None, None]  # a little darker towards the ends
        spec = 0.10 + 0.06 * np.tanh(strands)
        self.texture = np.concatenate([col, spec[..., None]], -1).astype(np.float32)

    def normals(self, world_vertices: np.ndarray) -> np.ndarray:
        return grid_normals(world_vertices.reshape(self.rows, self.cols, 3), wrap_columns=False).reshape(-1, 3)
