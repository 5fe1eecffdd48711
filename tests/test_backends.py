"""Backends: every way of running a baked avatar returns the eager module's frames (bf16 loosely), as float32,
without modifying the renderer; unavailable or unknown backends are refused with one sentence."""

import copy
import math
import re

import pytest
import torch

from bilayer import preset
from bilayer.runtime import native
from bilayer.runtime.backends import (
    AUTO_INT8_FRAMES,
    BACKENDS,
    BackendError,
    FrameRenderer,
    auto_backend,
    int8_unavailable,
    jittered_keypoints,
    make_renderer,
)
from bilayer.runtime.precision import low_precision
from bilayer.runtime.bake import bake

from .conftest import build_model


@pytest.fixture(scope="module")
def renderer():
    model = build_model(preset("tiny"))
    g = torch.Generator().manual_seed(1)
    size = model.config.image_size
    with torch.no_grad():
        state = model.personalize(
            torch.rand(1, 1, 3, size, size, generator=g) * 2 - 1,
            torch.rand(1, 1, 136, generator=g) * 1.6 - 0.8,
            torch.rand(1, 1, 1, size, size, generator=g),
        )
    return bake(model, state, 0)


@pytest.fixture(scope="module")
def keypoints():
    return torch.rand(3, 136, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8


@pytest.fixture(scope="module")
def reference(renderer, keypoints):
    with torch.no_grad():
        return renderer(keypoints)


def psnr(ours: torch.Tensor, ref: torch.Tensor, peak_to_peak: float = 2.0) -> float:
    mse = (ours.double() - ref.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(peak_to_peak**2 / mse)


def _check_frame(out, keypoints):
    image, mask = out
    assert image.shape == (keypoints.shape[0], 3, 64, 64) and mask.shape == (keypoints.shape[0], 1, 64, 64)
    assert image.dtype == mask.dtype == torch.float32


def test_eager_is_the_module(renderer, keypoints, reference):
    """Eager = the baked module in channels-last layout on CPU: the same numbers up to float rounding."""
    r = make_renderer(renderer)
    assert isinstance(r, FrameRenderer) and r.name == "eager"
    out = r(keypoints)
    _check_frame(out, keypoints)
    torch.testing.assert_close(out[0], reference[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], reference[1], atol=1e-5, rtol=0)
    # every convolution runs on a weight laid out for oneDNN once; each block's conv1 carries its activation
    from bilayer.runtime.forms import FastRenderer, PackedConv2d

    assert isinstance(r.module, FastRenderer) and r.module.channels_last
    run = r.module.renderer
    packed = [m for m in run.modules() if isinstance(m, PackedConv2d)]
    # (the heads too, unless the native loop runs them: it reads their plain weight)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in renderer.modules())
    assert len(packed) == convs - native.available() > 0
    assert isinstance(run.heads, PackedConv2d) != native.available()
    assert all(b.conv1.attr == "leaky_relu" and isinstance(b.act1, torch.nn.Identity) for b in run.blocks)
    assert {m.transposed for m in packed} == {True, False}
    # the caller's module is untouched: its own layers, layout and activations
    assert all(isinstance(b.act1, torch.nn.LeakyReLU) for b in renderer.blocks)
    assert renderer.texture.is_contiguous() and not any(isinstance(m, PackedConv2d) for m in renderer.modules())
    # the heads and tail run natively where the kernel builds (this machine has the compiler; the CI machine too)
    assert r.module.tail_form == ("native" if native.available() else "pytorch")
    # channels-last applies to images only: the (1, H, W, 2) grid stays row-major (the warp read it transposed)
    assert run.grid.is_contiguous() and run.texture.is_contiguous(memory_format=torch.channels_last)


def test_without_a_compiler(renderer, keypoints, reference, monkeypatch):
    """No C++ compiler: eager keeps oneDNN's heads and PyTorch's tail (same frames), compile and int8 say what to use
    instead."""
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setattr(native, "compiler", lambda: None)
    r = make_renderer(renderer)
    from bilayer.runtime.forms import PackedConv2d

    assert r.module.tail_form == "pytorch" and isinstance(r.module.renderer.heads, PackedConv2d)
    torch.testing.assert_close(r(keypoints)[0], reference[0], atol=1e-5, rtol=0)
    for backend in ("compile", "int8"):
        with pytest.raises(BackendError, match=rf"^{backend} on CPU needs a C\+\+ compiler \(g\+\+ or clang\+\+\) "
                                               r"on PATH; use eager or onnx\.$"):
            make_renderer(renderer, backend, calibration=keypoints)


@pytest.mark.parametrize("compiler", [True, False])
def test_bf16_is_close_and_warps_in_float32(renderer, keypoints, reference, compiler, monkeypatch):
    """The body in bfloat16 on packed oneDNN weights (each block's conv1 with its activation fused); the heads,
    tanh, warp, sum and sigmoid in float32: in the native loop (which reads the last block's bfloat16 output)
    where it builds, else a bfloat16 heads convolution cast back to float32 before PyTorch's tail."""
    from bilayer.runtime.forms import PackedConv2d
    from bilayer.runtime.precision import Cast

    if not compiler:
        monkeypatch.setattr(native, "available", lambda: False)
    r = make_renderer(renderer, "bf16")
    out = r(keypoints)
    _check_frame(out, keypoints)
    assert psnr(out[0], reference[0]) >= 30
    assert (out[1] - reference[1]).abs().max() < 2e-2
    module, tail = r.module.renderer, native.available()
    assert r.module.tail_form == ("native" if tail else "pytorch")
    packed = [m for m in module.modules() if isinstance(m, PackedConv2d)]
    assert {m.weight.dtype for m in packed} == {torch.bfloat16} and {m.transposed for m in packed} == {True, False}
    assert all(b.conv1.attr == "leaky_relu" and isinstance(b.act1, torch.nn.Identity) for b in module.blocks)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in renderer.modules())
    assert len(packed) == convs - tail
    # the keypoint MLP (single-row products, faster in float32 on CPU) stays float32, cast after its last layer
    assert {p.dtype for p in module.mlp.parameters()} == {torch.float32} and isinstance(module.mlp[-1][1], Cast)
    if tail:  # the loop computes the heads from their float32 weight
        assert module.heads.weight.dtype == torch.float32
    else:
        assert isinstance(module.heads[0], PackedConv2d)
    # The body is bfloat16; the grid, texture and heads' output (so tanh, warp, sum, sigmoid) are float32.
    assert renderer.blocks[0].conv1.weight.dtype == torch.float32  # the caller's module is untouched
    low = low_precision(renderer, torch.bfloat16)
    assert low.blocks[0].conv1.weight.dtype == torch.bfloat16
    assert low.grid.dtype == low.texture.dtype == torch.float32


def test_bf16_native_tail_is_the_float32_tail_on_its_blocks(renderer, keypoints):
    """With the native loop, the bf16 backend's frames are its bfloat16 body's output through the float32 heads
    and tail: the same as the plain bfloat16 module whose MLP and heads are float32, to float rounding."""
    if not native.available():
        pytest.skip("no C++ compiler to build the native tail")
    r = make_renderer(renderer, "bf16")
    plain = low_precision(renderer, torch.bfloat16, float32_heads=True, float32_mlp=True)
    with torch.inference_mode():
        h = plain.blocks[-1](plain.trunk(keypoints)).float()
        image, mask = plain.tail(h)
    ours = r(keypoints)
    # oneDNN's packed and plain bfloat16 convolutions may round differently (one bfloat16 step, 2⁻⁸ relative)
    assert psnr(ours[0], image) >= 55 and (ours[1] - mask).abs().max() < 2e-3


def test_low_precision_in_float32_is_exact(renderer, keypoints, reference):
    """The inserted casts do not change the computation (guards against drift from BakedRenderer.forward)."""
    with torch.no_grad():
        image, mask = low_precision(renderer, torch.float32)(keypoints)
    assert torch.equal(image, reference[0]) and torch.equal(mask, reference[1])


def test_onnx_backend_matches_eager(renderer, keypoints, reference, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "avatar.onnx"
    r = make_renderer(renderer, "onnx", onnx_path=path)
    assert path.is_file()
    assert r.warmup(2) is r
    for batch in (1, 3):
        image, mask = r(keypoints[:batch])
        _check_frame((image, mask), keypoints[:batch])
        assert (image - reference[0][:batch]).abs().max() <= 1e-4
        assert (mask - reference[1][:batch]).abs().max() <= 1e-4
    image, _ = make_renderer(renderer, "onnx")(keypoints)  # through a temporary file
    assert (image - reference[0]).abs().max() <= 1e-4


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch-internal, raised while inductor loads
@pytest.mark.slow  # inductor compiles C++ kernels: seconds with a warm cache, a minute or more cold
def test_compile_matches_eager(renderer, keypoints, reference, monkeypatch):
    r = make_renderer(renderer, "compile").warmup(3)
    image, mask = r(keypoints)
    _check_frame((image, mask), keypoints)
    assert (image - reference[0]).abs().max() <= 1e-4
    assert (mask - reference[1]).abs().max() <= 1e-4
    # inputs made inside or outside inference mode, in this thread or in a render thread (animate's workers),
    # reuse the compiled graph: a recompile takes seconds per call
    from concurrent.futures import ThreadPoolExecutor

    import torch._dynamo

    with torch._dynamo.config.patch(error_on_recompile=True):
        with torch.inference_mode():
            inside = keypoints.clone()
        for kp in (keypoints, inside):
            torch.testing.assert_close(r(kp)[0], image)
        with ThreadPoolExecutor(1) as pool:
            torch.testing.assert_close(pool.submit(lambda: r(inside)[0]).result(), image)
    # frozen: the convolutions run as oneDNN kernels on weights laid out once, not re-laid out per call
    from torch._inductor.utils import run_and_get_code

    _, code = run_and_get_code(lambda: make_renderer(renderer, "compile")(keypoints[:1]))
    code = "\n".join(code)
    # the graph's wrapper is C++ (inductor's cpp_wrapper), calling each operator through the C shim
    assert "def call(self, args)" not in code and _calls(code, "mkldnn__convolution_pointwise") > 0
    # the heads and the tail are one native operator; where it cannot be built, the warp is PyTorch's grid_sample
    # kernel behind one opaque operator (not inductor's generated gather loops) and tanh is written with sigmoid
    assert "tanh" not in code and "grid_sampler" not in code
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in renderer.modules())
    if native.available():
        assert _dispatches(code, "heads_tail") and not _dispatches(code, "warp")
        assert _calls(code, "mkldnn__convolution_") == convs - 1  # every convolution but the heads
    monkeypatch.setattr(native, "available", lambda: False)
    fallback, code = run_and_get_code(lambda: make_renderer(renderer, "compile")(keypoints))
    code = "\n".join(code)
    assert _dispatches(code, "warp") and not _dispatches(code, "heads_tail") and "tanh" not in code
    assert _calls(code, "mkldnn__convolution_") == convs
    assert (fallback[0] - reference[0]).abs().max() <= 1e-4


def _calls(code: str, op: str) -> int:
    """How many times inductor's C++ wrapper ``code`` calls an ATen operator whose C-shim name starts with ``op``
    (e.g. ``aoti_torch_cpu_mkldnn__convolution_pointwise(``)."""
    return len(re.findall(rf"\baoti_torch_cpu_{op}\w*\(", code))


def _dispatches(code: str, op: str) -> bool:
    """Whether ``code`` calls the custom operator ``bilayer::op`` (through the dispatcher)."""
    return f'aoti_torch_call_dispatcher("bilayer::{op}"' in code


def test_jittered_keypoints_move_the_face_as_a_whole():
    face = torch.rand(136, generator=torch.Generator().manual_seed(3)) * 1.2 - 0.6
    cal = jittered_keypoints(face, count=32, seed=5)
    assert cal.shape == (32, 136)
    torch.testing.assert_close(cal[0], face)  # the face itself is one of them
    torch.testing.assert_close(jittered_keypoints(face, count=32, seed=5), cal)  # reproducible
    pts, ref = cal[1:].view(31, 68, 2), face.view(68, 2)
    # mostly a similarity transform: the spread about the centre changes by at most ±10 % (+ the point noise)
    spread = (pts - pts.mean(1, keepdim=True)).norm(dim=2).mean(1) / (ref - ref.mean(0)).norm(dim=1).mean()
    assert ((spread > 0.85) & (spread < 1.15)).all() and spread.std() > 0.02
    # shifted by at most 5 % of the crop, i.e. 0.1 in [-1, 1] units (+ the mean of the point noise)
    assert (pts.mean(1) - ref.mean(0)).abs().max() <= 0.11


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch-internal, raised while inductor loads
@pytest.mark.slow  # export, calibration and an inductor compile: ~20 s
def test_int8_is_close_runs_quantized_kernels_and_any_batch(renderer, keypoints, reference):
    calibration = jittered_keypoints(keypoints[0])
    r = make_renderer(renderer, "int8", calibration=calibration)
    assert r.name == "int8"
    from torch._inductor.utils import run_and_get_code

    (image, mask), code = run_and_get_code(lambda: r(keypoints[:1]))
    code = "\n".join(code)
    # exactly the residual blocks' convolutions are int8 oneDNN kernels, the upsampling ones included (as sub-pixel
    # convolutions, no transposed one left); the heads and the MLP stay float32
    from bilayer.runtime.bake import UpsampleConv2d

    convs = sum(isinstance(m, torch.nn.Conv2d) for m in renderer.blocks.modules())
    upsampling = sum(isinstance(m, UpsampleConv2d) for m in renderer.blocks.modules())
    assert upsampling >= 2 and convs >= 5 + upsampling and _calls(code, "_qconv_pointwise") == convs
    assert "qlinear" not in code and "convolution_transpose" not in code
    assert _dispatches(code, "heads_tail") == native.available()  # float32 heads and tail, one pass
    if native.available():  # reading the last sub-pixel convolution's phases as a 6-D view of its output
        assert re.search(r"reinterpret_tensor_wrapper\(buf\d+, 6,", code)
    _check_frame((image, mask), keypoints[:1])
    assert psnr(image, reference[0][:1]) >= 40 and psnr(mask, reference[1][:1], 1.0) >= 40
    # a symbolic batch: the second size compiles once, every further size reuses that quantized graph
    image3, mask3 = r(keypoints)
    _check_frame((image3, mask3), keypoints)
    assert psnr(image3, reference[0]) >= 40
    torch.testing.assert_close(image3[:1], image, atol=1e-4, rtol=0)
    from torch._dynamo import config as dynamo_config

    with dynamo_config.patch(error_on_recompile=True):
        torch.testing.assert_close(r(keypoints[:2])[0], image3[:2], atol=1e-4, rtol=0)


def test_int8_needs_calibration_and_a_cpu(renderer, monkeypatch):
    with pytest.raises(BackendError, match=r"^int8 needs calibration keypoints \(N, 136\)"):
        make_renderer(renderer, "int8")
    with pytest.raises(BackendError, match=r"^int8 calibration keypoints have shape \(3, 10\); expected \(N, 136\)"):
        make_renderer(renderer, "int8", calibration=torch.zeros(3, 10))
    with pytest.raises(BackendError, match=r"^int8 runs on CPU .*; on a GPU use fp16\.$"):
        make_renderer(renderer, "int8", device="meta", calibration=torch.zeros(4, 136))
    if native.compiler():  # the CPU check (the compiler's comes first: test_without_a_compiler)
        import platform

        monkeypatch.setattr(platform, "machine", lambda: "aarch64")
        with pytest.raises(BackendError, match=r"^int8 needs an x86-64 CPU \(oneDNN's x86 kernels\), not aarch64; "
                                               r"use compile or eager\.$"):
            make_renderer(renderer, "int8", calibration=torch.zeros(4, 136))


def test_int8_without_torchao_names_the_fix(renderer, monkeypatch):
    import sys
    from pathlib import Path

    from bilayer.runtime.backends import TORCHAO_VERSION

    # the version the message names is the one the int8 extra installs
    assert f'"torchao=={TORCHAO_VERSION}"' in (Path(__file__).parents[1] / "pyproject.toml").read_text()

    # as if not installed: importing it, or any of its modules an earlier test loaded, raises ImportError
    for name in ["torchao", *(m for m in sys.modules if m.startswith("torchao."))]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendError, match=r"^int8 needs torchao==0\.18\.0 \(pip install 'bilayer\[int8\]'\); "
                                           r"use compile or eager\.$"):
        make_renderer(renderer, "int8", calibration=torch.zeros(4, 136))


