"""Rendering semantics (reference §2.8): uv = identity grid + Δuv, HF = warp(texture, uv), image = LF + HF, masks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bilayer import BilayerModel
from bilayer.models import identity_grid
from bilayer.nn.spectral import remove_spectral_norm

from .conftest import B, N_SRC, T_TGT, build_model


@pytest.fixture(scope="module")
def rendered(_tiny_model_master, tiny_config):
    from .conftest import make_inputs

    model = _tiny_model_master.eval()
    src, src_kp, masks, tgt_kp = make_inputs(tiny_config, seed=4)
    with torch.no_grad():
        state = model.personalize(src, src_kp, masks)
        r = model.render(state, tgt_kp)
    return model, state, r, (src, src_kp, masks, tgt_kp)


def test_identity_grid_is_pixel_centres():
    g = identity_grid(4)
    assert g.shape == (1, 4, 4, 2) and g.dtype == torch.float32
    centres = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    torch.testing.assert_close(g[0, 0, :, 0], centres, atol=0, rtol=0)  # x varies along the width
    torch.testing.assert_close(g[0, :, 0, 1], centres, atol=0, rtol=0)  # y varies along the height
    assert torch.all(g[0, :, 1, 0] == -0.25) and torch.all(g[0, 2, :, 1] == 0.25)
    # Sampling an image at the identity grid with align_corners=False reproduces it exactly.
    img = torch.randn(2, 3, 64, 64)
    out = F.grid_sample(img, identity_grid(64).expand(2, -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.equal(out, img)


def test_image_is_lf_plus_hf(rendered):
    _, _, r, _ = rendered
    assert torch.equal(r.image, r.lf + r.hf)
    assert torch.equal(r.mask, torch.sigmoid(r.mask_logits))
    torch.testing.assert_close(r.masked(), r.image * r.mask - (1 - r.mask))
    ones = torch.ones_like(r.mask)
    assert torch.equal(r.masked(ones), r.image)
    assert torch.equal(r.masked(torch.zeros_like(r.mask)), -torch.ones_like(r.image))


def test_uv_is_identity_grid_plus_delta(rendered, tiny_config):
    model, state, r, (_, _, _, tgt_kp) = rendered
    with torch.no_grad():
        pose = model.keypoints_embedder(tgt_kp.flatten(0, 1))
        delta_uv, lf, logits = model.inference_generator(pose, state.inference_params)
    h = tiny_config.image_size
    expected = identity_grid(h) + delta_uv.permute(0, 2, 3, 1)
    torch.testing.assert_close(r.uv, expected.view(B, T_TGT, h, h, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.lf, lf.view(B, T_TGT, 3, h, h), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.mask_logits, logits.view(B, T_TGT, 1, h, h), atol=1e-6, rtol=0)
    assert (r.uv - identity_grid(h)[:, None]).abs().max() <= 1  # Δuv = tanh(·)
    assert (r.uv - identity_grid(h)[:, None]).abs().max() > 1e-3  # and the random warp is not trivial


def test_hf_is_the_warped_texture(rendered, tiny_config):
    _, state, r, _ = rendered
    h = tiny_config.image_size
    tex = state.texture.repeat_interleave(T_TGT, dim=0)
    expected = F.grid_sample(tex, r.uv.flatten(0, 1), mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(r.hf, expected.view(B, T_TGT, 3, h, h), atol=1e-6, rtol=0)


@pytest.mark.parametrize("spectral", [False, True], ids=["plain", "sn-removed"])
def test_zero_warp_gives_the_texture_exactly(tiny_config, spectral):
    """With Δuv forced to 0 (uv head weights and bias zeroed), uv is the pixel-centre identity grid and HF equals the
    texture exactly (align_corners=False)."""
    from .conftest import make_inputs

    model = build_model(tiny_config.replace(spectral_norm=spectral), seed=6, warm=True)
    if spectral:
        remove_spectral_norm(model)  # zeroing weight_orig would make σ = 0
    head = model.inference_generator.head_uv
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        src, src_kp, masks, tgt_kp = make_inputs(tiny_config, seed=7)
        state = model.personalize(src, src_kp, masks)
        r = model.render(state, tgt_kp)
        enhanced = model.render(model.enhance(state), tgt_kp)
    h = tiny_config.image_size
    assert torch.equal(r.uv, identity_grid(h).expand(B * T_TGT, -1, -1, -1).reshape(B, T_TGT, h, h, 2))
    assert torch.equal(r.hf, state.texture[:, None].expand(-1, T_TGT, -1, -1, -1))
    assert torch.equal(r.image, r.lf + state.texture[:, None])
    assert torch.equal(enhanced.hf, model.enhance(state).texture[:, None].expand(-1, T_TGT, -1, -1, -1))


def test_frames_render_independently(rendered):
    """Adaptive parameters are shared by an identity's t frames: rendering frame j alone gives the same frame."""
    model, state, r, (_, _, _, tgt_kp) = rendered
    with torch.no_grad():
        for j in range(T_TGT):
            single = model.render(state, tgt_kp[:, j : j + 1])
            torch.testing.assert_close(single.image[:, 0], r.image[:, j], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(single.uv[:, 0], r.uv[:, j], atol=1e-5, rtol=1e-5)


def test_identities_render_independently(rendered):
    """Batch layout is identity-major: identity i of a batch equals identity i rendered alone."""
    model, state, r, (_, _, _, tgt_kp) = rendered
    with torch.no_grad():
        for i in range(B):
            pick = lambda x: x[i : i + 1]  # noqa: E731
            alone = dataclasses.replace(
                state, texture=pick(state.texture), inference_params=state.inference_params.map(pick),
                source_images=pick(state.source_images), source_keypoints=pick(state.source_keypoints),
                source_masks=pick(state.source_masks),
            )
            single = model.render(alone, tgt_kp[i : i + 1])
            torch.testing.assert_close(single.image[0], r.image[i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(single.mask_logits[0], r.mask_logits[i], atol=1e-5, rtol=1e-5)


def test_identities_differ(rendered):
    _, state, r, _ = rendered
    assert (state.texture[0] - state.texture[1]).abs().max() > 1e-3
    assert (r.image[0] - r.image[1]).abs().max() > 1e-3


def test_source_order_does_not_matter(rendered):
    model, state, r, (src, src_kp, masks, tgt_kp) = rendered
    with torch.no_grad():
        flipped = model.personalize(src.flip(1), src_kp.flip(1), masks.flip(1))
        r2 = model.render(flipped, tgt_kp)
    torch.testing.assert_close(flipped.texture, state.texture, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r2.image, r.image, atol=1e-5, rtol=1e-5)


def test_embedder_sees_the_masked_source(tiny_config):
    """apply_masks: the embedder input is x·m + (−1)(1 − m), so pixels outside the mask do not matter."""
    from .conftest import make_inputs

    model = build_model(tiny_config, seed=8, warm=True)
    src, src_kp, masks, _ = make_inputs(tiny_config, seed=9)
    masks = (masks > 0.5).float()
    noise = torch.randn_like(src) * (1 - masks)
    with torch.no_grad():
        a = model.identity_embeds(src, src_kp, masks)
        b = model.identity_embeds(src + noise, src_kp, masks)
        unmasked = BilayerModel(tiny_config.replace(embedder=dataclasses.replace(tiny_config.embedder, apply_masks=False)))
        unmasked.load_state_dict(model.state_dict())
        c = unmasked.eval().identity_embeds(src, src_kp, masks)
        d = unmasked.identity_embeds(src + noise, src_kp, masks)
    for ea, eb in zip(a, b):
        torch.testing.assert_close(ea, eb, atol=1e-6, rtol=0)
    assert any((ec - ed).abs().max() > 1e-4 for ec, ed in zip(c, d))


def test_given_stickmen_are_used(rendered, tiny_config):
    model, state, _, (src, src_kp, masks, _) = rendered
    from bilayer.data.stickman import draw_stickmen

    with torch.no_grad():
        drawn = model.identity_embeds(src, src_kp, masks, draw_stickmen(src_kp, tiny_config.image_size))
        default = model.identity_embeds(src, src_kp, masks)
        other = model.identity_embeds(src, src_kp, masks, torch.zeros_like(src))
    for a, b in zip(drawn, default):
        assert torch.equal(a, b)
    assert any((a - c).abs().max() > 1e-4 for a, c in zip(default, other))


def test_enhanced_state_renders_with_enhanced_texture(rendered):
    model, state, r, (_, _, _, tgt_kp) = rendered
    with torch.no_grad():
        enhanced = model.enhance(state)
        re = model.render(enhanced, tgt_kp)
        again = model.enhance(enhanced)  # enhancing again restarts from the base texture
    torch.testing.assert_close(re.lf, r.lf)  # LF does not depend on the texture
    torch.testing.assert_close(re.uv, r.uv)
    assert (re.hf - r.hf).abs().max() > 1e-4
    torch.testing.assert_close(again.texture, enhanced.texture, atol=1e-6, rtol=0)
    assert again.base_texture is state.texture
    assert N_SRC == state.source_images.shape[1]
