"""ONNX export of the per-frame network, for runtimes without PyTorch (servers, browsers, phones).

Two graphs, both ``opset >= 16`` (the texture warp is a ``GridSample`` node, which entered the default ONNX
domain in opset 16) and both with a dynamic batch dimension:

``export_baked`` — one avatar (paper §A.3): the ``BakedRenderer`` of ``runtime/bake.py``, whose folded weights
and texture are initializers::

    keypoints (B, 136) float32 → image (B, 3, H, W) = LF + warp(texture), mask (B, 1, H, W)

``export_generic`` — any avatar: the keypoints embedder and the inference generator with the avatar's data as
inputs, so one file serves every avatar that ``BilayerModel.personalize`` makes::

    keypoints (N, 136), texture (B, 3, H, W), params.* (B, ...) → image (N, 3, H, W), mask (N, 1, H, W)

  with N = B·t frames in identity-major order (the t frames of avatar 0 first). The adaptive-parameter inputs
  are named after the ``AdaptiveParams`` fields, in ``AdaptiveParams.tensors()`` order, e.g.
  ``params.blocks.0.norm2.gamma`` (B, C), ``params.blocks.0.skip.weight`` (B, C_out, C_in),
  ``params.blocks.1.norm1.beta``, ..., ``params.final_norm.gamma``; ``generic_input_names`` lists them and
  ``generic_inputs(state)`` makes the feed dict. Block 0's first norm is a plain BatchNorm (not an input).

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) is used by default. It writes
exactly the requested opset (16–20) as one self-contained file in well under a second, and the graphs have no
data-dependent control flow (the case it cannot handle). The ``torch.export``-based exporter (PyTorch's
default since 2.9) is available for the baked graph with ``dynamo=True``: same outputs, but it takes seconds
even for the tiny model and implements only opset >= 18, so the opset is raised to at least 18 (ONNX's
version converter has no Resize adapter down to 17). It cannot export the generic graph: its frame count is
a product of two dynamic sizes (N = B·t), which ``torch.export`` cannot express.

``fp16=True`` stores the weights and runs the convolutional body in float16 — for GPUs and phone NPUs — while
the inputs and outputs stay float32: a Cast after the input, and the warp (absolute grid coordinates, which
float16 would round to a few percent of a pixel), the texture and the final composition stay float32 (see
``precision.low_precision``). ONNX Runtime's CPU provider also loads it (it computes in float32 where it has no
float16 kernel), which is only useful for checking.

Every file is written atomically: nothing appears at ``path`` unless the whole export succeeded.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from ..io import write_bytes_atomic
from ..models.bilayer import BilayerModel, identity_grid
from ..nn.image import warp
from ..nn.spectral import remove_spectral_norm
from ..structures import AdaptiveParams, AvatarState
from .precision import Cast, low_precision
from .bake import BakedRenderer, two_step_upsampling

if TYPE_CHECKING:
    import onnx
    import onnxruntime

MIN_OPSET = 16  # GridSample is in the default domain from opset 16
TORCHSCRIPT_MAX_OPSET = 20  # the newest opset the TorchScript exporter writes
OUTPUT_NAMES = ("image", "mask")


class ExportError(ValueError):
    """An export cannot be done as asked (model state, destination, opset); the message says what to change."""


# ------------------------------------------------------------------------------------------------ baked graph
def export_baked(
    renderer: BakedRenderer,
    path: str | os.PathLike,
    *,
    opset: int = 17,
    fp16: bool = False,
    dynamo: bool = False,
    fold_upsampling: bool = False,
) -> Path:
    """Write one avatar's per-frame network as a self-contained ONNX file; returns the path.

    keypoints (B, 136) float32 → image (B, 3, H, W), mask (B, 1, H, W) float32; B is dynamic. The texture and
    every weight are initializers. ``fp16``: float16 weights and body, float32 inputs, outputs and warp.
    ``dynamo``: use the ``torch.export``-based exporter (opset raised to at least 18; see the module docstring).
    ``fold_upsampling``: write each upsampling + 3×3 convolution as one ConvTranspose (``bake.UpsampleConv2d``;
    2.25× fewer multiply-adds). Off by default: ONNX Runtime's CPU ConvTranspose is slower than its Resize + Conv
    at the few channels of the last blocks; GPU runtimes and phones may prefer it on.
    """
    if renderer.training:
        raise ExportError("export_baked needs the renderer in eval mode; call renderer.eval() first.")
    path = _check_destination(path, opset, dynamo)
    module = (low_precision(renderer, torch.float16) if fp16 else copy.deepcopy(renderer).eval()).cpu()
    if not fold_upsampling:
        module = two_step_upsampling(module)
    example = (torch.rand(2, renderer.pose_dim) * 1.6 - 0.8,)
    axes = {"keypoints": {0: "batch"}, "image": {0: "batch"}, "mask": {0: "batch"}}
    proto = _export(module, example, ["keypoints"], axes, opset, dynamo)
    size = renderer.texture.shape[-1]
    _annotate(proto, "baked", size, fp16, ["keypoints"])
    return _write(proto, path)


# ---------------------------------------------------------------------------------------------- generic graph
class GenericRenderer(nn.Module):
    """The per-frame network with the avatar as inputs (the graph ``export_generic`` writes).

    forward(keypoints (N, 136), texture (B, 3, H, W), *params) → (image (N, 3, H, W), mask (N, 1, H, W)),
    ``params`` being the tensors of an ``AdaptiveParams`` for B avatars in ``tensors()`` order and N = B·t.
    Built from spectral-norm-free CPU copies of the model's keypoints embedder and inference generator (the
    model is not modified). With ``dtype`` other than float32 the embedder's MLP and the generator run in ``dtype``
    and the warp and composition in float32, as in ``precision.low_precision``.
    """

    def __init__(self, model: BilayerModel, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dtype = dtype
        self.keypoints_embedder = _plain_copy(model.keypoints_embedder)
        self.inference_generator = _plain_copy(model.inference_generator)
        for norm in self.inference_generator.modules():
            if isinstance(norm, nn.BatchNorm2d) and norm.weight is None:
                # AdaBN has no affine of its own; an explicit identity one (same output) lets the exporter
                # write BatchNormalization even where the channel count is only known at run time (after the
                # reshape in the adaptive skip), which it otherwise refuses.
                norm.weight = nn.Parameter(torch.ones_like(norm.running_mean), requires_grad=False)
                norm.bias = nn.Parameter(torch.zeros_like(norm.running_mean), requires_grad=False)
        self.register_buffer("grid", identity_grid(model.config.image_size))
        self.skeleton = model.params_skeleton()  # the structure that flat inputs are put back into
        self.param_names = param_names(self.skeleton)
        if dtype != torch.float32:
            layers = self.keypoints_embedder.layers.to(dtype)  # the harmonic encoding stays float32
            layers[0] = nn.Sequential(Cast(dtype), layers[0])
            gen = self.inference_generator.to(dtype)
            for name in ("head_uv", "head_lf", "head_mask"):
                setattr(gen, name, nn.Sequential(getattr(gen, name), Cast(torch.float32)))

    def forward(self, keypoints: torch.Tensor, texture: torch.Tensor, *tensors: torch.Tensor):
        if len(tensors) != len(self.param_names):
            raise ValueError(f"GenericRenderer expects {len(self.param_names)} parameter tensors, got {len(tensors)}.")
        flat = iter(tensors)
        params = self.skeleton.map(lambda _: next(flat).to(self.dtype))
        delta_uv, lf, logits = self.inference_generator(self.keypoints_embedder(keypoints), params)
        uv = self.grid + delta_uv.permute(0, 2, 3, 1)
        frames = keypoints.shape[0] // texture.shape[0]
        texture = texture[:, None].expand(-1, frames, -1, -1, -1).flatten(0, 1)  # identity-major, like render
        return lf + warp(texture, uv), torch.sigmoid(logits)


def export_generic(
    model: BilayerModel,
    path: str | os.PathLike,
    *,
    opset: int = 17,
    fp16: bool = False,
) -> Path:
    """Write the avatar-independent per-frame graph (see the module docstring); returns the path.

    Inputs, in order: ``keypoints`` (N, 136), ``texture`` (B, 3, H, W), then ``generic_input_names(model)[2:]``;
    outputs ``image`` and ``mask``; N and B are dynamic with N a multiple of B. The model must be in eval mode
    and is not modified.
    """
    if model.training:
        raise ExportError(
            "export_generic needs the model in eval mode (BatchNorm uses its running statistics); "
            "call model.eval() first."
        )
    path = _check_destination(path, opset, dynamo=False)
    module = GenericRenderer(model, torch.float16 if fp16 else torch.float32).eval()
    avatars, frames, size = 2, 2, model.config.image_size
    params = [t.expand(avatars, *t.shape[1:]).contiguous() for t in module.skeleton.tensors()]
    example = (
        torch.rand(avatars * frames, model.config.pose_dim) * 1.6 - 0.8,
        torch.rand(avatars, 3, size, size) * 2 - 1,
        *params,
    )
    names = ["keypoints", "texture", *module.param_names]
    axes = {name: {0: "avatars"} for name in names[1:]}
    axes.update({name: {0: "frames"} for name in ("keypoints", *OUTPUT_NAMES)})
    proto = _export(module, example, names, axes, opset, dynamo=False)
    _annotate(proto, "generic", size, fp16, names)
    return _write(proto, path)


def param_names(params: AdaptiveParams) -> list[str]:
    """Input names of the adaptive-parameter tensors, in ``params.tensors()`` order: ``params.`` + field path."""
    return [name for name, _ in params.named_tensors()]


def generic_input_names(model: BilayerModel) -> list[str]:
    """Every input of ``export_generic``'s graph, in order: keypoints, texture, then the parameters."""
    return ["keypoints", "texture", *param_names(model.params_skeleton())]


