"""Avatars: made once from a real photo (MediaPipe keypoints + segmentation), saved to one safetensors file,
loaded only with the model they belong to, rendered per frame the same way as the model."""

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata

from bilayer import preset
from bilayer.config import KeypointsEmbedderConfig
from bilayer.keypoints import normalize_keypoints
from bilayer.vision.crop import crop_box, crop_image, keypoints_to_crop
from bilayer.runtime.avatar import Avatar, AvatarError, model_fingerprint

from .conftest import build_model


@pytest.fixture(scope="module")
def model():
    return build_model(preset("tiny"), seed=3)


@pytest.fixture(scope="module")
def photo_avatar(model):
    return Avatar.create(model, skdata.astronaut())


def test_create_from_photo_detects_crops_and_segments(photo_avatar, model):
    a = photo_avatar
    size = model.config.image_size
    assert a.texture.shape == (1, 3, size, size) and a.enhanced
    assert a.photo_size == (512, 512)
    # the crop follows the reference protocol: the landmark box spans about half the crop
    extent = a.source_keypoints.max(0) - a.source_keypoints.min(0)
    assert 0.35 * size < extent.max() < 0.65 * size
    assert 0.0 <= float(a.source_mask.min()) and float(a.source_mask.max()) <= 1.0
    assert 0.1 < float(a.source_mask.mean()) < 0.95  # a person, not all or nothing
    assert torch.isfinite(a.texture).all()


def test_no_face_is_one_sentence(model, tmp_path):
    blank = np.full((200, 200, 3), 127, np.uint8)
    with pytest.raises(AvatarError, match="no face found in the photo"):
        Avatar.create(model, blank)
    path = tmp_path / "wall.png"
    import cv2

    cv2.imwrite(str(path), blank)
    with pytest.raises(AvatarError, match=r"no face found in .*wall\.png"):
        Avatar.create(model, path)
    with pytest.raises(AvatarError, match="expected a JPEG/PNG photo"):
        Avatar.create(model, tmp_path / "missing.jpg")


def test_render_equals_model_path(photo_avatar, model):
    g = torch.Generator().manual_seed(0)
    kp = torch.from_numpy(photo_avatar.source_keypoints_normalized)[None] + 0.02 * torch.randn(3, 136, generator=g)
    out = photo_avatar.render(model, kp)
    with torch.no_grad():
        ref = model.render(photo_avatar.state(), kp[None])
    assert out.image.shape == (1, 3, 3, 64, 64)
    torch.testing.assert_close(out.image, ref.image)
    image, mask = photo_avatar.bake(model)(kp)
    torch.testing.assert_close(image, ref.image[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mask, ref.mask[0], atol=1e-5, rtol=0)


def test_save_load_roundtrip(photo_avatar, model, tmp_path):
    path = photo_avatar.save(tmp_path / "me.avatar")
    assert [p.name for p in tmp_path.iterdir()] == ["me.avatar"]  # no temporary left behind
    loaded = Avatar.load(path, model)
    assert loaded.model_hash == model_fingerprint(model) and loaded.enhanced
    assert loaded.box == photo_avatar.box and loaded.photo_size == photo_avatar.photo_size
    for a, b in zip(loaded.params.tensors(), photo_avatar.params.tensors()):
        assert torch.equal(a, b)
    kp = torch.from_numpy(photo_avatar.source_keypoints_normalized)[None]
    torch.testing.assert_close(loaded.render(model, kp).image, photo_avatar.render(model, kp).image, atol=0, rtol=0)


def test_load_refuses_another_model(photo_avatar, model, tmp_path):
    path = photo_avatar.save(tmp_path / "me.avatar")
    other_weights = build_model(preset("tiny"), seed=4)
    with pytest.raises(AvatarError, match="other model weights"):
        Avatar.load(path, other_weights)
    other_size = build_model(preset("tiny").replace(image_size=128), seed=3)
    with pytest.raises(AvatarError, match=r"different model configuration \(image size 64 vs the model's 128\)"):
        Avatar.load(path, other_size)
    other_keypoints = build_model(preset("tiny").replace(keypoints=KeypointsEmbedderConfig(num_harmonics=4)), seed=3)
    with pytest.raises(AvatarError, match=r"different model configuration \(keypoints differs\)"):
        Avatar.load(path, other_keypoints)
    with pytest.raises(AvatarError, match="other model weights"):
        photo_avatar.render(other_weights, torch.zeros(1, 136))


def test_load_bad_files(model, tmp_path):
    junk = tmp_path / "junk.avatar"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(AvatarError, match="junk.avatar"):
        Avatar.load(junk, model)
    with pytest.raises(AvatarError, match="does not exist"):
        Avatar.load(tmp_path / "none.avatar", model)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(AvatarError, match="not a bilayer avatar file"):
        Avatar.load(tmp_path / "m" / "model.safetensors", model)


def test_damaged_avatar_files_and_bad_destinations(photo_avatar, model, tmp_path):
    from safetensors import safe_open

    from bilayer.weights import read_safetensors, write_safetensors

    good = photo_avatar.save(tmp_path / "me.avatar")
    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    tensors = read_safetensors(good)
    for name, change in (("texture", None), ("params.final_norm.gamma", None),
                         ("params.final_norm.beta", tensors["params.final_norm.beta"][:, :-1])):
        damaged = {k: v for k, v in tensors.items() if k != name}
        if change is not None:
            damaged[name] = change.contiguous()
        write_safetensors(damaged, tmp_path / "damaged.avatar", meta)
        with pytest.raises(AvatarError, match=rf"damaged\.avatar is damaged \(tensor '{name}' (is missing|has shape)"):
            Avatar.load(tmp_path / "damaged.avatar", model)
    with pytest.raises(AvatarError, match=r"it is a folder; give a file name such as"):
        photo_avatar.save(tmp_path)
    with pytest.raises(AvatarError, match=r"folder .*missing does not exist"):
        photo_avatar.save(tmp_path / "missing" / "me.avatar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.avatar", "me.avatar"]


def test_save_refuses_a_read_only_folder(photo_avatar, tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr("bilayer.runtime.avatar.os.access", lambda path, mode: Path(path) != folder)  # root writes anyway
    with pytest.raises(AvatarError, match=r"cannot write .*me\.avatar: folder .*ro is not writable\."):
        photo_avatar.save(folder / "me.avatar")
    assert list(folder.iterdir()) == []


def test_create_from_given_crop_keypoints_and_mask(model):
    """The path `make demo` uses for SynthHeads: a preprocessed crop with known keypoints and mask."""
    img = skdata.astronaut()
    from bilayer.vision.landmarks import detect_keypoints

    kp = detect_keypoints(img)
    box = crop_box(kp)
    crop = crop_image(img, box, 64)
    kp_crop = keypoints_to_crop(kp, box, 64)
    mask = np.ones((64, 64), np.float32)
    a = Avatar.create(model, crop, keypoints=kp_crop, mask=mask, crop=False, enhance=False)
    assert not a.enhanced and a.photo_size == (0, 0)
    np.testing.assert_allclose(a.source_keypoints_normalized, normalize_keypoints(kp_crop, 64.0).astype(np.float32))
    with pytest.raises(AvatarError, match="must be the model's 64×64 crop"):
        Avatar.create(model, img, keypoints=kp, mask=mask, crop=False)


def test_fingerprint_follows_in_place_weight_changes():
    model = build_model(preset("tiny"), seed=7)
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before  # cached, same answer
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # what an optimizer step does
    assert model_fingerprint(model) != before

