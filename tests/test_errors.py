"""Input validation: a wrong shape or a NaN is a ValueError with one clear sentence, never a cryptic crash."""

from __future__ import annotations

import re

import pytest
import torch

from bilayer.models import Discriminator

from .conftest import B, N_SRC, T_TGT


@pytest.fixture(scope="module")
def model(_tiny_model_master):
    return _tiny_model_master.eval()


def _one_sentence(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, f"message spans several lines: {msg!r}"
    assert len(msg) < 400, f"message is too long: {msg!r}"
    return msg


# ------------------------------------------------------------------------------- networks called directly
@pytest.mark.parametrize("channels", [3, 5, 7])
def test_identity_embedder_wrong_channels(model, channels):
    with pytest.raises(ValueError) as exc:
        model.identity_embedder(torch.zeros(B * N_SRC, channels, 64, 64), N_SRC)
    msg = _one_sentence(exc)
    assert "IdentityEmbedder" in msg and f"({B * N_SRC}, {channels}, 64, 64)" in msg and "6" in msg


def test_identity_embedder_wrong_size(model):
    with pytest.raises(ValueError, match=r"IdentityEmbedder.*\(4, 6, 32, 32\).*64"):
        model.identity_embedder(torch.zeros(4, 6, 32, 32), 2)


def test_inference_generator_wrong_channels(model, tiny_config):
    c, s = tiny_config.inference.max_channels, tiny_config.inference.input_size
    embeds = [torch.zeros(B, ch, 8, 8) for ch in tiny_config.embed_channels]
    with torch.no_grad():
        params = model.inference_projector(embeds)
        with pytest.raises(ValueError) as exc:
            model.inference_generator(torch.zeros(B * T_TGT, c + 1, s, s), params)
    msg = _one_sentence(exc)
    assert "InferenceGenerator" in msg and str((B * T_TGT, c + 1, s, s)) in msg and str(c) in msg


def test_inference_generator_wrong_rank(model, tiny_config):
    embeds = [torch.zeros(B, ch, 8, 8) for ch in tiny_config.embed_channels]
    with torch.no_grad():
        params = model.inference_projector(embeds)
        with pytest.raises(ValueError, match="InferenceGenerator"):
            model.inference_generator(torch.zeros(B * T_TGT, 256), params)


def test_keypoints_embedder_wrong_width(model):
    with pytest.raises(ValueError, match=r"KeypointsEmbedder.*\(6, 134\).*136"):
        model.keypoints_embedder(torch.zeros(6, 134))


def test_projector_wrong_embedding_count_and_channels(model, tiny_config):
    embeds = [torch.zeros(B, ch, 8, 8) for ch in tiny_config.embed_channels]
    with pytest.raises(ValueError, match=r"expects 4 identity embeddings, got 3"):
        model.texture_projector(embeds[:3])
    bad = list(embeds)
    bad[1] = torch.zeros(B, tiny_config.embed_channels[1] + 1, 8, 8)
    with pytest.raises(ValueError, match=r"identity embedding 1 has"):
        model.inference_projector(bad)


@pytest.fixture(scope="module")
def disc(tiny_config):
    d = tiny_config.discriminator
    return Discriminator(tiny_config.image_size, d.num_channels, d.max_channels, d.num_blocks, d.output_size).eval()


@pytest.mark.parametrize(
    "images, stickmen",
    [
        ((4, 4, 64, 64), (4, 4, 64, 64)),  # wrong channel count
        ((4, 3, 64, 64), (4, 4, 64, 64)),  # images and stickmen disagree
        ((4, 3, 64, 64), (3, 3, 64, 64)),  # batch disagrees
        ((4, 3, 32, 32), (4, 3, 32, 32)),  # wrong resolution
        ((3, 64, 64), (3, 64, 64)),  # no batch dimension
    ],
)
def test_discriminator_wrong_shapes(disc, images, stickmen):
    with pytest.raises(ValueError) as exc:
        disc(torch.zeros(images), torch.zeros(stickmen))
    msg = _one_sentence(exc)
    assert "Discriminator" in msg and str(tuple(images)) in msg and "(N, 3, 64, 64)" in msg


# ---------------------------------------------------------------------------------------- personalize
def _good(tiny_config):
    h = tiny_config.image_size
    return (
        torch.zeros(B, N_SRC, 3, h, h), torch.zeros(B, N_SRC, 136), torch.ones(B, N_SRC, 1, h, h),
    )


@pytest.mark.parametrize(
    "kp_shape",
    [(B, N_SRC, 134), (B, 136), (B, N_SRC, 68, 2), (136,)],
    ids=["134-wide", "2-D", "68x2", "1-D"],
)
def test_personalize_rejects_bad_keypoint_shapes(model, tiny_config, kp_shape):
    src, _, masks = _good(tiny_config)
    with pytest.raises(ValueError) as exc:
        model.personalize(src, torch.zeros(kp_shape), masks)
    msg = _one_sentence(exc)
    assert "keypoints" in msg and str(tuple(kp_shape)).replace(",)", ")") in msg.replace(",)", ")") and "136" in msg


def test_personalize_rejects_nan_keypoints(model, tiny_config):
    src, kp, masks = _good(tiny_config)
    kp[1, 0, 17] = float("nan")
    with pytest.raises(ValueError, match="NaN") as exc:
        model.personalize(src, kp, masks)
    assert "keypoints" in _one_sentence(exc)


def test_personalize_rejects_infinite_keypoints(model, tiny_config):
    src, kp, masks = _good(tiny_config)
    kp[0, 1, 3] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        model.personalize(src, kp, masks)


@pytest.mark.parametrize(
    "which, shape",
    [
        ("images", (B, N_SRC, 3, 32, 32)),
        ("images", (B, N_SRC, 4, 64, 64)),
        ("images", (B, N_SRC + 1, 3, 64, 64)),
        ("images", (N_SRC, 3, 64, 64)),
        ("masks", (B, N_SRC, 1, 32, 32)),
        ("masks", (B, N_SRC, 3, 64, 64)),
        ("masks", (B, N_SRC, 64, 64)),
        ("masks", (B + 1, N_SRC, 1, 64, 64)),
    ],
)
def test_personalize_rejects_mismatched_images_and_masks(model, tiny_config, which, shape):
    src, kp, masks = _good(tiny_config)
    if which == "images":
        src = torch.zeros(shape)
    else:
        masks = torch.zeros(shape)
    with pytest.raises(ValueError) as exc:
        model.personalize(src, kp, masks)
    msg = _one_sentence(exc)
    assert re.search(rf"\b{which}\b", msg) and str(tuple(shape)) in msg


def test_personalize_rejects_bad_stickmen(model, tiny_config):
    src, kp, masks = _good(tiny_config)
    with pytest.raises(ValueError, match="stickmen"):
        model.personalize(src, kp, masks, torch.zeros(B, N_SRC, 3, 32, 32))


def test_personalize_rejects_non_tensors(model, tiny_config):
    src, kp, masks = _good(tiny_config)
    with pytest.raises(TypeError, match="keypoints"):
        model.personalize(src, kp.tolist(), masks)


# --------------------------------------------------------------------------------------------- render
@pytest.fixture(scope="module")
def state(model, tiny_config):
    src, kp, masks = _good(tiny_config)
    with torch.no_grad():
        return model.personalize(src, kp, masks)


@pytest.mark.parametrize(
    "shape", [(B, T_TGT, 134), (B, 136), (B + 1, T_TGT, 136), (B, T_TGT, 68, 2)],
    ids=["134-wide", "2-D", "wrong-batch", "68x2"],
)
def test_render_rejects_bad_target_keypoints(model, state, shape):
    with torch.no_grad(), pytest.raises(ValueError) as exc:
        model.render(state, torch.zeros(shape))
    msg = _one_sentence(exc)
    assert "target keypoints" in msg and str(tuple(shape)) in msg


def test_render_rejects_nan_target_keypoints(model, state):
    kp = torch.zeros(B, T_TGT, 136)
    kp[0, 2, 100] = float("nan")
    with torch.no_grad(), pytest.raises(ValueError, match="NaN") as exc:
        model.render(state, kp)
    assert "target keypoints" in _one_sentence(exc)


def test_forward_rejects_nan_target_keypoints(model, tiny_config):
    src, kp, masks = _good(tiny_config)
    tgt = torch.full((B, T_TGT, 136), float("nan"))
    with torch.no_grad(), pytest.raises(ValueError, match="NaN"):
        model(src, kp, masks, tgt)
