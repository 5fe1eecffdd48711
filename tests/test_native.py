"""The native one-pass tail (runtime/native.py): the same frames as PyTorch's tail, for every layout and batch the
backends hand it, built once and cached, and refused or skipped cleanly where it cannot run."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from bilayer.models.bilayer import identity_grid
from bilayer.runtime import native

pytestmark = pytest.mark.skipif(not native.available(), reason="no C++ compiler to build the native tail")


def plain_tail(heads, grid, texture, dtype=torch.float64):
    """BakedRenderer's PyTorch tail, in ``dtype``."""
    heads, grid, texture = heads.to(dtype), grid.to(dtype), texture.to(dtype)
    bounded = torch.tanh(heads[:, :5])
    uv = grid + bounded[:, :2].permute(0, 2, 3, 1)
    texture = texture.expand(heads.shape[0], -1, -1, -1)
    image = bounded[:, 2:5] + F.grid_sample(texture, uv, mode="bilinear", padding_mode="zeros", align_corners=False)
    return image, torch.sigmoid(heads[:, 5:6])


@pytest.mark.parametrize(
    "batch, size, texture_size, textures, channels_last",
    [(1, 64, (64, 64), 1, False), (3, 32, (48, 40), 3, True), (2, 40, (80, 80), 1, True), (1, 17, (9, 23), 1, False)],
)
def test_tail_equals_pytorch(batch, size, texture_size, textures, channels_last):
    """Against float64: within a few 1e-5 where PyTorch's own float32 tail is (non-square, smaller and larger
    textures, one texture for the batch or one each, planar or channels-last heads and texture; head values up to
    ±3·σ push the grid up to a pixel-and-more outside the texture, so the zero padding is exercised)."""
    g = torch.Generator().manual_seed(batch * 100 + size)
    heads = torch.randn(batch, 6, size, size, generator=g) * 3
    texture = torch.rand(textures, 3, *texture_size, generator=g) * 2 - 1
    if channels_last:
        heads = heads.contiguous(memory_format=torch.channels_last)
        texture = texture.contiguous(memory_format=torch.channels_last)
    grid = identity_grid(size)
    image, mask = native.fused_tail(heads, grid, texture)
    assert image.shape == (batch, 3, size, size) and mask.shape == (batch, 1, size, size)
    assert image.is_contiguous() and mask.is_contiguous() and image.dtype == mask.dtype == torch.float32
    truth = plain_tail(heads, grid, texture)
    ours32 = plain_tail(heads, grid, texture, torch.float32)
    budget = 2 * (ours32[0].double() - truth[0]).abs().max().item() + 1e-5
    assert (image.double() - truth[0]).abs().max() <= budget
    assert (mask.double() - truth[1]).abs().max() <= 2e-7
    # the samples outside the texture are zero: where every corner is outside, the image is the LF layer alone
    u = grid[..., 0] + torch.tanh(heads[:, 0].double())
    far = (u.abs() > 1 + 2 / texture_size[1])
    assert far.sum() >= 10  # every case has such pixels (heads up to ±3σ saturate tanh)
    lf = torch.tanh(heads[:, 2:5].double()).permute(1, 0, 2, 3)[:, far]
    assert (image.double().permute(1, 0, 2, 3)[:, far] - lf).abs().max() <= 2e-7


