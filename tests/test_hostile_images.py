"""Hostile and awkward photos: a small PNG that claims 30000 × 30000 pixels, empty, text, truncated and corrupt
files, grey, 16-bit, palette, transparent and EXIF-rotated images, large photos, and faces too small for the face
mesh's own detector (one, and two side by side, pasted into a 1024-px canvas).

Every refusal is one sentence naming the file; nothing else reaches stderr (no ``libpng error:`` line). The real
photo is matplotlib's ``grace_hopper.jpg`` (512 × 600, installed with matplotlib); MediaPipe runs for real.
"""

from __future__ import annotations

import logging
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from bilayer import BilayerModel, preset
from bilayer.cli import main
from bilayer.vision.errors import VideoReadError
from bilayer.vision.landmarks import create_landmark_backend, detect_keypoints
from bilayer.vision.video import MAX_IMAGE_PIXELS, image_size, iter_frames, read_image

from .conftest import assert_user_error, assert_user_error_text, run_cli, run_main


def grace_path() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    return np.asarray(Image.open(grace_path()).convert("RGB"))


@pytest.fixture(scope="module")
def grace_keypoints(grace) -> np.ndarray:
    kp = detect_keypoints(grace)
    assert kp is not None
    return kp


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-images")
    torch.manual_seed(0)
    BilayerModel(preset("tiny")).eval().save_pretrained(root / "model")
    return root / "model"


