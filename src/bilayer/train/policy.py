"""What each training stage trains, and when and how the discriminator takes part: data and small functions that
the training loop reads, kept apart from it.

- A ``Stage`` names the networks that learn; the rest of the model is frozen. The base stage trains every network
  but the texture enhancer, with every loss term; the enhancer stage trains only the enhancer, on a base model
  frozen in eval mode, without the pixel terms of the LF layer, the mask and the warp (paper §3.4, reference §5).
- A ``DiscriminatorPolicy`` says whether D is run at all (for G_ADV or G_FM), whether it learns (from D_ADV, only
  with an adversarial weight above 0) and with what factor the two adversarial terms enter at each iteration
  (``gan_scale``: 0 before ``gan_start``, then a linear ramp). With the adversarial weight 0 and feature matching
  on, D must come trained from --init (``check_feature_matching``); how long a saved D has learned is kept in its
  file's metadata (``D_STEPS_KEY``).
- ``lr_scale``: the learning-rate schedule's factor at each iteration (constant, or a cosine tail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import BilayerConfig
from .config import TrainConfig


class PolicyError(ValueError):
    """A stage or discriminator set-up that cannot train as asked; the message says what to change."""


@dataclass(frozen=True)
class Stage:
    name: str
    #: ``BilayerModel`` attributes that learn; every other network is frozen
    trained: tuple[str, ...]
    #: the frozen networks run in eval mode (stored BatchNorm statistics and spectral-norm vectors)
    frozen_in_eval: bool
    #: the LF L1, mask BCE and warp terms apply (they concern the networks of the base stage)
    pixel_terms: bool
    #: standing BatchNorm statistics are recomputed before evaluations and checkpoints (trained BatchNorms)
    standing_stats: bool

    def trained_networks(self, model: BilayerConfig) -> tuple[str, ...]:
        """``trained`` for this model: without the texture layer (the LF-only ablation) its networks never run."""
        if model.texture_layer:
            return self.trained
        return tuple(n for n in self.trained if n not in ("texture_projector", "texture_generator"))


STAGES: dict[str, Stage] = {
    "base": Stage("base", ("identity_embedder", "texture_projector", "texture_generator", "keypoints_embedder",
                           "inference_projector", "inference_generator"),
                  frozen_in_eval=False, pixel_terms=True, standing_stats=True),
    "enhancer": Stage("enhancer", ("texture_enhancer",), frozen_in_eval=True, pixel_terms=False,
                      standing_stats=False),
}


def stage(name: str) -> Stage:
    if name not in STAGES:
        raise PolicyError(f"unknown stage {name!r}; expected 'base' or 'enhancer'.")
    return STAGES[name]


def gan_scale(config: TrainConfig, iteration: int) -> float:
    """The factor on the adversarial and feature-matching weights at ``iteration`` (0-based): 0 before
    ``gan_start``, then rising linearly to 1 over ``gan_ramp`` iterations."""
    if iteration < config.gan_start:
        return 0.0
    if config.gan_ramp <= 0:
        return 1.0
    return min(1.0, (iteration - config.gan_start + 1) / config.gan_ramp)


def lr_tail_in_run(config: TrainConfig, total: int) -> bool:
    """Whether a run of ``total`` iterations reaches its learning-rate tail (``lr_decay`` set and ``lr_decay_start``
    before its last iteration); otherwise its rate stays constant."""
    return config.lr_decay != "none" and total - 1 > config.lr_decay_start


def lr_scale(config: TrainConfig, iteration: int, total: int) -> float:
    """The factor on both learning rates at ``iteration`` (0-based) of a run of ``total`` iterations: 1 with
    ``lr_decay`` "none" and before ``lr_decay_start``; then a half cosine from 1 that reaches ``lr_decay_to`` at
    the last iteration. It depends on the iteration alone, so a resumed run continues the same curve."""
    start = config.lr_decay_start
    if not lr_tail_in_run(config, total) or iteration < start:
        return 1.0
    progress = min(1.0, (iteration - start) / (total - 1 - start))
    return config.lr_decay_to + (1.0 - config.lr_decay_to) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class DiscriminatorPolicy:
    #: D is called (for G_ADV or G_FM): either weight above 0
    runs: bool
    #: D is updated, from D_ADV only: the adversarial weight above 0
    learns: bool

    @classmethod
    def from_config(cls, config: TrainConfig) -> "DiscriminatorPolicy":
        runs = bool(config.losses.adversarial or config.losses.feature_matching)
        return cls(runs=runs, learns=runs and config.losses.adversarial > 0)


#: metadata of a saved ``discriminator.safetensors``: how many steps its discriminator has learned for, over all the
#: runs it came through (absent: unknown, e.g. converted released weights, which are trained)
D_STEPS_KEY = "discriminator_trained_steps"


def d_steps(value) -> int | None:
    """A stored trained-steps count (a whole number ≥ 0, as an int in state.json or a string in safetensors
    metadata), or None when it is absent or damaged: unknown, which counts as trained and is never counted up."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    return int(value) if isinstance(value, str) and value.isdigit() else None


def check_feature_matching(config: TrainConfig, init: str | None, d_from_init: bool,
                           trained_steps: int | None = None) -> None:
    """Feature matching with the adversarial weight at 0 needs a trained discriminator from ``init``: D learns only
    from D_ADV, so otherwise G_FM would match the features of a random network. ``trained_steps``: how long the
    --init discriminator learned (0: saved by runs without the adversarial term, still random; None: unknown,
    trusted)."""
    losses = config.losses
    if losses.feature_matching == 0 or losses.adversarial > 0:
        return
    if not d_from_init:
        where = "no --init is given" if init is None else f"--init {init} holds no discriminator.safetensors"
        where += " to start it from a trained one"
    elif trained_steps == 0:
        where = f"the discriminator in --init {init} never learned either (its runs had losses.adversarial 0)"
    else:
        return
    raise PolicyError(
        f"losses.feature_matching is {losses.feature_matching} but losses.adversarial is {losses.adversarial}, so "
        f"the discriminator is not trained, and {where}; pass --init with a model folder holding a trained "
        "discriminator (e.g. a base run's model/), set losses.adversarial above 0, or set losses.feature_matching "
        "to 0."
    )
