"""A one-item mailbox between the stages of a live session: the newest item wins.

A live stage that falls behind must never build a queue (the picture would lag further every second); it
should take the newest input when it is ready and skip the rest. ``Latest.put`` replaces an item nobody took yet
(and counts it as dropped); ``Latest.get`` waits for an item newer than the last one taken.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class Latest:
    """The newest of the items put, for one consumer; ``dropped`` counts the items replaced before being taken."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._fresh = False
        self._closed = False
        self.dropped = 0
        self.put_count = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if self._fresh:
                self.dropped += 1
            self._item, self._fresh = item, True
            self.put_count += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The newest item not yet taken; None when the mailbox is closed (and empty) or ``timeout`` seconds
        passed without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._fresh:
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._fresh = False
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """No more items: a waiting ``get`` returns what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
