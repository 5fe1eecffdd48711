"""Parameter and multiply-accumulate (MAC) accounting, as in paper Table 2 and reference §8.1.

MACs are counted by ``torch.utils.flop_counter`` (MACs = FLOPs / 2) on the real modules, built on the meta
device so no arithmetic runs. What is counted: every convolution and linear / matrix product, including the
adaptive 1×1 skips and the SPADE 1×1 mixing. Not counted: normalisation scale-shifts (≈5 M per frame for
medium), activations, grid_sample (≈0.8 M) and the LF + HF sum.

* per frame: keypoints MLP + inference generator (blocks and the three heads) for one target frame;
* per avatar: identity embedder + both projectors + texture generator for one source frame, plus the texture
  enhancer's M unrolled steps (each with the inference generator on the source pose and the updater network).
Parameters: spectral norm's ``weight_orig`` counted once (its u, v are buffers); each generator is reported
together with its projector, as the released code stores them.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import BilayerConfig


def _macs(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def _params(*modules) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def complexity(config: BilayerConfig) -> dict:
    """Parameter counts per network and MACs per frame and per avatar, for batch 1 and one source frame."""
    from ..models.bilayer import BilayerModel
    from ..models.discriminator import Discriminator

    config = config.replace(spectral_norm=False)  # deployment arithmetic; SN adds only a mat-vec per layer
    with torch.device("meta"):
        model = BilayerModel(config).eval()
        discriminator = Discriminator.from_config(config)
        size, pose = config.image_size, config.pose_dim
        images = torch.zeros(1, 1, 3, size, size)
        masks = torch.zeros(1, 1, 1, size, size)
        keypoints = torch.zeros(1, 1, pose)
        stickmen = torch.zeros(1, 1, 3, size, size)

        state = None

        def personalize():
            nonlocal state
            state = model.personalize(images, keypoints, masks, stickmen)

        avatar = _macs(personalize)
        frame = _macs(lambda: model.render_layers(state.inference_params, keypoints))
        enhancer = _macs(lambda: model.enhance(state)) if model.texture_enhancer is not None else 0

    networks = {
        "identity_embedder": {"params": _params(model.identity_embedder)},
        "texture_generator": {
            "params": _params(model.texture_generator, model.texture_projector),
            "projector_params": _params(model.texture_projector),
        },
        "keypoints_embedder": {"params": _params(model.keypoints_embedder)},
        "inference_generator": {
            "params": _params(model.inference_generator, model.inference_projector),
            "projector_params": _params(model.inference_projector),
        },
        "discriminator": {"params": _params(discriminator)},
    }
    if model.texture_enhancer is not None:
        networks["texture_enhancer"] = {"params": _params(model.texture_enhancer)}
    return {
        "image_size": config.image_size,
        "networks": networks,
        "macs_per_frame": frame,
        "macs_per_avatar": avatar + enhancer,
        "macs_per_avatar_breakdown": {"personalize": avatar, "enhancer": enhancer},
        "enhancer_steps": config.enhancer.steps if config.enhancer is not None else 0,
    }


def executed_macs(renderer: torch.nn.Module) -> int:
    """MACs one frame of a baked per-frame network (``runtime.bake``) actually executes, counted on a real forward
    pass. Lower than ``complexity()["macs_per_frame"]``, the network as trained: baking folds each upsampling +
    3×3 convolution into a transposed convolution and moves the 1×1 skips before their upsampling."""
    with torch.no_grad():
        return _macs(lambda: renderer(torch.zeros(1, renderer.pose_dim)))
