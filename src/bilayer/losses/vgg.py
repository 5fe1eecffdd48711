"""VGG feature extractors written by hand, with torchvision-compatible state-dict keys (``features.<i>.*``).

torchvision does not work on this machine, and the perceptual loss and LPIPS only need the convolutional
stacks. The layer indices follow torchvision's ``vgg16`` / ``vgg19`` ``features`` Sequential exactly, so their
state dicts (and the authors' ``vgg16_face_caffe.pth``, a torchvision ``vgg16`` state dict) load by name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# Channel plans; "M" is a 2×2 pooling layer.
PLANS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGGFeatures(nn.Module):
    """The ``features`` stack of a torchvision VGG, cut after ``last_index``, returning the outputs at ``taps``.

    ``avg_pool``: replace every max-pooling by 2×2 average pooling (the released perceptual loss does, SPEC §3.1).
    """

    def __init__(self, arch: str, taps: tuple[int, ...], avg_pool: bool = False) -> None:
        super().__init__()
        if arch not in PLANS:
            raise ValueError(f"unknown VGG architecture {arch!r}; expected one of {sorted(PLANS)}.")
        self.arch, self.taps = arch, tuple(taps)
        layers: list[nn.Module] = []
        channels = 3
        for item in PLANS[arch]:
            if item == "M":
                layers.append(nn.AvgPool2d(2) if avg_pool else nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                channels = item
        self.features = nn.Sequential(*layers[: max(self.taps) + 1])
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outputs.append(x)
        return outputs

    def load_torchvision_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load the ``features.*`` tensors of a torchvision VGG state dict (other keys are ignored)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"{source} is not a torchvision {self.arch} state dict: it lacks {missing[0]}.")
        for key, value in own.items():
            if tuple(state[key].shape) != tuple(value.shape):
                raise ValueError(f"{source}: {key} has shape {tuple(state[key].shape)}; expected {tuple(value.shape)}.")
        self.load_state_dict({k: state[k] for k in own})


def load_foreign_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A foreign PyTorch checkpoint, read without unpickling code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is the file's fault
        raise ValueError(f"cannot read {path} as a weights-only PyTorch checkpoint ({type(exc).__name__}).") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
