"""ONNX export: the baked and the generic per-frame graphs agree with PyTorch in ONNX Runtime (dynamic batch),
the float16 variants load and stay close, files are written atomically, and misuse gets one clear sentence."""

import copy
import os

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bilayer import preset  # noqa: E402
from bilayer.runtime.bake import bake  # noqa: E402
from bilayer.runtime.export import (  # noqa: E402
    ExportError,
    check_export,
    export_baked,
    export_generic,
    generic_input_names,
    generic_inputs,
    onnx_session,
    param_names,
)

from .conftest import build_model, clone_model  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    return build_model(preset("tiny"))


@pytest.fixture(scope="module")
def state(model):
    g = torch.Generator().manual_seed(1)
    size = model.config.image_size
    with torch.no_grad():
        return model.personalize(
            torch.rand(2, 1, 3, size, size, generator=g) * 2 - 1,
            torch.rand(2, 1, 136, generator=g) * 1.6 - 0.8,
            torch.rand(2, 1, 1, size, size, generator=g),
        )


@pytest.fixture(scope="module")
def renderer(model, state):
    return bake(model, state, 0)


@pytest.fixture(scope="module")
def targets():
    return torch.rand(2, 3, 136, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8


@pytest.fixture(scope="module")
def baked_path(renderer, tmp_path_factory):
    return export_baked(renderer, tmp_path_factory.mktemp("baked") / "avatar.onnx")


@pytest.fixture(scope="module")
def generic_path(model, tmp_path_factory):
    return export_generic(model, tmp_path_factory.mktemp("generic") / "generic.onnx")


def _initializers(path):
    return {init.name: init for init in onnx.load(str(path)).graph.initializer}


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


# ------------------------------------------------------------------------------------------------ baked graph
def test_baked_graph_matches_pytorch_for_any_batch(baked_path, renderer, targets):
    session = onnx_session(baked_path)
    for batch in (1, 3):
        assert check_export(session, renderer, targets[0, :batch]) <= TOL
    image, mask = session.run(None, {"keypoints": targets[1].numpy()})
    assert image.shape == (3, 3, 64, 64) and mask.shape == (3, 1, 64, 64)
    assert image.dtype == mask.dtype == np.float32


def test_baked_graph_is_one_self_contained_file(baked_path, renderer):
    proto = onnx.load(str(baked_path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 16
    assert "GridSample" in {node.op_type for node in proto.graph.node}
    inits = _initializers(baked_path)
    texture = onnx.numpy_helper.to_array(inits["texture"])
    np.testing.assert_array_equal(texture, renderer.texture.numpy())
    assert [i.name for i in proto.graph.input] == ["keypoints"]
    assert _dims(proto.graph.input[0]) == ["batch", 136]
    assert [o.name for o in proto.graph.output] == ["image", "mask"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["bilayer.graph"] == "baked" and meta["bilayer.image_size"] == "64"
    assert os.listdir(baked_path.parent) == [baked_path.name]  # no external data, no temporary file


def test_baked_export_does_not_touch_the_renderer(renderer, targets, tmp_path):
    before = {k: v.clone() for k, v in renderer.state_dict().items()}
    export_baked(renderer, tmp_path / "a.onnx", fp16=True)
    after = renderer.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)


# ---------------------------------------------------------------------------------------------- generic graph
def test_generic_graph_matches_render(generic_path, model, state, targets):
    session = onnx_session(generic_path)
    with torch.no_grad():
        reference = model.render(state, targets)  # (2 avatars, 3 frames)
    # All avatars: N = B·t frames, identity-major.
    feeds = generic_inputs(state, None)
    assert check_export(session, lambda k: reference, targets.flatten(0, 1), feeds) <= TOL
    # One avatar, another frame count than the export example.
    one = lambda k: (reference.image[1, :2], reference.mask[1, :2])  # noqa: E731
    assert check_export(session, one, targets[1, :2], generic_inputs(state, 1)) <= TOL


def test_generic_inputs_are_named_after_the_adaptive_params(generic_path, model, state):
    proto = onnx.load(str(generic_path))
    names = [i.name for i in proto.graph.input]
    assert names == generic_input_names(model)
    assert names[:2] == ["keypoints", "texture"]
    assert names[2:] == param_names(state.inference_params)
    assert "params.blocks.0.norm2.gamma" in names and "params.final_norm.beta" in names
    assert "params.blocks.0.norm1.gamma" not in names  # block 0's first norm is a plain BatchNorm
    feeds = generic_inputs(state, None)
    assert list(feeds) == names[1:]
    for name, tensor in zip(names[2:], state.inference_params.tensors()):
        assert feeds[name].shape == tuple(tensor.shape) and feeds[name].dtype == np.float32
    by_name = {i.name: _dims(i) for i in proto.graph.input}
    assert by_name["keypoints"] == ["frames", 136] and by_name["texture"] == ["avatars", 3, 64, 64]
    assert generic_inputs(state, 0)["texture"].shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="out of range"):
        generic_inputs(state, 2)


def test_generic_export_leaves_spectral_norm_on_the_model(model, tmp_path):
    from bilayer.nn.spectral import has_spectral_norm

    export_generic(model, tmp_path / "g.onnx")
    assert has_spectral_norm(model.inference_generator) and has_spectral_norm(model.keypoints_embedder)


# ------------------------------------------------------------------------------------------------------ fp16
def _fp16_checks(path):
    inits = _initializers(path)
    conv_weights = [v for k, v in inits.items() if k.endswith("weight")]
    assert conv_weights and all(v.data_type == onnx.TensorProto.FLOAT16 for v in conv_weights)
    proto = onnx.load(str(path))
    elem = lambda v: v.type.tensor_type.elem_type  # noqa: E731
    assert all(elem(v) == onnx.TensorProto.FLOAT for v in [*proto.graph.input, *proto.graph.output])
    assert {p.key: p.value for p in proto.metadata_props}["bilayer.precision"] == "fp16"


def test_fp16_baked_loads_on_cpu_and_is_close(renderer, targets, tmp_path):
    path = export_baked(renderer, tmp_path / "half.onnx", fp16=True)
    _fp16_checks(path)
    assert _initializers(path)["texture"].data_type == onnx.TensorProto.FLOAT  # the warp runs in float32
    image, mask = onnx_session(path).run(None, {"keypoints": targets[0].numpy()})
    assert image.dtype == np.float32
    with torch.no_grad():
        ref_image, ref_mask = renderer(targets[0])
    assert np.abs(image - ref_image.numpy()).mean() < 2e-2
    assert np.abs(mask - ref_mask.numpy()).mean() < 2e-2
    assert check_export(path, renderer, targets[0]) < 5e-2


def test_fp16_generic_loads_on_cpu_and_is_close(model, state, targets, tmp_path):
    path = export_generic(model, tmp_path / "half.onnx", fp16=True)
    _fp16_checks(path)
    feeds = {"keypoints": targets.flatten(0, 1).numpy(), **generic_inputs(state, None)}
    image, _ = onnx_session(path).run(None, feeds)
    with torch.no_grad():
        reference = model.render(state, targets).image.flatten(0, 1).numpy()
    assert np.abs(image - reference).mean() < 2e-2


# ----------------------------------------------------------------------------------- atomic writes and errors
def test_failed_export_leaves_no_file(renderer, tmp_path, monkeypatch):
    import bilayer.io

    target = tmp_path / "avatar.onnx"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bilayer.io.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export_baked(renderer, target)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_the_previous_file(renderer, tmp_path, monkeypatch):
    import bilayer.runtime.export as export

    target = tmp_path / "avatar.onnx"
    target.write_bytes(b"previous")

    def fail(*args, **kwargs):
        raise RuntimeError("tracing failed")

    monkeypatch.setattr(export.torch.onnx, "export", fail)
    with pytest.raises(RuntimeError, match="tracing failed"):
        export_baked(renderer, target)
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]


def test_errors_are_one_clear_sentence(model, renderer, tmp_path):
    assert issubclass(ExportError, ValueError)
    with pytest.raises(ExportError, match=r"does not exist\.$"):
        export_baked(renderer, tmp_path / "missing" / "avatar.onnx")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ExportError, match="it is a folder"):
        export_baked(renderer, tmp_path)
    with pytest.raises(ExportError, match=r"opset 15 is too old: .* opset 16 or newer\."):
        export_baked(renderer, tmp_path / "a.onnx", opset=15)
    with pytest.raises(ExportError, match="opset 21 is newer"):
        export_generic(model, tmp_path / "a.onnx", opset=21)
    with pytest.raises(ExportError, match="eval mode"):
        export_generic(clone_model(model).train(), tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="eval mode"):
        export_baked(copy.deepcopy(renderer).train(), tmp_path / "a.onnx")
    assert list(tmp_path.iterdir()) == []


