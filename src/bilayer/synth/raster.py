"""SynthHeads helpers: regular-grid meshes and a vectorised NumPy z-buffer triangle rasteriser.

Every SynthHeads surface (head, neck, torso, long hair) is a regular grid of vertices, rows × columns, so the
triangles, the normals (finite differences along the grid) and the texture coordinates all come from array
reshapes instead of a general mesh library. The rasteriser takes projected vertices (continuous pixel
coordinates, x to the right and y down, pixel (i, j) covering [j, j+1) × [i, i+1)) and returns, for every
pixel whose centre is covered, the nearest triangle and its perspective-correct barycentric coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def grid_faces(rows: int, cols: int) -> np.ndarray:
    """(2·(rows-1)·(cols-1), 3) int32 triangles of a rows × cols vertex grid stored row-major.

    The winding makes a triangle's signed image area positive when the grid's columns run to the right and its
    rows run upwards on screen, which is how every SynthHeads grid is laid out on the side facing its outside
    (so a positive area means front-facing)."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    v00 = (r * cols + c).ravel()
    v01, v10 = v00 + 1, v00 + cols
    v11 = v10 + 1
    tri = np.concatenate([np.stack([v00, v10, v01], 1), np.stack([v10, v11, v01], 1)])
    return tri.astype(np.int32)


def grid_normals(points: np.ndarray, wrap_columns: bool = True) -> np.ndarray:
    """Unit outward normals of a (rows, cols, 3) grid surface: cross(∂P/∂column, ∂P/∂row).

    With ``wrap_columns`` the last column duplicates the first (a closed ring) and the column derivative wraps
    around. Rows use one-sided differences at the ends. Degenerate places (poles) fall back to the row
    neighbour's normal so that shading stays smooth there."""
    p = points
    if wrap_columns:
        ring = p[:, :-1]
        dc = np.roll(ring, -1, axis=1) - np.roll(ring, 1, axis=1)
        dc = np.concatenate([dc, dc[:, :1]], axis=1)
    else:
        dc = np.empty_like(p)
        dc[:, 1:-1] = p[:, 2:] - p[:, :-2]
        dc[:, 0], dc[:, -1] = p[:, 1] - p[:, 0], p[:, -1] - p[:, -2]
    dr = np.empty_like(p)
    dr[1:-1] = p[2:] - p[:-2]
    dr[0], dr[-1] = p[1] - p[0], p[-1] - p[-2]
    n = np.cross(dc, dr)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    bad = length[..., 0] < 1e-12
    if bad.any():
        # poles collapse a whole row to one point: borrow the next row's average direction
        for row in np.nonzero(bad.any(axis=1))[0]:
            near = row + 1 if row + 1 < len(p) else row - 1
            n[row, bad[row]] = n[near].mean(axis=0)
        length = np.linalg.norm(n, axis=-1, keepdims=True)
    return (n / np.maximum(length, 1e-12)).astype(np.float32)


