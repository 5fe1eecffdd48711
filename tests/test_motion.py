"""Runtime motion transfer: the streaming driver crop, absolute / relative keypoint transfer, the model input.

Faces are SynthHeads keypoints (the 68 iBUG points the renderer projects), so the geometry is that of real faces:
two identities give two face shapes.
"""

from __future__ import annotations

import numpy as np
import pytest

from bilayer.keypoints import normalize_keypoints
from bilayer.synth import identity_params, render_frame, scene_params, sequence_trajectory
from bilayer.vision.crop import crop_box, keypoints_to_crop
from bilayer.keypoints import face_size, interocular_distance
from bilayer.animate.motion import MotionTransfer, StreamingCropper, crop_keypoints, to_model_input

SIZE = 128
JAW, MOUTH = slice(0, 17), slice(48, 68)


@pytest.fixture(scope="module")
def faces() -> dict[str, np.ndarray]:
    """Keypoints (pixels of a 128² frame) of two identities, and a later frame of the second one."""
    out = {}
    for name, person in (("source", 0), ("driver", 3)):
        traj = sequence_trajectory(0, person, 0, 0, 8)
        ident, scene = identity_params(0, person), scene_params(0, person, 0)
        out[name] = render_frame(ident, traj[0], SIZE, scene, supersample=1)[1]
        if name == "driver":
            out["driver_later"] = render_frame(ident, traj[7], SIZE, scene, supersample=1)[1]
    return out


def in_own_crop(kp: np.ndarray) -> np.ndarray:
    return keypoints_to_crop(kp, crop_box(kp), SIZE)


def shape_ratio(kp: np.ndarray) -> float:
    """Inter-ocular distance / jaw width: a face-shape measure that expressions and rigid motion leave alone."""
    return interocular_distance(kp) / float(kp[16, 0] - kp[0, 0])


