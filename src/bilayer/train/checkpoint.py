"""Training checkpoints: everything needed to resume, written atomically, never pickled (DESIGN principle 6).

Layout of ``runs/NAME/checkpoints/step-0000100/``:
    model.safetensors, discriminator.safetensors     network weights (with spectral-norm vectors, BN stats)
    optim-<name>.safetensors + optim-<name>.json     Adam moments / hyper-parameters per optimiser
    rng.safetensors + state.json                     RNG states, step counters
A checkpoint folder is assembled under a temporary name and renamed into place, so a kill at any moment leaves
either the previous complete checkpoint or the new one, never a broken one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..weights import check_state, read_safetensors, state_for_saving, write_safetensors

_STEP_DIR = re.compile(r"^step-(\d+)$")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, state_meta = {}, {}
    for idx, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                state_meta.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": state_meta}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, entries in meta["state"].items():
        state.setdefault(int(idx), {}).update(entries)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    meta = {
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    inner, version, gauss = meta["python"]
    random.setstate((version, tuple(inner), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    run_dir: Path,
    step: int,
    networks: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict,
    keep: int = 3,
) -> Path:
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:07d}"
    staging = Path(tempfile.mkdtemp(prefix=f".step-{step:07d}.", suffix=".tmp", dir=ckpt_root))
    try:
        for name, module in networks.items():
            write_safetensors(state_for_saving(module), staging / f"{name}.safetensors", {"network": name})
        for name, optimizer in optimizers.items():
            tensors, meta = _optimizer_tensors(optimizer)
            write_safetensors(tensors, staging / f"optim-{name}.safetensors", {"optimizer": name})
            (staging / f"optim-{name}.json").write_text(json.dumps(meta))
        rng_tensors, rng_meta = rng_state()
        write_safetensors(rng_tensors, staging / "rng.safetensors", {})
        (staging / "state.json").write_text(json.dumps({**state, "step": step, "rng": rng_meta}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(
    path: Path, networks: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict:
    """Restore networks, optimisers and RNG states in place; returns the saved scalar state (step, …). Network
    tensors that do not fit (e.g. resuming with another model config) raise a WeightsError naming the file."""
    for name, module in networks.items():
        file = path / f"{name}.safetensors"
        state = read_safetensors(file)
        check_state(module, state, str(file))
        module.load_state_dict(state)
    for name, optimizer in optimizers.items():
        meta = json.loads((path / f"optim-{name}.json").read_text())
        _load_optimizer(optimizer, read_safetensors(path / f"optim-{name}.safetensors"), meta)
    state = json.loads((path / "state.json").read_text())
    set_rng_state(read_safetensors(path / "rng.safetensors"), state.pop("rng"))
    return state
