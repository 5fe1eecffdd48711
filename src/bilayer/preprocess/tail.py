"""``--test-tail F``: a held-out split in time. The last F of each video's duration becomes a ``test`` sequence and
the start a ``train`` sequence of the same name, with a gap of ``--test-gap`` seconds (default 1 s) between them.

For a video whose frames span [start, end) (``time_span``: the first frame's time up to the last frame's time plus
one frame), the split point is ``start + (1 − F)·(end − start)``:

* ``test``: the frames at or after the split point;
* the gap: the frames less than ``gap`` seconds before it, written nowhere (counted as dropped);
* ``train``: the frames before that.

So every test frame is more than ``gap`` seconds after every training frame. ``--fps`` subsamples the whole video
first (the same frames a run without ``--test-tail`` reads), then the frames are split; ``--max-frames`` keeps the
first frames of each part.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..vision.errors import PreprocessError
from ..vision.video import Frame, time_span

#: Seconds between the last training frame and the first test frame unless ``--test-gap`` says otherwise: about
#: 25 frames of a talking head, longer than a word, so no test frame is a near copy of a training frame.
DEFAULT_TEST_GAP = 1.0

#: Why frames between the two parts are not written (a key of the summary's dropped frames).
IN_GAP = "gap before the test part"

_EPS = 1e-6  # seconds: frame times computed two ways (timestamps, index / rate) agree to far better than this


def check_test_tail(test_tail: float | None, test_gap: float | None) -> None:
    """One sentence (``PreprocessError``) for a fraction outside (0, 1) or a negative or non-finite gap."""
    if test_tail is not None:
        if isinstance(test_tail, bool) or not isinstance(test_tail, numbers.Real) or not 0 < test_tail < 1:
            raise PreprocessError(f"--test-tail is {test_tail!r}; expected the fraction of each video kept for "
                                  f"testing, between 0 and 1, like 0.2.")
    if test_gap is not None:
        if isinstance(test_gap, bool) or not isinstance(test_gap, numbers.Real) or not math.isfinite(test_gap) \
                or test_gap < 0:
            raise PreprocessError(f"--test-gap is {test_gap!r}; expected seconds ≥ 0 between the training and the "
                                  f"test frames, like 1.")
        if test_tail is None:
            raise PreprocessError("--test-gap sets the gap of --test-tail; give --test-tail too, or leave it out.")


@dataclass(frozen=True)
class TimeWindow:
    """The part of one video that a sequence of split ``split`` holds (times in seconds, as ``Frame.time``)."""

    split: str
    start: float  # the video's first frame
    end: float  # the end of the video's last frame
    split_at: float  # test frames are at or after this time
    gap: float  # training frames are before split_at − gap

    @classmethod
    def of(cls, source: str | Path, split: str, fraction: float, gap: float) -> TimeWindow:
        """The window of ``split`` in ``source``; ``VideoReadError`` for an unreadable video."""
        start, end = time_span(source)
        return cls(split, start, end, start + (1.0 - fraction) * (end - start), gap)

    def place(self, time: float) -> str:
        """``"train"``, ``"gap"`` or ``"test"``: where a frame at ``time`` goes."""
        if time >= self.split_at - _EPS:
            return "test"
        if time < self.split_at - self.gap - _EPS:
            return "train"
        return "gap"

    def record(self) -> dict:
        """What a sequence's record keeps: the video's span, the split point and this part, in seconds."""
        lo, hi = (self.start, self.split_at - self.gap) if self.split == "train" else (self.split_at, self.end)
        return {"video_start": round(self.start, 6), "video_end": round(self.end, 6),
                "split_at": round(self.split_at, 6), "gap": self.gap, "part": [round(lo, 6), round(max(lo, hi), 6)]}

    def frames(self, frames: Iterable[Frame], max_frames: int | None, counts: dict) -> Iterator[Frame]:
        """The frames of this part, at most ``max_frames`` (the first ones); stops reading at the part's end. Sets
        ``counts["gap"]`` to the frames in the gap seen (training part, read to the split point)."""
        kept = gap = 0
        counts["gap"] = 0
        iterator = iter(frames)
        try:
            for frame in iterator:
                where = self.place(frame.time)
                if where == "gap" and self.split == "train":
                    gap += 1
                    counts["gap"] = gap
                    continue
                if where != self.split:
                    if self.split == "train":  # the test part starts: nothing more of this part
                        break
                    continue  # the test part: skip the start of the video
                yield frame
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    break
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