@dataclass
class Raster:
    """Result of rasterising one mesh. ``pixel`` indexes the flattened image (row-major) of every covered pixel;
    ``triangle`` and ``bary`` (N, 3) are the winning triangle and its perspective-correct barycentrics."""

    height: int
    width: int
    pixel: np.ndarray  # (N,) int64
    triangle: np.ndarray  # (N,) int64
    bary: np.ndarray  # (N, 3) float32
    depth: np.ndarray  # (N,) float64


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts (n,), the owner index and the 0-based position of every one of the sum(counts) items."""
    owner = np.repeat(np.arange(len(counts)), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, np.arange(len(owner)) - start


def rasterize(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, height: int, width: int,
              two_sided: np.ndarray | None = None) -> Raster:
    """Z-buffer rasterisation of triangles ``faces`` over vertices ``xy`` (V, 2) with camera depth (V,) > 0.

    Back-facing triangles (non-positive signed area) are culled unless ``two_sided[f]`` is set. The work is
    exact scan conversion, vectorised: every triangle is expanded into the pixel rows its span covers, every
    (triangle, row) into the pixel centres between the row's left and right crossings of the triangle's
    edges, so the cost follows the covered area whatever the triangles' shapes. The nearest candidate per
    pixel wins (``np.minimum.at`` on depth). Crossings use closed intervals, so a pixel centre exactly on a
    shared edge is a candidate of both triangles and no cracks open between neighbours."""
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    area = (x[b] - x[a]) * (y[c] - y[a]) - (x[c] - x[a]) * (y[b] - y[a])
    keep = area > 1e-12
    if two_sided is not None:
        keep |= two_sided & (area < -1e-12)
    keep &= (depth[a] > 0) & (depth[b] > 0) & (depth[c] > 0)
    ids = np.nonzero(keep)[0]
    f = faces[ids]
    tx, ty = x[f], y[f]  # (n, 3)
    # pixel (i, j) has its centre at (j + 0.5, i + 0.5)
    imin = np.maximum(np.ceil(ty.min(1) - 0.5), 0).astype(np.int64)
    imax = np.minimum(np.floor(ty.max(1) - 0.5), height - 1).astype(np.int64)
    inside = (imax >= imin) & (tx.max(1) >= 0.5) & (tx.min(1) <= width - 0.5)
    ids, f, tx, ty, imin, imax = ids[inside], f[inside], tx[inside], ty[inside], imin[inside], imax[inside]
    n = len(ids)
    if n == 0:
        empty = np.zeros(0, np.int64)
        return Raster(height, width, empty, empty, np.zeros((0, 3), np.float32), np.zeros(0))

    # scan conversion: sort each triangle's corners by y (top, middle, bottom); a row crosses the long edge
    # top→bottom and one short edge (top→middle above the middle corner, middle→bottom below it)
    order = np.argsort(ty, axis=1)
    sx, sy = np.take_along_axis(tx, order, 1), np.take_along_axis(ty, order, 1)

    def slope(i0, i1):
        dy = sy[:, i1] - sy[:, i0]
        return np.where(dy > 0, (sx[:, i1] - sx[:, i0]) / np.where(dy > 0, dy, 1.0), 0.0)

    scan = np.stack([sx[:, 0], sy[:, 0], sx[:, 1], sy[:, 1], slope(0, 2), slope(0, 1), slope(1, 2)], 1)
    owner, k = _expand(imax - imin + 1)  # one item per (triangle, pixel row)
    row = imin[owner] + k
    yc = row + 0.5
    q = scan[owner]
    x_long = q[:, 0] + (yc - q[:, 1]) * q[:, 4]
    x_short = np.where(yc < q[:, 3], q[:, 0] + (yc - q[:, 1]) * q[:, 5], q[:, 2] + (yc - q[:, 3]) * q[:, 6])
    jl = np.maximum(np.ceil(np.minimum(x_long, x_short) - 0.5), 0).astype(np.int64)
    jr = np.minimum(np.floor(np.maximum(x_long, x_short) - 0.5), width - 1).astype(np.int64)
    span = np.maximum(jr - jl + 1, 0)

    item, k = _expand(span)  # one item per candidate pixel
    tri_local = owner[item]
    col = jl[item] + k
    rr = row[item]
    # barycentrics divided by depth are affine in the pixel position: precompute per triangle the three
    # planes (∂/∂x, ∂/∂y, value at the origin) of w_i / z_i, so each candidate costs one gather and a few FMAs
    # Evaluated relative to the triangle's first corner, the numbers stay small and float32 is exact enough.
    inv_z = 1.0 / depth.astype(np.float64)[f]  # (n, 3)
    signed = area[ids]
    planes = np.empty((n, 11), np.float32)
    planes[:, 9], planes[:, 10] = tx[:, 0], ty[:, 0]
    for i in range(3):
        j, m = (i + 1) % 3, (i + 2) % 3
        # w_i = ((x_m - x_j)(py - y_j) - (y_m - y_j)(px - x_j)) / area, here with (px, py) relative to corner 0
        ax = -(ty[:, m] - ty[:, j]) / signed
        ay = (tx[:, m] - tx[:, j]) / signed
        planes[:, 3 * i] = ax * inv_z[:, i]
        planes[:, 3 * i + 1] = ay * inv_z[:, i]
        planes[:, 3 * i + 2] = (ax * (tx[:, 0] - tx[:, j]) + ay * (ty[:, 0] - ty[:, j])) * inv_z[:, i]
    pl = planes[tri_local]
    px = (col + 0.5).astype(np.float32) - pl[:, 9]
    py = (rr + 0.5).astype(np.float32) - pl[:, 10]
    iz = np.stack([pl[:, 3 * i] * px + pl[:, 3 * i + 1] * py + pl[:, 3 * i + 2] for i in range(3)], 1)
    iz = np.maximum(iz, np.float32(0.0))  # candidates on an edge may come out a rounding error negative
    izs = iz.sum(1)
    good = izs > 0
    if not good.all():
        iz, izs, tri_local, col, rr = iz[good], izs[good], tri_local[good], col[good], rr[good]
    bary = iz / izs[:, None]  # perspective-correct barycentrics
    z = 1.0 / izs
    tri = ids[tri_local]
    pix = rr * width + col
    zbuf = np.full(height * width, np.inf, z.dtype)  # same dtype as z: ufunc.at only has a fast path then
    np.minimum.at(zbuf, pix, z)
    win = np.nonzero(z == zbuf[pix])[0]
    # exact depth ties (shared vertices and edges) are broken deterministically: the later candidate wins
    owner_px = np.full(height * width, -1, np.int64)
    owner_px[pix[win]] = win
    chosen = owner_px[owner_px >= 0]
    return Raster(height, width, pix[chosen], tri[chosen], bary[chosen].astype(np.float32), z[chosen])
