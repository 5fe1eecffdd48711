"""Spectral normalisation (reference §2.7): released arithmetic, power iteration in train mode only, exact removal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from bilayer.models import Discriminator
from bilayer.nn.spectral import (
    SpectralNorm,
    apply_spectral_norm,
    fold_reference_weight,
    has_spectral_norm,
    remove_spectral_norm,
)

from .conftest import make_inputs


def _sn_modules(root: nn.Module) -> dict[str, SpectralNorm]:
    return {
        name: m.parametrizations["weight"][0]
        for name, m in root.named_modules()
        if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations["weight"][0], SpectralNorm)
    }


def _outputs(model, inputs, enhance=True):
    src, src_kp, masks, tgt_kp = inputs
    with torch.no_grad():
        state = model.personalize(src, src_kp, masks)
        if enhance:
            state = model.enhance(state)
        r = model.render(state, tgt_kp)
    return {"texture": state.texture, "image": r.image, "uv": r.uv, "mask_logits": r.mask_logits, "lf": r.lf}


def test_every_conv_and_linear_is_normalised(tiny_model):
    layers = [n for n, m in tiny_model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    sn = _sn_modules(tiny_model)
    assert layers and sorted(layers) == sorted(sn), set(layers) ^ set(sn)
    assert has_spectral_norm(tiny_model)
    # Not applied to norms, pixel features or the learned texture input: those stay plain parameters.
    names = dict(tiny_model.named_parameters())
    assert "texture_generator.input" in names
    assert not any("pixel_feats" in n and "parametrizations" in n for n in names)


def test_model_without_spectral_norm_config(tiny_config):
    from bilayer import BilayerModel

    model = BilayerModel(tiny_config.replace(spectral_norm=False))
    assert not has_spectral_norm(model)
    assert not any("parametrizations" in k for k in model.state_dict())


def test_remove_keeps_eval_outputs(tiny_model, inputs):
    model = tiny_model.eval()
    before = _outputs(model, inputs)
    remove_spectral_norm(model)
    assert not has_spectral_norm(model)
    assert not any("parametrizations" in k or k.endswith((".u", ".v")) for k in model.state_dict())
    assert all(isinstance(m.weight, nn.Parameter) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    after = _outputs(model, inputs)
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=1e-5, rtol=1e-5, msg=name)


def test_remove_does_not_run_a_power_iteration_even_in_train_mode(tiny_model):
    """remove_spectral_norm folds with the *stored* u, v (reference §6.1): the folded weight is W/uᵀWv."""
    model = tiny_model.train()
    layer = model.keypoints_embedder.layers[1]
    sn = layer.parametrizations["weight"][0]
    expected = fold_reference_weight(layer.parametrizations.weight.original.detach(), sn.u, sn.v)
    remove_spectral_norm(model)
    torch.testing.assert_close(layer.weight.detach(), expected, atol=1e-6, rtol=1e-5)


def test_eval_weight_is_orig_over_stored_sigma(tiny_model):
    model = tiny_model.eval()
    for name, sn in list(_sn_modules(model).items())[:: 7]:
        layer = model.get_submodule(name)
        orig = layer.parametrizations.weight.original.detach()
        sigma = torch.dot(sn.u.double(), orig.flatten(1).double() @ sn.v.double())
        torch.testing.assert_close(layer.weight.detach().double(), orig.double() / sigma, atol=1e-6, rtol=1e-5)


def test_power_iteration_only_in_train_mode(tiny_model, inputs):
    src, src_kp, masks, tgt_kp = inputs
    model = tiny_model
    sn = _sn_modules(model)
    base = {n: m for n, m in sn.items() if not n.startswith("texture_enhancer")}  # used by a plain forward

    model.eval()
    snapshot = {n: (m.u.clone(), m.v.clone()) for n, m in sn.items()}
    with torch.no_grad():
        model(src, src_kp, masks, tgt_kp, enhance=True)
    changed = [n for n, m in sn.items() if not (torch.equal(m.u, snapshot[n][0]) and torch.equal(m.v, snapshot[n][1]))]
    assert not changed, f"eval-mode forward changed u/v of {changed[:5]}"

    model.train()
    with torch.no_grad():
        model(src, src_kp, masks, tgt_kp)
    # (A layer with one output, e.g. the mask head, is rank one: the iteration reaches its fixed point in one step.)
    unchanged = [
        n for n, m in base.items()
        if m.u.numel() > 1 and torch.equal(m.u, snapshot[n][0]) and torch.equal(m.v, snapshot[n][1])
    ]
    assert not unchanged, f"train-mode forward did not update u, v of {unchanged[:5]}"
    enh_same = [n for n, m in sn.items() if n.startswith("texture_enhancer") and torch.equal(m.u, snapshot[n][0])]
    assert len(enh_same) == sum(n.startswith("texture_enhancer") for n in sn), "enhancer was not run"
    for n, m in base.items():
        assert torch.allclose(m.u.norm(), torch.tensor(1.0), atol=1e-5), n
        assert torch.allclose(m.v.norm(), torch.tensor(1.0), atol=1e-5), n


def test_one_power_iteration_step_is_the_released_update():
    """v ← normalize(Wᵀu), u ← normalize(Wv), then σ = uᵀWv with the new vectors (PyTorch's original SN)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3)
    w = conv.weight.detach().clone()
    apply_spectral_norm(conv)
    sn = conv.parametrizations["weight"][0]
    u0 = sn.u.clone()
    conv.train()
    w_eff = conv.weight.detach()
    m = w.flatten(1)
    v1 = nn.functional.normalize(m.t() @ u0, dim=0, eps=1e-7)
    u1 = nn.functional.normalize(m @ v1, dim=0, eps=1e-7)
    torch.testing.assert_close(sn.u, u1)
    torch.testing.assert_close(sn.v, v1)
    torch.testing.assert_close(w_eff, w / torch.dot(u1, m @ v1))


def test_power_iteration_converges_to_unit_spectral_norm():
    torch.manual_seed(0)
    lin = apply_spectral_norm(nn.Linear(40, 30))
    lin.train()
    for _ in range(100):
        lin.weight  # noqa: B018 - each access is one power-iteration step in train mode
    lin.eval()
    sigma = torch.linalg.matrix_norm(lin.weight.detach(), ord=2)
    assert abs(sigma.item() - 1.0) < 1e-3


def test_apply_twice_is_idempotent(tiny_model, inputs):
    model = tiny_model.eval()
    keys = list(model.state_dict())
    before = _outputs(model, inputs, enhance=False)
    apply_spectral_norm(model)
    apply_spectral_norm(model)
    assert list(model.state_dict()) == keys
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            assert len(m.parametrizations["weight"]) == 1, name
    after = _outputs(model, inputs, enhance=False)
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=0, rtol=0, msg=name)


