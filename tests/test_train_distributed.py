"""Data-parallel training (torchrun, gloo on CPU) equals one process accumulating over the same micro-batches.

The sampler gives micro-batch a of rank r the items [(a·world + r)·micro, …) of each global batch, so one process
with ``--micro-batch 2 --batch-size 4`` sees, micro-batch for micro-batch, what 2 ranks see in one step: the same
BatchNorm statistics, the same spectral-norm vectors (replayed per micro-batch) and the same averaged gradients.
Only the BN running statistics differ (standing statistics are computed per process).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bilayer.weights import read_safetensors

from .conftest import _SUBPROCESS_ENV
from .test_train import BN_STATS, fast_config, loss_records, synth_dataset, write_config

STEPS = 3  # 8 training items, global batch 4: two steps per epoch, so the run crosses an epoch boundary


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = synth_dataset(tmp_path_factory)
    work = tmp_path_factory.mktemp("ddp")
    config = write_config(work / "cfg.json", fast_config(checkpoint_every=STEPS, log_every=1))
    env = {**_SUBPROCESS_ENV, "OMP_NUM_THREADS": "1"}  # in every process: thread count changes float reductions
    common = ["train", "base", "--config", str(config), "--data", str(data), "--perceptual-init", "random",
              "--steps", str(STEPS), "--no-progress"]
    # under torchrun, --run-dir: torchrun's own --run-path makes --run ambiguous
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "bilayer", *common, "--run-dir", str(work / "ddp"), "--batch-size", "4"],
        capture_output=True, text=True, timeout=300, env=env, cwd=work,
    )
    single = subprocess.run(
        [sys.executable, "-m", "bilayer", *common, "--run", str(work / "single"), "--batch-size", "4",
         "--micro-batch", "2"],
        capture_output=True, text=True, timeout=300, env=env, cwd=work,
    )
    for proc in (ddp, single):
        assert proc.returncode == 0, f"{proc.args}\nexit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return work / "ddp", work / "single"


@pytest.mark.slow
def test_two_processes_equal_one_process_with_accumulation(runs):
    ddp, single = runs
    meta = json.loads((ddp / "run.json").read_text()), json.loads((single / "run.json").read_text())
    assert (meta[0]["world_size"], meta[0]["micro_batch"], meta[0]["accumulate"]) == (2, 2, 1)
    assert (meta[1]["world_size"], meta[1]["micro_batch"], meta[1]["accumulate"]) == (1, 2, 2)
    compared = 0
    for name in ("model", "discriminator"):
        a = read_safetensors(ddp / "model" / f"{name}.safetensors")
        b = read_safetensors(single / "model" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            if key.endswith(BN_STATS):
                continue
            diff = (a[key].double() - b[key].double()).abs().max().item()
            assert diff <= 1e-6, f"{name}: {key} differs by {diff:.3g}"
            compared += 1
    assert compared > 600  # every parameter and spectral-norm vector of both files
    # both ran every step (no skipped non-finite step hides a difference)
    assert len(loss_records(ddp)) == len(loss_records(single)) == STEPS


@pytest.mark.slow
def test_logged_losses_are_global_batch_means(runs):
    """The log of a 2-process run reports the loss of the whole global batch, as the accumulating run does
    (not only rank 0's half of it)."""
    ddp, single = runs
    a, b = loss_records(ddp), loss_records(single)
    for step in range(1, STEPS + 1):
        for k in b[step]:
            assert a[step][k] == pytest.approx(b[step][k], rel=1e-5, abs=1e-6), (step, k)
