"""Baking an avatar into a plain per-frame module (paper §A.3): same outputs, no adaptive layers, no spectral norm."""

import pytest
import torch
from torch.nn.utils import parametrize

from bilayer import preset
from bilayer.config import InferenceGeneratorConfig, KeypointsEmbedderConfig
from bilayer.nn.adaptive import AdaptiveBatchNorm2d
from bilayer.runtime.bake import bake

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


def test_bake_refuses_train_mode_and_bad_index():
    model = build_model(CONFIGS["tiny"])
    state, _ = _avatar(model)
    with pytest.raises(ValueError, match="out of range"):
        bake(model, state, 2)
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        bake(model, state, 0)
