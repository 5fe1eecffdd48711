"""The native one-pass heads and tail (runtime/native.py): the same frames as PyTorch's heads convolution and tail,
for every layout and batch the backends hand it, built once and cached, and refused or skipped cleanly where it
cannot run."""

import os
from pathlib import Path
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from bilayer.models.bilayer import identity_grid
from bilayer.runtime import native

pytestmark = pytest.mark.skipif(not native.available(), reason="no C++ compiler to build the native tail")


SLOPE = 0.2


def plain_tail(features, weight, bias, grid, texture, dtype=torch.float64, slope=SLOPE):
    """BakedRenderer's PyTorch heads and tail, in ``dtype``."""
    features, weight, bias = features.to(dtype), weight.to(dtype), bias.to(dtype)
    grid, texture = grid.to(dtype), texture.to(dtype)
    heads = F.conv2d(F.leaky_relu(features, slope), weight, bias, padding=1)
    bounded = torch.tanh(heads[:, :5])
    uv = grid + bounded[:, :2].permute(0, 2, 3, 1)
    texture = texture.expand(heads.shape[0], -1, -1, -1)
    image = bounded[:, 2:5] + F.grid_sample(texture, uv, mode="bilinear", padding_mode="zeros", align_corners=False)
    return image, torch.sigmoid(heads[:, 5:6]), heads


def inputs(batch, channels, size, texture_size, textures, layout, seed, scale=3.0):
    """Features, heads weight and bias whose head values spread to about ±``scale``·σ, a texture and a grid."""
    g = torch.Generator().manual_seed(seed)
    height, width = size
    if layout == "strided":  # a view into a wider tensor: no dense layout at all
        features = torch.randn(batch, channels, height, width + 5, generator=g)[..., 2 : width + 2]
    else:
        features = torch.randn(batch, channels, height, width, generator=g)
        if layout == "channels_last":
            features = features.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, channels, 3, 3, generator=g) * scale / (9 * channels * 0.6) ** 0.5
    bias = torch.randn(6, generator=g) * 0.3
    texture = torch.rand(textures, 3, *texture_size, generator=g) * 2 - 1
    if layout == "channels_last":
        texture = texture.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    return features, weight, bias, pixel_grid(height, width), texture


def pixel_grid(height, width):
    """identity_grid for a height × width frame: pixel centres, x then y."""
    y = (torch.arange(height, dtype=torch.float64) * 2 + 1) / height - 1
    x = (torch.arange(width, dtype=torch.float64) * 2 + 1) / width - 1
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)[None].float()
    assert height != width or torch.equal(grid, identity_grid(height))
    return grid


CASES = [  # batch, channels, (height, width), texture size, textures, layout
    (1, 16, (64, 64), (64, 64), 1, "channels_last"),  # the small preset's case: 16-channel blocks, 64-pixel rows
    (3, 32, (32, 40), (48, 40), 3, "channels_last"),  # a row that is no multiple of the vector blocks, 3 textures
    (2, 24, (40, 40), (80, 80), 1, "channels_last"),  # channels no multiple of 16: the scalar transposition
    (1, 3, (17, 23), (9, 23), 1, "planar"),
    (2, 16, (20, 70), (30, 30), 2, "strided"),
]


