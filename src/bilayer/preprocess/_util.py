"""Small helpers shared by the backends."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


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
