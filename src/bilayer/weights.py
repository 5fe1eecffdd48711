"""Our weight format: a directory with ``config.json`` and ``model.safetensors`` (never pickles).

Loading checks every tensor's name and shape against the model built from the config and says which tensor
and which config section disagree.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import BilayerConfig, ConfigError
from .io import atomic_path

if TYPE_CHECKING:
    from .models.bilayer import BilayerModel

FORMAT = "bilayer"
FORMAT_VERSION = "1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Which config section builds the tensors under each top-level module name.
_SECTION = {
    "identity_embedder": "embedder",
    "texture_projector": "texture (and embedder)",
    "texture_generator": "texture",
    "keypoints_embedder": "keypoints",
    "inference_projector": "inference (and embedder)",
    "inference_generator": "inference",
    "texture_enhancer": "enhancer",
    "stem": "discriminator",
    "blocks": "discriminator",
    "final_norm": "discriminator",
    "score": "discriminator",
}


class WeightsError(ValueError):
    """Weights do not fit the model; the message names the file, the tensor and the config section."""


def state_for_saving(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write atomically: a temporary file in the same folder, then rename. A failed write (a full disk) is an
    ``OSError`` naming ``path``, with nothing left behind."""
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:  # safetensors reports I/O errors as its own type: "… (os error 28)"
            code = re.search(r"os error (\d+)", str(exc))
            number = int(code.group(1)) if code else errno.EIO
            raise OSError(number, os.strerror(number), str(path)) from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return _read(path, lambda: load_file(str(path)))


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    def metadata() -> dict[str, str]:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})

    return _read(path, metadata)


def _read(path: Path, read):
    """``read()`` of the safetensors file ``path``; a missing or unreadable file is one WeightsError naming it."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist.")
    try:
        return read()
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {path} is not a readable safetensors file ({exc}).") from None


def check_state(
    module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, config: BilayerConfig | None = None
) -> None:
    """Raise one sentence for the first missing, unexpected or mis-shaped tensor."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))

    def section(name: str) -> str:
        sec = _SECTION.get(name.split(".", 1)[0])
        if sec is None:  # not a network of ours (e.g. a test module)
            return "the config it was built from"
        value = f" ({getattr(config, sec.split(' ')[0])})" if config is not None else ""
        return f"config section '{sec}'{value}"

    for name, tensor in state.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            raise WeightsError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)} but this config builds "
                f"{tuple(expected[name].shape)}; check {section(name)}."
            )
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[:3]} ({section(missing[0])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
        hint = ""
        if any(".parametrizations." in k for k in missing + unexpected):
            hint = " (one side has spectral norm and the other not: check config field 'spectral_norm')"
        raise WeightsError(f"{source}: " + "; ".join(parts) + hint + ".")


def nonfinite(tensor: torch.Tensor) -> str | None:
    """``"NaN"``, ``"inf"`` or ``"NaN and inf"`` for a floating tensor holding such values, else None."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
        return None
    nan, inf = bool(torch.isnan(tensor).any()), bool(torch.isinf(tensor).any())
    return "NaN and inf" if nan and inf else ("NaN" if nan else "inf")


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """A ``WeightsError`` naming the first tensor of ``state`` that holds NaN or inf values."""
    for name, tensor in state.items():
        bad = nonfinite(tensor)
        if bad is not None:
            count = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"{source}: tensor '{name}' holds {bad} values ({count} of {tensor.numel()}); the "
                               "weights are damaged (a diverged training run?), use an earlier checkpoint.")


def save_pretrained(model: "BilayerModel", directory: str | Path, extra: dict[str, torch.nn.Module] | None = None,
                    extra_metadata: dict[str, dict[str, str]] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ ``<name>.safetensors`` for ``extra`` modules, with
    ``extra_metadata[name]`` added to that file's metadata).

    The folder is assembled under a temporary name and swapped in whole (``outputs.atomic_folder``), so a crash
    never leaves a mix; it must be new, empty or a model folder bilayer wrote (anything else is refused with an
    ``OutputError``), and files a user added to it are kept.
    """
    from .outputs import atomic_folder

    with atomic_folder(directory, "model", "model folder") as staging:
        config_json = model.config.to_json()
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config_json}
        write_safetensors(state_for_saving(model), staging / WEIGHTS_FILE, meta)
        for name, module in (extra or {}).items():
            meta = {"format": FORMAT, "network": name, **(extra_metadata or {}).get(name, {})}
            write_safetensors(state_for_saving(module), staging / f"{name}.safetensors", meta)
        (staging / CONFIG_FILE).write_text(config_json + "\n")
    return Path(directory)


def load_config(directory: str | Path) -> BilayerConfig:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if directory.exists() and not directory.is_dir():
        raise WeightsError(f"model folder {directory} is a file; expected a folder with {CONFIG_FILE} and "
                           f"{WEIGHTS_FILE}.")
    if not directory.is_dir():
        raise WeightsError(f"model folder {directory} does not exist.")
    if not path.is_file():
        raise WeightsError(f"{directory} has no {CONFIG_FILE}; expected a model folder written by save_pretrained.")
    try:
        return BilayerConfig.load(path)
    except (ConfigError, TypeError) as exc:
        message = str(exc)
        raise WeightsError(message if str(path) in message else f"{path}: {message}") from None


def load_pretrained(cls, directory: str | Path, map_location="cpu") -> "BilayerModel":
    directory = Path(directory)
    config = load_config(directory)
    model = cls(config)
    weights = directory / WEIGHTS_FILE
    state = read_safetensors(weights)
    check_state(model, state, str(weights), config)
    check_finite(state, str(weights))
    model.load_state_dict(state)
    return model.to(map_location)
