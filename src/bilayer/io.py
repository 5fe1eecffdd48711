"""Atomic file writing: a temporary file in the target folder, then ``os.replace`` (never a half-written output);
and the project's cache folder."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=1)
def current_umask() -> int:
    """The process umask (read once: reading it means setting it, which is not thread-safe)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_home() -> Path:
    """The project's cache folder: ``bilayer`` in ``$XDG_CACHE_HOME`` when set, else in ``~/.cache``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bilayer"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` for a writer to fill; on success it gets the usual permissions and
    is renamed to ``path``, on any exception it is removed (``path`` stays as it was). Temporaries that a killed
    writer left for the same name are removed first (``outputs.sweep_stale``)."""
    from .outputs import make_folder, partial_name, sweep_stale

    path = Path(path)
    make_folder(path.parent)
    sweep_stale(path.parent, path.name)
    tmp = path.with_name(partial_name(path.name, tag="tmp"))
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename == str(tmp) or exc.filename is None:  # name the file the user asked for, not the temporary
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    return write_bytes_atomic(path, (json.dumps(obj, indent=indent) + "\n").encode())


def encode_npy(array: np.ndarray) -> bytes:
    """The bytes of one array's ``.npy`` file (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def write_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> Path:
    return write_bytes_atomic(path, encode_npy(array))


def encode_image(rgb: np.ndarray, suffix: str = ".png", quality: int = 95) -> bytes:
    """An RGB uint8 (H, W, 3) or grey (H, W) image encoded as PNG or JPEG (``suffix`` .png, .jpg or .jpeg)."""
    import cv2

    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise OSError(f"could not encode an image of shape {rgb.shape} as {suffix}")
    return encoded.tobytes()


def write_image_atomic(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> Path:
    """An RGB uint8 (H, W, 3) or grey (H, W) image as PNG or JPEG, chosen by the file suffix."""
    path = Path(path)
    return write_bytes_atomic(path, encode_image(rgb, path.suffix or ".png", quality))
