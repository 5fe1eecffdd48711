"""Numerical parity (``python -m bilayer.compat.parity``) with the authors' networks and with vectors we write
ourselves for configurations the authors never shipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bilayer import preset
from bilayer.compat import parity
from bilayer.compat.parity import compare, random_inputs, write_vector
from bilayer.config import (
    EmbedderConfig,
    EnhancerConfig,
    InferenceGeneratorConfig,
    KeypointsEmbedderConfig,
    TextureGeneratorConfig,
)
from bilayer.models import Discriminator

from .conftest import PARITY_A, build_model, randomize_buffers, requires_parity_a, run_module

README_OUTPUTS = {
    "pred_tex_hf_rgbs", "target_pose_embeds", "pred_target_uvs", "pred_target_delta_lf_rgbs",
    "pred_target_delta_hf_rgbs", "pred_target_imgs", "pred_source_uvs", "pred_source_delta_lf_rgbs",
    "pred_source_segs", "pred_enh_tex_hf_rgbs", "pred_enh_target_imgs",
}


# --------------------------------------------------------------------------------------------- parity_a
@requires_parity_a()
def test_parity_a_cli_exits_0():
    proc = run_module("bilayer.compat.parity", *map(str, PARITY_A))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "FAIL" not in proc.stdout
    assert "within" in proc.stdout.splitlines()[-1]


@requires_parity_a()
def test_parity_a_every_output_within_tolerance():
    results = dict(compare(*PARITY_A))
    assert README_OUTPUTS <= set(results), README_OUTPUTS - set(results)
    assert any(name.startswith("source_idt_embeds/") for name in results)
    bad = {name: err for name, err in results.items() if err is None or err > 1e-4}
    assert not bad, bad


# ---------------------------------------------------------------------------------- our own vectors
def _tiny():
    return preset("tiny")


VARIANTS = {
    # name: (config, B, n, t, with discriminator)
    "tiny-n2": (_tiny(), 2, 2, 3, False),
    "tiny-128px": (preset("tiny", image_size=128), 2, 2, 2, False),
    "harmonics": (_tiny().replace(keypoints=KeypointsEmbedderConfig(hidden_channels=32, num_harmonics=4)), 2, 2, 2, False),
    "other-channels-no-enhancer": (
        _tiny().replace(
            embedder=EmbedderConfig(num_channels=16, max_channels=64),
            texture=TextureGeneratorConfig(num_channels=16, max_channels=64, projection_size=16),
            inference=InferenceGeneratorConfig(num_channels=8, max_channels=32, projection_size=8),
            keypoints=KeypointsEmbedderConfig(hidden_channels=24, num_layers=3),
            enhancer=None,
        ),
        2, 1, 2, False,
    ),
    "not-efficient-l1-unmasked": (
        _tiny().replace(
            inference=InferenceGeneratorConfig(num_channels=4, max_channels=16, efficient_upsampling=False),
            embedder=EmbedderConfig(num_channels=8, max_channels=32, apply_masks=False),
            enhancer=EnhancerConfig(num_channels=8, max_channels=16, bottleneck_size=16, num_blocks=1, steps=2, guiding_loss="l1"),
        ),
        1, 3, 1, False,
    ),
    "with-discriminator": (_tiny(), 2, 1, 2, True),
}


def _make_vector(tmp_path, name, seed=0):
    config, b, n, t, with_disc = VARIANTS[name]
    model = build_model(config, seed=seed, warm=True)  # BN running stats and u, v off their initial values
    disc = None
    if with_disc:
        disc = randomize_buffers(Discriminator.from_config(config)).eval()
    inputs = random_inputs(config, b, n, t, torch.Generator().manual_seed(seed + 1))
    npz, js = tmp_path / f"{name}.npz", tmp_path / f"{name}.json"
    write_vector(model, npz, js, inputs, discriminator=disc)
    return npz, js


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    root = tmp_path_factory.mktemp("vectors")
    return {name: _make_vector(root, name, seed=i) for i, name in enumerate(VARIANTS)}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_generated_vector_passes(vectors, name, capsys):
    npz, js = vectors[name]
    code = parity.main([str(npz), str(js)])
    out = capsys.readouterr().out
    assert code == 0, out
    config = VARIANTS[name][0]
    reported = {line.split()[0] for line in out.splitlines()[:-1]}
    assert {"pred_target_imgs", "pred_source_segs", "source_idt_embeds/0"} <= reported
    assert ("pred_enh_target_imgs" in reported) == (config.enhancer is not None)


def test_generated_vector_contents(vectors):
    npz, js = vectors["harmonics"]
    data = np.load(npz)
    assert data["state/keypoints_embedder/net.mlp.0.weight_orig"].shape == (32, 136 * 2 * 4)
    assert data["state/keypoints_embedder/frequencies"].shape == (1, 1, 4)
    assert data["output/pred_target_imgs"].shape == (2, 2, 3, 64, 64)
    assert data["output/pred_source_uvs"].shape == (2, 2, 64, 64, 2)
    options = json.loads(js.read_text())
    assert options["pse_use_harmonic_enc"] is True and options["pse_num_harmonics"] == 4
    npz, _ = vectors["tiny-128px"]
    assert np.load(npz)["output/pred_tex_hf_rgbs"].shape == (2, 1, 3, 128, 128)


# ---------------------------------------------------------------------------------------- tampering
def _rewrite(npz, out, edit):
    data = dict(np.load(npz))
    edit(data)
    np.savez(out, **data)
    return out


def _relative_noise(arr: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (arr + amount * np.abs(arr).max() * rng.choice([-1.0, 1.0], size=arr.shape)).astype(arr.dtype)


@pytest.mark.parametrize("output", ["pred_target_imgs", "source_idt_embeds/0"])
def test_tampered_output_fails(vectors, tmp_path, output, capsys):
    npz, js = vectors["tiny-n2"]
    key = f"output/{output}"

    def edit(data):
        data[key] = _relative_noise(data[key], 1e-2)

    bad = _rewrite(npz, tmp_path / "bad.npz", edit)
    assert parity.main([str(bad), str(js)]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(output + " ")]
    assert len(lines) == 1 and lines[0].endswith("FAIL"), lines


def test_small_noise_below_tolerance_passes(vectors, tmp_path, capsys):
    npz, js = vectors["tiny-n2"]

    def edit(data):
        data["output/pred_target_imgs"] = _relative_noise(data["output/pred_target_imgs"], 1e-6)

    ok = _rewrite(npz, tmp_path / "ok.npz", edit)
    assert parity.main([str(ok), str(js)]) == 0, capsys.readouterr().out


def test_tampered_spectral_vector_fails(vectors, tmp_path, capsys):
    """σ must come from the stored u, v: changing u changes every output downstream of that layer."""
    npz, js = vectors["tiny-n2"]
    key = "state/keypoints_embedder/net.mlp.2.weight_u"

    def edit(data):
        u = data[key] + np.float32(0.3)
        data[key] = (u / np.linalg.norm(u)).astype(np.float32)

    bad = _rewrite(npz, tmp_path / "bad.npz", edit)
    assert parity.main([str(bad), str(js)]) == 1
    failed = {ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.endswith("FAIL")}
    assert "target_pose_embeds" in failed and "pred_target_imgs" in failed
    assert not any(name.startswith("source_idt_embeds") for name in failed)  # the embedder is untouched


def test_unproduced_output_fails(vectors, tmp_path, capsys):
    npz, js = vectors["tiny-n2"]

    def edit(data):
        data["output/not_a_real_output"] = np.zeros(3, np.float32)

    bad = _rewrite(npz, tmp_path / "bad.npz", edit)
    assert parity.main([str(bad), str(js)]) == 1
    assert "not_a_real_output" in capsys.readouterr().out


def test_missing_input_is_an_error(vectors, tmp_path, capsys):
    npz, js = vectors["tiny-n2"]
    bad = _rewrite(npz, tmp_path / "bad.npz", lambda data: data.pop("input/source_imgs"))
    code = parity.main([str(bad), str(js)])
    assert code not in (0, 1)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "source_imgs" in err


def test_unreadable_vector_is_an_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    code = parity.main([str(bad)])
    assert code not in (0, 1)
    assert capsys.readouterr().err.startswith("error: ")


def test_write_vector_leaves_model_usable(tmp_path):
    """write_vector puts the model in eval mode and must not alter its weights."""
    config = _tiny()
    model = build_model(config, seed=5, warm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    write_vector(model, tmp_path / "v.npz", tmp_path / "v.json", random_inputs(config, 1, 1, 1, torch.Generator().manual_seed(0)))
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
