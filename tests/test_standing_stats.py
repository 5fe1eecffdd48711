"""Standing BatchNorm statistics (reference §4.6): the average of per-batch statistics over N batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bilayer.nn.spectral import SpectralNorm, apply_spectral_norm
from bilayer.train.standing_stats import batchnorms, compute_standing_stats


class Net(nn.Module):
    """BN → SN conv → BN (called twice per forward: as in source and target passes) → SN linear → BN1d."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3, momentum=1.0, eps=1e-5)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_mid = nn.BatchNorm2d(4, momentum=1.0, eps=1e-5)
        self.head = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, momentum=0.1))
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.bn_in(x))
        h = self.bn_mid(h) + self.bn_mid(h * 2 + 1)  # a BN called twice per batch
        return self.head(self.dropout(h.mean((2, 3))))


def _sn_weight(layer: nn.Module) -> torch.Tensor:
    """W / σ with σ = uᵀ W v from the stored vectors (no power iteration), computed here by hand."""
    w = layer.parametrizations.weight.original.detach()
    sn = layer.parametrizations.weight[0]
    sigma = sn.u @ (w.flatten(1) @ sn.v)
    return w / sigma


def _stats(x: torch.Tensor, dims) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and unbiased variance, in float64 NumPy."""
    a = x.detach().double().numpy()
    n = np.prod([a.shape[d] for d in dims])
    mean = a.mean(axis=tuple(dims))
    var = ((a - np.expand_dims(mean, tuple(dims))) ** 2).sum(axis=tuple(dims)) / (n - 1)
    return mean, var


def _normalise(x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm, dims) -> torch.Tensor:
    """Train-mode BN by hand: batch mean, biased variance, then the affine."""
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


@pytest.fixture
def net():
    torch.manual_seed(0)
    net = apply_spectral_norm(Net())
    with torch.no_grad():  # non-trivial affines and stale running statistics
        for bn in batchnorms(net):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
            bn.running_mean.fill_(5.0)
            bn.running_var.fill_(7.0)
    net.train()
    net(torch.randn(4, 3, 6, 6))  # one power-iteration step: u, v away from their initial values
    return net


def test_running_stats_are_average_of_per_batch_stats(net):
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(3, 3, 6, 6, generator=g) * s + s for s in (1.0, 2.0, 0.5, 3.0)]
    # expected, by hand: each BN's input per batch, its per-batch mean / unbiased var, averaged over all calls
    exp = {"bn_in": [], "bn_mid": [], "head": []}
    with torch.no_grad():
        w_conv, w_lin = _sn_weight(net.conv), _sn_weight(net.head[0])
        for x in batches:
            exp["bn_in"].append(_stats(x, (0, 2, 3)))
            h = F.conv2d(_normalise(x, net.bn_in, (0, 2, 3)), w_conv, net.conv.bias, padding=1)
            exp["bn_mid"] += [_stats(h, (0, 2, 3)), _stats(h * 2 + 1, (0, 2, 3))]
            h = _normalise(h, net.bn_mid, (0, 2, 3)) + _normalise(h * 2 + 1, net.bn_mid, (0, 2, 3))
            # dropout is in eval mode during the pass: the identity
            exp["head"].append(_stats(F.linear(h.mean((2, 3)), w_lin, net.head[0].bias), (0,)))
    calls = compute_standing_stats([net], iter(batches), net)
    assert calls == 4
    for name, bn in (("bn_in", net.bn_in), ("bn_mid", net.bn_mid), ("head", net.head[1])):
        mean = np.mean([m for m, _ in exp[name]], axis=0)
        var = np.mean([v for _, v in exp[name]], axis=0)
        np.testing.assert_allclose(bn.running_mean.double().numpy(), mean, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(bn.running_var.double().numpy(), var, rtol=1e-5, atol=1e-6, err_msg=name)
    assert len(exp["bn_mid"]) == 8  # averaged over every call, not every batch


def test_restores_momentum_and_modes_and_leaves_spectral_vectors(net):
    net.train()
    net.dropout.eval()
    net.head.eval()  # mixed flags (the enhancer stage mixes train and eval)
    modes = {name: m.training for name, m in net.named_modules()}
    momenta = {name: bn.momentum for name, bn in net.named_modules() if isinstance(bn, nn.modules.batchnorm._BatchNorm)}
    assert momenta == {"bn_in": 1.0, "bn_mid": 1.0, "head.1": 0.1}
    vectors = {name: (m.u.clone(), m.v.clone()) for name, m in net.named_modules() if isinstance(m, SpectralNorm)}
    assert len(vectors) == 2
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}

    seen_modes = []

    def forward(x):
        seen_modes.append({name: m.training for name, m in net.named_modules()})
        net(x)

    g = torch.Generator().manual_seed(2)
    compute_standing_stats([net], (torch.randn(2, 3, 6, 6, generator=g) for _ in range(3)), forward)
    # during the pass: only BN layers train (spectral norm, dropout and every wrapper are in eval)
    for name, training in seen_modes[0].items():
        is_bn = isinstance(net.get_submodule(name), nn.modules.batchnorm._BatchNorm)
        assert training == is_bn, name
    # afterwards: every flag and momentum restored, SN vectors and parameters untouched
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert {name: bn.momentum for name, bn in net.named_modules()
            if isinstance(bn, nn.modules.batchnorm._BatchNorm)} == momenta
    for name, m in net.named_modules():
        if isinstance(m, SpectralNorm):
            assert torch.equal(m.u, vectors[name][0]) and torch.equal(m.v, vectors[name][1]), name
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_restores_state_after_an_error(net):
    net.eval()
    momenta = [bn.momentum for bn in batchnorms(net)]

    def forward(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        compute_standing_stats([net], [torch.zeros(2, 3, 6, 6)], forward)
    assert not any(m.training for m in net.modules())
    assert [bn.momentum for bn in batchnorms(net)] == momenta