def generic_inputs(state: AvatarState, index: int | None = 0) -> dict[str, np.ndarray]:
    """The feed dict of the generic graph for one avatar of ``state`` (``index``) or all of them (``None``),
    everything but ``keypoints``: ``texture`` and the ``params.*`` tensors, float32, C-contiguous."""
    if index is not None and not 0 <= index < state.batch:
        raise ValueError(f"avatar index {index} is out of range for a state of {state.batch} avatar(s).")
    pick = (lambda t: t) if index is None else (lambda t: t[index : index + 1])
    params = state.inference_params
    tensors = {"texture": pick(state.texture), **dict(zip(param_names(params), map(pick, params.tensors())))}
    return {k: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy()) for k, t in tensors.items()}


# ------------------------------------------------------------------------------------------- running & checks
def onnx_session(
    path: str | os.PathLike, threads: int | None = None, *, providers: list[str] | None = None
) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime session for ``path``: CPU provider unless ``providers`` says otherwise, all graph
    optimisations, ``threads`` intra-op threads (default: ``torch.get_num_threads()``, so both runtimes get
    the same share of the machine), one inter-op thread (the graph is a chain)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])


def check_export(
    path: "str | os.PathLike | onnxruntime.InferenceSession",
    reference_fn: Callable[[torch.Tensor], Any],
    keypoints: torch.Tensor,
    feeds: dict[str, np.ndarray] | None = None,
) -> float:
    """max |ONNX Runtime − PyTorch| over both outputs (image and mask) on ``keypoints`` (N, 136).

    ``reference_fn(keypoints)`` returns ``(image, mask)`` or a ``Render``; its tensors are compared in the
    graph's layout (a Render's (B, t, ...) is flattened to (B·t, ...)). ``feeds``: the other inputs (for the
    generic graph, ``generic_inputs(state)``). ``path`` may also be an open session.
    """
    session = path if hasattr(path, "run") else onnx_session(path)
    feed = {"keypoints": keypoints.detach().to("cpu", torch.float32).numpy(), **(feeds or {})}
    outputs = session.run(list(OUTPUT_NAMES), feed)
    with torch.inference_mode():
        reference = reference_fn(keypoints)
    if hasattr(reference, "image") and hasattr(reference, "mask"):
        reference = (reference.image, reference.mask)
    worst = 0.0
    for name, ours, ref in zip(OUTPUT_NAMES, outputs, reference):
        ref = ref.detach().to("cpu", torch.float64).numpy()
        if ref.size != ours.size:
            raise ValueError(f"check_export: {name} is {ours.shape} in ONNX Runtime but {ref.shape} in the reference.")
        worst = max(worst, float(np.abs(ours.astype(np.float64) - ref.reshape(ours.shape)).max()))
    return worst


