"""Where the evaluation metrics find their foreign weight files (LPIPS, CSIM; reference §3.4).

Metric weights are never downloaded: they are looked up in one directory, ``$BILAYER_WEIGHTS`` or
``~/.cache/bilayer/weights`` by default (``$XDG_CACHE_HOME/bilayer/weights`` when that is set), and a metric
whose file is missing raises :class:`MetricUnavailable`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..io import cache_home

ENV_VAR = "BILAYER_WEIGHTS"


class MetricUnavailable(Exception):
    """A metric cannot run here; ``str(exc)`` is one sentence naming the file it needs and where to put it."""


def default_weights_dir() -> Path:
    """``$BILAYER_WEIGHTS`` if set (and non-empty), else ``weights`` in the project's cache folder
    (``~/.cache/bilayer/weights``; ``$XDG_CACHE_HOME/bilayer/weights`` when that is set)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return cache_home() / "weights"


def resolve_weights_dir(path: str | Path | None) -> Path:
    """The weights directory to use: ``path`` with ``~`` expanded, or :func:`default_weights_dir` for None."""
    if path is None:
        return default_weights_dir()
    return Path(path).expanduser()


def require_file(directory: Path, filename: str, metric: str, what: str) -> Path:
    """``directory / filename`` if it is a file; otherwise :class:`MetricUnavailable` saying where to put it."""
    path = Path(directory) / filename
    if not path.is_file():
        raise MetricUnavailable(f"{metric} needs {what} as {path}; put the file there or pass --weights-dir DIR.")
    return path
