"""Released-checkpoint converter (reference §7): export → released files → convert_official → from_pretrained."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch

from bilayer import BilayerModel
from bilayer.compat.official import (
    ConversionError,
    convert_official,
    convert_states,
    export_released_states,
    read_options,
)
from bilayer.models import Discriminator
from bilayer.nn.spectral import fold_reference_weight
from bilayer.weights import load_pretrained, read_safetensors

try:
    from bilayer.cli import main as cli_main
except ImportError:  # the CLI is optional for the library tests
    cli_main = None

from .conftest import assert_user_error_text, build_model, make_inputs, randomize_buffers, rel_err, run_cli, run_main

MAIN = "vc2-hq_adrianb_paper_main"
ENHANCER = "vc2-hq_adrianb_paper_enhancer"
BASE = ("identity_embedder", "texture_generator", "keypoints_embedder", "inference_generator")
ENH_STEPS = 3  # written to the enhancer's args.txt; the converter must pick it up


def _discriminator(config, seed=0):
    torch.manual_seed(seed)
    disc = Discriminator.from_config(config)  # spectral norm: the released format stores weight_orig/u/v
    return randomize_buffers(disc, seed).eval()  # BN stats and u, v off their initial values


def write_runs(root: Path, states: dict[str, dict[str, torch.Tensor]], main_epoch=2225, enh_epoch=1225,
               prefix: str = "") -> Path:
    """The release layout of reference §7.1."""
    main = root / "runs" / MAIN / "checkpoints"
    enh = root / "runs" / ENHANCER / "checkpoints"
    main.mkdir(parents=True, exist_ok=True)
    enh.mkdir(parents=True, exist_ok=True)
    for net, state in states.items():
        folder = enh if net == "texture_enhancer" else main
        epoch = enh_epoch if net == "texture_enhancer" else main_epoch
        torch.save({prefix + k: v for k, v in state.items()}, folder / f"{epoch}_{net}.pth")
    (root / "runs" / ENHANCER / "args.txt").write_text(
        f"enh_unrolling_depth: {ENH_STEPS}\nenh_guiding_rgb_loss_type: sse\nemb_apply_masks: True\neps: 1e-07\n"
        "experiment_name: vc2-hq_adrianb_paper_enhancer\n"
    )
    return root / "runs"


@pytest.fixture(scope="module")
def released(tiny_config):
    model = build_model(tiny_config, seed=11, warm=True)
    disc = _discriminator(tiny_config, seed=12)
    return model, disc, export_released_states(model, disc)


@pytest.fixture(scope="module")
def reference(released, tiny_config):
    """The spectral-normalised model's eval outputs (what every conversion must reproduce)."""
    model, _, _ = released
    return _eval_outputs(model, tiny_config, ENH_STEPS)


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    model, disc, states = released
    root = tmp_path_factory.mktemp("release")
    runs = write_runs(root, states)
    out = root / "converted"
    conv = convert_official(runs, out)
    return conv, out, runs


def _eval_outputs(model, config, steps):
    src, src_kp, masks, tgt_kp = make_inputs(config, seed=21)
    with torch.no_grad():
        state = model.eval().personalize(src, src_kp, masks)
        r = model.render(state, tgt_kp)
        enhanced = model.enhance(state, steps=steps)
        re = model.render(enhanced, tgt_kp)
    return {
        "texture": state.texture, "image": r.image, "lf": r.lf, "hf": r.hf, "uv": r.uv, "mask_logits": r.mask_logits,
        "enh_texture": enhanced.texture, "enh_image": re.image,
    }


def _assert_outputs_match(ours: dict, ref: dict, tol=1e-4):
    for name in ref:
        err = rel_err(ours[name], ref[name])
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol:g}"


