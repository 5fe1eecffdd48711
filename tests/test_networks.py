"""Forward and backward of every network at the tiny size: output shapes, gradients on every parameter."""

from __future__ import annotations

import pytest
import torch

from bilayer import AvatarState, BilayerModel, Render
from bilayer.models import Discriminator
from bilayer.nn.spectral import has_spectral_norm

from .conftest import B, N_SRC, T_TGT, make_inputs

BASE_NETWORKS = (
    "identity_embedder", "texture_projector", "texture_generator",
    "keypoints_embedder", "inference_projector", "inference_generator",
)


def _weighted_sum(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A random linear functional of x (avoids symmetric cancellations that a plain sum can hide)."""
    g = torch.Generator().manual_seed(seed)
    return (x * torch.randn(x.shape, generator=g)).sum()


def _check_grads(module: torch.nn.Module, label: str, min_nonzero: float = 0.9) -> None:
    params = list(module.named_parameters())
    assert params, f"{label} has no parameters"
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"{label}: {len(missing)} parameter(s) received no gradient, e.g. {missing[:5]}"
    not_finite = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not not_finite, f"{label}: non-finite gradients in {not_finite[:5]}"
    nonzero = [n for n, p in params if p.grad.abs().max() > 0]
    assert len(nonzero) >= min_nonzero * len(params), (
        f"{label}: only {len(nonzero)} of {len(params)} parameters have a non-zero gradient; zero: "
        f"{[n for n, _ in params if n not in nonzero][:10]}"
    )


@pytest.fixture
def train_model(tiny_model) -> BilayerModel:
    tiny_model.train()
    tiny_model.zero_grad(set_to_none=True)
    return tiny_model


# ------------------------------------------------------------------------------------------- full model
def test_full_model_shapes(tiny_model, tiny_config, inputs):
    src, src_kp, masks, tgt_kp = inputs
    h = tiny_config.image_size
    with torch.no_grad():
        state = tiny_model.personalize(src, src_kp, masks)
        r = tiny_model.render(state, tgt_kp)
    assert isinstance(state, AvatarState) and isinstance(r, Render)
    assert state.texture.shape == (B, 3, h, h)
    assert state.batch == B and state.inference_params.batch == B
    assert not state.enhanced and state.base_texture is None
    for name in ("image", "lf", "hf"):
        assert getattr(r, name).shape == (B, T_TGT, 3, h, h), name
    assert r.uv.shape == (B, T_TGT, h, h, 2)
    assert r.mask.shape == r.mask_logits.shape == (B, T_TGT, 1, h, h)
    assert torch.all((r.mask >= 0) & (r.mask <= 1))
    assert state.texture.abs().max() <= 1 and r.lf.abs().max() <= 1  # tanh heads
    for t in (state.texture, r.image, r.uv, r.mask_logits):
        assert torch.isfinite(t).all()


def test_identity_embeds_shapes(tiny_model, tiny_config, inputs):
    src, src_kp, masks, _ = inputs
    with torch.no_grad():
        embeds = tiny_model.identity_embeds(src, src_kp, masks)
    k = tiny_config.num_generator_blocks
    assert k == 4  # 64 px / 4 px input = 2^4
    assert [tuple(e.shape) for e in embeds] == [(B, c, 8, 8) for c in tiny_config.embed_channels]


def test_full_model_backward_reaches_every_base_parameter(train_model, inputs):
    src, src_kp, masks, tgt_kp = inputs
    r = train_model(src, src_kp, masks, tgt_kp)
    loss = _weighted_sum(r.image, 1) + _weighted_sum(r.mask_logits, 2)
    loss.backward()
    for name in BASE_NETWORKS:
        _check_grads(getattr(train_model, name), name)
    # Without enhancement the enhancer is not part of the graph.
    assert all(p.grad is None for p in train_model.texture_enhancer.parameters())


def test_every_embedder_parameter_is_used(train_model, inputs):
    """The released embedder's dead last-block conv2/skip are omitted, so *every* parameter gets a gradient."""
    src, src_kp, masks, _ = inputs
    embeds = train_model.identity_embeds(src, src_kp, masks)
    sum(_weighted_sum(e, i) for i, e in enumerate(embeds)).backward()
    _check_grads(train_model.identity_embedder, "identity_embedder", min_nonzero=1.0)


# ------------------------------------------------------------------------------------- single networks
def test_identity_embedder_alone(train_model, tiny_config):
    h = tiny_config.image_size
    x = torch.randn(B * N_SRC, 6, h, h)
    embeds = train_model.identity_embedder(x, N_SRC)
    assert [tuple(e.shape) for e in embeds] == [(B, c, 8, 8) for c in tiny_config.embed_channels]
    sum(_weighted_sum(e, i) for i, e in enumerate(embeds)).backward()
    _check_grads(train_model.identity_embedder, "identity_embedder", min_nonzero=1.0)


def test_identity_embedder_averages_sources(tiny_model, tiny_config):
    """n source frames are averaged inside the embedder: the order of the frames does not matter."""
    h = tiny_config.image_size
    x = torch.randn(B, N_SRC, 6, h, h)
    with torch.no_grad():
        a = tiny_model.identity_embedder(x.flatten(0, 1), N_SRC)
        b = tiny_model.identity_embedder(x.flip(1).flatten(0, 1), N_SRC)
    for ea, eb in zip(a, b):
        torch.testing.assert_close(ea, eb, atol=1e-5, rtol=1e-5)


def test_texture_projector_and_generator(train_model, tiny_config):
    h = tiny_config.image_size
    embeds = [torch.randn(B, c, 8, 8, requires_grad=True) for c in tiny_config.embed_channels]
    params = train_model.texture_projector(embeds)
    assert params.batch == B and len(params.blocks) == tiny_config.num_generator_blocks
    texture = train_model.texture_generator(params)
    assert texture.shape == (B, 3, h, h)
    _weighted_sum(texture, 3).backward()
    _check_grads(train_model.texture_projector, "texture_projector")
    _check_grads(train_model.texture_generator, "texture_generator")
    assert all(e.grad is not None and e.grad.abs().max() > 0 for e in embeds)


def test_keypoints_embedder(train_model, tiny_config):
    kp = torch.rand(B * T_TGT, tiny_config.pose_dim) * 2 - 1
    emb = train_model.keypoints_embedder(kp)
    c, s = tiny_config.inference.max_channels, tiny_config.inference.input_size
    assert emb.shape == (B * T_TGT, c, s, s)
    _weighted_sum(emb, 4).backward()
    _check_grads(train_model.keypoints_embedder, "keypoints_embedder", min_nonzero=1.0)


def test_inference_projector_and_generator(train_model, tiny_config):
    h = tiny_config.image_size
    embeds = [torch.randn(B, c, 8, 8) for c in tiny_config.embed_channels]
    params = train_model.inference_projector(embeds)
    c, s = tiny_config.inference.max_channels, tiny_config.inference.input_size
    pose = torch.randn(B * T_TGT, c, s, s)
    delta_uv, lf, logits = train_model.inference_generator(pose, params)
    assert delta_uv.shape == (B * T_TGT, 2, h, h)
    assert lf.shape == (B * T_TGT, 3, h, h)
    assert logits.shape == (B * T_TGT, 1, h, h)
    assert delta_uv.abs().max() <= 1 and lf.abs().max() <= 1
    (_weighted_sum(delta_uv, 5) + _weighted_sum(lf, 6) + _weighted_sum(logits, 7)).backward()
    _check_grads(train_model.inference_projector, "inference_projector")
    _check_grads(train_model.inference_generator, "inference_generator")


@pytest.mark.parametrize("spectral", [False, True])
def test_discriminator(tiny_config, spectral):
    d = tiny_config.discriminator
    torch.manual_seed(0)
    disc = Discriminator.from_config(tiny_config.replace(spectral_norm=spectral)).train()
    assert has_spectral_norm(disc) == spectral
    h = tiny_config.image_size
    images, stickmen = torch.randn(2 * B, 3, h, h), torch.randn(2 * B, 3, h, h)
    scores, features = disc(images, stickmen)
    assert scores.shape == (2 * B, 1, d.output_size, d.output_size)
    assert len(features) == d.num_blocks
    # Channels double per downsampling block up to max_channels; resolution halves for the first log2(64/8) = 3.
    sizes = [f.shape[-1] for f in features]
    assert sizes == [64, 32, 16, 8], sizes  # features are taken before each block's pooling
    assert all(f.shape[0] == 2 * B for f in features)
    (_weighted_sum(scores, 8) + sum(_weighted_sum(f, 9 + i) for i, f in enumerate(features))).backward()
    _check_grads(disc, "discriminator", min_nonzero=1.0)


# -------------------------------------------------------------------------------------------- enhancer
def test_enhancer_trains_through_enhanced_texture(train_model, inputs, tiny_config):
    src, src_kp, masks, tgt_kp = inputs
    state = train_model.personalize(src, src_kp, masks)
    enhanced = train_model.enhance(state)
    assert enhanced.enhanced and enhanced.texture.shape == (B, 3, tiny_config.image_size, tiny_config.image_size)
    assert enhanced.base_texture is state.texture
    assert enhanced.texture.requires_grad
    assert not torch.allclose(enhanced.texture, state.texture), "the enhancer did not change the texture"
    _weighted_sum(enhanced.texture, 10).backward()
    _check_grads(train_model.texture_enhancer, "texture_enhancer")


def test_enhancer_loss_through_render(train_model, inputs):
    src, src_kp, masks, tgt_kp = inputs
    r = train_model(src, src_kp, masks, tgt_kp, enhance=True)
    _weighted_sum(r.image, 11).backward()
    _check_grads(train_model.texture_enhancer, "texture_enhancer")


def _capture_enhancer_calls(model):
    calls = []

    def hook(module, args):
        texture, gradient, n = args
        calls.append((texture.detach().clone(), gradient.detach().clone(), n))

    return calls, model.texture_enhancer.register_forward_pre_hook(hook)


def test_enhancer_guiding_gradient_under_no_grad(tiny_model, inputs, tiny_config):
    """The guiding gradient ∂L_upd/∂Y must be computed even under torch.no_grad, and equal the one computed with
    autograd on; the whole enhancement must give the same texture either way."""
    src, src_kp, masks, _ = inputs
    model = tiny_model.eval()
    steps = tiny_config.enhancer.steps

    calls_ng, handle = _capture_enhancer_calls(model)
    with torch.no_grad():
        state = model.personalize(src, src_kp, masks)
        enhanced_ng = model.enhance(state)
    handle.remove()
    assert not enhanced_ng.texture.requires_grad
    assert len(calls_ng) == steps
    for texture, gradient, n in calls_ng:
        assert n == N_SRC
        assert gradient.shape == texture.shape == (B * N_SRC, 3, tiny_config.image_size, tiny_config.image_size)
        assert torch.isfinite(gradient).all()
        assert gradient.abs().max() > 1e-3, "guiding gradient is (almost) zero under no_grad"

    calls_g, handle = _capture_enhancer_calls(model)
    state = model.personalize(src, src_kp, masks)
    enhanced_g = model.enhance(state)
    handle.remove()
    for (_, g_ng, _), (_, g_g, _) in zip(calls_ng, calls_g):
        torch.testing.assert_close(g_ng, g_g, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enhanced_ng.texture, enhanced_g.texture.detach(), atol=1e-5, rtol=1e-5)
    assert (enhanced_ng.texture - state.texture).abs().max() > 1e-4


def test_guiding_gradient_matches_sse_formula(tiny_model, inputs):
    """First step: g = ∂/∂Y ½Σ(x_s − mask(LF_s + warp(Y, uv_s)))² at Y = the base texture (reference §5.3)."""
    from bilayer.models.texture_enhancer import apply_mask, warp

    src, src_kp, masks, _ = inputs
    model = tiny_model.eval()
    calls, handle = _capture_enhancer_calls(model)
    with torch.no_grad():
        state = model.personalize(src, src_kp, masks)
        model.enhance(state, steps=1)
        source = model.render_layers(state.inference_params, src_kp)
    handle.remove()
    (_, gradient, _), = calls
    flat = lambda x: x.flatten(0, 1)  # noqa: E731
    m = flat(source.mask)
    y = state.texture.repeat_interleave(N_SRC, dim=0).requires_grad_(True)
    recon = apply_mask(flat(source.lf) + warp(y, flat(source.uv)), m)
    loss = 0.5 * (apply_mask(flat(src), m) - recon).square().sum()
    (expected,) = torch.autograd.grad(loss, y)
    torch.testing.assert_close(gradient, expected, atol=1e-5, rtol=1e-4)


def test_enhance_without_enhancer_is_a_clear_error(tiny_config, inputs):
    model = BilayerModel(tiny_config.replace(enhancer=None)).eval()
    assert model.texture_enhancer is None
    src, src_kp, masks, _ = inputs
    with torch.no_grad():
        state = model.personalize(src, src_kp, masks)
        with pytest.raises(ValueError, match="enhancer"):
            model.enhance(state)


def test_batch_of_one_identity_one_source(tiny_config):
    """B = 1, n = 1, t = 1 (the released code special-cases B = 1 when reshaping projector outputs)."""
    model = BilayerModel(tiny_config).eval()
    src, src_kp, masks, tgt_kp = make_inputs(tiny_config, batch=1, sources=1, targets=1)
    with torch.no_grad():
        r = model(src, src_kp, masks, tgt_kp, enhance=True)
    assert r.image.shape == (1, 1, 3, 64, 64)
    assert torch.isfinite(r.image).all()