def test_remove_is_a_no_op_without_spectral_norm(tiny_config, inputs):
    from bilayer import BilayerModel

    torch.manual_seed(0)
    model = BilayerModel(tiny_config.replace(spectral_norm=False)).eval()
    state = copy.deepcopy(model.state_dict())
    remove_spectral_norm(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_two_train_forwards_before_backward(tiny_config):
    """The discriminator runs twice per iteration before one backward: the in-place u/v update must not break
    autograd (reference §2.9)."""
    torch.manual_seed(0)
    disc = Discriminator.from_config(tiny_config).train()
    assert has_spectral_norm(disc)
    x, s = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    a, _ = disc(x, s)
    b, _ = disc(x, s)
    (a.sum() + b.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())


def test_spectral_norm_state_dict_layout(tiny_model):
    state = tiny_model.state_dict()
    prefix = "keypoints_embedder.layers.0.parametrizations.weight"
    assert f"{prefix}.original" in state and f"{prefix}.0.u" in state and f"{prefix}.0.v" in state
    assert state[f"{prefix}.0.u"].shape == (32,) and state[f"{prefix}.0.v"].shape == (136,)
    # u and v are buffers, not parameters: the parameter count does not change with spectral norm.
    names = dict(tiny_model.named_parameters())
    assert f"{prefix}.original" in names and f"{prefix}.0.u" not in names


def test_parameter_count_independent_of_spectral_norm(tiny_config):
    from bilayer import BilayerModel

    a = sum(p.numel() for p in BilayerModel(tiny_config).parameters())
    b = sum(p.numel() for p in BilayerModel(tiny_config.replace(spectral_norm=False)).parameters())
    assert a == b


@pytest.fixture
def inputs(tiny_config):
    return make_inputs(tiny_config, seed=3)


def test_removing_from_a_deep_copy_leaves_the_original_intact(tiny_model, inputs):
    """``remove_spectral_norm(copy.deepcopy(model))`` (export a deployable copy, keep training the original) must not
    break the original. torch's remove_parametrizations deletes the ``weight`` property from the module's class, and
    deep copies share that dynamically created class."""
    model = tiny_model.eval()
    before = _outputs(model, inputs, enhance=False)
    exported = remove_spectral_norm(copy.deepcopy(model))
    assert not has_spectral_norm(exported)
    assert has_spectral_norm(model)
    after = _outputs(model, inputs, enhance=False)  # AttributeError: 'ParametrizedConv2d' ... no attribute 'weight'
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=0, rtol=0, msg=name)


def test_remove_keeps_the_parameter_objects(tiny_model):
    """Folding writes into the existing Parameter (an optimiser holding it keeps working) and restores the plain
    layer class."""
    layer = tiny_model.inference_generator.head_lf
    original = layer.parametrizations.weight.original
    remove_spectral_norm(tiny_model)
    assert layer.weight is original
    assert type(layer) is nn.Conv2d
    assert "weight" in dict(layer.named_parameters())


@pytest.mark.parametrize("training", [True, False])
def test_sigma_is_float32_under_bf16_autocast(training):
    """Under bf16 autocast (training's default on CPUs with native bf16) σ and the power iteration stay float32:
    the same normalised weight as without autocast, in train and in eval mode (a frozen discriminator)."""
    torch.manual_seed(0)
    conv = apply_spectral_norm(nn.Sequential(nn.Conv2d(8, 16, 3)))[0]
    conv.train(training)
    sn = conv.parametrizations["weight"][0]
    u, v = sn.u.clone(), sn.v.clone()
    plain = conv.weight.clone()
    sn.u.copy_(u)
    sn.v.copy_(v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = conv.weight
    assert under.dtype == torch.float32 and sn.u.dtype == sn.v.dtype == torch.float32
    torch.testing.assert_close(under, plain, rtol=0, atol=0)
