"""Our weight format (config.json + model.safetensors): exact round trip and one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bilayer import BilayerModel, preset
from bilayer.config import InferenceGeneratorConfig, KeypointsEmbedderConfig
from bilayer.weights import WeightsError, check_state, load_pretrained, save_pretrained

from .conftest import build_model, make_inputs


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def _outputs(model, cfg):
    src, src_kp, masks, tgt_kp = make_inputs(cfg, seed=5)
    with torch.no_grad():
        r = model.eval()(src, src_kp, masks, tgt_kp, enhance=True)
    return r.image, r.mask_logits


@pytest.mark.parametrize("spectral", [True, False], ids=["sn", "no-sn"])
def test_round_trip_is_exact(tmp_path, tiny_config, spectral):
    cfg = tiny_config.replace(spectral_norm=spectral)
    model = build_model(cfg, seed=1, warm=True)  # non-default BN stats and u, v
    out = model.save_pretrained(tmp_path / "avatar")
    assert Path(out) == tmp_path / "avatar"
    files = sorted(p.name for p in (tmp_path / "avatar").iterdir())
    assert files == [".bilayer-folder.json", "config.json", "model.safetensors"]  # the marker: a model folder bilayer wrote
    loaded = BilayerModel.from_pretrained(tmp_path / "avatar")
    assert loaded.config == cfg
    _assert_same_state(model, loaded)
    for a, b in zip(_outputs(model, cfg), _outputs(loaded, cfg)):
        assert torch.equal(a, b)


def test_function_api_and_overwrite(tmp_path, tiny_config):
    first = build_model(tiny_config, seed=1, warm=False)
    second = build_model(tiny_config, seed=2, warm=False)
    save_pretrained(first, tmp_path / "m")
    save_pretrained(second, tmp_path / "m")  # replaces the directory atomically
    _assert_same_state(second, load_pretrained(BilayerModel, tmp_path / "m"))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "m"]
    assert not leftovers, f"staging files left behind: {leftovers}"


def test_safetensors_metadata_holds_the_config(tmp_path, tiny_config):
    from safetensors import safe_open

    build_model(tiny_config, warm=False).save_pretrained(tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "bilayer"
    assert json.loads(meta["config"]) == json.loads((tmp_path / "m" / "config.json").read_text())


def _saved_tiny(tmp_path: Path, tiny_config) -> Path:
    build_model(tiny_config, seed=0, warm=False).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _rewrite_config(directory: Path, **section_changes) -> None:
    data = json.loads((directory / "config.json").read_text())
    for key, value in section_changes.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    (directory / "config.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "changes, tensor_prefix, section",
    [
        (dict(inference=dict(num_channels=8, max_channels=16)), "inference_", "inference"),
        (dict(keypoints=dict(hidden_channels=48)), "keypoints_embedder.", "keypoints"),
        (dict(texture=dict(num_channels=4, max_channels=32)), "texture_", "texture"),
        (dict(enhancer=dict(num_channels=4)), "texture_enhancer.", "enhancer"),
    ],
    ids=["inference", "keypoints", "texture", "enhancer"],
)
def test_weights_from_another_config_name_tensor_and_section(tmp_path, tiny_config, changes, tensor_prefix, section):
    directory = _saved_tiny(tmp_path, tiny_config)
    _rewrite_config(directory, **changes)
    with pytest.raises(WeightsError) as exc:
        BilayerModel.from_pretrained(directory)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "model.safetensors" in msg
    assert f"tensor '{tensor_prefix}" in msg, msg
    assert f"config section '{section}" in msg, msg
    assert "shape" in msg


def test_small_weights_into_medium_inference_at_64px(tmp_path):
    """The paper's model family at 64 px: small and medium differ only in the inference generator."""
    small = preset("small", image_size=64).replace(enhancer=None)
    medium = small.replace(inference=InferenceGeneratorConfig(num_channels=32, max_channels=256))
    model = BilayerModel(small)
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(medium.to_json())
    with pytest.raises(WeightsError, match=r"tensor '(inference_projector|inference_generator|keypoints_embedder)\.[^']+'") as exc:
        BilayerModel.from_pretrained(tmp_path / "m")
    assert "config section '" in str(exc.value)


