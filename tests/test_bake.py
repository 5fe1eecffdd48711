"""Baking an avatar into a plain per-frame module (paper §A.3): same outputs, no adaptive layers, no spectral norm."""

import pytest
import torch
from torch.nn.utils import parametrize

from bilayer import preset
from bilayer.config import InferenceGeneratorConfig, KeypointsEmbedderConfig
from bilayer.nn.adaptive import AdaptiveBatchNorm2d
from bilayer.runtime.bake import SubpixelUpsampleConv2d, bake

from .conftest import build_model

CONFIGS = {
    "tiny": preset("tiny"),
    "harmonics-not-efficient": preset("tiny").replace(
        keypoints=KeypointsEmbedderConfig(hidden_channels=32, num_harmonics=4),
        inference=InferenceGeneratorConfig(num_channels=4, max_channels=16, efficient_upsampling=False),
    ),
}


def _avatar(model, batch=2):
    g = torch.Generator().manual_seed(1)
    size = model.config.image_size
    images = torch.rand(batch, 1, 3, size, size, generator=g) * 2 - 1
    keypoints = torch.rand(batch, 1, 136, generator=g) * 2 - 1
    masks = torch.rand(batch, 1, 1, size, size, generator=g)
    targets = torch.rand(batch, 5, 136, generator=g) * 2 - 1
    with torch.no_grad():
        return model.personalize(images, keypoints, masks), targets


@pytest.mark.parametrize("name", list(CONFIGS))
def test_baked_equals_unbaked(name):
    model = build_model(CONFIGS[name])
    state, targets = _avatar(model)
    with torch.no_grad():
        render = model.render(state, targets)
        for i in range(state.batch):
            image, mask = bake(model, state, i)(targets[i])
            assert (image - render.image[i]).abs().max() <= 1e-5
            assert (mask - render.mask[i]).abs().max() <= 1e-5


def test_baked_module_is_plain_and_model_untouched():
    model = build_model(CONFIGS["tiny"])
    state, targets = _avatar(model)
    with torch.no_grad():
        before = model.render(state, targets).image
        baked = bake(model, state, 0)
        after = model.render(state, targets).image
    assert torch.equal(before, after)
    assert not any(parametrize.is_parametrized(m) for m in baked.modules())
    assert not any(isinstance(m, AdaptiveBatchNorm2d) for m in baked.modules())
    assert all(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in baked.modules() if len(list(m.parameters(recurse=False))))
    assert baked.heads.out_channels == 6  # the three heads merged


def test_fast_forms_of_the_tail_equal_the_plain_ones():
    """The forms the fast backends use give the same frames as the plain ones, to float rounding (the 1e-5 the
    baked module keeps to the model): under inductor the warp as one opaque operator and tanh as 2·sigmoid(2x) - 1;
    on CPU the heads and the whole tail as one native operator (runtime.native), when this machine can build it."""
    from bilayer.runtime import native

    model = build_model(CONFIGS["tiny"])
    state, targets = _avatar(model)
    baked = bake(model, state)
    keypoints = targets[0]  # 5 poses
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):  # the operators a forward dispatches (not those inside an operator)
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.name())
            return func(*args, **(kwargs or {}))

    from bilayer.runtime.forms import FastRenderer

    forms = {"plain": baked, "inductor": FastRenderer(baked, tail="inductor")}
    if native.available():
        forms["native"] = FastRenderer(baked, tail="native")
    frames, ops = {}, {}
    for form, module in forms.items():
        with torch.no_grad(), Ops() as ops[form]:
            frames[form] = module(keypoints)
    tail = {"bilayer::warp", "bilayer::heads_tail", "aten::tanh", "aten::grid_sampler_2d", "aten::sigmoid"}
    if native.available():  # the int8 backend's form: sub-pixel upsampling, whose last phases the loop reads as a view
        from bilayer.runtime.bake import subpixel_upsampling

        subpixel = subpixel_upsampling(baked)
        forms["native, sub-pixel"] = FastRenderer(subpixel, tail="native")
        with torch.no_grad(), Ops() as ops["native, sub-pixel"]:
            frames["native, sub-pixel"] = forms["native, sub-pixel"](keypoints)
        assert tail & ops["native, sub-pixel"].names == {"bilayer::heads_tail"}
        with torch.no_grad():  # the loop reads the last sub-pixel convolution's output as it is
            main, _ = subpixel.blocks[-1].parts(subpixel.trunk(keypoints), phases=True)
        assert main.dim() == 6 and main._base is not None  # a view of the convolution's output, not interleaved
    # the wrappers choose the forms: one opaque warp and no tanh, or one native tail, against grid_sample and tanh;
    # the reference keeps its own
    assert tail & ops["plain"].names == {"aten::tanh", "aten::grid_sampler_2d", "aten::sigmoid"}
    assert tail & ops["inductor"].names == {"bilayer::warp", "aten::sigmoid"}
    if "native" in forms:
        assert tail & ops["native"].names == {"bilayer::heads_tail"}
    assert not any(isinstance(m, SubpixelUpsampleConv2d) for m in baked.modules())  # the transform copies
    with pytest.raises(ValueError, match=r"^unknown tail form 'fast'; valid forms: pytorch, inductor, native\.$"):
        FastRenderer(baked, tail="fast")
    for form in forms:
        for a, b in zip(frames["plain"], frames[form]):
            assert (a - b).abs().max() <= 1e-5  # a 1e-7 change of Δuv moves the sampled texture by its gradient


