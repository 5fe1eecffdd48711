"""``--shard K/N``: one of N machines takes every N-th item of a sorted work list, starting at the K-th.

``parse_shard("1/4")`` → ``(1, 4)``; ``check_shard`` also takes the Python form ``(K, N)`` (or None: no sharding);
``shard_items(items, (K, N))`` is ``items[K::N]``. The N shards of one list are disjoint and together hold every
item, and each shard holds every N-th item of the sorted list, so the shards are as even as the list allows.
A bad value raises ``ShardError`` (a ``ValueError``) with one sentence naming the option and the expected form.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


class ShardError(ValueError):
    """A ``--shard`` value that is not K/N with 0 ≤ K < N: one sentence."""


def _error(shown: str, flag: str, maximum: int | None) -> ShardError:
    bound = f" ≤ {maximum}" if maximum is not None else ""
    return ShardError(f"{flag} is {shown}; expected K/N with 0 ≤ K < N{bound}, like 0/4.")


def parse_shard(text: str, flag: str = "--shard", maximum: int | None = None) -> tuple[int, int]:
    """``"K/N"`` (spaces around the slash allowed) → ``(K, N)``; ``ShardError`` unless K and N are whole numbers
    with 0 ≤ K < N (and N ≤ ``maximum`` when given)."""
    match = _FORM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise _error(repr(text), flag, maximum)
    k, n = int(match.group(1)), int(match.group(2))
    if not k < n or (maximum is not None and n > maximum):
        raise _error(repr(text), flag, maximum)
    return k, n


def check_shard(value: str | Sequence[int] | None, flag: str = "--shard",
                maximum: int | None = None) -> tuple[int, int] | None:
    """None (no sharding), ``"K/N"`` or ``(K, N)`` → ``(K, N)`` or None; ``ShardError`` for anything else."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_shard(value, flag, maximum)
    try:
        k, n = value
    except (TypeError, ValueError):
        raise _error(repr(value), flag, maximum) from None
    if (not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (k, n)) or not 0 <= k < n
            or (maximum is not None and n > maximum)):
        raise _error(repr(value), flag, maximum)
    return int(k), int(n)


def shard_items(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The items of shard ``(K, N)``: ``items[K::N]`` (all of them for None)."""
    if shard is None:
        return list(items)
    k, n = shard
    return list(items[k::n])


def shard_label(shard: tuple[int, int]) -> str:
    """``(1, 4)`` → ``"1/4"``."""
    return f"{shard[0]}/{shard[1]}"
