"""The commands' error messages: one sentence per mistake, the same in the terminal and in the web app."""

from __future__ import annotations

import errno
import re


class UserError(Exception):
    """A mistake in the command's input; printed as one sentence."""


def user_error_types() -> tuple[type[BaseException], ...]:
    from .compat.official import ConversionError
    from .config import ConfigError
    from .data.dataset import DatasetError
    from .eval.cli import evaluation_errors
    from .vision.errors import PreprocessError
    from .train.checkpoint import CheckpointError
    from .train.distributed import DeviceError
    from .train.loop import TrainingError
    from .runtime.cli import runtime_errors
    from .weights import WeightsError
    from .live.capture import LiveError

    return (UserError, ConfigError, WeightsError, ConversionError, DatasetError, PreprocessError, TrainingError,
            CheckpointError, DeviceError, LiveError, *runtime_errors(), *evaluation_errors())


def sentence(message: str) -> str:
    """One line ending in one full stop: line breaks become spaces, a doubled final stop one (an ellipsis and a path
    ending in ``..`` are left alone)."""
    text = " ".join(str(message).split())
    while re.search(r"[^./\\]\.\s*\.$", text):
        text = re.sub(r"\.\s*\.$", ".", text)
    return text if text.endswith((".", "?", "!", "…")) else text + "."


def os_error_message(exc: OSError) -> str:
    """An ``OSError`` as the one sentence the commands print: the file, then the reason."""
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the disk; free some space and run again (nothing was left half-written)"
    elif exc.errno == errno.EFBIG:
        reason = ("the file would exceed the file-size limit (ulimit -f); raise it and run again (nothing was left "
                  "half-written)")
    return sentence(f"{where}{reason}")
