"""Configuration: presets, derived values (reference §2), validation and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from bilayer import PRESETS, BilayerConfig, ConfigError, preset
from bilayer.config import EnhancerConfig, InferenceGeneratorConfig, KeypointsEmbedderConfig


def test_presets_are_the_paper_family():
    assert set(PRESETS) == {"tiny", "small", "medium", "large"}
    assert (PRESETS["small"].inference.num_channels, PRESETS["small"].inference.max_channels) == (16, 128)
    assert (PRESETS["medium"].inference.num_channels, PRESETS["medium"].inference.max_channels) == (32, 256)
    assert (PRESETS["large"].inference.num_channels, PRESETS["large"].inference.max_channels) == (64, 512)
    for name in ("small", "medium", "large"):
        cfg = PRESETS[name]
        assert cfg.image_size == 256
        # Only the inference generator differs between the paper's three models.
        assert dataclasses.replace(cfg, inference=PRESETS["medium"].inference) == PRESETS["medium"]
    assert PRESETS["tiny"].image_size == 64


def test_medium_derived_values_match_the_released_code():
    cfg = preset("medium")
    assert cfg.num_generator_blocks == 6
    assert cfg.pose_dim == 136
    assert cfg.embedder_encoder_channels == (64, 128, 256, 512, 512, 512)  # reference §2.2
    assert cfg.embed_channels == (512, 512, 512, 256, 128, 64)
    assert cfg.texture_channels == (512, 512, 512, 256, 128, 64)  # reference §2.3
    assert cfg.inference_channels == (256, 256, 256, 128, 64, 32)  # reference §2.5
    assert cfg.projector_hidden == (512, 512, 512, 512, 256, 128)  # reference §2.6
    assert cfg.eps == 1e-7 and cfg.bn_momentum == 1.0 and cfg.spectral_norm


def test_tiny_matches_parity_a_options():
    cfg = preset("tiny")
    assert cfg.image_size == 64
    assert (cfg.embedder.num_channels, cfg.embedder.max_channels) == (8, 32)
    assert (cfg.texture.num_channels, cfg.texture.max_channels) == (8, 32)
    assert (cfg.inference.num_channels, cfg.inference.max_channels) == (4, 16)
    assert cfg.keypoints.hidden_channels == 32 and cfg.keypoints.num_harmonics == 0
    e = cfg.enhancer
    assert (e.num_channels, e.max_channels, e.bottleneck_size, e.num_blocks, e.steps) == (8, 16, 32, 2, 4)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip_every_preset(name):
    cfg = preset(name)
    text = cfg.to_json()
    json.loads(text)  # valid JSON
    back = BilayerConfig.from_json(text)
    assert back == cfg
    assert back.to_json() == text


@pytest.mark.parametrize(
    "cfg",
    [
        preset("medium", image_size=128),
        preset("tiny").replace(enhancer=None),
        preset("tiny").replace(keypoints=KeypointsEmbedderConfig(hidden_channels=32, num_harmonics=4)),
        preset("tiny").replace(spectral_norm=False, eps=1e-5),
    ],
    ids=["medium-128", "no-enhancer", "harmonics", "no-sn"],
)
def test_json_round_trip_variants(cfg):
    back = BilayerConfig.from_json(cfg.to_json())
    assert back == cfg
    assert isinstance(back.inference, InferenceGeneratorConfig)
    assert back.enhancer is None or isinstance(back.enhancer, EnhancerConfig)


def test_load_from_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(preset("small").to_json())
    assert BilayerConfig.load(path) == preset("small")


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        BilayerConfig.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BilayerConfig.load(bad)
    binary = tmp_path / "weights.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"weights\.json is not a UTF-8 text file \(expected JSON\)\.$"):
        BilayerConfig.load(binary)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError) as exc:
        preset("huge")
    msg = str(exc.value)
    assert "huge" in msg
    for name in PRESETS:
        assert name in msg


def test_unknown_top_level_field_rejected():
    data = preset("tiny").to_dict()
    data["image_sise"] = 64
    with pytest.raises(ConfigError, match="image_sise"):
        BilayerConfig.from_dict(data)


def test_unknown_section_field_rejected():
    data = preset("tiny").to_dict()
    data["inference"]["num_chanels"] = 8
    with pytest.raises(ConfigError) as exc:
        BilayerConfig.from_json(json.dumps(data))
    assert "num_chanels" in str(exc.value) and "inference" in str(exc.value)


@pytest.mark.parametrize("size", [100, 96, 48, 16, 2048])
def test_invalid_image_size(size):
    with pytest.raises(ConfigError):
        preset("tiny", image_size=size)
    with pytest.raises(ConfigError):
        BilayerConfig(image_size=size)


def test_invalid_image_size_message_names_the_value():
    with pytest.raises(ConfigError, match="100"):
        BilayerConfig(image_size=100)


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_configs_are_frozen_and_replace_validates():
    cfg = preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.image_size = 128  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.inference.num_channels = 8  # type: ignore[misc]
    with pytest.raises(ConfigError):
        cfg.replace(image_size=100)
    assert cfg.replace(image_size=128).image_size == 128
    assert cfg.image_size == 64


@pytest.mark.parametrize("size", [64, 128, 256, 512])
def test_preset_at_other_sizes(size):
    cfg = preset("medium", image_size=size)
    assert cfg.image_size == size
    assert 2 ** cfg.num_generator_blocks * cfg.inference.input_size == size
    assert len(cfg.embed_channels) == len(cfg.inference_channels) == cfg.num_generator_blocks
    assert cfg.enhancer.bottleneck_size == size // 2  # the same fraction as 128 of 256


@pytest.mark.parametrize(
    "changes, needle",
    [
        (dict(enhancer=EnhancerConfig(guiding_loss="l2")), "guiding_loss"),
        (dict(enhancer=EnhancerConfig(steps=0)), "steps"),
        (dict(keypoints=KeypointsEmbedderConfig(num_layers=1)), "num_layers"),
        (dict(inference=InferenceGeneratorConfig(num_channels=24, max_channels=256)), "inference"),
    ],
)
def test_invalid_values_name_the_field(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        preset("medium").replace(**changes)


# ------------------------------------------------------------------------------------------ training config
def test_train_presets_round_trip_through_json(tmp_path):
    from bilayer.train.config import TRAIN_PRESETS, TrainConfig, train_config

    for name, cfg in TRAIN_PRESETS.items():
        path = tmp_path / f"{name}.json"
        path.write_text(cfg.to_json())
        assert TrainConfig.load(path) == cfg, name
        assert train_config(str(path)) == cfg and train_config(name) is cfg
    quick = TRAIN_PRESETS["synth-quick"].losses
    assert (quick.adversarial, quick.feature_matching, quick.vggface) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda d: d.update(stepz=3), ["unknown field(s) ['stepz'] in the training config"]),
        (lambda d: d["losses"].update(adversarail=0.0), ["'adversarail'", "training config section 'losses'"]),
        (lambda d: d["losses"]["warp"].update(rate=1), ["'rate'", "'losses.warp'"]),
        (lambda d: d.update(losses=[1, 2]), ["section 'losses' must be a JSON object"]),
        (lambda d: d["model"]["inference"].update(num_chanels=8), ["'num_chanels'", "model config section 'inference'"]),
        (lambda d: d.update(checkpoint_every=0), ["checkpoint_every is 0", "integer ≥ 1"]),
        (lambda d: d.update(log_every=0), ["log_every is 0"]),
        (lambda d: d.update(micro_batch=-1), ["micro_batch is -1"]),
        (lambda d: d.update(workers=-2), ["workers is -2"]),
        (lambda d: d.update(perceptual_layers=6), ["perceptual_layers is 6", "from 1 to 5"]),
        (lambda d: d.update(perceptual_layer_weights="equal"), ["perceptual_layer_weights is 'equal'"]),
        (lambda d: d.update(steps="many"), ["steps is 'many'"]),
        (lambda d: d.update(lr=0), ["lr is 0", "positive"]),
        (lambda d: d.update(lr="fast"), ["lr is 'fast'"]),
        (lambda d: d.update(betas=0.5), ["betas.json"]),  # a TypeError inside: still one sentence naming the file
        (lambda d: d["losses"].update(vgg19=-1), ["field losses.vgg19 is -1; expected a number ≥ 0."]),
        (lambda d: d["losses"]["warp"].update(every="often"),
         ["field losses.warp.every is 'often'; expected an integer ≥ 0."]),
        (lambda d: d["losses"]["warp"].update(every=2.5), ["field losses.warp.every is 2.5; expected an integer ≥ 0."]),
        (lambda d: d["losses"]["warp"].update(initial=None), ["field losses.warp.initial is None; expected a number"]),
        (lambda d: d["losses"]["warp"].update(decay=-0.9), ["field losses.warp.decay is -0.9; expected a number"]),
        (lambda d: d["losses"]["warp"].update(floor="tiny"), ["field losses.warp.floor is 'tiny'; expected a number"]),
    ],
    ids=["top", "losses", "warp", "losses-type", "model-section", "checkpoint-every", "log-every", "micro-batch",
         "workers", "perceptual-layers", "layer-weights", "steps-type", "lr", "lr-type", "betas-type", "loss-weight",
         "warp-every-type", "warp-every-float", "warp-initial", "warp-decay", "warp-floor"],
)
def test_train_config_file_errors_name_the_field(tmp_path, edit, needles):
    from bilayer.train.config import TRAIN_PRESETS, TrainConfig

    data = TRAIN_PRESETS["tiny"].to_dict()
    edit(data)
    path = tmp_path / "betas.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as exc:
        TrainConfig.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    for needle in needles:
        assert needle in msg, msg


def test_loss_weights_are_numbers_at_least_0(tmp_path):
    """Any pair of adversarial and feature-matching weights ≥ 0 is a valid config, feature matching with adversarial
    0 included (whether its discriminator is a trained one from --init is the training loop's check, see
    tests/test_train.py); negative or non-numeric weights are not."""
    from bilayer.losses import LossWeights
    from bilayer.train.config import TRAIN_PRESETS, TrainConfig

    tiny = TRAIN_PRESETS["tiny"]
    for adversarial, feature_matching in ((0.0, 0.0), (0.5, 10.0), (0.5, 0.0), (0.0, 0.5), (1, 2)):
        losses = LossWeights(adversarial=adversarial, feature_matching=feature_matching)
        assert tiny.replace(losses=losses).losses == losses
    data = tiny.to_dict()
    data["losses"].update(adversarial=0.0, feature_matching=0.5)
    path = tmp_path / "fm-only.json"
    path.write_text(json.dumps(data))
    assert TrainConfig.load(path).losses == LossWeights(adversarial=0.0, feature_matching=0.5)
    for name in ("synth-quick", "paper-base", "paper-enhancer", "tiny"):
        cfg = TRAIN_PRESETS[name]
        assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg, name

    for field, value in (("adversarial", -0.5), ("feature_matching", float("nan")), ("vgg19", "ten"), ("lf_l1", True),
                         ("vggface", None), ("mask_bce", -1e-9)):
        needle = rf"^training config field losses\.{field} is {re.escape(repr(value))}; expected a number ≥ 0\.$"
        with pytest.raises(ConfigError, match=needle):
            tiny.replace(losses=LossWeights(**{field: value}))
    # the warping regulariser's schedule is checked too (a wrong type used to fail mid-run with a TypeError)
    from bilayer.losses import WarpSchedule

    for field, value, expected in (("every", "x", "an integer ≥ 0"), ("every", -1, "an integer ≥ 0"),
                                   ("every", True, "an integer ≥ 0"), ("initial", -10.0, "a number ≥ 0"),
                                   ("decay", "0.9", "a number ≥ 0"), ("floor", float("nan"), "a number ≥ 0")):
        with pytest.raises(ConfigError) as exc:
            tiny.replace(losses=LossWeights(warp=WarpSchedule(**{field: value})))
        assert str(exc.value) == f"training config field losses.warp.{field} is {value!r}; expected {expected}."
    for warp in (WarpSchedule(0.0), WarpSchedule(every=0), WarpSchedule(initial=5, decay=1, every=1, floor=0)):
        assert tiny.replace(losses=LossWeights(warp=warp)).losses.warp == warp


def test_train_cli_bad_config_and_overrides_are_one_line_errors(tmp_path, capsys):
    from bilayer.cli import main
    from bilayer.train.config import TRAIN_PRESETS

    from .conftest import assert_user_error_text, run_main

    data = TRAIN_PRESETS["tiny"].to_dict()
    data["losses"]["adversarail"] = 0.0
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(data))
    common = ["train", "base", "--data", str(tmp_path), "--run", str(tmp_path / "run"), "--no-progress"]
    code, _, err = run_main(main, capsys, *common, "--config", str(path))
    assert_user_error_text(code, err, "cfg.json", "adversarail")
    for flag, value, needle in (("--workers", "-1", "workers is -1"), ("--lr", "0", "lr is 0.0"),
                                ("--micro-batch", "-2", "micro_batch is -2")):
        code, _, err = run_main(main, capsys, *common, "--config", "tiny", flag, value)
        assert_user_error_text(code, err, needle)
    assert not (tmp_path / "run").exists()