def test_auto_backend_takes_bf16_where_the_cpu_has_it(monkeypatch):
    """auto on a CPU with native bfloat16: bf16 for every length, known or not, with its reason."""
    from bilayer.runtime import backends

    monkeypatch.setattr(backends, "native_bfloat16", lambda: True)
    for frames, estimated in ((None, False), (3, False), (AUTO_INT8_FRAMES, True), (10**6, False)):
        name, why = auto_backend(frames, estimated=estimated)
        assert name == "bf16" and why.startswith("bf16: this CPU computes bfloat16 natively (AVX512-BF16 / AMX), "
                                                 "so bf16 renders about twice as fast as eager with no set-up")


def test_native_bfloat16_reads_the_cpu(monkeypatch):
    """native_bfloat16 follows PyTorch's CPU feature checks (AMX tiles or AVX512-BF16), on x86-64 only."""
    import platform

    from bilayer.hardware import native_bfloat16

    for amx, avx512_bf16, expected in ((True, False, True), (False, True, True), (False, False, False)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        if platform.machine().lower() in ("x86_64", "amd64"):
            assert native_bfloat16() is expected
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert native_bfloat16() is False


def test_cpuinfo_is_read_for_the_name_and_the_features(tmp_path, monkeypatch):
    """read_cpuinfo takes the first processor's model name and flags; cpu_info lists which of CPU_FEATURES it has;
    a file without them (an ARM board's, or none at all) gives the platform's name and no features."""
    from bilayer import hardware

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f amx_bf16 sse\n\n"
                   "processor\t: 1\nmodel name\t: Another\nflags\t\t: fpu\n")
    assert hardware.read_cpuinfo(x86) == ("Some Xeon", {"fpu", "avx2", "avx512f", "amx_bf16", "sse"})
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd\n")
    assert hardware.read_cpuinfo(arm) == (None, set())
    assert hardware.read_cpuinfo(tmp_path / "missing") == (None, set())
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: True)
    assert hardware.cpu_info(x86) == {"cpu": "Some Xeon", "features": ["avx2", "avx512f", "amx_bf16"],
                                      "native_bfloat16": True}
    import platform

    monkeypatch.setattr(platform, "processor", lambda: "")
    assert hardware.cpu_info(arm) == {"cpu": platform.machine(), "features": [], "native_bfloat16": True}


