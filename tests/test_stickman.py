"""Stickman drawing (reference §1.5): part colours, drawing order, open/closed polylines, canvas value, thickness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bilayer.data.stickman import draw_stickman, draw_stickmen, keypoints_to_pixels, line_thickness

BACKGROUND = (1 / 255 - 0.5) * 2  # the canvas is filled with 1, not 0: ≈ -0.992
WHITE, RED, GREEN, BLUE = (1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)
MAGENTA, CYAN, YELLOW = (1, -1, 1), (-1, 1, 1), (1, 1, -1)


def _normalise(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pixel coordinates (68, 2) (x, y) → normalised keypoints (136,), at pixel centres so truncation is exact."""
    return ((np.asarray(pixels, dtype=np.float64) + 0.5) / size * 2 - 1).astype(np.float32).reshape(-1)


def face_layout() -> np.ndarray:
    """A hand-made 68-point face at 256 px with every part in its own region."""
    p = np.zeros((68, 2))
    p[0:17] = [(40 + 11 * i, round(100 + 120 * math.sin(math.pi * i / 16))) for i in range(17)]  # jaw: a U
    p[17:22] = [(20 + 10 * i, 40) for i in range(5)]  # eyebrow (image left)
    p[22:27] = [(150 + 10 * i, 40) for i in range(5)]  # eyebrow
    p[27:31] = [(128, 60 + 10 * i) for i in range(4)]  # nose bridge, ends at (128, 90)
    p[31:36] = [(110 + 9 * i, 110) for i in range(5)]  # nostrils; 33 = (128, 110)
    p[36:42] = [(70, 65), (80, 60), (90, 65), (90, 75), (80, 80), (70, 75)]  # eye; 41→36 closes at x = 70
    p[42:48] = [(166, 65), (176, 60), (186, 65), (186, 75), (176, 80), (166, 75)]  # eye; closes at x = 166
    p[48:60] = [(100, 140), (110, 132), (120, 130), (128, 130), (136, 130), (146, 132), (156, 140), (146, 172),
                (136, 175), (128, 175), (120, 175), (100, 165)]  # outer lips; 59→48 closes at x = 100
    p[60:68] = [(112, 145), (120, 145), (136, 145), (146, 145), (146, 160), (136, 160), (120, 160), (112, 160)]
    return p  # inner lips; 67→60 closes at x = 112


@pytest.fixture(scope="module")
def face():
    kp = _normalise(face_layout(), 256)
    uint8 = draw_stickman(kp, 256)
    mapped = draw_stickmen(torch.from_numpy(kp)[None], 256)[0]  # (3, 256, 256) in [-1, 1]
    return uint8, mapped


@pytest.mark.parametrize(
    "xy, colour, what",
    [
        ((128, 220), WHITE, "jaw (lowest point)"),
        ((62, 146), WHITE, "jaw vertex 2"),
        ((67, 156), WHITE, "jaw segment 2→3"),
        ((40, 40), RED, "eyebrow 17-21"),
        ((170, 40), GREEN, "eyebrow 22-26"),
        ((128, 75), BLUE, "nose bridge"),
        ((128, 100), BLUE, "nose 30→33 segment"),
        ((115, 110), BLUE, "nostrils"),
        ((80, 60), MAGENTA, "eye 36-41"),
        ((70, 70), MAGENTA, "eye 36-41 closing segment"),
        ((176, 80), CYAN, "eye 42-47"),
        ((166, 70), CYAN, "eye 42-47 closing segment"),
        ((128, 130), YELLOW, "outer lips"),
        ((100, 152), YELLOW, "outer lips closing segment"),
        ((128, 145), YELLOW, "inner lips"),
        ((112, 152), YELLOW, "inner lips closing segment"),
    ],
)
def test_part_colours(face, xy, colour, what):
    uint8, mapped = face
    x, y = xy
    assert tuple(uint8[y, x]) == tuple(255 if c > 0 else 0 for c in colour), what
    assert tuple(mapped[:, y, x].tolist()) == pytest.approx(colour, abs=1e-6), what


@pytest.mark.parametrize(
    "xy, what",
    [
        ((5, 5), "corner"),
        ((128, 120), "between nostrils and lips"),
        ((60, 100), "where a closing 16→0 jaw segment would be: the jaw is open"),
        ((80, 70), "inside the eye"),
        ((40, 44), "4 px below an eyebrow (thickness 2 at 256 px)"),
    ],
)
def test_background(face, xy, what):
    uint8, mapped = face
    x, y = xy
    assert tuple(uint8[y, x]) == (1, 1, 1), what
    torch.testing.assert_close(mapped[:, y, x], torch.full((3,), BACKGROUND), atol=1e-6, rtol=0)