def test_bake_refuses_train_mode_and_bad_index():
    model = build_model(CONFIGS["tiny"])
    state, _ = _avatar(model)
    with pytest.raises(ValueError, match="out of range"):
        bake(model, state, 2)
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        bake(model, state, 0)


@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (3, 4, 1, 1), (2, 16, 6, 6)])
def test_upsample_conv_equals_upsampling_then_convolution(shape):
    """The folded form (one stride-2 transposed convolution), the sub-pixel form (a 2×2 convolution and an
    interleave, channels-last too) and the two-step form give the same image, on odd, non-square and 1×1 inputs
    (every border case of the 2×2 neighbourhoods)."""
    import torch.nn.functional as F

    from bilayer.runtime.bake import SubpixelUpsampleConv2d, TwoStepUpsampleConv2d, UpsampleConv2d

    g = torch.Generator().manual_seed(sum(shape))
    batch, channels, h, w = shape
    x = torch.randn(shape, generator=g)
    weight, bias = torch.randn(5, channels, 3, 3, generator=g), torch.randn(5, generator=g)
    expected = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, bias, padding=1)
    layer = UpsampleConv2d(weight, bias)
    with torch.no_grad():
        folded = layer(x)
        two_step = TwoStepUpsampleConv2d(layer)(x)
    assert folded.shape == expected.shape == (batch, 5, 2 * h, 2 * w)
    assert (folded - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert torch.equal(two_step, expected)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        subpixel = SubpixelUpsampleConv2d(layer.to(memory_format=memory_format))
        with torch.no_grad():
            out = subpixel(x.contiguous(memory_format=memory_format))
        assert out.shape == expected.shape
        assert (out - expected).abs().max() <= 1e-5 * expected.abs().max()
    with pytest.raises(ValueError, match="3×3"):
        UpsampleConv2d(torch.zeros(5, channels, 1, 1), bias)


def test_baked_network_executes_the_expected_macs():
    """executed_macs counts what the baked graph runs: transposed convolutions at 16 MACs per low-resolution
    pixel and channel pair (instead of 9 per upsampled pixel) and the 1×1 skips at the low resolution."""
    from bilayer.eval.complexity import complexity, executed_macs
    from bilayer.runtime.bake import two_step_upsampling

    model = build_model(CONFIGS["tiny"])
    state, _ = _avatar(model, batch=1)
    baked = bake(model, state)
    c, size = baked.embed_shape[0], baked.embed_shape[1]
    expected = sum(layer.in_features * layer.out_features for layer in baked.mlp)
    trained = expected
    for block in baked.blocks:  # every block of the tiny preset upsamples, with conv1 before the upsampling
        cin, cout = block.conv1.in_channels, block.conv1.out_channels
        assert block.up and block.efficient and c == cin
        conv1, skip = 9 * cin * cout * size**2, cin * cout * size**2
        expected += conv1 + 16 * cout * cout * size**2 + skip
        trained += conv1 + 9 * cout * cout * (2 * size) ** 2 + 4 * skip
        c, size = cout, 2 * size
    heads = 9 * baked.heads.in_channels * 6 * size**2
    assert executed_macs(baked) == expected + heads
    assert complexity(model.config)["macs_per_frame"] == trained + heads  # the network as trained
    unfolded = two_step_upsampling(baked)
    assert executed_macs(unfolded) == trained + heads - _skip_savings(baked)


def _skip_savings(baked):
    """MACs saved by running each 1×1 skip before (not after) its ×2 upsampling: 3/4 of the upsampled cost."""
    size, saved = baked.embed_shape[1], 0
    for block in baked.blocks:
        saved += 3 * block.skip.in_channels * block.skip.out_channels * size**2
        size *= 2
    return saved