# ------------------------------------------------------------------------------------------------- internals
def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ExportError(
            f"ONNX export needs the {name} package; install the export extra: pip install 'bilayer[export]'."
        ) from None


def _check_destination(path: str | os.PathLike, opset: int, dynamo: bool) -> Path:
    if opset < MIN_OPSET:
        raise ExportError(
            f"opset {opset} is too old: the texture warp (GridSample) needs ONNX opset {MIN_OPSET} or newer."
        )
    if not dynamo and opset > TORCHSCRIPT_MAX_OPSET:
        raise ExportError(
            f"opset {opset} is newer than the exporter writes (at most {TORCHSCRIPT_MAX_OPSET}); use --opset "
            f"{TORCHSCRIPT_MAX_OPSET} or lower."
        )
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"cannot write {path}: it is a folder; give a file name such as {path / 'avatar.onnx'}.")
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: the folder {path.parent} does not exist.")
    if not os.access(path.parent, os.W_OK):
        raise ExportError(f"cannot write {path}: the folder {path.parent} is not writable.")
    return path


def _plain_copy(module: nn.Module) -> nn.Module:
    """An eval-mode CPU copy with spectral norm folded into plain weights (the original keeps its parametrization)."""
    return remove_spectral_norm(copy.deepcopy(module)).eval().requires_grad_(False).cpu()


