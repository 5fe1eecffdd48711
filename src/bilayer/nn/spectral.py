"""Spectral normalisation of every convolution and linear layer (reference §2.7), and its exact removal.

The released code used PyTorch's original hook-based spectral norm: one power-iteration step per training
forward (v ← normalize(Wᵀu), u ← normalize(Wv)), σ = uᵀWv from the stored vectors in eval mode, eps 1e-7.
We implement the same arithmetic as a ``torch.nn.utils.parametrize`` parametrization, so the weight stays an
ordinary attribute and the layers stay ordinary ``nn.Conv2d`` / ``nn.Linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class SpectralNorm(nn.Module):
    """weight ↦ weight / σ, σ estimated by power iteration with persistent vectors ``u`` (out) and ``v`` (in)."""

    def __init__(self, weight: torch.Tensor, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps
        out_features = weight.shape[0]
        in_features = weight[0].numel()
        # Same initialisation as the released code's PyTorch: normalised Gaussian vectors, no warm-up iterations.
        self.register_buffer("u", F.normalize(weight.new_empty(out_features).normal_(0, 1), dim=0, eps=eps))
        self.register_buffer("v", F.normalize(weight.new_empty(in_features).normal_(0, 1), dim=0, eps=eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # σ in the weight's own precision: under bf16 autocast the matrix-vector products would otherwise run in
        # bfloat16 (three significant digits for the normaliser of every layer).
        with torch.autocast(weight.device.type, enabled=False):
            return self._normalised(weight)

    def _normalised(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.flatten(1)  # (out, in·k·k)
        if not self.training:
            return weight / torch.dot(self.u, matrix @ self.v)
        with torch.no_grad():
            v = F.normalize(matrix.t() @ self.u, dim=0, eps=self.eps)
        # One power-iteration step, whose W·v also gives σ = uᵀ(W·v) (W·v is computed once, with the gradient
        # that σ carries to W). u and v are new tensors: copying them into the buffers, which a second forward
        # before backward (the discriminator runs twice per iteration) overwrites, never touches what this graph
        # saved.
        wv = matrix @ v
        u = F.normalize(wv.detach(), dim=0, eps=self.eps)
        with torch.no_grad():
            self.u.copy_(u)
            self.v.copy_(v)
        return weight / torch.dot(u, wv)


class PowerIterationSnapshot:
    """The u, v vectors of every spectral-norm layer below ``roots``, to replay a step's power iteration.

    Gradient accumulation restores the snapshot before each micro-batch after the first, so every micro-batch
    starts from the same vectors — exactly what each process of a data-parallel run does in one step.
    """

    def __init__(self, roots: nn.Module | list[nn.Module]) -> None:
        roots = [roots] if isinstance(roots, nn.Module) else roots
        self.layers = [m for root in roots for m in root.modules() if isinstance(m, SpectralNorm)]
        self.saved = [(m.u.clone(), m.v.clone()) for m in self.layers]

    @torch.no_grad()
    def restore(self) -> None:
        for m, (u, v) in zip(self.layers, self.saved):
            m.u.copy_(u)
            m.v.copy_(v)


def _is_spectral(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, SpectralNorm) for p in module.parametrizations["weight"]
    )


def apply_spectral_norm(root: nn.Module, eps: float = 1e-7) -> nn.Module:
    """Add spectral norm to every ``nn.Conv2d`` and ``nn.Linear`` below ``root`` (in place); returns ``root``."""
    for module in list(root.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not _is_spectral(module):
            parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight.detach(), eps))
    return root


@torch.no_grad()
def remove_spectral_norm(root: nn.Module) -> nn.Module:
    """Fold spectral norm into plain weights, W = W_orig / σ(u, v) with the stored vectors (no new iteration).

    Works in place and returns ``root``. Outputs in eval mode are unchanged (up to float rounding). Unlike
    ``parametrize.remove_parametrizations`` this never edits the injected class, which ``copy.deepcopy`` shares
    between a module and its copy (so folding a copy, as baking does, leaves the original intact).
    """
    for module in list(root.modules()):
        if not _is_spectral(module):
            continue
        plist = module.parametrizations["weight"]
        for p in plist:
            p.eval()  # eval: no power-iteration step while folding
        weight = module.weight.detach().clone()
        original = plist.original
        module.__class__ = module.__class__.__bases__[0]  # the plain nn.Conv2d / nn.Linear class
        del module._modules["parametrizations"]
        original.copy_(weight)  # keep the Parameter object (optimisers may hold it)
        module.register_parameter("weight", original)
    return root


def has_spectral_norm(root: nn.Module) -> bool:
    return any(_is_spectral(m) for m in root.modules())


def fold_reference_weight(
    weight_orig: torch.Tensor, weight_u: torch.Tensor, weight_v: torch.Tensor
) -> torch.Tensor:
    """The effective weight of a released-code spectral-norm layer from its stored ``u`` and ``v`` (reference §7.2)."""
    matrix = weight_orig.flatten(1).double()
    sigma = torch.dot(weight_u.double(), matrix @ weight_v.double())
    return (weight_orig.double() / sigma).to(weight_orig.dtype)