def test_auto_backend_takes_int8_for_long_drivers_where_it_runs(monkeypatch, tmp_path):
    """auto on a CPU without native bfloat16: eager for short or unknown drivers (no set-up), int8 from
    AUTO_INT8_FRAMES on where it can run; each choice comes with its reason."""
    from bilayer.runtime import backends

    monkeypatch.setattr(backends, "native_bfloat16", lambda: False)
    assert auto_backend(None) == ("eager", "eager: the driver's length is unknown (int8 repays its set-up only on "
                                           "long drivers)")
    name, why = auto_backend(AUTO_INT8_FRAMES - 1)
    assert name == "eager" and why.startswith(f"eager: {AUTO_INT8_FRAMES - 1} driver frames; int8 repays")
    name, why = auto_backend(40, estimated=True)  # a video measured by its duration
    assert name == "eager" and why.startswith("eager: about 40 driver frames (from its duration); int8 repays")
    name, why = auto_backend(AUTO_INT8_FRAMES)
    if int8_unavailable() is None:  # this machine: x86-64, a compiler, torchao (the test extras install it)
        assert name == "int8" and why.startswith(f"int8: {AUTO_INT8_FRAMES} driver frames")
        assert auto_backend(AUTO_INT8_FRAMES, estimated=True)[1].startswith(
            f"int8: about {AUTO_INT8_FRAMES} driver frames (from its duration); from {AUTO_INT8_FRAMES} on")
    else:  # pragma: no cover - a machine without one of them
        assert (name, why) == ("eager", f"eager: {int8_unavailable()}")
    # what is missing is named
    import platform
    import sys

    with monkeypatch.context() as m:
        m.setattr(platform, "machine", lambda: "aarch64")
        assert auto_backend(10**6) == ("eager", "eager: int8 needs an x86-64 CPU (oneDNN's x86 kernels), not aarch64")
    if platform.machine().lower() in ("x86_64", "amd64"):
        with monkeypatch.context() as m:  # no compiler: an empty PATH and no CXX
            m.delenv("CXX", raising=False)
            m.setenv("PATH", str(tmp_path))
            assert auto_backend(10**6) == ("eager", "eager: int8 on CPU needs a C++ compiler (g++ or clang++) on PATH")
        if native.compiler():
            with monkeypatch.context() as m:  # torchao not importable
                for module in ["torchao", *(k for k in sys.modules if k.startswith("torchao."))]:
                    m.setitem(sys.modules, module, None)
                assert auto_backend(10**6) == ("eager", "eager: int8 needs torchao==0.18.0 (pip install "
                                                        "'bilayer[int8]')")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 runs on CUDA only")
