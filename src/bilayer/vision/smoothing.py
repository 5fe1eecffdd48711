"""Temporal smoothing: the One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) and offline helpers.

The One-Euro filter is a first-order low-pass filter whose cutoff frequency rises with the speed of the signal:
``cutoff = min_cutoff + beta · |speed|``. Slow motion (landmark noise) is smoothed strongly, fast motion passes with
little lag. Time is in seconds and frequencies in Hz.

Offline (``smooth_keypoints``) the filter runs forward and then backward over the sequence (``zero_phase``): the
backward pass cancels the lag of the forward one, so the smoothed keypoints stay on the face in every frame. The
runtime (a live driving video) uses ``OneEuroFilter`` causally, one frame at a time.

Positions are smoothed in units of the face size (the median landmark-box size of the sequence), so the default
parameters do not depend on the video resolution: ``beta`` is in 1 / (face sizes per second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    """``min_cutoff`` (Hz): cutoff at rest; ``beta``: cutoff increase per unit of speed; ``d_cutoff`` (Hz): cutoff of
    the speed estimate."""

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0


#: Keypoints (in face sizes): mild. Landmark noise of a still face drops by about 30 %, while a 4 Hz lip motion of
#: ±5 % of the face keeps about 90 % of its amplitude and fast head motion gains no lag (docs/preprocessing.md).
KEYPOINT_SMOOTHING = OneEuroParams(min_cutoff=1.0, beta=40.0, d_cutoff=5.0)
#: Crop boxes (centre in face sizes, size as log-size): strong; the box only has to follow the head.
BOX_SMOOTHING = OneEuroParams(min_cutoff=0.4, beta=2.0, d_cutoff=5.0)

SMOOTHING_METHODS = ("none", "one-euro")


def _alpha(cutoff, dt: float):
    """The smoothing factor of a first-order low-pass filter with ``cutoff`` (Hz, a number or an array)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """A One-Euro filter over arrays of any (fixed) shape; every element is filtered independently.

    >>> f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    >>> y = f(np.array([0.0, 1.0]), t=0.0)   # the first sample passes unchanged
    >>> y = f(np.array([0.1, 1.0]), t=0.04)

    ``reset()`` forgets the state (a new sequence, or a gap longer than you want to bridge).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("One-Euro parameters need min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    @classmethod
    def from_params(cls, params: OneEuroParams) -> OneEuroFilter:
        return cls(params.min_cutoff, params.beta, params.d_cutoff)

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter the sample ``x`` taken at time ``t`` (seconds, increasing); returns the filtered sample."""
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if dt <= 0:  # repeated or out-of-order timestamp: keep the state, return the current estimate
            return self._x.copy()
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        a = _alpha(self.min_cutoff + self.beta * np.abs(self._dx), dt)
        self._x = a * x + (1 - a) * self._x
        self._t = float(t)
        return self._x.copy()


def one_euro(values: np.ndarray, times: np.ndarray, params: OneEuroParams, *, zero_phase: bool = True,
             max_gap: float = 0.5) -> np.ndarray:
    """Filter a (T, ...) array sampled at ``times`` (seconds). ``zero_phase`` runs the filter forward, then backward
    over the result, which cancels the forward lag. A gap longer than ``max_gap`` seconds restarts the filter."""
    values = np.asarray(values, np.float64)
    times = np.asarray(times, np.float64)
    if len(values) != len(times):
        raise ValueError(f"{len(values)} values but {len(times)} times")
    if len(values) < 2:
        return values.copy()
    out = _one_pass(values, times, params, max_gap)
    if zero_phase:
        out = _one_pass(out[::-1], times[-1] - times[::-1], params, max_gap)[::-1]
    return out


def _one_pass(values: np.ndarray, times: np.ndarray, params: OneEuroParams, max_gap: float) -> np.ndarray:
    f = OneEuroFilter.from_params(params)
    out = np.empty_like(values)
    prev_t = None
    for i, (v, t) in enumerate(zip(values, times)):
        if prev_t is not None and t - prev_t > max_gap:
            f.reset()
        out[i] = f(v, t)
        prev_t = t
    return out


def smooth_keypoints(keypoints: np.ndarray, times: np.ndarray, method: str = "one-euro",
                     params: OneEuroParams = KEYPOINT_SMOOTHING, *, scale: float | None = None,
                     zero_phase: bool = True) -> np.ndarray:
    """Smooth a (T, K, 2|3) keypoint track sampled at ``times`` (seconds); returns float32 of the same shape.

    ``scale`` is the face size in the keypoints' units (default: the median of the per-frame landmark-box sizes);
    the filter runs on ``keypoints / scale`` so that ``params`` are resolution independent. ``method="none"``
    returns the keypoints unchanged.
    """
    keypoints = np.asarray(keypoints, np.float32)
    if method == "none" or len(keypoints) < 2:
        return keypoints.copy()
    if method != "one-euro":
        raise ValueError(f"unknown smoothing method {method!r}; valid: {', '.join(SMOOTHING_METHODS)}")
    if scale is None:
        extent = keypoints[..., :2].max(axis=1) - keypoints[..., :2].min(axis=1)
        scale = float(np.median(extent.max(axis=-1)))
    scale = max(float(scale), 1e-6)
    out = one_euro(keypoints / scale, times, params, zero_phase=zero_phase) * scale
    return out.astype(np.float32)
