"""Errors of reading videos and images, of the face tools (landmarks, segmentation) and of preprocessing."""

from __future__ import annotations


class PreprocessError(ValueError):
    """A mistake in the user's request (missing input, unknown backend, missing weights): one sentence."""


class UnknownBackendError(PreprocessError):
    """A backend name that is not registered; the message lists the valid names."""


class MissingWeightsError(PreprocessError):
    """A backend's weight files are not where they were expected; the message names the file and the folder."""


class VideoReadError(Exception):
    """A video or image that cannot be decoded (missing, truncated, corrupt). Not a user error: the run reports
    the sequence as unreadable and goes on with the next one."""


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's message (an OSError's strerror when it has one), at most 200 characters,
    without a final full stop: the "(reason)" part of a one-sentence error."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200].rstrip(".")
