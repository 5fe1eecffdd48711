"""Live avatars: a camera, stream or file drives an avatar in real time (``bilayer live``).

``capture`` (sources), ``track`` (face tracking frame by frame), ``session`` (the three parallel stages and
their report), ``outputs`` (file, virtual camera, web hub) and ``mailbox`` (the newest-wins hand-over).
"""

from .capture import AVSource, CapturedFrame, LiveError, LiveSource, PushSource, open_live_source
from .mailbox import Latest
from .session import LiveReport, LiveSession, RenderedFrame
from .track import LiveTracker

__all__ = ["AVSource", "CapturedFrame", "Latest", "LiveError", "LiveReport", "LiveSession", "LiveSource",
           "LiveTracker", "PushSource", "RenderedFrame", "open_live_source"]