# ---------------------------------------------------------------------------------------------- export
def test_export_key_patterns(released, tiny_config):
    """reference §7.3 key names (tiny: 4 generator blocks, enhancer 1 down + 2 bottleneck + 1 up)."""
    _, _, states = released
    assert set(states) == set(BASE) | {"texture_enhancer", "discriminator"}
    emb = states["identity_embedder"]
    for key in ("net.enc.0.weight_orig", "net.enc.0.weight_u", "net.enc.0.weight_v", "net.enc.0.bias",
                "net.enc.1.block_feats.1.weight_orig", "net.enc.1.block.0.weight_orig", "net.enc.1.skip.0.weight_orig",
                "net.dec_blocks.0.block_feats.1.weight_orig"):
        assert key in emb, key
    tex = states["texture_generator"]
    assert tex["gen_tex_input"].shape == (1, 32, 4, 4)
    assert "gen_tex.blocks.0.block_feats.0.running_mean" in tex  # the star BN
    assert "gen_tex.blocks.1.block_feats.0.pixel_feats" in tex
    assert "gen_tex.blocks.0.block_feats.3.weight_orig" in tex  # conv1 after the non-efficient upsample
    assert "gen_tex.blocks.4.pixel_feats" in tex and "gen_tex.heads.0.0.weight_orig" in tex
    assert "prj_tex.fc_blocks.0.0.0.weight_orig" in tex
    kp = states["keypoints_embedder"]
    assert kp["net.mlp.0.weight_orig"].shape == (32, 136) and kp["net.mlp.6.weight_orig"].shape == (16 * 4 * 4, 32)
    assert "frequencies" not in kp
    inf = states["inference_generator"]
    assert inf["identity_grid"].shape == (1, 64, 64, 2)
    assert "gen_inf.blocks.0.block.1.weight_orig" in inf  # efficient: block.0 is the upsample
    assert "gen_inf.blocks.1.block_feats.0.norm_layer.running_mean" in inf
    assert all(f"gen_inf.heads.{i}.0.weight_orig" in inf for i in range(3))
    enh = states["texture_enhancer"]
    assert "net.blocks.0.weight_orig" in enh and "net.blocks.1.skip.0.weight_orig" in enh
    assert "net.blocks.4.skip.1.weight_orig" in enh and "net.blocks.7.weight_orig" in enh
    dis = states["discriminator"]
    assert {"net.first_conv.weight_orig", "net.linear.weight_orig", "net.final_block.0.running_var"} <= set(dis)


def test_export_matches_released_key_set_of_parity_a(released):
    """Same key names and shapes as the authors' code wrote for parity_a (same tiny options), except the embedder's
    dead last decoder block conv2/skip, which the released code builds and we do not."""
    import numpy as np

    from .conftest import PARITY_A

    if not PARITY_A[0].is_file():
        pytest.skip(f"reference parity vector {PARITY_A[0]} not found")
    data = np.load(PARITY_A[0])
    ref: dict[str, dict[str, tuple]] = {}
    for key in data.files:
        if key.startswith("state/"):
            _, net, name = key.split("/", 2)
            ref.setdefault(net, {})[name] = tuple(data[key].shape)
    _, _, states = released
    for net, names in ref.items():
        ours = {k: tuple(v.shape) for k, v in states[net].items()}
        extra_ref = set(names) - set(ours)
        if net == "identity_embedder":
            assert all(k.startswith("net.dec_blocks.3.") and (".block.0." in k or ".skip.0." in k) for k in extra_ref)
        else:
            assert not extra_ref, (net, sorted(extra_ref)[:5])
        assert not set(ours) - set(names), (net, sorted(set(ours) - set(names))[:5])
        assert {k: ours[k] for k in ours} == {k: names[k] for k in ours}, net


def test_export_requires_spectral_norm(tiny_config):
    with pytest.raises(ConversionError, match="spectral_norm"):
        export_released_states(BilayerModel(tiny_config.replace(spectral_norm=False)))