def test_tanh_and_sigmoid_are_accurate_everywhere():
    """With a zero texture the image is tanh(LF) and the mask σ(logit): within 2e-7 of float64 from -40 to 40
    (σ: -120 to 120), near zero in relative terms too (where 2σ(2x) - 1 would not be), saturating to exactly
    ±1 / 0 / 1."""
    values = torch.cat([torch.linspace(-40, 40, 3 * 64 * 64 // 2), torch.randn(3 * 64 * 64 // 2) * 1e-3])
    values[:4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])
    heads = torch.zeros(1, 6, 64, 64)
    heads[0, 2:5] = values.view(3, 64, 64)
    heads[0, 5] = torch.cat([torch.linspace(-120, 120, 2048), torch.randn(2048) * 1e-3]).view(64, 64)
    image, mask = native.fused_tail(heads, identity_grid(64), torch.zeros(1, 3, 64, 64))
    tanh, sigmoid = torch.tanh(heads[:, 2:5].double()), torch.sigmoid(heads[:, 5:6].double())
    assert (image.double() - tanh).abs().max() <= 2e-7 and (mask.double() - sigmoid).abs().max() <= 2e-7
    small = heads[:, 2:5].abs().double().clamp_min(1e-30) < 0.1
    assert ((image.double() - tanh).abs() / tanh.abs().clamp_min(1e-38))[small].max() <= 3e-7
    assert image.flatten()[0] == 0 and torch.isfinite(image).all() and torch.isfinite(mask).all()
    assert image.max() == 1 and image.min() == -1 and mask.max() == 1 and mask.min() < 1e-30


def test_threads_do_not_change_the_result():
    g = torch.Generator().manual_seed(4)
    heads = torch.randn(2, 6, 33, 33, generator=g)
    texture = torch.rand(1, 3, 33, 33, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.fused_tail(heads, identity_grid(33), texture)
        torch.set_num_threads(2)
        two = native.fused_tail(heads, identity_grid(33), texture)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch-internal, raised while inductor loads
def test_opaque_to_compile_and_export():
    """torch.compile calls it as one operator (its fake kernel gives the shapes) and torch.export keeps it, with a
    symbolic batch."""
    grid, texture = identity_grid(16), torch.rand(1, 3, 16, 16)

    def tail(heads):
        return native.fused_tail(heads * 1.5, grid, texture)

    heads = torch.randn(2, 6, 16, 16)
    from torch._inductor.utils import run_and_get_code

    compiled, code = run_and_get_code(lambda: torch.compile(tail)(heads))
    assert "torch.ops.bilayer.tail" in "\n".join(code)
    assert all(torch.equal(a, b) for a, b in zip(compiled, tail(heads)))

    class Tail(torch.nn.Module):
        def forward(self, h):
            return tail(h)

    program = torch.export.export(Tail(), (heads,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert "bilayer.tail" in str(program.graph)
    three = torch.randn(3, 6, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(program.module()(three), tail(three)))


def test_bad_inputs_are_named():
    grid, texture = identity_grid(8), torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"expects 6 head channels, got 5\.$"):
        native.fused_tail(torch.zeros(1, 5, 8, 8), grid, texture)
    with pytest.raises(ValueError, match=r"expects a \(1, 8, 8, 2\) grid, got \(1, 4, 4, 2\)\.$"):
        native.fused_tail(torch.zeros(1, 6, 8, 8), identity_grid(4), texture)
    with pytest.raises(ValueError, match=r"expects a \(1 or 2, 3, H, W\) texture, got \(3, 3, 8, 8\)\.$"):
        native.fused_tail(torch.zeros(2, 6, 8, 8), grid, torch.rand(3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"runs on float32 CPU tensors, got torch\.float64 on cpu\.$"):
        native.fused_tail(torch.zeros(1, 6, 8, 8, dtype=torch.float64), grid, texture)


def test_built_once_then_cached_and_failures_explained(tmp_path):
    """A fresh process builds the library into the cache folder (XDG_CACHE_HOME) and the next one loads it
    without compiling; with no usable compiler, available() is False and library() says why in one sentence."""
    script = (
        "import os, time\n"
        "from bilayer.runtime import native\n"
        "t = time.perf_counter(); ok = native.available(); dt = time.perf_counter() - t\n"
        "print(ok, sorted(p.name for p in native.cache_dir().iterdir()) if native.cache_dir().is_dir() else [])\n"
        "if not ok:\n"
        "    try:\n"
        "        native.library()\n"
        "    except RuntimeError as error:\n"
        "        print(error)\n"
    )

    def run(**env):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "XDG_CACHE_HOME": str(tmp_path), **env})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()

    first = run()
    assert first[0].startswith("True ['tail-") and first[0].endswith(".so']")
    built = next((tmp_path / "bilayer" / "native").glob("tail-*.so"))
    stamp = built.stat().st_mtime_ns
    assert run()[0] == first[0] and built.stat().st_mtime_ns == stamp  # loaded from the cache, not rebuilt
    failed = run(CXX="/bin/false", XDG_CACHE_HOME=str(tmp_path / "other"))
    assert failed[0] == "False []"
    assert failed[1].startswith("the native tail could not be built: ")
