"""LPIPS v0.1 "net-lin" with a VGG16 backbone, written by hand (SPEC §3.4, paper §4).

The linear layers load the ``lpips`` package's released ``weights/v0.1/vgg.pth`` by name
(``lin0.model.1.weight`` … ``lin4.model.1.weight``); the backbone loads torchvision's ImageNet VGG16 file
(``vgg16-397923af.pth``). The ``lpips`` package itself is never imported: it imports torchvision, which does not
work here, so its weight file is located through ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ..losses.vgg import VGGFeatures, load_foreign_state
from .weights import MetricUnavailable, require_file

# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16 ``features`` Sequential.
TAPS = (3, 8, 15, 22, 29)
CHANNELS = (64, 128, 256, 512, 512)
VGG16_FILE = "vgg16-397923af.pth"
LIN_FILE = "lpips_vgg_v0.1.pth"
EPS = 1e-10


class ScalingLayer(nn.Module):
    """Maps [-1, 1] RGB to the backbone's input statistics: ``(x - shift) / scale`` per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """A 1×1 convolution C → 1 without bias, behind a dropout (inactive in eval); keys ``model.1.weight``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalise(x: torch.Tensor) -> torch.Tensor:
    """Each feature vector divided by its Euclidean norm over channels (+1e-10)."""
    return x / (x.square().sum(1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """LPIPS distance between two image batches (N, 3, H, W) in [-1, 1]; returns one value per image, (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGGFeatures("vgg16", taps=TAPS)
        for k, channels in enumerate(CHANNELS):
            self.add_module(f"lin{k}", NetLinLayer(channels))
        self.freeze()

    def lins(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{k}") for k in range(len(CHANNELS))]

    def freeze(self) -> LPIPS:
        """Eval mode, no parameter gradients (gradients still flow to the inputs)."""
        self.requires_grad_(False)
        return self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (N, 3, H, W) batches of one shape; got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}.")
        dtype = self.scaling_layer.shift.dtype
        fx = self.net(self.scaling_layer(x.to(dtype)))
        fy = self.net(self.scaling_layer(y.to(dtype)))
        total = x.new_zeros(x.shape[0], dtype=dtype)
        for lin, a, b in zip(self.lins(), fx, fy):
            diff = (_unit_normalise(a) - _unit_normalise(b)).square()
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total

    def load_lin(self, state: dict[str, torch.Tensor], source: str = "the LPIPS linear weights") -> None:
        """Load ``lin{k}.model.1.weight`` (k = 0…4) from the released v0.1 file; other keys are ignored."""
        for k, lin in enumerate(self.lins()):
            key = f"lin{k}.model.1.weight"
            expected = tuple(lin.model[1].weight.shape)
            if key not in state:
                raise ValueError(f"{source} is not an LPIPS v0.1 VGG weight file: it lacks {key}.")
            if tuple(state[key].shape) != expected:
                raise ValueError(f"{source}: {key} has shape {tuple(state[key].shape)}; expected {expected}.")
            with torch.no_grad():
                lin.model[1].weight.copy_(state[key])
        self.freeze()

    def load_backbone(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load the ``features.*`` tensors of a torchvision VGG16 state dict (e.g. ``vgg16-397923af.pth``)."""
        self.net.load_torchvision_state(state, source)
        self.freeze()


def _package_lin_file() -> Path | None:
    """``weights/v0.1/vgg.pth`` inside the installed ``lpips`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "vgg.pth"
    return path if path.is_file() else None


def lpips_lin_file(weights_dir: Path) -> Path:
    """The LPIPS linear weights: ``weights_dir/lpips_vgg_v0.1.pth`` if present, else the ``lpips`` package's."""
    own = Path(weights_dir) / LIN_FILE
    if own.is_file():
        return own
    packaged = _package_lin_file()
    if packaged is not None:
        return packaged
    raise MetricUnavailable(
        f"LPIPS needs its v0.1 VGG linear weights as {own} or from the lpips package; put the file there "
        "(or pass --weights-dir DIR) or run `pip install --no-deps lpips==0.1.4`."
    )


def load_lpips(weights_dir: Path) -> LPIPS:
    """LPIPS with torchvision's VGG16 backbone and the released v0.1 linear layers, frozen and in eval mode."""
    backbone = require_file(weights_dir, VGG16_FILE, "LPIPS", "torchvision's ImageNet VGG16 weights")
    lin = lpips_lin_file(weights_dir)
    model = LPIPS()
    try:
        model.load_backbone(load_foreign_state(backbone), str(backbone))
        model.load_lin(load_foreign_state(lin), str(lin))
    except (FileNotFoundError, ValueError) as exc:
        raise MetricUnavailable(f"LPIPS cannot use its weights: {exc}") from None
    return model.freeze()
