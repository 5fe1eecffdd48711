"""Runtime composition: pasting a rendered crop back into the photo, RGBA crops, side-by-side frames, tensors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bilayer.vision.crop import CropBox, crop_image
from bilayer.animate.compose import (
    crop_to_photo_matrix,
    feather_mask,
    pad_even,
    paste_back,
    rgba,
    side_by_side,
    to_mask,
    to_uint8,
)

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skdata.astronaut()[:400, 20:380].copy()  # 400 × 360: not square


def smooth_photo(h: int = 240, w: int = 300, seed: int = 0) -> np.ndarray:
    """Soft colour blobs: little detail is lost by a down- and up-sampling."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(30, 80)
        out += rng.uniform(40, 120, 3) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
    return np.clip(out + 20, 0, 255).astype(np.uint8)


def test_mask_zero_leaves_the_photo_unchanged(photo):
    box = CropBox(180.3, 150.7, 90.0)
    crop = np.full((64, 64, 3), 255, np.uint8)
    before = photo.copy()
    out = paste_back(photo, crop, np.zeros((64, 64), np.float32), box)
    np.testing.assert_array_equal(out, photo)
    np.testing.assert_array_equal(photo, before)  # the input is not modified
    assert out is not photo


@pytest.mark.parametrize("feather", [0.0, 4.0])
def test_pasting_a_crop_of_the_photo_returns_the_photo(photo, feather):
    box = CropBox(170.0, 140.0, 64.0)  # side 128 = the crop size, on the pixel grid: an exact round trip
    crop = crop_image(photo, box, 128)
    out = paste_back(photo, crop, np.ones((128, 128), np.float32), box, feather=feather)
    np.testing.assert_array_equal(out, photo)