def test_value_set_and_range(face):
    uint8, mapped = face
    assert uint8.dtype == np.uint8 and uint8.shape == (256, 256, 3)
    assert set(np.unique(uint8).tolist()) == {0, 1, 255}  # no anti-aliasing
    assert mapped.dtype == torch.float32 and mapped.shape == (3, 256, 256)
    assert mapped.min() >= -1 and mapped.max() <= 1
    assert sorted(mapped.unique().tolist()) == pytest.approx([-1.0, BACKGROUND, 1.0], abs=1e-6)
    assert abs(BACKGROUND - (-0.99216)) < 1e-5
    # Most of the canvas is background.
    assert (mapped == mapped[:, :1, :1]).all(0).float().mean() > 0.9


def test_drawing_order_lips_last():
    """All 68 points on one pixel: every part is drawn there, the last one (inner lips, yellow) wins."""
    kp = _normalise(np.full((68, 2), 128.0), 256)
    img = draw_stickman(kp, 256)
    assert tuple(img[128, 128]) == (255, 255, 0)


def test_drawing_order_later_part_overdraws_earlier():
    """A horizontal line shared by the jaw and the first eyebrow: the eyebrow (drawn later) is on top."""
    p = np.full((68, 2), 5.0)
    p[0:17] = [(10 + 2 * i, 30) for i in range(17)]  # jaw, x 10..42 at y = 30
    p[17:22] = [(20 + 2 * i, 30) for i in range(5)]  # eyebrow, x 20..28 on the same line
    img = draw_stickman(_normalise(p, 64), 64)
    assert tuple(img[30, 24]) == (255, 0, 0)
    assert tuple(img[30, 40]) == (255, 255, 255)


def test_all_points_on_a_horizontal_line_64px():
    """Thickness 1 at 64 px: a horizontal line covers exactly one row."""
    p = np.column_stack([np.linspace(4, 59, 68).round(), np.full(68, 32.0)])
    img = draw_stickman(_normalise(p, 64), 64)
    rows = np.nonzero((img != 1).any(axis=(1, 2)))[0]
    assert rows.tolist() == [32]
    drawn = np.nonzero((img[32] != 1).any(-1))[0]
    assert drawn.min() == 4 and drawn.max() == 59
    assert tuple(img[32, 4]) == (255, 255, 255)  # the jaw starts there and nothing else reaches it
    assert tuple(img[32, 59]) == (255, 255, 0)  # the inner lips end there


def test_pixel_coordinates_truncate():
    kp = np.full(136, 10.9 / 64 * 2 - 1, dtype=np.float32)
    assert keypoints_to_pixels(kp, 64).shape == (68, 2)
    assert (keypoints_to_pixels(kp, 64) == 10).all()
    img = draw_stickman(kp, 64)
    assert tuple(img[10, 10]) == (255, 255, 0)
    assert (img != 1).any(-1).sum() == 1


def test_line_thickness_scales_with_resolution():
    assert line_thickness(256) == 2  # the released default
    assert line_thickness(512) == 4
    assert line_thickness(128) == 1
    assert line_thickness(64) == 1


def test_batch_shapes_and_consistency():
    g = torch.Generator().manual_seed(0)
    kp = torch.rand(2, 3, 136, generator=g) * 1.6 - 0.8
    out = draw_stickmen(kp, 64)
    assert out.shape == (2, 3, 3, 64, 64) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    single = draw_stickman(kp[1, 2].numpy(), 64)
    expected = (torch.from_numpy(single).permute(2, 0, 1).float() / 255 - 0.5) * 2
    torch.testing.assert_close(out[1, 2], expected)
    assert draw_stickmen(torch.zeros(0, 136), 64).shape == (0, 3, 64, 64)


def test_points_outside_the_image_do_not_crash():
    kp = np.full(136, 3.0, dtype=np.float32)
    img = draw_stickman(kp, 64)
    assert (img == 1).all()


def test_wrong_keypoint_count():
    with pytest.raises(ValueError, match="136"):
        draw_stickman(np.zeros(134, np.float32), 64)
    with pytest.raises(ValueError, match="136"):
        draw_stickmen(torch.zeros(2, 134), 64)