def _export(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
    dynamo: bool,
) -> "onnx.ModelProto":
    """Trace ``module`` into an in-memory ONNX model (nothing is written here)."""
    onnx = _require("onnx")
    kwargs = dict(
        input_names=input_names, output_names=list(OUTPUT_NAMES), opset_version=opset, dynamic_axes=dynamic_axes
    )
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter's deprecation notices (choosing it is deliberate, see the module docstring),
        # and the tracer noting that shape *checks* are recorded as constants.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        if dynamo:
            _require("onnxscript")
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)  # inside torch.export
            batch = torch.export.Dim("batch")
            shapes = {name: {0: batch} for name, axes in dynamic_axes.items() if name in input_names and axes}
            kwargs.update(opset_version=max(opset, 18), dynamic_axes=None, dynamic_shapes=shapes)
            program = torch.onnx.export(module, example, dynamo=True, external_data=False, verbose=False, **kwargs)
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(module, example, buffer, dynamo=False, do_constant_folding=True, **kwargs)
            proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto


def _annotate(proto: "onnx.ModelProto", kind: str, image_size: int, fp16: bool, inputs: list[str]) -> None:
    """Self-description for consumers without this package (read with ``onnx.load(...).metadata_props``)."""
    proto.producer_name = "bilayer"
    proto.doc_string = (
        f"bilayer {kind} per-frame network ({image_size} px, {'float16' if fp16 else 'float32'} body): "
        "keypoints (normalised to [-1, 1]) → image in [-1, 1] (LF + warped texture, not masked) and mask in [0, 1]."
    )
    meta = {
        "bilayer.graph": kind,
        "bilayer.image_size": str(image_size),
        "bilayer.precision": "fp16" if fp16 else "fp32",
        "bilayer.inputs": ",".join(inputs),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _write(proto: "onnx.ModelProto", path: Path) -> Path:
    return write_bytes_atomic(path, proto.SerializeToString())