# --------------------------------------------------------------------------------------------- measures
def test_face_measures():
    kp = np.zeros((68, 2), np.float32)
    kp[:, 0] = np.linspace(10, 50, 68)
    kp[:, 1] = np.linspace(0, 20, 68)
    assert face_size(kp) == pytest.approx(40.0)
    kp[36:42] = (10.0, 5.0)
    kp[42:48] = (40.0, 9.0)
    assert interocular_distance(kp) == pytest.approx(np.hypot(30.0, 4.0))
    with pytest.raises(ValueError, match=r"shape \(68, 2\)"):
        face_size(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        face_size(np.full((68, 2), np.nan))


def test_crop_keypoints_and_model_input(faces):
    kp = faces["source"]
    box = crop_box(kp)
    crop = crop_keypoints(kp, box, SIZE)
    np.testing.assert_allclose(crop, keypoints_to_crop(kp, box, SIZE))
    vec = to_model_input(crop, SIZE)
    assert vec.shape == (136,) and vec.dtype == np.float32
    np.testing.assert_allclose(vec, normalize_keypoints(crop, SIZE), atol=1e-6)
    assert np.abs(vec).max() < 1  # the reference crop holds the face with a margin
    assert vec[0] == pytest.approx(crop[0, 0] / SIZE * 2 - 1) and vec[1] == pytest.approx(crop[0, 1] / SIZE * 2 - 1)


# --------------------------------------------------------------------------------------- streaming crop
def test_streaming_cropper_first_and_still_frames(faces):
    kp = faces["driver"]
    cropper = StreamingCropper(SIZE)
    boxes = [cropper(kp, t / 25) for t in range(10)]
    ref = crop_box(kp)
    for box in boxes:  # the first box passes unchanged and a still face keeps it
        np.testing.assert_allclose(box.to_array(), ref.to_array(), rtol=1e-9)
    box, crop = StreamingCropper(SIZE).crop(kp, 0.0)
    np.testing.assert_allclose(crop, keypoints_to_crop(kp, ref, SIZE), atol=1e-4)


def test_streaming_cropper_is_causal_and_follows(faces):
    kp = faces["driver"]
    shift = np.array([12.0, -6.0], np.float32)
    a, b = StreamingCropper(SIZE), StreamingCropper(SIZE)
    seq_a = [kp] * 5 + [kp + shift] * 40
    seq_b = [kp] * 5 + [kp - shift] * 40
    out_a = [a(k, t / 25).to_array() for t, k in enumerate(seq_a)]
    out_b = [b(k, t / 25).to_array() for t, k in enumerate(seq_b)]
    np.testing.assert_array_equal(np.array(out_a[:5]), np.array(out_b[:5]))  # no look-ahead
    target = crop_box(kp + shift).to_array()
    assert abs(out_a[5][0] - target[0]) > 1.0  # a step is smoothed (the box lags) ...
    np.testing.assert_allclose(out_a[-1], target, atol=0.3)  # ... and reached after 1.6 s


def test_streaming_cropper_modes_and_gap(faces):
    kp = faces["driver"]
    moved = kp + np.float32(20)
    fixed = StreamingCropper(SIZE, mode="fixed")
    assert fixed(kp, 0.0) == fixed(moved, 0.04) == crop_box(kp)
    raw = StreamingCropper(SIZE, mode="none")
    assert raw(moved, 0.04) == crop_box(moved)
    smooth = StreamingCropper(SIZE)
    smooth(kp, 0.0)
    after_gap = smooth(moved, 2.0)  # more than max_gap without a frame: the filter restarts
    np.testing.assert_allclose(after_gap.to_array(), crop_box(moved).to_array(), rtol=1e-9)
    with pytest.raises(ValueError, match="unknown crop mode 'wobbly'"):
        StreamingCropper(SIZE, mode="wobbly")


# ---------------------------------------------------------------------------------------- transfer
def test_absolute_is_the_drivers_own_crop(faces):
    kp = faces["driver_later"]
    box = crop_box(kp)
    crop = crop_keypoints(kp, box, SIZE)
    transfer = MotionTransfer("absolute")
    out = transfer(crop)
    np.testing.assert_array_equal(out, crop)
    np.testing.assert_allclose(to_model_input(out, SIZE), normalize_keypoints(keypoints_to_crop(kp, box, SIZE), SIZE),
                               atol=1e-6)


def test_relative_reference_frame_gives_the_source_exactly(faces):
    src, ref = in_own_crop(faces["source"]), in_own_crop(faces["driver"])
    transfer = MotionTransfer("relative", src, ref)
    out = transfer(ref.copy())
    assert out.dtype == np.float32 and out.shape == (68, 2)
    np.testing.assert_array_equal(out, src)


@pytest.mark.parametrize("scale_by", ["extent", "interocular"])
def test_relative_translation_is_scaled(faces, scale_by):
    src, ref = in_own_crop(faces["source"]), in_own_crop(faces["driver"])
    ref_big = ref * 1.5  # the driver's face fills more of its crop
    transfer = MotionTransfer("relative", src, ref_big, scale_by=scale_by)
    measure = face_size if scale_by == "extent" else interocular_distance
    scale = measure(src) / measure(ref_big)
    assert transfer.scale == pytest.approx(scale)
    delta = np.array([6.0, -3.0], np.float32)
    out = transfer(ref_big + delta)
    np.testing.assert_allclose(out - src, np.broadcast_to(scale * delta, src.shape), atol=1e-4)


def test_relative_keeps_the_source_face_shape(faces):
    src, ref = in_own_crop(faces["source"]), in_own_crop(faces["driver"])
    assert abs(shape_ratio(src) - shape_ratio(ref)) > 0.02  # two different face shapes
    # the driver opens the mouth, drops the chin and moves: no change of its face shape
    driven = ref.copy()
    driven[MOUTH.start + 7 : MOUTH.start + 12, 1] += 5.0
    driven[6:11, 1] += 4.0
    driven += np.array([3.0, 2.0], np.float32)
    relative = MotionTransfer("relative", src, ref)(driven)
    absolute = MotionTransfer("absolute")(driven)
    assert shape_ratio(relative) == pytest.approx(shape_ratio(src), rel=1e-5)  # the photo's shape is kept ...
    assert shape_ratio(absolute) == pytest.approx(shape_ratio(ref), rel=1e-5)  # ... absolute leaks the driver's
    # the motion itself is transferred
    opened = relative[MOUTH.start + 9, 1] - relative[MOUTH.start + 3, 1]
    assert opened > src[MOUTH.start + 9, 1] - src[MOUTH.start + 3, 1] + 4.0


def test_motion_transfer_errors(faces):
    src = in_own_crop(faces["source"])
    with pytest.raises(ValueError, match="unknown motion mode 'mirror'"):
        MotionTransfer("mirror")
    with pytest.raises(ValueError, match="needs the source keypoints"):
        MotionTransfer("relative", src)
    with pytest.raises(ValueError, match="unknown face-size measure"):
        MotionTransfer("relative", src, src, scale_by="nose")
    with pytest.raises(ValueError, match=r"driver keypoints must have shape \(68, 2\)"):
        MotionTransfer("absolute")(np.zeros((10, 2)))
