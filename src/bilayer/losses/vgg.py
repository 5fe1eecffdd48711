"""VGG feature extractors written by hand, with torchvision-compatible state-dict keys (``features.<i>.*``).

torchvision does not work on this machine, and the perceptual loss and LPIPS only need the convolutional
stacks. The layer indices follow torchvision's ``vgg16`` / ``vgg19`` ``features`` Sequential exactly, so their
state dicts (and the authors' ``vgg16_face_caffe.pth``, a torchvision ``vgg16`` state dict) load by name.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..weights import WeightsError, nonfinite

# Channel plans; "M" is a 2×2 pooling layer.
PLANS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class TappedFeatures(nn.Module):
    """A torchvision ``features`` stack (``self.features``, keys ``features.<i>.*``) that returns the outputs of the
    layers at ``self.taps``, and loads those tensors from a torchvision state dict (``self.arch`` names it)."""

    arch: str
    taps: tuple[int, ...]
    features: nn.Sequential

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outputs.append(x)
        return outputs

    def load_torchvision_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load the ``features.*`` tensors of a torchvision state dict (other keys are ignored). A missing
        tensor, a wrong shape or NaN / inf values raise ``WeightsError`` (a ValueError) naming ``source``."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise WeightsError(f"{source} is not a torchvision {self.arch} state dict: it lacks {missing[0]}.")
        for key, value in own.items():
            if tuple(state[key].shape) != tuple(value.shape):
                raise WeightsError(f"{source}: {key} has shape {tuple(state[key].shape)}; expected {tuple(value.shape)}.")
            bad = nonfinite(state[key])
            if bad is not None:
                raise WeightsError(f"{source}: {key} holds {bad} values; expected finite weights.")
        self.load_state_dict({k: state[k] for k in own})


class VGGFeatures(TappedFeatures):
    """The ``features`` stack of a torchvision VGG, cut after ``last_index``, returning the outputs at ``taps``.

    ``avg_pool``: replace every max-pooling by 2×2 average pooling (as the released perceptual loss, reference §3.1).
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



#: What a foreign weight file must be, for the messages of ``read_tensor_file``.
STATE_DICT = "a PyTorch state dict of tensors, read with weights_only=True"


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's first line, without its full stop (PyTorch's messages go on with
    advice over several lines)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return line.split(". ")[0].rstrip(". ") or type(exc).__name__


def read_tensor_file(path: str | Path, error: type[Exception] = WeightsError, expected: str = STATE_DICT) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, its failures turned into one sentence of type ``error``
    that names ``path`` and says what was ``expected``: an empty file, a file that is neither a ``torch.save`` zip
    archive nor a pickle, a pickle holding code or objects other than tensors (refused, never run), or a damaged
    file. PyTorch's warnings about the pickle protocol are silenced. A missing file is a ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist.")
    with open(path, "rb") as f:
        head = f.read(4)
    zip_archive = head.startswith(b"PK\x03\x04")
    pickled = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # pickle's PROTO opcode
    if not head:
        raise error(f"cannot read {path}: it is empty; expected {expected}.")
    if not (zip_archive or pickled):
        raise error(f"cannot read {path}: it is not a PyTorch checkpoint (not a file written by torch.save); "
                    f"expected {expected}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise error(f"{path} is not a plain tensor checkpoint: it holds pickled code or objects other than tensors, "
                    f"and pickled code is never run; expected {expected}.") from None
    except EOFError:
        raise error(f"cannot read {path}: it ends early (truncated); expected {expected}.") from None
    except Exception as exc:  # noqa: BLE001 - any other failure is the file's fault too
        raise error(f"cannot read {path} ({_first_sentence(exc)}); expected {expected}.") from None


def load_foreign_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A foreign PyTorch checkpoint's tensors, read without unpickling code (``read_tensor_file``); a
    ``{"state_dict": {...}}`` wrapper is opened and ``module.`` prefixes dropped. Raises ``WeightsError`` (a
    ValueError, one sentence naming the file) or ``FileNotFoundError``."""
    path = Path(path)
    state = read_tensor_file(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (it holds a {type(state).__name__}); expected "
                           f"{STATE_DICT}.")
    return {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
