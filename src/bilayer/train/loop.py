"""The training loop (paper §3.4, reference §4–5). Read top to bottom: setup, then one loop whose generator and
discriminator phases are written out, then maintenance on a schedule.

One iteration is the released code's simultaneous update (reference §4.3): a single backward of the sum of all
generator terms and D's adversarial term. D learns only from D_ADV (its pass sees detached fakes); the generators
learn from every G term while D is frozen for the pass that scores them. Which networks train, and whether D runs
and learns, is data (``train.policy``: ``Stage``, ``DiscriminatorPolicy``). With the adversarial and
feature-matching weights both 0 (the synth-quick preset) D is neither run nor updated; it is still built, loaded
and saved, so a later run with those terms can continue from it. With the adversarial weight 0 and feature matching
on, D does not learn at all: it must be a trained one from --init (``discriminator.safetensors``), and it stays
frozen in eval mode, only scoring features for G_FM; without one the run is refused, since G_FM would match the
features of a random network.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import resource
import shutil
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..data.dataset import VideoDataset
from ..eval.metrics import psnr, ssim
from ..io import write_bytes_atomic, write_json_atomic
from ..losses.objectives import GeneratorObjective, GeneratorTerms, discriminator_objective
from ..models.bilayer import BilayerModel
from ..models.discriminator import Discriminator
from ..nn.image import apply_mask
from ..nn.spectral import PowerIterationSnapshot
from ..structures import SampleBatch, collate
from ..outputs import FOLDER_KINDS, check_folder, claim_folder
from ..weights import check_state, read_safetensors, read_safetensors_metadata, save_pretrained
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import BatchStream, video_repeats
from .policy import (D_STEPS_KEY, DiscriminatorPolicy, PolicyError, Stage, check_feature_matching, d_steps,
                     gan_scale, lr_scale, lr_tail_in_run, stage as stage_policy)
from .distributed import DistInfo, all_reduce_mean, setup, teardown
from .standing_stats import compute_standing_stats, preserved_modes
from .visuals import save_grid, visual_grid

log = logging.getLogger("bilayer.train")

class TrainingError(RuntimeError):
    """The run cannot go on (e.g. repeated non-finite losses); the message says why and what to try."""


@dataclass
class Perceptual:
    """Where the perceptual networks' weights come from: files (``vgg19``, ``vggface``), the ImageNet VGG16 of
    ``bilayer.pretrained`` when no VGG19 file is given, or random init (only if asked for)."""

    vgg19: str | None = None
    vggface: str | None = None
    allow_random: bool = False


class GeneratorStep(nn.Module):
    """The generator side of one iteration as a single forward, so DDP sees one call per iteration."""

    def __init__(self, model: BilayerModel, stage: Stage) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, batch: SampleBatch) -> GeneratorTerms:
        m = self.model
        flat = lambda x: x.flatten(0, 1)  # noqa: E731  (B, t, …) → (B·t, …)
        if self.stage.name == "base":
            state = m.personalize(batch.source_images, batch.source_keypoints, batch.source_masks, batch.source_stickmen)
            render = m.render(state, batch.target_keypoints)
            delta_uv = flat(render.uv) - m.grid
            hf, lf, image, texture = render.hf, render.lf, render.image, state.texture
        else:  # enhancer: the model's own enhance and render; the base networks are frozen (no parameter of
            # theirs takes gradients), so only the enhancer's unrolled updates build a graph
            with torch.no_grad():
                state = m.personalize(batch.source_images, batch.source_keypoints, batch.source_masks, batch.source_stickmen)
            state = m.enhance(state)
            render = m.render(state, batch.target_keypoints)
            hf, lf, image, texture, delta_uv = render.hf, render.lf, render.image, state.texture, None
        return GeneratorTerms(
            target_images=flat(batch.target_images), target_masks=flat(batch.target_masks),
            target_stickmen=flat(batch.target_stickmen), image=flat(image), lf=flat(lf), hf=flat(hf),
            mask_logits=flat(render.mask_logits), delta_uv=delta_uv, pixel_terms=self.stage.pixel_terms,
            uv=flat(render.uv).detach(), texture=texture.detach(),
        )


def _build_model(stage: str, config: TrainConfig, init: str | None) -> BilayerModel:
    if stage == "enhancer":
        if init is None:
            raise TrainingError("the enhancer stage needs --init BASE_MODEL_DIR (a base run's model/ folder).")
        base = BilayerModel.from_pretrained(init)
        if base.config.replace(enhancer=None) != config.model.replace(enhancer=None):
            log.info("using the base model's config from %s", init)
        model_config = base.config.replace(enhancer=config.model.enhancer or base.config.enhancer)
        model = BilayerModel(model_config)
        state = base.state_dict()
        if model_config.enhancer != base.config.enhancer:  # another enhancer than the base run's: it starts fresh
            log.info("the enhancer of the training config differs from the one in %s: it starts from a new "
                     "initialisation", init)
            state = {k: v for k, v in state.items() if not k.startswith("texture_enhancer.")}
        missing = model.load_state_dict(state, strict=False)
        if any(not k.startswith("texture_enhancer.") for k in missing.missing_keys):
            raise TrainingError(f"{init} lacks tensors the enhancer stage needs, e.g. {missing.missing_keys[0]}.")
        return model
    model = BilayerModel(config.model)
    if init is not None:
        model.load_state_dict(BilayerModel.from_pretrained(init).state_dict())
    return model


def _load_perceptual(objective: GeneratorObjective, perceptual: Perceptual) -> str:
    """Load the perceptual networks (``objective`` is changed in place); returns what they are, for run.json.

    The ImageNet term uses the VGG19 file when one is given, else ImageNet VGG16 weights from the package
    registries (``bilayer.pretrained``, installed by ``make install``). The face term needs the VGGFace file;
    without one it is switched off, with a warning. ``allow_random`` keeps randomly initialised networks (tests)."""
    if perceptual.allow_random:
        return "random"
    if perceptual.vgg19:
        objective.vgg19.load_weights(perceptual.vgg19)
        what = f"VGG19 from {perceptual.vgg19}"
    else:
        from ..pretrained import imagenet_vgg16_state

        objective.use_imagenet_vgg16(imagenet_vgg16_state(), "the ImageNet VGG16 weights")
        what = "ImageNet VGG16 (in place of VGG19)"
    if perceptual.vggface:
        objective.vggface.load_weights(perceptual.vggface)
        what += f", VGGFace from {perceptual.vggface}"
    elif objective.weights.vggface:
        log.warning("no VGGFace weights (pass --perceptual-weights VGG19.pth VGGFACE.pth): the VGGFace perceptual "
                    "term (weight %g) is off for this run", objective.weights.vggface)
        objective.weights = dataclasses.replace(objective.weights, vggface=0.0)
    return what


def _memory_mb(info: DistInfo) -> float:
    if info.device.type == "cuda":
        return torch.cuda.max_memory_allocated(info.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _clear_run(run_dir: Path) -> None:
    """Remove the entries a training run writes (``outputs.FOLDER_KINDS["run"]``) from ``run_dir``; anything else
    in the folder (a user's notes) stays."""
    kind = FOLDER_KINDS["run"]
    if not run_dir.is_dir():
        return
    for entry in run_dir.iterdir():
        if kind.owns(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    log.info("--restart: removed the checkpoints, logs and model of the earlier run in %s", run_dir)


def train(
    stage: str,
    config: TrainConfig,
    data_root: str | Path,
    run_dir: str | Path,
    *,
    restart: bool = False,
    init: str | None = None,
    perceptual: Perceptual | None = None,
    steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Train ``stage`` ("base" or "enhancer") until ``steps`` iterations in total; returns the last log record.

    A run folder that already holds checkpoints is continued from its latest complete one (the same model,
    optimiser, data order and step count; already at ``steps``, nothing changes). ``restart``: remove what an
    earlier run wrote into the folder (checkpoints, logs, images, model) and start from scratch instead."""
    # ------------------------------------------------------------------------------------------- setup
    try:
        policy = stage_policy(stage)
    except PolicyError as error:
        raise TrainingError(str(error)) from None
    run_dir = Path(run_dir)
    info = setup(device)
    total_steps = config.steps if steps is None else steps
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise TrainingError(f"the number of steps is {total_steps!r}; expected the total number of iterations, a "
                            "whole number ≥ 1.")
    check_folder(run_dir, "run", "--run")
    micro = config.micro_batch or max(1, config.batch_size // info.world_size)
    if config.batch_size % (micro * info.world_size):
        raise TrainingError(
            f"the global batch size {config.batch_size} is not a multiple of {micro} per micro-batch × "
            f"{info.world_size} process(es); change --batch-size or --micro-batch."
        )
    accumulate = config.batch_size // (micro * info.world_size)
    if restart:
        if info.is_main:
            _clear_run(run_dir)
        if info.world_size > 1:
            torch.distributed.barrier()
    latest = ckpt.latest_checkpoint(run_dir)
    torch.manual_seed(config.seed)  # same on every rank: random perceptual VGGs must agree (DDP syncs the rest)

    model = _build_model(stage, config, init)
    if model.config.enhancer is None and stage == "enhancer":
        raise TrainingError("the model config has no enhancer section; add one to train the enhancer stage.")
    discriminator = Discriminator.from_config(model.config)
    d_file = Path(init) / "discriminator.safetensors" if init is not None else None
    d_from_init = d_file is not None and d_file.is_file()
    # a discriminator built here starts untrained
    d_trained = d_steps(read_safetensors_metadata(d_file).get(D_STEPS_KEY)) if d_from_init else 0
    try:
        check_feature_matching(config, init, d_from_init, d_trained)
    except PolicyError as error:
        raise TrainingError(str(error)) from None
    if d_from_init:
        # The enhancer stage starts D from the base run (reference §5.1); so does fine-tuning.
        dstate = read_safetensors(d_file)
        check_state(discriminator, dstate, str(d_file), model.config)
        discriminator.load_state_dict(dstate)
    objective = GeneratorObjective(config.losses, config.perceptual_layer_weights, config.perceptual_layers)
    perceptual_init = _load_perceptual(objective, perceptual or Perceptual())
    d_policy = DiscriminatorPolicy.from_config(config)
    use_d, train_d = d_policy.runs, d_policy.learns
    if not use_d:
        log.info("adversarial and feature-matching weights are both 0: the discriminator is not run or updated "
                 "(its weights are still saved)")
    elif not train_d:
        log.info("the adversarial weight is 0: the discriminator from %s is frozen (eval mode, not updated) and "
                 "only scores features for feature matching", d_file)

    if config.lr_decay != "none" and not lr_tail_in_run(config, total_steps):
        log.info("the learning-rate tail starts at iteration %d, after this run's last (%d): the rate stays constant; "
                 "set lr_decay_start in a --config file for a tail in a shorter run", config.lr_decay_start,
                 total_steps)
    trained = policy.trained_networks(model.config)
    model.requires_grad_(False)
    for name in trained:
        getattr(model, name).requires_grad_(True)
    discriminator.requires_grad_(train_d)
    if not train_d:  # a frozen D: BatchNorm uses its stored statistics, spectral norm its stored vectors
        discriminator.eval()
    if policy.frozen_in_eval:
        model.eval()
        for name in trained:
            getattr(model, name).train()
    if info.device.type == "cuda" and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
    # Channels-last weights and activations: oneDNN's convolutions of the thin generator layers run 2-3x faster in
    # NHWC on CPUs (8-16 channels at 128 px), and cuDNN's tensor cores want it too. The math is unchanged.
    model.to(info.device, memory_format=torch.channels_last)
    discriminator.to(info.device, memory_format=torch.channels_last)
    objective.to(info.device, memory_format=torch.channels_last)
    autocast_bf16, perceptual_bf16 = resolve_precision(config.precision, info.device)
    if perceptual_bf16:
        objective.perceptual_dtype(torch.bfloat16)

    gen_params = [p for name in trained for p in getattr(model, name).parameters()]
    # Both optimisers are checkpointed; D's is stepped only when D learns (otherwise its state stays as loaded).
    optimizers = {
        "generator": _adam(gen_params, config, info.device),
        "discriminator": _adam(discriminator.parameters(), config, info.device, config.discriminator_lr or config.lr),
    }
    stepped = optimizers if train_d else {"generator": optimizers["generator"]}
    base_lr = {name: opt.param_groups[0]["lr"] for name, opt in optimizers.items()}
    step_module = GeneratorStep(model, policy)
    gen_ddp = DDP(step_module) if info.enabled else step_module
    dis_ddp = DDP(discriminator) if info.enabled and train_d else discriminator
    spectral_roots = [model, discriminator] if train_d else [model]

    dataset = VideoDataset(data_root, "train", model.config.image_size, config.num_sources, config.num_targets,
                           config.sampling, seed=config.seed)
    repeats = video_repeats(len(dataset), micro * info.world_size * accumulate)
    if repeats > 1:
        dataset = VideoDataset(data_root, "train", model.config.image_size, config.num_sources, config.num_targets,
                               config.sampling, seed=config.seed, validate=False, repeats=repeats)
        if info.is_main:
            log.info("%d training video%s, fewer than a batch: each is drawn %d times per epoch", len(dataset.videos),
                     "" if len(dataset.videos) == 1 else "s", repeats)
    stream = BatchStream(dataset, micro, info.rank, info.world_size, config.seed, config.workers, accumulate)
    # Standing statistics read their own copy of the dataset, so they never move the training stream's epoch.
    stats_dataset = VideoDataset(data_root, "train", model.config.image_size, config.num_sources, config.num_targets,
                                 config.sampling, seed=config.seed + 1, validate=False, repeats=repeats)

    step, nonfinite = 0, 0
    if latest is not None:
        saved = ckpt.load_checkpoint(latest, {"model": model, "discriminator": discriminator}, optimizers,
                                     stage=stage)
        step, nonfinite = saved["step"], saved.get("nonfinite", 0)
        d_trained = d_steps(saved.get(D_STEPS_KEY))  # absent from checkpoints written before the count was kept
        log.info("continuing %s from its latest complete checkpoint, %s (step %d); --restart starts over", run_dir,
                 latest.name, step)
    stream.seek(step * accumulate)

    writer = None
    if info.is_main:
        claim_folder(run_dir, "run", "--run")
        write_bytes_atomic(run_dir / "train_config.json", (config.to_json() + "\n").encode())
        write_json_atomic(run_dir / "run.json", {
            "stage": stage, "data": str(data_root), "init": init, "perceptual_init": perceptual_init,
            "world_size": info.world_size, "micro_batch": micro, "accumulate": accumulate,
            "steps": total_steps,  # the run's last iteration (--steps or the config's), which the lr schedule uses
        })
        if perceptual_init == "random":
            log.warning("perceptual networks use RANDOM weights (--perceptual-init random): fine for tests and "
                        "SynthHeads, not for real faces")
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))
        except ImportError:
            log.warning("tensorboard is not installed; logging to log.jsonl only")

    bar = None
    if info.is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc=f"train {stage}", unit="it", dynamic_ncols=True)
    autocast = (lambda: torch.autocast(info.device.type, dtype=torch.bfloat16)) if autocast_bf16 else nullcontext
    record: dict = {"step": step}
    tick, tick_step = time.perf_counter(), step
    phases = PhaseTimer(info.device)

    # --------------------------------------------------------------------------------------- the loop
    try:
        while step < total_steps:
            phases.lap("maintenance")  # logging, evaluation, checkpoints of the step before
            for opt in stepped.values():
                opt.zero_grad(set_to_none=True)
            named_sum: dict[str, float] = {}
            finite = True
            gan = gan_scale(config, step)  # 0 before gan_start: D is neither run nor updated
            lr_factor = lr_scale(config, step, total_steps)
            for name, opt in optimizers.items():  # set every step, so a resumed run follows the same schedule
                for group in opt.param_groups:
                    group["lr"] = base_lr[name] * lr_factor
            for micro_step in range(accumulate):
                phases.lap("optimizer")
                batch = next(stream).to(info.device)
                phases.lap("data")
                sync = micro_step == accumulate - 1
                if micro_step == 0:
                    snapshot = PowerIterationSnapshot(spectral_roots)
                else:  # every micro-batch starts from the same spectral-norm vectors, as each process would
                    snapshot.restore()
                with ExitStack() as no_sync:
                    if info.enabled and not sync:  # accumulate locally; all-reduce on the last micro-batch
                        no_sync.enter_context(gen_ddp.no_sync())
                        if train_d:
                            no_sync.enter_context(dis_ddp.no_sync())
                    with autocast():
                        # Generator phase: render the targets, score them with D frozen (pass 2 of reference §2.9).
                        terms = gen_ddp(batch)
                        phases.lap("generator")
                        discriminator.requires_grad_(False)
                        g_loss, named, real, fake = objective(terms, discriminator, step, gan)
                        discriminator.requires_grad_(train_d)
                        phases.lap("losses")
                        d_loss, d_named = 0.0, {}
                        if train_d and gan > 0:  # Discriminator phase: real vs detached fake in one batch (pass 1).
                            d_loss, d_named = discriminator_objective(dis_ddp, real, fake, terms.target_stickmen,
                                                                      config.losses.adversarial)
                        loss = (g_loss + d_loss) / accumulate
                        phases.lap("discriminator")
                    finite = finite and bool(torch.isfinite(all_reduce_mean(loss.detach().float(), info)))
                    loss.backward()  # one backward for both sides: the simultaneous update of reference §4.3
                    phases.lap("backward")
                for k, v in {**named, **d_named}.items():
                    named_sum[k] = named_sum.get(k, 0.0) + float(v.detach()) / accumulate
            step += 1
            if finite:
                nonfinite = 0
                for opt in stepped.values():
                    opt.step()
                phases.lap("optimizer")
                if train_d and gan > 0 and d_trained is not None:
                    d_trained += 1
            else:  # skip the update, keep the count (never silently poison the weights)
                nonfinite += 1
                log.warning("step %d: non-finite loss (%s); update skipped (%d in a row)", step, named_sum, nonfinite)
                if nonfinite >= config.max_nonfinite:
                    raise TrainingError(
                        f"{nonfinite} consecutive non-finite losses at step {step}; stopping. Try a lower --lr, "
                        "fp32 precision, or check the data for broken frames."
                    )
            log_due = finite and (step % config.log_every == 0 or step == total_steps)  # skipped steps are not logged
            if log_due:  # on every rank: the logged terms are means over the whole global batch
                names = sorted(named_sum)
                means = all_reduce_mean(torch.tensor([named_sum[k] for k in names], device=info.device), info)
                named_sum = dict(zip(names, means.tolist()))

            # ------------------------------------------------------------------------ maintenance
            if info.is_main and log_due:
                now = time.perf_counter()
                record = {"step": step, **{k: round(v, 6) for k, v in named_sum.items()},
                          "it_per_s": (step - tick_step) / max(now - tick, 1e-9),
                          "lr": base_lr["generator"] * lr_factor, **({"gan_scale": gan} if use_d else {}),
                          "memory_mb": _memory_mb(info),
                          **phases.pop(step - tick_step)}
                tick, tick_step = now, step
                with (run_dir / "log.jsonl").open("a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for k, v in record.items():
                        if k != "step":
                            writer.add_scalar(k if k.startswith(("G_", "D_")) else f"train/{k}", v, step)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in named_sum.items() if k in ("G_VGG19", "G_L1", "D_ADV")})
            if bar is not None:
                bar.update(1)
            if info.is_main and config.visual_every and step % config.visual_every == 0:
                grid = visual_grid(batch, terms, model)
                save_grid(grid, run_dir / "images" / f"step-{step:07d}.png")
                if writer is not None:
                    writer.add_image("train/visuals", grid, step)
            # After a skipped (non-finite) step only the final checkpoint is still written.
            due_eval = finite and config.eval_every and step % config.eval_every == 0
            due_ckpt = (finite and step % config.checkpoint_every == 0) or step == total_steps
            if (due_eval or due_ckpt) and policy.standing_stats:
                _standing_stats(model, stats_dataset, micro, config, info)
            if due_eval:
                metrics = evaluate(model, data_root, config, info, enhance="texture_enhancer" in trained)
                if info.is_main and metrics:
                    record.update(metrics)
                    with (run_dir / "metrics.jsonl").open("a") as f:
                        f.write(json.dumps({"step": step, **metrics}) + "\n")
                    if writer is not None:
                        for k, v in metrics.items():
                            writer.add_scalar(f"test/{k}", v, step)
            if due_ckpt and info.is_main:
                ckpt.save_checkpoint(run_dir, step, {"model": model, "discriminator": discriminator}, optimizers,
                                     {"nonfinite": nonfinite, "stage": stage, D_STEPS_KEY: d_trained})
                d_meta = {} if d_trained is None else {D_STEPS_KEY: str(d_trained)}
                save_pretrained(model, run_dir / "model", {"discriminator": discriminator}, {"discriminator": d_meta})
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        teardown()
    return record


def resolve_precision(precision: str, device: torch.device) -> tuple[bool, bool]:
    """(generators and D under bf16 autocast, perceptual networks held in bfloat16) for ``TrainConfig.precision``
    on ``device``. "auto" uses bfloat16 where the device computes it natively (a GPU with bf16, a CPU with
    AVX512-BF16 or AMX), else float32."""
    if precision == "fp32":
        return False, False
    if precision == "bf16":
        return True, True
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        from ..hardware import native_bfloat16

        native = device.type == "cpu" and native_bfloat16()
    return native, native


def _adam(params, config: TrainConfig, device: torch.device, lr: float | None = None) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all tensors instead of a dozen element-wise passes each: 4x less
    optimiser time on the CPU at synth-quick's 359 tensors), where the device has one; the same update rule."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=config.lr if lr is None else lr, betas=config.betas, eps=config.adam_eps,
                            fused=fused)


class PhaseTimer:
    """Wall time per phase of an iteration (``lap(name)`` charges the time since the previous lap to ``name``);
    ``pop(steps)`` returns ``ms_<phase>`` per iteration since the last pop. On CUDA every lap synchronises, so the
    phases are the GPU's time; the overhead is a few microseconds per lap on the CPU."""

    PHASES = ("data", "generator", "losses", "discriminator", "backward", "optimizer", "maintenance")

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now

    def pop(self, steps: int) -> dict[str, float]:
        out = {f"ms_{k}": round(1000 * v / max(steps, 1), 3) for k, v in self.seconds.items()}
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        return out


def _standing_stats(model: BilayerModel, dataset: VideoDataset, batch: int, config: TrainConfig, info: DistInfo) -> None:
    """Average per-batch BN statistics of the generators over N training batches (reference §4.6)."""
    stream = BatchStream(dataset, batch, info.rank, info.world_size, config.seed + 1, config.workers)

    def forward(b):
        b = b.to(info.device)
        state = model.personalize(b.source_images, b.source_keypoints, b.source_masks, b.source_stickmen)
        model.render_layers(state.inference_params, b.target_keypoints)

    batches = (next(stream) for _ in range(config.standing_stats_batches))
    compute_standing_stats([model], batches, forward)  # restores every module's mode afterwards


@torch.no_grad()
def evaluate(model: BilayerModel, data_root, config: TrainConfig, info: DistInfo, enhance: bool | None = None) -> dict:
    """Held-out one-shot reenactment (test identities; source = first frame, targets at 1 FPS — at the frame rate
    a SynthHeads root records, else 25 — or every 5th or 2nd frame when the held-out videos are shorter than a
    second): mean PSNR and SSIM of the prediction against the
    target, both on a black background by the target's ground-truth mask."""
    # frames between targets: one a second at the rate a SynthHeads root records (25 otherwise), then 5 and 2
    first = 25
    meta = Path(data_root) / "synth.json"
    if meta.is_file():
        try:
            first = max(1, round(float(json.loads(meta.read_text()).get("fps", 25))))
        except (OSError, ValueError, TypeError):
            pass
    for every in dict.fromkeys((first, 5, 2)):
        try:
            dataset = VideoDataset(data_root, "test", model.config.image_size, 1, 1, "test", seed=config.seed,
                                   fps=float(every))
            break
        except ValueError as exc:
            error = exc
    else:
        log.warning("no held-out evaluation: %s", error)
        return {}
    with preserved_modes(model):
        model.eval()
        out = _evaluate(model, dataset, config, info, enhance)
    return out | {"target_every": every} if out else out


_LPIPS: dict[str, object] = {}  # the held-out LPIPS network per device, loaded at the first evaluation (None: unavailable)


def _held_out_lpips(device: torch.device):
    """LPIPS (VGG16) for the held-out evaluation, or None with one warning when its weights are not installed."""
    key = str(device)
    if key not in _LPIPS:
        from ..eval.lpips import load_lpips
        from ..eval.weights import MetricUnavailable, default_weights_dir

        try:
            _LPIPS[key] = load_lpips(default_weights_dir(), "vgg").to(device)
        except MetricUnavailable as exc:
            log.warning("held-out LPIPS is not scored: %s", exc)
            _LPIPS[key] = None
    return _LPIPS[key]


def _evaluate(model, dataset, config, info, enhance) -> dict:
    enhance = bool(enhance) and model.texture_enhancer is not None
    lpips = _held_out_lpips(info.device)
    scores = {"psnr": [], "ssim": []} | ({"lpips": []} if lpips is not None else {})
    count = min(len(dataset), config.eval_batches * 4)  # held-out pairs: eval_batches × 4
    for start in range(info.rank, count, info.world_size):
        b = collate([dataset[start]]).to(info.device)
        state = model.personalize(b.source_images, b.source_keypoints, b.source_masks, b.source_stickmen)
        if enhance:
            state = model.enhance(state)
        r = model.render(state, b.target_keypoints)
        mask = b.target_masks.flatten(0, 1)
        pred = apply_mask(r.image.flatten(0, 1), mask)
        real = apply_mask(b.target_images.flatten(0, 1), mask)
        scores["psnr"] += psnr(pred, real).tolist()
        scores["ssim"] += ssim(pred, real).tolist()
        if lpips is not None:
            scores["lpips"] += lpips(pred.float().clamp(-1, 1), real.float()).flatten().tolist()
    out = {}
    for k, v in scores.items():
        mean = torch.tensor(sum(v) / max(len(v), 1), device=info.device)
        out[k] = float(all_reduce_mean(mean, info))
    return out if not math.isnan(out.get("psnr", 0.0)) else {}
