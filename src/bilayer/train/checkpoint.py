"""Training checkpoints: everything needed to resume, written atomically, never pickled (DESIGN principle 6).

Layout of ``runs/NAME/checkpoints/step-0000100/``:
    model.safetensors, discriminator.safetensors     network weights (with spectral-norm vectors, BN stats)
    optim-<name>.safetensors + optim-<name>.json     Adam moments / hyper-parameters per optimiser
    rng.safetensors + state.json                     RNG states, step counters, the stage that saved it
A checkpoint folder is assembled under a temporary name and renamed into place, so a kill at any moment leaves
either the previous complete checkpoint or the new one, never a broken one. A checkpoint damaged afterwards (e.g. a
hand-edited or truncated ``state.json``) raises a CheckpointError naming the file.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..weights import check_state, read_safetensors, state_for_saving, write_safetensors

_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint's metadata is damaged; the message names the file and says how to resume without it."""


def _damaged(file: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint file {file} is damaged ({why}); delete the folder {file.parent} to resume from the checkpoint "
        "before it (or from scratch if it is the only one)."
    )


@contextlib.contextmanager
def _damaged_on_error(file: Path, why: str):
    """Malformed content met inside the block (a missing key, a value of the wrong type or size) raises a
    CheckpointError naming ``file``."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError):
        raise _damaged(file, why) from None


def _read_json_object(file: Path, required: tuple[str, ...]) -> dict:
    """The JSON object in ``file``, which must hold the keys ``required``; otherwise a CheckpointError."""
    try:
        data = json.loads(file.read_bytes())
    except json.JSONDecodeError as exc:
        raise _damaged(file, f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except ValueError:  # bytes that are not UTF-8 text
        raise _damaged(file, "not valid JSON: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise _damaged(file, f"expected a JSON object, got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise _damaged(file, f"it lacks the key(s) {', '.join(map(repr, missing))}")
    return data


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


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The ``state_dict`` of an optimiser from its saved tensors and JSON (``_optimizer_tensors`` inverted)."""
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
    return {"state": state, "param_groups": groups}


# How an optimiser computes, not what: kept from the running optimiser when a checkpoint is loaded (a checkpoint
# written with the plain Adam loop resumes with the fused kernel and the reverse).
_KERNEL_OPTIONS = ("fused", "foreach", "capturable", "differentiable")


def _match_layouts(optimizer: torch.optim.Optimizer, kernels: list[dict]) -> None:
    """After ``load_state_dict``: restore the optimiser's kernel options, and give every state tensor its parameter's
    memory layout (checkpoints store contiguous tensors; the fused kernel reads a channels-last parameter's state
    as if it had the parameter's strides)."""
    for group, options in zip(optimizer.param_groups, kernels):
        group.update(options)
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


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
    from ..outputs import make_folder, replace_folder, staging_folder, sweep_stale

    ckpt_root = make_folder(run_dir / "checkpoints")
    sweep_stale(ckpt_root)  # checkpoints a killed run left half-written
    final = ckpt_root / f"step-{step:07d}"
    staging = staging_folder(final)
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
        replace_folder(staging, final)
    except OSError as exc:  # a full disk: name the checkpoint's file, not the temporary folder's
        shutil.rmtree(staging, ignore_errors=True)
        name = str(exc.filename or "")
        if name.startswith(str(staging)):
            raise OSError(exc.errno, exc.strerror, str(final) + name[len(str(staging)):]) from None
        raise
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


def checkpoint_step(path: Path) -> int:
    """The iteration a checkpoint folder (``step-NNNNNNN``) was written at."""
    return int(_STEP_DIR.match(path.name).group(1))


def _check_stage(path: Path, saved, stage: str) -> None:
    """A CheckpointError unless the checkpoint at ``path``, saved by the stage ``saved``, is resumed by ``stage``."""
    if not isinstance(saved, str):
        raise _damaged(path / "state.json", f"its 'stage' is {saved!r}; expected a stage name")
    if saved != stage:
        init = f" (with --init {path.parent.parent / 'model'})" if stage == "enhancer" else ""
        raise CheckpointError(
            f"checkpoint {path} was saved by the {saved!r} stage but this run trains {stage!r}; resume it with "
            f"`bilayer train {saved}`, or start the {stage} stage in a new --run folder{init}."
        )


def load_checkpoint(
    path: Path,
    networks: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    *,
    stage: str | None = None,
) -> dict:
    """Restore networks, optimisers and RNG states in place; returns the saved scalar state (step, …). Network
    tensors that do not fit (e.g. resuming with another model config) raise a WeightsError naming the file; damaged
    metadata, or optimiser state for other parameters, a CheckpointError naming the file. Every file is read and
    parsed, and the network shapes and optimiser sizes checked, before anything is restored.

    ``stage`` is the training stage resuming from the checkpoint: one saved by another stage raises a
    CheckpointError as soon as ``state.json`` is parsed (checkpoints written before the stage was stored are not
    checked)."""
    state_file = path / "state.json"
    state = _read_json_object(state_file, ("step", "rng"))
    step, rng_meta = state["step"], state.pop("rng")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise _damaged(state_file, f"its 'step' is {step!r}; expected an integer ≥ 0")
    if not isinstance(rng_meta, dict) or not {"python", "numpy"} <= rng_meta.keys():
        raise _damaged(state_file, "its 'rng' is not an object with 'python' and 'numpy' states")
    if stage is not None and "stage" in state:
        _check_stage(path, state["stage"], stage)
    rng_tensors = read_safetensors(path / "rng.safetensors")
    network_states = {}
    for name, module in networks.items():
        file = path / f"{name}.safetensors"
        network_states[name] = read_safetensors(file)
        check_state(module, network_states[name], str(file))
    optimizer_states = {}
    for name, optimizer in optimizers.items():
        file = path / f"optim-{name}.json"
        meta = _read_json_object(file, ("param_groups", "state"))
        tensors = read_safetensors(path / f"optim-{name}.safetensors")
        with _damaged_on_error(file, "its 'param_groups' and 'state' are not a saved optimiser state"):
            optimizer_states[name] = _optimizer_state(tensors, meta)
            saved = [len(group["params"]) for group in optimizer_states[name]["param_groups"]]
        wanted = [len(group["params"]) for group in optimizer.param_groups]
        if saved != wanted:  # a sound checkpoint of another stage, not a damaged one
            raise CheckpointError(
                f"checkpoint file {file} holds optimiser state for {saved} tensors (per parameter group) but this "
                f"run's optimiser has {wanted}; resume with the stage and training config the run was started with."
            )
    for name, module in networks.items():
        module.load_state_dict(network_states[name])
    for name, optimizer in optimizers.items():
        with _damaged_on_error(path / f"optim-{name}.json", "its optimiser state cannot be restored"):
            kernels = [{k: g[k] for k in _KERNEL_OPTIONS if k in g} for g in optimizer.param_groups]
            optimizer.load_state_dict(optimizer_states[name])
            _match_layouts(optimizer, kernels)
    with _damaged_on_error(state_file, "its 'rng' states, or those in rng.safetensors, cannot be restored"):
        set_rng_state(rng_tensors, rng_meta)
    return state