@pytest.mark.parametrize("batch, channels, size, texture_size, textures, layout", CASES)
def test_heads_and_tail_equal_pytorch(batch, channels, size, texture_size, textures, layout):
    """Against float64: as close as PyTorch's own float32 frames are (non-square frames, smaller and larger
    textures, one texture for the batch or one each, channels-last, planar and strided features; head values up
    to about ±3σ push the grid a pixel and more outside the texture, so the zero padding is exercised; the
    convolution's zero border is exercised on every frame's edge)."""
    features, weight, bias, grid, texture = inputs(batch, channels, size, texture_size, textures, layout,
                                                   seed=batch * 100 + channels)
    image, mask = native.heads_tail(features, weight, bias, SLOPE, grid, texture)
    assert image.shape == (batch, 3, *size) and mask.shape == (batch, 1, *size)
    assert image.is_contiguous() and mask.is_contiguous() and image.dtype == mask.dtype == torch.float32
    truth = plain_tail(features, weight, bias, grid, texture)
    ours32 = plain_tail(features, weight, bias, grid, texture, torch.float32)
    budget = 2 * (ours32[0].double() - truth[0]).abs().max().item() + 1e-5
    assert (image.double() - truth[0]).abs().max() <= budget
    assert (mask.double() - truth[1]).abs().max() <= 1e-6
    # the samples outside the texture are zero: where every corner is outside, the image is the LF layer alone
    # (a texel leaking in would be off by ~0.1)
    heads = truth[2]
    u = grid[..., 0] + torch.tanh(heads[:, 0])
    far = (u.abs() > 1 + 2 / texture_size[1]) & ((u.abs() - 1 - 2 / texture_size[1]).abs() > 1e-4)
    assert far.sum() >= 10  # every case has such pixels
    lf = torch.tanh(heads[:, 2:5]).permute(1, 0, 2, 3)[:, far]
    assert (image.double().permute(1, 0, 2, 3)[:, far] - lf).abs().max() <= 1e-5  # the convolution's rounding


def assembled(features, skip, height, width):
    """The block output that ``heads_tail`` reads from sub-pixel phases and / or a skip, written out in PyTorch."""
    if features.dim() == 6:
        n, c, hw, _, ww, _ = features.shape  # an (H + 2) × (W + 2) image, one pixel cropped on each side
        features = features.reshape(n, c, 2 * hw, 2 * ww)[:, :, 1 : height + 1, 1 : width + 1]
    if skip is not None:
        features = features + F.interpolate(skip, size=(height, width), mode="nearest")
    return features


PARTS = [  # batch, channels, (height, width), features: phases or full; skip: half, full or none; layout
    (2, 16, (32, 48), "phases", "half", "channels_last"),  # the int8 backend's last block on the small preset
    (1, 24, (20, 36), "phases", "half", "channels_last"),  # channels no multiple of 16: the scalar transposition
    (2, 16, (32, 32), "full", "half", "channels_last"),  # eager's and compile's last block
    (1, 8, (18, 22), "phases", "full", "planar"),
    (1, 16, (16, 80), "phases", None, "channels_last"),
    (2, 16, (24, 40), "full", "full", "channels_last"),  # a skip without upsampling, in the vector transposition
]