def test_spectral_norm_mismatch_is_explained(tmp_path, tiny_config):
    directory = _saved_tiny(tmp_path, tiny_config)
    _rewrite_config(directory, spectral_norm=False)
    with pytest.raises(WeightsError, match="spectral_norm"):
        BilayerModel.from_pretrained(directory)


def test_missing_directory(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        BilayerModel.from_pretrained(tmp_path / "absent")


def test_missing_config(tmp_path, tiny_config):
    directory = _saved_tiny(tmp_path, tiny_config)
    (directory / "config.json").unlink()
    with pytest.raises(WeightsError, match="config.json"):
        BilayerModel.from_pretrained(directory)


def test_invalid_config_json(tmp_path, tiny_config):
    directory = _saved_tiny(tmp_path, tiny_config)
    (directory / "config.json").write_text("{ oops")
    with pytest.raises(WeightsError, match="config.json.*not valid JSON"):
        BilayerModel.from_pretrained(directory)


def test_config_with_invalid_value(tmp_path, tiny_config):
    directory = _saved_tiny(tmp_path, tiny_config)
    _rewrite_config(directory, image_size=100)
    with pytest.raises(WeightsError, match="image_size|100"):
        BilayerModel.from_pretrained(directory)


def test_config_with_unknown_field(tmp_path, tiny_config):
    directory = _saved_tiny(tmp_path, tiny_config)
    _rewrite_config(directory, colour="blue")
    with pytest.raises(WeightsError, match="colour"):
        BilayerModel.from_pretrained(directory)


def test_missing_weights_file(tmp_path, tiny_config):
    directory = _saved_tiny(tmp_path, tiny_config)
    (directory / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="model.safetensors.*does not exist"):
        BilayerModel.from_pretrained(directory)


@pytest.mark.parametrize("content", [b"", b"garbage, not safetensors", b"\xff" * 64], ids=["empty", "text", "binary"])
def test_corrupt_weights_file(tmp_path, tiny_config, content):
    directory = _saved_tiny(tmp_path, tiny_config)
    (directory / "model.safetensors").write_bytes(content)
    with pytest.raises(WeightsError) as exc:
        BilayerModel.from_pretrained(directory)
    msg = str(exc.value)
    assert "model.safetensors" in msg and "not a readable safetensors file" in msg
    assert "\n" not in msg


def test_truncated_weights_file(tmp_path, tiny_config):
    directory = _saved_tiny(tmp_path, tiny_config)
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        BilayerModel.from_pretrained(directory)


def test_check_state_missing_and_unexpected(tiny_config):
    model = BilayerModel(tiny_config.replace(enhancer=None))
    state = dict(model.state_dict())
    key = next(iter(state))
    del state[key]
    with pytest.raises(WeightsError, match=r"missing 1 tensor"):
        check_state(model, state, "test")
    state = dict(model.state_dict())
    state["identity_embedder.bogus"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"1 unexpected tensor.*identity_embedder\.bogus"):
        check_state(model, state, "test")
    check_state(model, model.state_dict(), "test")  # no error


def test_weights_error_is_value_error():
    assert issubclass(WeightsError, ValueError)


def test_harmonic_config_round_trip(tmp_path, tiny_config):
    cfg = tiny_config.replace(keypoints=KeypointsEmbedderConfig(hidden_channels=32, num_harmonics=4))
    model = build_model(cfg, seed=3, warm=False)
    model.save_pretrained(tmp_path / "h")
    loaded = BilayerModel.from_pretrained(tmp_path / "h")
    assert loaded.config.keypoints.num_harmonics == 4
    assert loaded.keypoints_embedder.layers[0].in_features == 136 * 2 * 4
    _assert_same_state(model, loaded)

