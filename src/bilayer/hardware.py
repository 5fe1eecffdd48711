"""What this machine's CPU is and can do, for the backends' choices and for every report that gives speeds.

The project's hosts have been of two kinds: AVX-512 Xeons without bfloat16 units, where oneDNN emulates bfloat16
at a third of float32's speed, and one with AMX and AVX512-BF16, where a bfloat16 convolution runs 4–5× faster
than a float32 one. Figures measured on one kind say little about the other, so benchmarks record ``cpu_info()``.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

#: the x86 features that decide which reduced-precision backend is fast (``cpu_info``)
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    """(model name, feature flags) of the first processor listed in a Linux ``cpuinfo`` file; (None, empty) where
    the file is missing or says neither."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None, set()
    name, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None and value.strip():
            name = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    return name, flags or set()


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The processor's model name (from ``cpuinfo`` on Linux), else what ``platform`` knows."""
    return read_cpuinfo(cpuinfo)[0] or platform.processor() or platform.machine()


def native_bfloat16() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (AVX512-BF16 or AMX), where oneDNN's bfloat16
    convolutions outrun float32 ones (a 256-channel 3×3 convolution 4–5× with AMX here) instead of being emulated
    at a third of float32's speed. Reads PyTorch's own (private) CPU checks; False where they are missing."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return platform.machine().lower() in ("x86_64", "amd64") and any(check() for check in checks if check)


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """This machine's CPU for benchmark reports: its model name, which of ``CPU_FEATURES`` it has (from
    ``cpuinfo`` where there is one), and ``native_bfloat16``."""
    flags = read_cpuinfo(cpuinfo)[1]
    return {"cpu": cpu_name(cpuinfo), "features": [f for f in CPU_FEATURES if f in flags],
            "native_bfloat16": native_bfloat16()}