def test_fp16_on_cuda_is_close(renderer, keypoints, reference):  # pragma: no cover - no GPU in CI
    image, mask = make_renderer(renderer, "fp16", device="cuda")(keypoints)
    assert image.device.type == "cuda" and image.dtype == torch.float32
    assert psnr(image.cpu(), reference[0]) >= 30


def test_fp16_on_cpu_is_refused(renderer):
    with pytest.raises(BackendError, match=r"^fp16 needs a CUDA device; on CPU use bf16\.$"):
        make_renderer(renderer, "fp16")


def test_unknown_backend_names_the_valid_ones(renderer):
    assert issubclass(BackendError, ValueError)
    assert BACKENDS == ("eager", "bf16", "fp16", "compile", "onnx", "int8")
    valid = "valid backends: eager, bf16, fp16, compile, onnx, int8"
    with pytest.raises(BackendError, match=f"unknown backend 'tensorrt'; {valid}"):
        make_renderer(renderer, "tensorrt")


def test_bad_keypoints_and_train_mode_are_refused(renderer):
    r = make_renderer(renderer)
    with pytest.raises(ValueError, match=r"expected \(B, 136\)"):
        r(torch.zeros(2, 68, 2))
    with pytest.raises(BackendError, match="eval mode"):
        make_renderer(copy.deepcopy(renderer).train())