# ------------------------------------------------------------------------------------------ conversion
def test_convert_official_round_trip(converted, reference, tiny_config):
    conv, out, _ = converted
    expected = tiny_config.replace(
        spectral_norm=False, enhancer=dataclasses.replace(tiny_config.enhancer, steps=ENH_STEPS)
    )
    assert conv.config == expected
    assert conv.unexpected == []
    assert "inference_generator/identity_grid" in conv.dropped
    assert sorted((out).iterdir()) == sorted(out / n for n in (".bilayer-folder.json", "config.json", "discriminator.safetensors", "model.safetensors"))
    loaded = BilayerModel.from_pretrained(out)
    assert loaded.config == expected
    _assert_outputs_match(_eval_outputs(loaded, expected, None), reference)


def test_converted_discriminator(converted, released, tiny_config):
    _, out, _ = converted
    _, disc, _ = released
    plain = Discriminator.from_config(tiny_config.replace(spectral_norm=False))
    plain.load_state_dict(read_safetensors(out / "discriminator.safetensors"))
    plain.eval()
    x, s = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, fa = disc(x, s)
        b, fb = plain(x, s)
    assert rel_err(b, a) <= 1e-4
    for ta, tb in zip(fa, fb):
        assert rel_err(tb, ta) <= 1e-4


def test_convert_states_in_memory_equals_files(converted, released):
    conv_files, _, _ = converted
    _, _, states = released
    conv = convert_states(states, {"enh_unrolling_depth": ENH_STEPS})
    assert conv.config == conv_files.config
    assert set(conv.model_state) == set(conv_files.model_state)
    for k, v in conv.model_state.items():
        assert torch.equal(v, conv_files.model_state[k]), k


def test_spectral_norm_is_folded_with_stored_vectors(converted, released):
    """W = weight_orig / (uᵀ W_orig v) with the stored u, v; no new power iteration, no SVD (reference §7.2)."""
    conv, _, _ = converted
    _, _, states = released
    kp = states["keypoints_embedder"]
    expected = fold_reference_weight(kp["net.mlp.2.weight_orig"], kp["net.mlp.2.weight_u"], kp["net.mlp.2.weight_v"])
    assert torch.equal(conv.model_state["keypoints_embedder.layers.1.weight"], expected)
    svd = kp["net.mlp.2.weight_orig"] / torch.linalg.matrix_norm(kp["net.mlp.2.weight_orig"], ord=2)
    assert not torch.allclose(expected, svd, atol=1e-7)  # the vectors are near, not at, convergence


def test_latest_epoch_wins_and_epoch_can_be_chosen(released, tiny_config, tmp_path):
    model, disc, states = released
    other = export_released_states(build_model(tiny_config, seed=99, warm=False))
    runs = write_runs(tmp_path, states)
    torch.save(other["identity_embedder"], runs / MAIN / "checkpoints" / "1000_identity_embedder.pth")
    conv = convert_official(runs, tmp_path / "latest")
    assert conv.sources["identity_embedder"].endswith("2225_identity_embedder.pth")
    assert conv.sources["texture_enhancer"].endswith("1225_texture_enhancer.pth")
    conv = convert_official(runs, tmp_path / "chosen", epoch=2225)
    assert conv.sources["identity_embedder"].endswith("2225_identity_embedder.pth")
    assert conv.sources["texture_enhancer"].endswith("1225_texture_enhancer.pth")  # the enhancer has its own epoch
    with pytest.raises(ConversionError, match="texture_generator"):
        convert_official(runs, tmp_path / "old", epoch=1000)  # only the embedder exists at epoch 1000


def test_data_parallel_prefix_is_stripped(released, tiny_config, tmp_path):
    _, _, states = released
    runs = write_runs(tmp_path, states, prefix="module.")
    conv = convert_official(runs, tmp_path / "out")
    assert conv.unexpected == []


def test_pytorch_10_normalised_weight_buffer(released, reference, tmp_path):
    """PyTorch 1.0.1 stored the normalised ``weight`` next to weight_orig and weight_u, without weight_v."""
    _, _, states = released
    old: dict[str, dict[str, torch.Tensor]] = {}
    for net, state in states.items():
        s = dict(state)
        for key in [k for k in s if k.endswith(".weight_orig")]:
            p = key[: -len("weight_orig")]
            s[p + "weight"] = fold_reference_weight(s[key], s[p + "weight_u"], s[p + "weight_v"])
            del s[p + "weight_v"]
        old[net] = s
    assert not any(k.endswith("weight_v") for s in old.values() for k in s)
    runs = write_runs(tmp_path, old)
    conv = convert_official(runs, tmp_path / "out")
    assert conv.unexpected == []
    loaded = BilayerModel.from_pretrained(tmp_path / "out")
    _assert_outputs_match(_eval_outputs(loaded, loaded.config, None), reference)


