"""Small helpers shared by the backends."""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Iterator
from typing import Any

from .errors import UnknownBackendError


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silence C++ log lines written straight to file descriptor 2 (MediaPipe / TFLite start-up chatter such as
    "Created TensorFlow Lite XNNPACK delegate"). Set BILAYER_VERBOSE=1 to keep them."""
    if os.environ.get("BILAYER_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class BackendRegistry(dict):
    """Backend classes by their ``name``: ``register`` (a class decorator), ``check`` and ``create``."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # "keypoint", "segmentation": the word used in error messages

    def register(self, cls: type) -> type:
        """Class decorator: make a backend available by its ``name``."""
        self[cls.name] = cls
        return cls

    def check(self, name: str) -> None:
        """``UnknownBackendError`` (one sentence listing the valid names) when ``name`` is not registered."""
        if name not in self:
            raise UnknownBackendError(f"unknown {self.kind} backend {name!r}; valid names: {', '.join(sorted(self))}.")

    def create(self, name: str, **options: Any):
        """An instance of backend ``name``. Options its constructor does not take, and options that are None, are
        left out, so one options dict can serve every backend."""
        self.check(name)
        cls = self[name]
        accepted = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