def block_parts(batch, channels, size, form, skip_size, layout):
    """A PARTS case's features (phases or full), skip (or None), and the heads' weight and bias, grid, texture."""
    g = torch.Generator().manual_seed(channels + size[1])
    height, width = size
    cl = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    if form == "phases":  # as SubpixelUpsampleConv2d.phases views its convolution's (B, 4C, H/2 + 1, W/2 + 1)
        conv = torch.randn(batch, 4 * channels, height // 2 + 1, width // 2 + 1, generator=g)
        conv = conv.contiguous(memory_format=cl)
        features = conv.view(batch, 2, 2, channels, height // 2 + 1, width // 2 + 1).permute(0, 3, 4, 1, 5, 2)
    else:
        features = torch.randn(batch, channels, height, width, generator=g).contiguous(memory_format=cl)
    skip = None
    if skip_size is not None:
        scale = 2 if skip_size == "half" else 1
        skip = torch.randn(batch, channels, height // scale, width // scale, generator=g).contiguous(memory_format=cl)
    return (features, skip, *inputs(batch, channels, size, (40, 40), 1, layout, seed=3)[1:])


@pytest.mark.parametrize("batch, channels, size, form, skip_size, layout", PARTS)
def test_the_block_output_read_from_its_parts(batch, channels, size, form, skip_size, layout):
    """The last block's output handed over in parts, never written at full resolution: a sub-pixel convolution's
    four phases as a view of its output (rows and columns interleaved, one pixel cropped on each side) and the
    skip path at half or full size, added by nearest upsampling; the frames are as close to float64 as when the
    block output itself is given, and equal to the loop run on that output up to the sum's rounding (none)."""
    features, skip, weight, bias, grid, texture = block_parts(batch, channels, size, form, skip_size, layout)
    height, width = size
    cl = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    image, mask = native.heads_tail(features, weight, bias, SLOPE, grid, texture, skip)
    whole = assembled(features, skip, height, width)
    truth = plain_tail(whole, weight, bias, grid, texture)
    budget = 2 * (plain_tail(whole, weight, bias, grid, texture, torch.float32)[0].double() - truth[0]).abs().max()
    assert (image.double() - truth[0]).abs().max() <= budget + 1e-5
    assert (mask.double() - truth[1]).abs().max() <= 1e-6
    same = native.heads_tail(whole.contiguous(memory_format=cl), weight, bias, SLOPE, grid, texture)
    assert torch.equal(image, same[0]) and torch.equal(mask, same[1])


@pytest.mark.parametrize("batch, channels, size, form, skip_size, layout", PARTS)
def test_bfloat16_parts_are_widened_as_they_are_read(batch, channels, size, form, skip_size, layout):
    """The bf16 backend hands over its last block's parts in bfloat16 (same layouts, the strides kept): the frames
    are exactly the loop's on the same values widened to float32 (widening is exact), in every layout and
    whichever path reads them (the vector transposition or the scalar one); the outputs are float32."""
    features, skip, weight, bias, grid, texture = block_parts(batch, channels, size, form, skip_size, layout)
    low = features.bfloat16(), None if skip is None else skip.bfloat16()
    assert low[0].stride() == features.stride()  # the phases' view, not a copy in another layout
    image, mask = native.heads_tail(low[0], weight, bias, SLOPE, grid, texture, low[1])
    wide = native.heads_tail(low[0].float(), weight, bias, SLOPE, grid, texture,
                             None if low[1] is None else low[1].float())
    assert image.dtype == mask.dtype == torch.float32
    assert torch.equal(image, wide[0]) and torch.equal(mask, wide[1])
    assert not torch.equal(image, native.heads_tail(features, weight, bias, SLOPE, grid, texture, skip)[0])


def test_the_portable_build_gives_the_same_frames(tmp_path, monkeypatch):
    """The fallback build for compilers or CPUs without -march=native (no AVX-512 intrinsics: the plain
    channels-last transposition, the baseline instruction set's vectors, no fused multiply-add) is as close to
    float64 as the build the backends use here, and reads bfloat16 features as their float32 values."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native.build(native.FLAG_SETS[2:3], namespace="bilayer_portable")
    portable = torch.ops.bilayer_portable.heads_tail
    features, weight, bias, grid, texture = inputs(2, 32, (24, 40), (30, 30), 1, "channels_last", seed=9)
    ours = native.heads_tail(features, weight, bias, SLOPE, grid, texture)
    theirs = native.heads_tail(features, weight, bias, SLOPE, grid, texture, op=portable)
    assert not torch.equal(ours[0], theirs[0])  # really another build: its sums round differently
    truth = plain_tail(features, weight, bias, grid, texture)
    budget = 2 * (plain_tail(features, weight, bias, grid, texture, torch.float32)[0].double() - truth[0]).abs().max()
    for image, mask in (ours, theirs):
        assert (image.double() - truth[0]).abs().max() <= budget + 1e-5
        assert (mask.double() - truth[1]).abs().max() <= 1e-6
    low = features.bfloat16()  # its scalar widening equals reading the widened copy
    assert all(map(torch.equal, native.heads_tail(low, weight, bias, SLOPE, grid, texture, op=portable),
                   native.heads_tail(low.float(), weight, bias, SLOPE, grid, texture, op=portable)))


def test_tanh_and_sigmoid_are_accurate_everywhere():
    """With a zero texture, slope 1 (no activation) and a weight that copies feature k to head k, the image is
    tanh(LF) and the mask σ(logit): within 2e-7 of float64 from -40 to 40 (σ: -120 to 120), near zero in relative
    terms too (where 2σ(2x) - 1 would not be), saturating to exactly ±1 / 0 / 1."""
    values = torch.cat([torch.linspace(-40, 40, 3 * 64 * 64 // 2), torch.randn(3 * 64 * 64 // 2) * 1e-3])
    values[:4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])
    features = torch.zeros(1, 6, 64, 64)
    features[0, 2:5] = values.view(3, 64, 64)
    features[0, 5] = torch.cat([torch.linspace(-120, 120, 2048), torch.randn(2048) * 1e-3]).view(64, 64)
    weight = torch.zeros(6, 6, 3, 3)
    weight[range(6), range(6), 1, 1] = 1.0
    image, mask = native.heads_tail(features, weight, torch.zeros(6), 1.0, identity_grid(64),
                                    torch.zeros(1, 3, 64, 64))
    tanh, sigmoid = torch.tanh(features[:, 2:5].double()), torch.sigmoid(features[:, 5:6].double())
    assert (image.double() - tanh).abs().max() <= 2e-7 and (mask.double() - sigmoid).abs().max() <= 2e-7
    small = features[:, 2:5].abs().double().clamp_min(1e-30) < 0.1
    assert ((image.double() - tanh).abs() / tanh.abs().clamp_min(1e-38))[small].max() <= 3e-7
    assert image.flatten()[0] == 0 and torch.isfinite(image).all() and torch.isfinite(mask).all()
    assert image.max() == 1 and image.min() == -1 and mask.max() == 1 and mask.min() < 1e-30


def test_threads_do_not_change_the_result():
    """Bands of rows per thread: every split (1, 2, 3 threads over 2 frames of 33 rows) gives the same bits."""
    features, weight, bias, grid, texture = inputs(2, 16, (33, 33), (33, 33), 1, "channels_last", seed=4)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(native.heads_tail(features, weight, bias, SLOPE, grid, texture))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for other in results[1:] for a, b in zip(results[0], other))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch-internal, raised while inductor loads
def test_opaque_to_compile_and_export():
    """torch.compile calls it as one operator (its fake kernel gives the shapes) and torch.export keeps it, with a
    symbolic batch."""
    _, weight, bias, grid, texture = inputs(1, 8, (16, 16), (16, 16), 1, "planar", seed=6)

    def tail(features):
        return native.heads_tail(features * 1.5, weight, bias, SLOPE, grid, texture)

    features = torch.randn(2, 8, 16, 16)
    from torch._inductor.utils import run_and_get_code

    compiled, code = run_and_get_code(lambda: torch.compile(tail)(features))
    assert "torch.ops.bilayer.heads_tail" in "\n".join(code)
    assert all(torch.equal(a, b) for a, b in zip(compiled, tail(features)))

    class Tail(torch.nn.Module):
        def forward(self, h):
            return tail(h)

    program = torch.export.export(Tail(), (features,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert "bilayer.heads_tail" in str(program.graph)
    three = torch.randn(3, 8, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(program.module()(three), tail(three)))


def test_bad_inputs_are_named():
    features, weight, bias, grid, texture = inputs(2, 4, (8, 8), (8, 8), 1, "planar", seed=7)

    def call(f=features, w=weight, b=bias, g=grid, t=texture):
        native.heads_tail(f, w, b, SLOPE, g, t)

    with pytest.raises(ValueError, match=r"expects a \(6, 4, 3, 3\) weight and a \(6,\) bias for 4 feature channels, "
                                         r"got \(6, 5, 3, 3\) and \(6,\)\.$"):
        call(w=torch.zeros(6, 5, 3, 3))
    with pytest.raises(ValueError, match=r"got \(6, 4, 3, 3\) and \(5,\)\.$"):
        call(b=torch.zeros(5))
    with pytest.raises(ValueError, match=r"expects \(B, C, 4, 4\) features for the grid's 4 × 4 frame, got "
                                         r"\(2, 4, 8, 8\)\.$"):
        call(g=identity_grid(4))
    with pytest.raises(ValueError, match=r"expects a \(1, H, W, 2\) grid, got \(8, 8, 2\)\.$"):
        call(g=identity_grid(8)[0])
    with pytest.raises(ValueError, match=r"expects a \(1 or 2, 3, H, W\) texture, got \(3, 3, 8, 8\)\.$"):
        call(t=torch.rand(3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"expects \(B, C, H, W\) or sub-pixel \(B, C, H/2 \+ 1, 2, W/2 \+ 1, 2\) "
                                         r"features, got \(4, 8, 8\)\.$"):
        call(f=features[0])
    with pytest.raises(ValueError, match=r"expects sub-pixel features \(B, C, 5, 2, 5, 2\) for the grid's 8 × 8 "
                                         r"frame, got \(2, 4, 5, 2, 4, 2\)\.$"):
        call(f=torch.zeros(2, 4, 5, 2, 4, 2))  # one pixel cropped from the rows, none from the columns
    with pytest.raises(ValueError, match=r"expects sub-pixel features \(B, C, 5, 2, 5, 2\) for the grid's 8 × 8 "
                                         r"frame, got \(2, 4, 6, 2, 6, 2\)\.$"):
        call(f=torch.zeros(2, 4, 6, 2, 6, 2))  # two pixels cropped on each side: not a sub-pixel convolution's
    with pytest.raises(ValueError, match=r"expects a \(2, 4, 8, 8\) skip or one of half that size, got "
                                         r"\(2, 4, 3, 3\)\.$"):
        native.heads_tail(features, weight, bias, SLOPE, grid, texture, torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"^bilayer::heads_tail reads float32 or bfloat16 features, not "
                                         r"torch\.float64\.$"):
        call(f=features.double())
    with pytest.raises(ValueError, match=r"^bilayer::heads_tail needs a float32 texture, not torch\.bfloat16\.$"):
        call(t=texture.bfloat16())
    with pytest.raises(ValueError, match=r"^bilayer::heads_tail needs the skip in the features' dtype "
                                         r"\(torch\.bfloat16\), not torch\.float32\.$"):
        native.heads_tail(features.bfloat16(), weight, bias, SLOPE, grid, texture, torch.zeros(2, 4, 4, 4))


def test_built_once_then_cached_and_failures_explained(tmp_path):
    """A fresh process builds the library into the cache folder (XDG_CACHE_HOME) and the next one loads it
    without compiling; with no usable compiler, available() is False and operator() says why in one sentence."""
    script = (
        "import os, time\n"
        "from bilayer.runtime import native\n"
        "t = time.perf_counter(); ok = native.available(); dt = time.perf_counter() - t\n"
        "print(ok, sorted(p.name for p in native.cache_dir().iterdir()) if native.cache_dir().is_dir() else [])\n"
        "if not ok:\n"
        "    try:\n"
        "        native.operator()\n"
        "    except RuntimeError as error:\n"
        "        print(error)\n"
    )

    def run(**env):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "XDG_CACHE_HOME": str(tmp_path), **env})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()

    first = run()
    assert first[0].startswith("True ['tail-") and first[0].endswith("']")
    built = next((tmp_path / "bilayer" / "native").glob("tail-*/bilayer_heads_tail_*.so"))
    stamp = built.stat().st_mtime_ns
    assert run()[0] == first[0] and built.stat().st_mtime_ns == stamp  # loaded from the cache, not rebuilt
    failed = run(CXX="/bin/false", XDG_CACHE_HOME=str(tmp_path / "other"))
    assert failed[0] == "False []"
    assert failed[1].startswith("the native tail could not be built: ")
    assert not list((tmp_path / "bilayer" / "native").glob(".*"))  # no temporary build folder left behind


def test_the_cache_key_names_the_cpu(monkeypatch):
    """Builds use -march=native: a cache folder shared by two machines must give each its own build, so the key
    changes with the CPU's instruction-set flags (and with the flags, compiler and source)."""
    key = native.build_key("g++", "g++ 12", ["-O3"])
    assert native.build_key("g++", "g++ 12", ["-O3"]) == key
    signature = native.cpu_signature()
    if Path("/proc/cpuinfo").is_file():  # the instruction-set flags, as the kernel lists them, are in it
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.split(":")[0].strip() in ("flags", "Features"))
        assert flags.partition(":")[2].strip() in signature
    monkeypatch.setattr(native, "cpu_signature", lambda: signature + " avx512_bf16")  # one more instruction set
    assert native.build_key("g++", "g++ 12", ["-O3"]) != key
    monkeypatch.undo()
    assert native.build_key("g++", "g++ 12", ["-O2"]) != key and native.build_key("clang++", "g++ 12", ["-O3"]) != key
