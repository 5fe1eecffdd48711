"""``bilayer info``: parameter counts (reference §7.4) and MACs per frame (paper Table 2, reference §8.1)."""

from __future__ import annotations

import json

import pytest
import torch

from bilayer import BilayerModel, preset
from bilayer.models import Discriminator

from .conftest import assert_user_error_text, parse_json_stdout, run_cli, run_main

NETWORKS = (
    "identity_embedder", "texture_generator", "keypoints_embedder", "inference_generator", "discriminator",
    "texture_enhancer",
)
# reference §7.4 / §2 (the released networks at 256 px, medium). The released embedder also holds the dead conv2/skip
# of its last decoder block (45,184 parameters), which we omit: still within 0.5 %.
REFERENCE_PARAMS = {
    "identity_embedder": 31_442_304,
    "texture_generator": 55_664_993,
    "keypoints_embedder": 1_219_328,
    "inference_generator": 11_844_068,
    "discriminator": 19_517_633,
    "texture_enhancer": 2_715_331,
}
PAPER_MACS = {"small": 1.08e9, "medium": 4.32e9, "large": 17.3e9}


def _info_in_process(capsys, *args: str) -> tuple[int, str, str]:
    from bilayer.cli import main

    return run_main(main, capsys, "info", *args)


def _info_json(capsys, *args: str) -> dict:
    code, out, err = _info_in_process(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _module_counts(config) -> dict[str, int]:
    """Parameter counts straight from the modules. Built without spectral norm, which is 30× faster on the meta device
    and changes no count: its original weight is the one parameter, u and v are buffers (test_spectral checks it)."""
    count = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
    config = config.replace(spectral_norm=False)
    with torch.device("meta"):
        model = BilayerModel(config)
        d = config.discriminator
        disc = Discriminator(config.image_size, d.num_channels, d.max_channels, d.num_blocks, d.output_size)
    return {
        "identity_embedder": count(model.identity_embedder),
        "texture_generator": count(model.texture_generator, model.texture_projector),
        "keypoints_embedder": count(model.keypoints_embedder),
        "inference_generator": count(model.inference_generator, model.inference_projector),
        "discriminator": count(disc),
        "texture_enhancer": count(model.texture_enhancer),
    }


def _check_medium_report(report: dict) -> None:
    assert report["preset"] == "medium" and report["image_size"] == 256
    assert set(report["networks"]) == set(NETWORKS)
    for name, expected in REFERENCE_PARAMS.items():
        got = report["networks"][name]["params"]
        assert isinstance(got, int)
        assert abs(got - expected) <= 0.005 * expected, f"{name}: {got:,} vs {expected:,}"
    macs = report["macs_per_frame"]
    assert isinstance(macs, int) and 4.31e9 <= macs <= 4.33e9, f"medium MACs per frame {macs:,}"
    assert report["macs_per_avatar"] > 10 * macs


@pytest.mark.slow
def test_medium_json_via_console_entry_point():
    report = parse_json_stdout(run_cli("info", "--preset", "medium", "--image-size", "256", "--json"))
    _check_medium_report(report)


@pytest.mark.parametrize("name", ["small", "large"])
def test_small_and_large_macs_within_3_percent_of_paper(capsys, name):
    report = _info_json(capsys, "--preset", name)
    macs = report["macs_per_frame"]
    assert abs(macs - PAPER_MACS[name]) <= 0.03 * PAPER_MACS[name], f"{name}: {macs / 1e9:.3f} G"
    # Only the inference generator (and hence the keypoint MLP output) differs from medium.
    assert abs(report["networks"]["texture_generator"]["params"] - REFERENCE_PARAMS["texture_generator"]) <= 0.005 * REFERENCE_PARAMS["texture_generator"]


def test_macs_scale_with_resolution(capsys):
    medium_128 = _info_json(capsys, "--preset", "medium", "--image-size", "128")
    assert medium_128["image_size"] == 128
    # Everything but the (resolution-independent) keypoint MLP scales with the pixel count.
    assert 0.2 * 4.31e9 <= medium_128["macs_per_frame"] <= 0.3 * 4.33e9


def test_parameter_counts_from_modules_medium():
    counts = _module_counts(preset("medium"))
    for name, expected in REFERENCE_PARAMS.items():
        assert abs(counts[name] - expected) <= 0.005 * expected, f"{name}: {counts[name]:,} vs {expected:,}"
    # Exact where nothing is omitted.
    for name in ("texture_generator", "keypoints_embedder", "inference_generator", "discriminator", "texture_enhancer"):
        assert counts[name] == REFERENCE_PARAMS[name], name
    assert REFERENCE_PARAMS["identity_embedder"] - counts["identity_embedder"] == 64 * 64 * 9 + 64 + 128 * 64 + 64


def test_tiny_counts_match_the_modules(capsys):
    report = _info_json(capsys, "--preset", "tiny")
    assert report["image_size"] == 64
    counts = _module_counts(preset("tiny"))
    assert {n: report["networks"][n]["params"] for n in NETWORKS} == counts
    assert 0 < report["macs_per_frame"] < report["macs_per_avatar"]


def test_human_readable_output(capsys):
    report = _info_json(capsys, "--preset", "tiny")
    code, out, err = _info_in_process(capsys, "--preset", "tiny")
    assert code == 0, err
    rows = {parts[0]: parts[1] for parts in map(str.split, out.splitlines()) if parts and parts[0] in NETWORKS}
    for name in NETWORKS:  # the table shows the JSON report's counts
        assert rows[name] == f"{report['networks'][name]['params']:,}", name
    assert f"per frame : {report['macs_per_frame'] / 1e9:8.3f} GMACs" in out
    assert f"per avatar: {report['macs_per_avatar'] / 1e9:8.1f} GMACs" in out


def test_unknown_preset_is_a_user_error(capsys):
    code, out, err = _info_in_process(capsys, "--preset", "huge", "--json")
    line = assert_user_error_text(code, err, "huge")
    for name in ("tiny", "small", "medium", "large"):
        assert name in line


def test_invalid_image_size_is_a_user_error(capsys):
    code, out, err = _info_in_process(capsys, "--preset", "medium", "--image-size", "100", "--json")
    assert_user_error_text(code, err, "100")
    assert out == ""


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["info", "--image-size", "abc"], ["bilayer info: argument --image-size: invalid int value: 'abc'"]),
        ([], ["bilayer: the following arguments are required: COMMAND", "'bilayer --help'"]),
        (["nope"], ["invalid choice: 'nope'", "animate"]),
        (["animate", "--model", "m"], ["bilayer animate: the following arguments are required: --driver, --out",
                                       "'bilayer animate --help'"]),
        (["info", "--bogus"], ["unrecognized arguments: --bogus"]),
    ],
    ids=["bad-int", "no-command", "unknown-command", "missing-options", "unknown-option"],
)
def test_usage_errors_are_one_sentence(capsys, argv, needles):
    """argparse's own errors read like the commands' errors: one line ``error: …``, exit 2, no usage dump."""
    from bilayer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    assert out.out == ""
    line = assert_user_error_text(exc.value.code, out.err, *needles)
    assert exc.value.code == 2 and line.endswith(".") and "usage:" not in out.err


def test_help_is_unchanged(capsys):
    from bilayer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["animate", "--help"])
    out = capsys.readouterr()
    assert exc.value.code == 0 and out.err == ""
    assert out.out.startswith("usage: bilayer animate [-h] --model MODEL") and "--driver DRIVER" in out.out