def test_pasting_a_subpixel_crop_is_not_shifted(photo):
    box = CropBox(170.4, 140.6, 64.0)  # a sub-pixel box: two interpolations blur a little, but shift nothing
    crop = crop_image(photo, box, 128)
    out = paste_back(photo, crop, np.ones((128, 128), np.float32), box, feather=4.0)
    x0, y0, x1, y1 = (int(round(v)) for v in box.ltrb)
    diff = np.abs(out.astype(np.float32) - photo.astype(np.float32))
    assert diff[y0:y1, x0:x1].mean() < 4.0
    outside = np.ones(photo.shape[:2], bool)
    outside[y0 - 2 : y1 + 2, x0 - 2 : x1 + 2] = False
    assert diff[outside].max() == 0  # nothing changes outside the box
    grey = [cv2.cvtColor(im[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float64) for im in (out, photo)]
    (dx, dy), _ = cv2.phaseCorrelate(*grey)
    assert abs(dx) < 0.05 and abs(dy) < 0.05


def test_pasting_a_downscaled_crop_returns_the_photo():
    img = smooth_photo()
    box = CropBox(150.2, 110.9, 96.0)  # side 192 → 64: 3× down, then 3× up
    crop = crop_image(img, box, 64)
    out = paste_back(img, crop, np.ones((64, 64), np.float32), box, feather=2.0)
    x0, y0, x1, y1 = (int(round(v)) for v in box.ltrb)
    err = np.abs(out.astype(np.float32) - img.astype(np.float32))[max(y0, 0) : y1, max(x0, 0) : x1]
    assert err.mean() < 1.5


def test_inverse_transform_puts_a_pixel_where_expected():
    s, box = 32, CropBox(100.3, 80.7, 32.0)  # k = side / s = 2
    k = box.side / s
    photo = np.zeros((200, 200, 3), np.uint8)
    crop = np.zeros((s, s, 3), np.uint8)
    i, j = 11, 20  # row, column in the crop
    crop[i, j] = 255
    out = paste_back(photo, crop, np.ones((s, s), np.float32), box, feather=0.0)
    weight = out[..., 0].astype(np.float64)
    ys, xs = np.nonzero(weight)
    cy = (ys * weight[ys, xs]).sum() / weight[ys, xs].sum()
    cx = (xs * weight[ys, xs]).sum() / weight[ys, xs].sum()
    left, top, _, _ = box.ltrb
    # the crop pixel's centre (j + 0.5, i + 0.5) in continuous crop coordinates → photo; index = continuous − 0.5
    assert cx == pytest.approx(left + (j + 0.5) * k - 0.5, abs=0.05)
    assert cy == pytest.approx(top + (i + 0.5) * k - 0.5, abs=0.05)
    m = crop_to_photo_matrix(box, s)
    np.testing.assert_allclose(m @ np.array([j, i, 1.0]), [left + (j + 0.5) * k - 0.5, top + (i + 0.5) * k - 0.5])


def test_box_partly_outside_the_photo_and_feathered_edges():
    photo = np.zeros((60, 80, 3), np.uint8)
    crop = np.full((40, 40, 3), 200, np.uint8)
    out = paste_back(photo, crop, np.ones((40, 40, 1), np.float32), CropBox(75.0, 5.0, 20.0), feather=4.0)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert out[5, 72, 0] > 190  # inside: the crop
    assert out[5:25, 55, 0].max() < 100  # at the crop's left border: faded
    assert np.array_equal(paste_back(photo, crop, np.ones((40, 40)), CropBox(500.0, 500.0, 20.0)), photo)
    m = feather_mask(np.ones((40, 40), np.float32), 4.0)
    assert m[20, 20] == pytest.approx(1.0, abs=1e-3) and m[0, 20] < 0.3 and m[20, 39] < 0.3
    np.testing.assert_array_equal(feather_mask(np.ones((8, 8), np.float32), 0.0), np.ones((8, 8)))


def test_paste_back_checks_inputs(photo):
    with pytest.raises(ValueError, match="crop_rgb must be an H×W×3 uint8 RGB image"):
        paste_back(photo, np.zeros((8, 8, 3), np.float32), np.ones((8, 8)), CropBox(50, 50, 10))
    with pytest.raises(ValueError, match=r"crop_mask must have shape \(8, 8\)"):
        paste_back(photo, np.zeros((8, 8, 3), np.uint8), np.ones((4, 4)), CropBox(50, 50, 10))


def test_rgba():
    crop = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    out = rgba(crop, mask)
    assert out.shape == (16, 16, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., :3], crop)
    np.testing.assert_array_equal(out[..., 3], np.rint(mask * 255).astype(np.uint8))
    assert out[0, 0, 3] == 0 and out[-1, -1, 3] == 255


def test_side_by_side_sizes_are_even():
    left = np.zeros((75, 100, 3), np.uint8)
    right = np.full((64, 64, 3), 255, np.uint8)
    out = side_by_side(left, right, 101)
    assert out.shape[0] == 102 and out.shape[1] % 2 == 0 and out.dtype == np.uint8
    assert out.shape[1] == 136 + 102  # 100 · 102 / 75 = 136, 64 · 102 / 64 = 102
    assert out[:, :136].max() == 0 and out[:, 136:].min() == 255
    assert side_by_side(right, right, 64).shape == (64, 128, 3)
    assert pad_even(np.zeros((5, 7, 3), np.uint8)).shape == (6, 8, 3)
    even = np.zeros((4, 6, 3), np.uint8)
    assert pad_even(even) is even


def test_to_uint8_and_to_mask():
    img = torch.zeros(3, 4, 5)
    img[0] = -1.0
    img[1] = 1.0
    img[2, 0, 0] = 3.0  # out of range: clipped
    out = to_uint8(img)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert (out[..., 0] == 0).all() and (out[..., 1] == 255).all() and out[0, 0, 2] == 255 and out[1, 1, 2] == 128
    np.testing.assert_array_equal(to_uint8(img[None].numpy()), out)
    with pytest.raises(ValueError, match=r"expected a \(3, H, W\) image"):
        to_uint8(torch.zeros(4, 4))
    mask = to_mask(torch.full((1, 1, 4, 5), 0.25))
    assert mask.shape == (4, 5) and mask.dtype == np.float32 and float(mask[0, 0]) == 0.25