def write_blank_png(path: Path, width: int, height: int, rows_per_piece: int = 50) -> Path:
    """A valid 8-bit RGB PNG of black pixels, written without ever holding its pixels: the deflate stream of
    ``rows_per_piece`` zero rows, ended by a full flush (so it refers to nothing before it), is repeated, and the
    Adler-32 of n zero bytes is (n mod 65521) << 16 | 1. 30000 × 30000 takes 2.6 MB."""
    assert height % rows_per_piece == 0
    row = 1 + 3 * width  # filter byte + RGB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = deflate.compress(bytes(row * rows_per_piece)) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    adler = (row * height % 65521) << 16 | 1
    stream = b"\x78\xda" + piece * (height // rows_per_piece) + end + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    return path


def paste(canvas: np.ndarray, photo: np.ndarray, width: int, x: int, y: int, keypoints: np.ndarray) -> np.ndarray:
    """Paste ``photo`` shrunk to ``width`` px wide at (x, y) of ``canvas``; returns its keypoints there."""
    scale = width / photo.shape[1]
    small = cv2.resize(photo, (width, round(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    canvas[y:y + small.shape[0], x:x + width] = small
    return keypoints * scale + (x, y)


def face_error(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean landmark distance in units of the true face's width."""
    return float(np.linalg.norm(found - truth, axis=1).mean() / np.ptp(truth[:, 0]))


# ------------------------------------------------------------------------------------------ the pixel limit
def test_blank_png_writer_makes_a_valid_png(tmp_path):
    image = np.asarray(Image.open(write_blank_png(tmp_path / "blank.png", 300, 200)))
    assert image.shape == (200, 300, 3) and not image.any()


def test_a_30000_pixel_square_png_is_refused_by_bilayer_avatar(tmp_path, model_dir):
    """2.6 MB on disk, 2.7 GB decoded: MediaPipe crashed (SIGSEGV) on it. The header is checked first."""
    huge = write_blank_png(tmp_path / "huge.png", 30000, 30000)
    assert huge.stat().st_size < 3_000_000
    out = tmp_path / "me.avatar"
    proc = run_cli("avatar", "--model", str(model_dir), "--source", str(huge), "--out", str(out))
    assert proc.returncode == 2, proc.stderr  # not -11 (SIGSEGV)
    assert_user_error(proc, "huge.png", "30000×30000", "limit of 100 megapixels")
    assert not out.exists()


def test_sizes_around_the_limit(tmp_path):
    """Between the limit and Pillow's own guard (179 MP) Pillow only warns: the limit still applies, silently;
    just under it the header is read without decoding."""
    assert MAX_IMAGE_PIXELS == 100_000_000
    over = write_blank_png(tmp_path / "over.png", 12000, 9000)  # 108 MP
    with pytest.raises(VideoReadError, match=r"^image over\.png is 12000×9000 pixels \(108 megapixels\), more than "
                                             r"the limit of 100 megapixels$"):
        read_image(over)
    assert image_size(write_blank_png(tmp_path / "under.png", 10000, 10000)) == (10000, 10000)


def test_a_jpeg_header_claiming_30000_pixels_is_refused(tmp_path):
    """A JPEG whose frame header (after a JFIF segment) claims 30000 × 30000: Pillow refuses it before giving its
    size; the size still comes from the header."""
    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = struct.pack(">BHHB", 8, 30000, 30000, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    data = (b"\xff\xd8\xff\xe0" + struct.pack(">H", len(jfif) + 2) + jfif
            + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9")
    (tmp_path / "huge.jpg").write_bytes(data)
    with pytest.raises(VideoReadError, match=r"huge\.jpg is 30000×30000 pixels .* limit of 100 megapixels"):
        read_image(tmp_path / "huge.jpg")


def test_an_image_folder_with_a_huge_frame_fails_with_the_sentence(tmp_path):
    """``bilayer preprocess`` and a frame-folder driver read folders through ``iter_frames``."""
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.open(grace_path()).save(folder / "000.jpg")
    write_blank_png(folder / "001.png", 30000, 30000)
    frames = iter_frames(folder)
    assert next(frames).image.shape == (600, 512, 3)
    with pytest.raises(VideoReadError, match=r"001\.png is 30000×30000 pixels"):
        next(frames)


# ------------------------------------------------------------------------------------- broken files
def _damaged(tmp_path: Path) -> dict[str, Path]:
    data = grace_path().read_bytes()
    png = tmp_path / "ok.png"
    Image.open(grace_path()).save(png)
    png_bytes = png.read_bytes()
    corrupt = bytearray(png_bytes)
    corrupt[len(corrupt) // 2:len(corrupt) // 2 + 64] = bytes(64)  # inside IDAT: CRC and inflate errors
    files = {
        "empty.png": b"",
        "text.png": b"this is a text file, not a picture\n",
        "truncated.jpg": data[:len(data) // 2],
        "truncated.png": png_bytes[:len(png_bytes) // 2],
        "corrupt.png": bytes(corrupt),
        "header-only.png": png_bytes[:33],
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return {name: tmp_path / name for name in files}


def test_broken_files_are_one_sentence_each_through_bilayer_avatar(tmp_path, model_dir, capfd):
    """capfd: native code writing to file descriptor 2 (libpng's ``libpng error:`` lines) is caught too."""
    for name, path in _damaged(tmp_path).items():
        out = tmp_path / "me.avatar"
        code, stdout, err = run_main(main, capfd, "avatar", "--model", str(model_dir), "--source", str(path),
                                     "--out", str(out))
        assert_user_error_text(code, err, name, "cannot read image")
        assert code == 2 and stdout == "" and "libpng" not in err and not out.exists()
    with pytest.raises(VideoReadError, match=r"^cannot read image empty\.png \(an empty file\)$"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(VideoReadError, match=r"truncated\.jpg \(truncated or corrupt"):
        read_image(tmp_path / "truncated.jpg")
    with pytest.raises(VideoReadError, match=r"missing\.png \(No such file"):
        read_image(tmp_path / "missing.png")


def test_a_photo_without_a_face(tmp_path, model_dir, capfd):
    noise = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.jpg")
    code, _, err = run_main(main, capfd, "avatar", "--model", str(model_dir), "--source", str(tmp_path / "noise.jpg"),
                            "--out", str(tmp_path / "me.avatar"))
    assert_user_error_text(code, err, "no face found in", "noise.jpg")
    assert not (tmp_path / "me.avatar").exists()


# ----------------------------------------------------------------------------------- awkward formats
def test_grey_16_bit_palette_and_transparent_pngs_read_as_rgb(tmp_path, grace):
    grey = cv2.cvtColor(grace, cv2.COLOR_RGB2GRAY)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # mode I;16
    cv2.imwrite(str(tmp_path / "rgb16.png"), grace[..., ::-1].astype(np.uint16) * 257)
    Image.fromarray(grace).quantize(64).save(tmp_path / "palette.png")
    rgba = np.dstack([grace, np.full(grey.shape, 255, np.uint8)])
    rgba[:40, :60, 3] = 0  # a transparent corner over black pixels
    rgba[:40, :60, :3] = 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    for name in ("grey.png", "grey16.png", "rgb16.png", "palette.png", "rgba.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (600, 512, 3) and image.dtype == np.uint8 and image.flags.writeable, name
    for name in ("grey.png", "grey16.png"):
        image = read_image(tmp_path / name)
        assert np.array_equal(image[..., 0], grey) and np.array_equal(image[..., 2], grey), name
    assert np.array_equal(read_image(tmp_path / "rgb16.png"), grace)
    palette = read_image(tmp_path / "palette.png")
    assert np.array_equal(palette, np.asarray(Image.open(tmp_path / "palette.png").convert("RGB")))
    assert np.abs(palette.astype(int) - grace).mean() < 8
    rgba_read = read_image(tmp_path / "rgba.png")
    assert (rgba_read[:40, :60] == 255).all() and np.array_equal(rgba_read[40:], grace[40:])  # laid over white
    assert detect_keypoints(read_image(tmp_path / "grey16.png")) is not None


# EXIF orientation → how the pixels are stored (the upright image turned the other way)
STORED = {3: lambda a: a[::-1, ::-1], 6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1)}


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_rotated_jpeg_is_read_upright(tmp_path, grace, grace_keypoints, orientation):
    """A camera stores the sensor's pixels and says in EXIF how to turn them; the reader turns them upright, so
    the face is found where it is in the upright photo."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"turned{orientation}.jpg"
    Image.fromarray(np.ascontiguousarray(STORED[orientation](grace))).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == grace.shape
    assert np.abs(image.astype(int) - grace).mean() < 3
    assert face_error(detect_keypoints(image), grace_keypoints) < 0.02


# ---------------------------------------------------------------------------------- detection at scale
def test_large_photo_is_detected_on_a_shrunk_copy_in_full_resolution_pixels(grace, grace_keypoints):
    """3072 × 3600: the face mesh reads a copy shrunk 2× (MESH_MAX_SIDE 2048); the points come back in pixels of
    the photo."""
    big = cv2.resize(grace, (512 * 6, 600 * 6), interpolation=cv2.INTER_CUBIC)
    assert face_error(detect_keypoints(big), grace_keypoints * 6) < 0.02


def test_degenerate_shapes_find_no_face_without_crashing():
    with create_landmark_backend("mediapipe", static=True) as backend:
        for shape in [(1, 1), (1, 3000), (3000, 1), (5, 40000), (0, 10)]:
            assert backend.detect(np.zeros((*shape, 3), np.uint8)) == [], shape


def test_a_small_face_in_a_large_canvas(grace, grace_keypoints):
    """grace_hopper shrunk to 90 px wide (her face: 33 px, 3 % of the canvas) in a 1024 × 1024 canvas: the face
    mesh alone finds nothing; the full-range detector's tiles do, and the landmarks land within 2 % of the face's
    width of where they are in the original photo."""
    canvas = np.full((1024, 1024, 3), 200, np.uint8)
    truth = paste(canvas, grace, 90, 300, 450, grace_keypoints)
    with create_landmark_backend("mediapipe", static=True) as backend:
        with backend._face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4) as plain:
            assert plain.process(canvas).multi_face_landmarks is None
        faces = backend.detect(canvas)
    assert len(faces) == 1
    assert face_error(faces[0].keypoints, truth) < 0.02


def test_two_small_faces_the_largest_is_chosen_and_named(grace, grace_keypoints, caplog):
    canvas = np.full((1024, 1024, 3), 200, np.uint8)
    large = paste(canvas, grace, 100, 200, 450, grace_keypoints)
    paste(canvas, grace, 80, 700, 300, grace_keypoints)
    with caplog.at_level(logging.WARNING, logger="bilayer.vision.landmarks"):
        found = detect_keypoints(canvas, name="pair.png")
    assert face_error(found, large) < 0.02
    cx, cy = (large.min(0) + large.max(0)) / 2
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and notes[0].startswith("2 faces found in pair.png; using the largest, at x=")
    x, y = map(float, re.search(r"at x=(\d+), y=(\d+)", notes[0]).groups())
    assert abs(x - cx) < 3 and abs(y - cy) < 3


def test_two_people_side_by_side_faces_the_face_mesh_finds(grace, grace_keypoints):
    """Faces of 15-20 % of the width: the face mesh finds both on the whole frame; the larger is chosen."""
    canvas = np.full((1024, 1400, 3), 200, np.uint8)
    paste(canvas, grace, 420, 80, 200, grace_keypoints)
    large = paste(canvas, grace, 560, 760, 150, grace_keypoints)
    with create_landmark_backend("mediapipe", static=True) as backend:
        assert len(backend.detect(canvas)) == 2
    assert face_error(detect_keypoints(canvas), large) < 0.02


def test_small_faces_make_an_avatar_through_bilayer_avatar(tmp_path, grace, grace_keypoints, model_dir):
    """In a subprocess: the note about the choice reaches the user's stderr (Python's last-resort log handler),
    and it is the only line there."""
    canvas = np.full((1024, 1024, 3), 200, np.uint8)
    large = paste(canvas, grace, 100, 600, 500, grace_keypoints)
    paste(canvas, grace, 80, 150, 200, grace_keypoints)
    Image.fromarray(canvas).save(tmp_path / "pair.png")
    out = tmp_path / "me.avatar"
    proc = run_cli("avatar", "--model", str(model_dir), "--source", str(tmp_path / "pair.png"), "--out", str(out),
                   "--segmentation", "none", "--no-enhance")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}") and out.is_file()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("2 faces found in "), proc.stderr
    x, y = map(float, re.search(r"using the largest, at x=(\d+), y=(\d+)", lines[0]).groups())
    assert np.allclose((x, y), (large.min(0) + large.max(0)) / 2, atol=3)
