"""Atomic file writing: a temporary file in the target folder, then ``os.replace`` (never a half-written output);
the temporaries' names, and the sweeping of what killed writers left; and the project's cache folder."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shutil
import socket
import uuid
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


# temporaries of writers, and sweeping what killed writers left
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}\.(?:partial|old|tmp)")


def partial_name(name: str, suffix: str = "", tag: str = "partial") -> str:
    """A hidden temporary name for ``name`` in the same folder: ``.NAME.HOST-PID-TOKEN.partial[SUFFIX]``; the
    host and process id let ``sweep_stale`` tell a dead writer's leftovers from a running one's."""
    return f".{name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{tag}{suffix}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporaries that writers on this host which no longer run left in ``folder`` (for ``name`` only,
    when given): half-written files and folders of killed runs. A folder swap interrupted between its two renames
    (``NAME`` missing, ``.NAME….old`` present) is undone instead. Returns what was removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        if m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        target = folder / m["name"]
        if entry.name.endswith(".old") and not target.exists():
            with contextlib.suppress(OSError):
                os.replace(entry, target)
                continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def make_folder(path: str | os.PathLike) -> Path:
    """``mkdir -p`` with the user's umask for every folder it creates (never 0700)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o777)
    return path



@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` for a writer to fill; on success it gets the usual permissions and
    is renamed to ``path``, on any exception it is removed (``path`` stays as it was). Temporaries that a killed
    writer left for the same name are removed first (``sweep_stale``)."""
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