def test_plain_weights_without_spectral_norm(released, reference):
    """A checkpoint saved after removing spectral norm (only ``weight``) converts too."""
    _, _, states = released
    plain = {}
    for net, state in states.items():
        s = {}
        for k, v in state.items():
            if k.endswith(".weight_orig"):
                p = k[: -len("weight_orig")]
                s[p + "weight"] = fold_reference_weight(v, state[p + "weight_u"], state[p + "weight_v"])
            elif not k.endswith((".weight_u", ".weight_v")):
                s[k] = v
        plain[net] = s
    conv = convert_states(plain, {"enh_unrolling_depth": ENH_STEPS})
    assert conv.unexpected == []
    loaded = BilayerModel(conv.config)
    loaded.load_state_dict(conv.model_state)
    _assert_outputs_match(_eval_outputs(loaded, conv.config, None), reference)


def test_without_enhancer_and_discriminator(released):
    _, _, states = released
    conv = convert_states({n: states[n] for n in BASE})
    assert conv.config.enhancer is None and conv.discriminator_state is None
    model = BilayerModel(conv.config)
    model.load_state_dict(conv.model_state)
    assert model.texture_enhancer is None


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("network", BASE)
def test_missing_required_network_file(released, tmp_path, network):
    _, _, states = released
    runs = write_runs(tmp_path, {n: s for n, s in states.items() if n != network})
    with pytest.raises(ConversionError) as exc:
        convert_official(runs, tmp_path / "out")
    assert network in str(exc.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("network", BASE)
def test_missing_required_network_in_memory(released, network):
    _, _, states = released
    with pytest.raises(ConversionError, match=network):
        convert_states({n: s for n, s in states.items() if n != network})


def test_unknown_tensor_is_listed_as_unexpected(released):
    _, _, states = released
    patched = dict(states)
    patched["identity_embedder"] = {**states["identity_embedder"], "net.bogus.weight": torch.zeros(3)}
    patched["inference_generator"] = {**states["inference_generator"], "gen_inf.extra_buffer": torch.zeros(2)}
    conv = convert_states(patched)
    assert "identity_embedder/net.bogus.weight" in conv.unexpected
    assert "inference_generator/gen_inf.extra_buffer" in conv.unexpected
    model = BilayerModel(conv.config)
    model.load_state_dict(conv.model_state)  # everything else still converts


@pytest.mark.parametrize(
    "network, key, replacement, match",
    [
        ("inference_generator", "gen_inf.heads.1.0.bias", None, r"inference_generator\.head_lf\.bias"),
        ("keypoints_embedder", "net.mlp.2.bias", torch.zeros(7), r"keypoints_embedder\.layers\.1\.bias.*\(7,\)"),
        ("keypoints_embedder", "net.mlp.4.weight_v", None, r"weight_orig but no weight_u/weight_v"),
    ],
    ids=["missing-tensor", "wrong-shape", "weight-orig-without-vectors"],
)
def test_broken_released_tensor_is_named(released, network, key, replacement, match):
    """One tensor of one network removed (None) or replaced: the error names our tensor (and shape) or the cause."""
    _, _, states = released
    patched = {k: v for k, v in states[network].items() if k != key}
    if replacement is not None:
        patched[key] = replacement
    with pytest.raises(ConversionError, match=match):
        convert_states({**states, network: patched})


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"], ids=["empty", "text", "zip"])
def test_corrupt_pth_names_the_file(released, tmp_path, content):
    _, _, states = released
    runs = write_runs(tmp_path, states)
    bad = runs / MAIN / "checkpoints" / "2225_inference_generator.pth"
    bad.write_bytes(content)
    with pytest.raises(ConversionError) as exc:
        convert_official(runs, tmp_path / "out")
    assert "2225_inference_generator.pth" in str(exc.value)


class _Payload:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("unpickled!",))