def test_check_export_refuses_mismatched_reference(baked_path, renderer, targets):
    with pytest.raises(ValueError, match="image is"):
        check_export(baked_path, lambda k: renderer(k[:1]), targets[0])


def test_opset_16_is_enough(renderer, targets, tmp_path):
    path = export_baked(renderer, tmp_path / "a.onnx", opset=16)
    assert onnx.load(str(path)).opset_import[0].version == 16
    assert check_export(path, renderer, targets[0]) <= TOL


@pytest.mark.slow  # torch.export tracing takes ~6-8 s even for the tiny model
def test_dynamo_exporter_writes_an_equivalent_baked_graph(renderer, targets, tmp_path):
    path = export_baked(renderer, tmp_path / "dynamo.onnx", dynamo=True)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 18 and "GridSample" in {n.op_type for n in proto.graph.node}
    assert os.listdir(tmp_path) == ["dynamo.onnx"]  # external data inlined
    session = onnx_session(path)
    for batch in (1, 3):
        assert check_export(session, renderer, targets[0, :batch]) <= TOL


def test_harmonic_and_non_efficient_configs_export(tmp_path):
    """The other per-frame variants: harmonic keypoint encoding (Sin/Cos) and upsampling before conv1."""
    from bilayer.config import InferenceGeneratorConfig, KeypointsEmbedderConfig

    config = preset("tiny").replace(
        keypoints=KeypointsEmbedderConfig(hidden_channels=32, num_harmonics=4),
        inference=InferenceGeneratorConfig(num_channels=4, max_channels=16, efficient_upsampling=False),
    )
    model = build_model(config)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        state = model.personalize(
            torch.rand(1, 1, 3, 64, 64, generator=g) * 2 - 1,
            torch.rand(1, 1, 136, generator=g) * 1.6 - 0.8,
            torch.rand(1, 1, 1, 64, 64, generator=g),
        )
        targets = torch.rand(1, 2, 136, generator=g) * 1.6 - 0.8
        reference = model.render(state, targets)
    renderer = bake(model, state)
    assert check_export(export_baked(renderer, tmp_path / "b.onnx"), renderer, targets[0]) <= TOL
    generic = export_generic(model, tmp_path / "g.onnx")
    assert check_export(generic, lambda k: reference, targets[0], generic_inputs(state)) <= TOL
    assert "Sin" in {n.op_type for n in onnx.load(str(generic)).graph.node}
    session = onnx_session(export_baked(renderer, tmp_path / "h.onnx", fp16=True), threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    with torch.no_grad():
        image = renderer(targets[0])[0].numpy()
    assert np.abs(session.run(None, {"keypoints": targets[0].numpy()})[0] - image).mean() < 2e-2


def test_folded_upsampling_export_matches_pytorch(renderer, targets, tmp_path):
    """--fold-upsampling writes ConvTranspose nodes instead of Resize + Conv, with the same outputs."""
    default_ops = {node.op_type for node in onnx.load(str(export_baked(renderer, tmp_path / "a.onnx"))).graph.node}
    path = export_baked(renderer, tmp_path / "folded.onnx", fold_upsampling=True)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "ConvTranspose" not in default_ops and "Resize" in default_ops
    assert ops.count("ConvTranspose") == len(renderer.blocks)
    assert check_export(path, renderer, targets[0]) <= TOL
    from bilayer.runtime.bake import TwoStepUpsampleConv2d, UpsampleConv2d

    folded = [layer for layer in renderer.modules() if isinstance(layer, UpsampleConv2d)]
    assert len(folded) == len(renderer.blocks)  # the caller's renderer keeps its folded form
    assert not any(isinstance(layer, TwoStepUpsampleConv2d) for layer in renderer.modules())