def test_pickled_code_is_refused(released, tmp_path):
    _, _, states = released
    runs = write_runs(tmp_path, states)
    bad = runs / MAIN / "checkpoints" / "2225_keypoints_embedder.pth"
    with open(bad, "wb") as f:
        pickle.dump({"net.mlp.0.weight_orig": _Payload()}, f, protocol=2)
    with pytest.raises(ConversionError, match="2225_keypoints_embedder.pth"):
        convert_official(runs, tmp_path / "out")


def test_non_tensor_checkpoint(released, tmp_path):
    _, _, states = released
    runs = write_runs(tmp_path, states)
    torch.save({"epoch": 3, "note": "optimizer"}, runs / MAIN / "checkpoints" / "2225_texture_generator.pth")
    with pytest.raises(ConversionError, match="2225_texture_generator.pth.*flat state dict"):
        convert_official(runs, tmp_path / "out")


def test_runs_dir_must_exist(tmp_path):
    with pytest.raises(ConversionError, match="not a directory"):
        convert_official(tmp_path / "nope", tmp_path / "out")


def test_read_options(tmp_path):
    path = tmp_path / "args.txt"
    path.write_text("num_epochs: 1000\nlr: 2e-4\nflag: True\noff: False\nname: vc2: hq\nnoise line\n")
    assert read_options(path) == {"num_epochs": 1000, "lr": 2e-4, "flag": True, "off": False, "name": "vc2: hq"}


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_convert_official(converted, released, tmp_path):
    conv, _, runs = converted
    proc = run_cli("convert-official", str(runs), "--out", str(tmp_path / "cli"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    loaded = load_pretrained(BilayerModel, tmp_path / "cli")
    assert loaded.config == conv.config
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, conv.model_state[k]), k
    disc = read_safetensors(tmp_path / "cli" / "discriminator.safetensors")
    assert disc.keys() == conv.discriminator_state.keys()
    for k, v in disc.items():
        assert torch.equal(v, conv.discriminator_state[k]), k


def test_cli_convert_official_epoch(converted, tmp_path, capsys):
    conv, _, runs = converted
    code, out, err = run_main(cli_main, capsys, "convert-official", str(runs), "--out", str(tmp_path / "cli"), "--epoch", "2225")
    assert code == 0, err
    loaded = load_pretrained(BilayerModel, tmp_path / "cli")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, conv.model_state[k]), k
    assert "2225_identity_embedder.pth" in out


def test_cli_convert_official_missing_dir(tmp_path, capsys):
    code, _, err = run_main(cli_main, capsys, "convert-official", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert_user_error_text(code, err, "nope")


def test_cli_convert_official_corrupt_file(released, tmp_path, capsys):
    _, _, states = released
    runs = write_runs(tmp_path / "r", states)
    (runs / MAIN / "checkpoints" / "2225_identity_embedder.pth").write_bytes(b"junk")
    code, _, err = run_main(cli_main, capsys, "convert-official", str(runs), "--out", str(tmp_path / "out"))
    assert_user_error_text(code, err, "2225_identity_embedder.pth")


def test_cli_convert_official_missing_network(released, tmp_path, capsys):
    _, _, states = released
    runs = write_runs(tmp_path / "r", {n: s for n, s in states.items() if n != "keypoints_embedder"})
    code, _, err = run_main(cli_main, capsys, "convert-official", str(runs), "--out", str(tmp_path / "out"))
    assert_user_error_text(code, err, "keypoints_embedder")


def test_cli_convert_official_out_is_a_file(converted, tmp_path, capsys):
    _, _, runs = converted
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = run_main(cli_main, capsys, "convert-official", str(runs), "--out", str(target))
    assert_user_error_text(code, err, "file.txt")
    assert target.read_text() == "keep me"
