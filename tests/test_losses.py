"""Loss terms against values computed by hand (NumPy) on tiny tensors (paper eq. 2–14, reference §3).

Expected numbers are never produced by the code under test: NumPy re-derives every formula from reference §3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bilayer.losses import GeneratorObjective, GeneratorTerms, LossWeights, PerceptualLoss, WarpSchedule
from bilayer.losses import adversarial, discriminator_objective
from bilayer.losses.perceptual import RELEASED_LAYER_WEIGHTS
from bilayer.losses.pixelwise import lf_l1_loss, mask_bce_loss, warp_regulariser

from .conftest import rel_err


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


# ============================================================================================ adversarial
# Score maps (N=2, 1, 2, 2) chosen so that some hinge terms are active and some are clipped to zero.
REAL = [[[[0.5, 2.5], [-1.0, 0.25]]], [[[1.75, -0.5], [3.0, 0.0]]]]
FAKE = [[[[-0.75, 1.5], [0.1, -2.5]]], [[[0.6, -0.2], [2.2, -1.4]]]]


def _hinge_d(r: np.ndarray, f: np.ndarray) -> float:
    return _relu(1 - (r - f.mean())).mean() + _relu(1 + (f - r.mean())).mean()


def _hinge_g(r: np.ndarray, f: np.ndarray) -> float:
    return _relu(1 - (f - r.mean())).mean() + _relu(1 + (r - f.mean())).mean()


def test_relativistic_hinge_discriminator_loss_by_hand():
    r = torch.tensor(REAL, dtype=torch.float64, requires_grad=True)
    f = torch.tensor(FAKE, dtype=torch.float64, requires_grad=True)
    loss = adversarial.discriminator_loss(r, f)
    rn, fn = np.array(REAL), np.array(FAKE)
    # written out term by term: mean over all 8 entries of each hinge
    expected = sum(max(0.0, 1 - (x - fn.mean())) for x in rn.ravel()) / 8 + sum(
        max(0.0, 1 + (y - rn.mean())) for y in fn.ravel()
    ) / 8
    assert expected == pytest.approx(_hinge_d(rn, fn), abs=1e-12)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # both sides receive gradients in the D loss
    loss.backward()
    assert r.grad is not None and f.grad is not None
    # d/dr_i: −1/N·[1 − (r_i − mf) > 0] + Σ_j (−1/N)(1/N)·[1 + (f_j − mr) > 0]
    n = rn.size
    active_r = (1 - (rn - fn.mean()) > 0).astype(float)
    active_f = (1 + (fn - rn.mean()) > 0).astype(float)
    grad_r = -active_r / n - active_f.sum() / n / n
    grad_f = active_f / n + active_r.sum() / n / n
    np.testing.assert_allclose(_np(r.grad), grad_r, atol=1e-12)
    np.testing.assert_allclose(_np(f.grad), grad_f, atol=1e-12)


def test_relativistic_hinge_generator_loss_by_hand_and_real_is_detached():
    r = torch.tensor(REAL, dtype=torch.float64, requires_grad=True)
    f = torch.tensor(FAKE, dtype=torch.float64, requires_grad=True)
    loss = adversarial.generator_loss(r, f)
    rn, fn = np.array(REAL), np.array(FAKE)
    expected = _hinge_g(rn, fn)
    assert expected != pytest.approx(_hinge_d(rn, fn))  # the two formulas differ on these scores
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    assert r.grad is None, "the generator loss must not send gradients to the real scores"
    n = fn.size
    active_f = (1 - (fn - rn.mean()) > 0).astype(float)
    active_r = (1 + (rn - fn.mean()) > 0).astype(float)
    grad_f = -active_f / n - active_r.sum() / n / n
    np.testing.assert_allclose(_np(f.grad), grad_f, atol=1e-12)


def test_feature_matching_is_block_average_of_mean_l1_with_real_detached():
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 4, 4), (2, 5, 2, 2), (2, 7, 1, 1)]
    fake = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
    real = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
    loss = adversarial.feature_matching_loss(fake, real)
    per_block = [np.abs(_np(a) - _np(b)).mean() for a, b in zip(fake, real)]
    # an average over blocks, not over all elements pooled together
    pooled = np.abs(np.concatenate([(_np(a) - _np(b)).ravel() for a, b in zip(fake, real)])).mean()
    assert np.mean(per_block) != pytest.approx(pooled)
    assert loss.item() == pytest.approx(np.mean(per_block), abs=1e-12)
    loss.backward()
    assert all(r.grad is None for r in real)
    for a, b in zip(fake, real):
        np.testing.assert_allclose(_np(a.grad), np.sign(_np(a) - _np(b)) / a.numel() / len(shapes), atol=1e-12)


# ============================================================================================ pixel-wise
def test_lf_l1_by_hand():
    lf = torch.tensor([[[[0.5, -1.0], [0.25, 0.0]]]])
    target = torch.tensor([[[[-0.5, -1.0], [1.0, 0.5]]]])
    assert lf_l1_loss(lf, target).item() == pytest.approx((1.0 + 0.0 + 0.75 + 0.5) / 4)


def test_mask_bce_with_logits_by_hand_soft_targets():
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 30.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 0.25], [0.5, 0.0]]]], dtype=torch.float64)
    x, z = _np(logits).ravel(), _np(target).ravel()
    p = 1 / (1 + np.exp(-x))
    # −[z log p + (1 − z) log(1 − p)]; the last entry (x = 30, z = 0) needs the stable form log(1 − p) = −x − log(1 + e^−x)
    log_p = -np.log1p(np.exp(-x))
    log_1mp = -x - np.log1p(np.exp(-x))
    expected = -(z * log_p + (1 - z) * log_1mp).mean()
    naive = -(z[:3] * np.log(p[:3]) + (1 - z[:3]) * np.log(1 - p[:3])).sum()  # the first three entries, directly
    assert expected == pytest.approx((naive + 30) / 4, rel=1e-9)  # x = 30, z = 0 contributes ≈ 30
    assert mask_bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-12)


def test_warp_regulariser_is_mean_abs_delta_uv():
    delta = torch.tensor([[[[0.1, -0.2], [0.0, 0.3]], [[-0.4, 0.5], [0.6, -0.7]]]])  # (1, 2, 2, 2) as (N, H, W, 2)
    assert warp_regulariser(delta).item() == pytest.approx((0.1 + 0.2 + 0.0 + 0.3 + 0.4 + 0.5 + 0.6 + 0.7) / 8)


def test_warp_schedule_paper_defaults():
    s = WarpSchedule()
    assert (s.initial, s.decay, s.every) == (10.0, 0.9, 50)
    assert s.weight(0) == pytest.approx(10.0)
    assert s.weight(49) == pytest.approx(10.0)
    assert s.weight(50) == pytest.approx(9.0)
    assert s.weight(99) == pytest.approx(9.0)
    assert s.weight(100) == pytest.approx(8.1)
    assert s.weight(150) == pytest.approx(7.29)
    # below the floor (1e-7) the term is switched off: 10·0.9^k < 1e-7 first at k = ceil(log(1e-8)/log(0.9)) = 175
    k = math.ceil(math.log(1e-8) / math.log(0.9))
    assert k == 175
    assert s.weight((k - 1) * 50) > 0
    assert s.weight(k * 50) == 0.0
    assert s.weight(10**6) == 0.0


def test_warp_schedule_disabled_released_setting():
    s = WarpSchedule(0.0)
    assert all(s.weight(i) == 0.0 for i in (0, 1, 50, 1000))


# ============================================================================================ VGG stacks
VGG19_KEYS = {
    "features.0.weight": (64, 3, 3, 3), "features.0.bias": (64,), "features.2.weight": (64, 64, 3, 3),
    "features.5.weight": (128, 64, 3, 3), "features.10.weight": (256, 128, 3, 3),
    "features.16.weight": (256, 256, 3, 3), "features.19.weight": (512, 256, 3, 3),
    "features.25.weight": (512, 512, 3, 3), "features.28.weight": (512, 512, 3, 3), "features.28.bias": (512,),
}
VGG16_KEYS = {
    "features.0.weight": (64, 3, 3, 3), "features.7.weight": (128, 128, 3, 3), "features.10.weight": (256, 128, 3, 3),
    "features.14.weight": (256, 256, 3, 3), "features.17.weight": (512, 256, 3, 3),
    "features.24.weight": (512, 512, 3, 3), "features.24.bias": (512,),
}


@pytest.mark.parametrize("network,keys,last_conv", [("vgg19_imagenet", VGG19_KEYS, 28), ("vgg16_face", VGG16_KEYS, 24)])
def test_vgg_stacks_have_torchvision_keys_and_avg_pooling(network, keys, last_conv):
    loss = PerceptualLoss(network)
    state = loss.vgg.state_dict()
    for key, shape in keys.items():
        assert tuple(state[key].shape) == shape, key
    # cut right after relu5_1: the last conv is conv5_1, nothing after its ReLU
    assert max(int(k.split(".")[1]) for k in state) == last_conv
    assert len(loss.vgg.features) == last_conv + 2
    assert isinstance(loss.vgg.features[last_conv + 1], nn.ReLU)
    pools = [m for m in loss.vgg.features if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d))]
    assert len(pools) == 4 and all(isinstance(p, nn.AvgPool2d) and p.kernel_size == 2 for p in pools)
    assert isinstance(loss.vgg.features[4], nn.AvgPool2d)
    # every 'features.<i>' entry is a conv: torchvision's indices are kept (ReLU/pool slots hold no tensors)
    convs = {int(k.split(".")[1]) for k in state}
    assert all(isinstance(loss.vgg.features[i], nn.Conv2d) for i in convs)
    # frozen loss networks
    assert not any(p.requires_grad for p in loss.parameters())


def _manual_vgg_two_layers(state: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """relu1_1 and relu2_1 written out with F.conv2d: conv0-relu | conv2-relu-avgpool-conv5-relu."""
    conv = lambda h, i: F.conv2d(h, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1)  # noqa: E731
    h1 = F.relu(conv(x, 0))
    h = F.relu(conv(h1, 2))
    h = F.avg_pool2d(h, 2)
    h2 = F.relu(conv(h, 5))
    return [h1, h2]


def _test_image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, 3, 8, 8), 0.0)
    x[:, 0], x[:, 1], x[:, 2] = 0.6, -0.3, 0.1  # different channels: a BGR swap would show
    return (x + 0.2 * torch.rand(1, 3, 8, 8, generator=g) - 0.1).double()


def test_vgg19_imagenet_input_normalisation_matches_manual():
    torch.manual_seed(0)
    loss = PerceptualLoss("vgg19_imagenet", num_layers=2).double()
    x = _test_image()
    m = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    expected = _manual_vgg_two_layers(loss.vgg.state_dict(), ((x + 1) / 2 - m) / s)
    got = loss.features(x)
    assert len(got) == 2
    # the network's mean/std constants are float32: agreement to float32 precision
    for a, b in zip(got, expected):
        assert rel_err(a, b) < 1e-6
    # a constant image: every first-layer output away from the border is relu(b + Σ w·x') with x' per channel
    const = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    xp = ((0.5 + 1) / 2 - m.view(3)) / s.view(3)
    w, bias = loss.vgg.state_dict()["features.0.weight"], loss.vgg.state_dict()["features.0.bias"]
    centre = torch.relu(bias + (w * xp.view(1, 3, 1, 1)).sum((1, 2, 3)))
    assert rel_err(loss.features(const)[0][0, :, 4, 4], centre) < 1e-6


def test_vgg16_face_caffe_input_normalisation_matches_manual_without_bgr_swap():
    torch.manual_seed(0)
    loss = PerceptualLoss("vgg16_face", num_layers=2).double()
    x = _test_image()
    caffe = torch.tensor([103.939, 116.779, 123.680], dtype=torch.float64).view(1, 3, 1, 1)
    state = loss.vgg.state_dict()
    expected = _manual_vgg_two_layers(state, (x + 1) * 127.5 - caffe)
    got = loss.features(x)
    for a, b in zip(got, expected):
        assert rel_err(a, b) < 1e-6
    # with a BGR swap the result would differ
    swapped = _manual_vgg_two_layers(state, (x.flip(1) + 1) * 127.5 - caffe)
    assert rel_err(got[0], swapped[0]) > 1e-2


def test_perceptual_layer_weights_released_and_paper_and_value():
    assert RELEASED_LAYER_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    torch.manual_seed(0)
    released = PerceptualLoss("vgg19_imagenet", "released", num_layers=3).double()
    assert released.layer_weights == (1 / 32, 1 / 16, 1 / 8)
    paper = PerceptualLoss("vgg16_face", "paper")
    assert paper.layer_weights == pytest.approx((0.2,) * 5)
    with pytest.raises(ValueError, match="layer weights"):
        PerceptualLoss("vgg19_imagenet", (1.0, 2.0), num_layers=3)
    with pytest.raises(ValueError, match="unknown perceptual network"):
        PerceptualLoss("alexnet")
    fake = _test_image(1).requires_grad_(True)
    real = _test_image(2).requires_grad_(True)
    value = released(fake, real)
    ff, rf = released.features(fake.detach()), released.features(real.detach())
    expected = sum(w * np.abs(_np(a) - _np(b)).mean() for w, a, b in zip((1 / 32, 1 / 16, 1 / 8), ff, rf))
    assert value.item() == pytest.approx(expected, rel=1e-10)
    value.backward()
    assert real.grad is None, "real features are computed under no_grad"
    assert fake.grad is not None and fake.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ weights files
def _torchvision_features_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-format VGG state dict of random tensors (the full ``features`` stack, a stand-in classifier)."""
    g = torch.Generator().manual_seed(seed)
    plan = {"vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
            "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                      512, 512, 512, 512, "M"]}[arch]
    state, index, channels = {}, 0, 3
    for item in plan:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(item, channels, 3, 3, generator=g) * 0.05
        state[f"features.{index}.bias"] = torch.randn(item, generator=g) * 0.05
        channels, index = item, index + 2
    state["classifier.6.weight"] = torch.randn(10, 4, generator=g)  # ignored by the loader
    state["classifier.6.bias"] = torch.randn(10, generator=g)
    return state


def test_load_weights_from_torchvision_format_file(tmp_path):
    state = _torchvision_features_state("vgg19")
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loss = PerceptualLoss("vgg19_imagenet")
    assert not loss.pretrained
    loss.load_weights(path)
    assert loss.pretrained
    own = loss.vgg.state_dict()
    assert len(own) == 2 * 13  # 13 convs up to conv5_1
    for key, value in own.items():
        assert torch.equal(value, state[key]), key
    # the authors' files: a {"state_dict": …} wrapper with DataParallel's "module." prefix also loads
    wrapped = tmp_path / "vgg16_face_caffe.pth"
    face_state = _torchvision_features_state("vgg16", seed=1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in face_state.items()}}, wrapped)
    face = PerceptualLoss("vgg16_face", num_layers=2)
    face.load_weights(wrapped)
    assert torch.equal(face.vgg.state_dict()["features.5.weight"], face_state["features.5.weight"])


def test_load_weights_wrong_files_raise_clear_errors(tmp_path):
    loss = PerceptualLoss("vgg19_imagenet", num_layers=2)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read .*notes.txt"):
        loss.load_weights(text)
    # a tensor of the wrong shape is named, with both shapes
    wrong_shape = tmp_path / "wrong.pth"
    state = _torchvision_features_state("vgg19")
    state["features.2.weight"] = torch.zeros(64, 32, 3, 3)
    torch.save(state, wrong_shape)
    with pytest.raises(ValueError, match=r"features\.2\.weight has shape \(64, 32, 3, 3\); expected \(64, 64, 3, 3\)"):
        loss.load_weights(wrong_shape)
    missing = tmp_path / "missing.pth"
    torch.save({"classifier.6.weight": torch.zeros(2, 2)}, missing)
    with pytest.raises(ValueError, match="not a torchvision vgg19 state dict: it lacks features.0.weight"):
        loss.load_weights(missing)
    not_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_dict)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        loss.load_weights(not_dict)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loss.load_weights(tmp_path / "absent.pth")
    assert not loss.pretrained


# ============================================================================================ objective
class RecordingDiscriminator(nn.Module):
    """A tiny D: scores (N, 1, 2, 2) and two feature maps, recording what it was fed."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(6, 4, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 1, 3, stride=2, padding=1)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images, stickmen):
        self.seen.append((images, stickmen))
        h = torch.relu(self.conv1(torch.cat([images, stickmen], 1)))
        s = self.conv2(h)
        return s, [h, s]


def _terms(size: int = 8, n: int = 2, pixel_terms: bool = True, delta_uv: bool = True) -> GeneratorTerms:
    g = torch.Generator().manual_seed(7)
    rand = lambda *s: (torch.rand(*s, generator=g) * 2 - 1)  # noqa: E731
    return GeneratorTerms(
        target_images=rand(n, 3, size, size), target_masks=torch.rand(n, 1, size, size, generator=g),
        target_stickmen=rand(n, 3, size, size), image=None, lf=rand(n, 3, size, size).requires_grad_(True),
        hf=rand(n, 3, size, size).requires_grad_(True), mask_logits=(rand(n, 1, size, size) * 3).requires_grad_(True),
        delta_uv=(rand(n, size, size, 2) * 0.1).requires_grad_(True) if delta_uv else None, pixel_terms=pixel_terms,
    )


def _with_image(terms: GeneratorTerms) -> GeneratorTerms:
    terms.image = terms.lf + terms.hf
    return terms


@pytest.fixture(scope="module")
def objective():
    torch.manual_seed(0)
    return GeneratorObjective(LossWeights(), "released", perceptual_layers=2)


def test_objective_masking_and_named_terms(objective):
    terms = _with_image(_terms())
    d = RecordingDiscriminator()
    total, named, real, fake = objective(terms, d, iteration=50)
    assert set(named) == {"G_ADV", "G_FM", "G_VGG19", "G_VGGFace", "G_L1", "G_BCE", "G_WPR"}
    m = 1 / (1 + np.exp(-_np(terms.mask_logits)))
    real_np = _np(terms.target_images) * m - (1 - m)  # black (−1) background
    fake_np = _np(terms.image) * m - (1 - m)
    lf_np = _np(terms.lf) * m - (1 - m)
    np.testing.assert_allclose(_np(real), real_np, atol=1e-6)
    np.testing.assert_allclose(_np(fake), fake_np, atol=1e-6)
    # D sees real and fake in one batch, with the target stickmen twice
    images, stickmen = d.seen[0]
    np.testing.assert_allclose(_np(images), np.concatenate([real_np, fake_np]), atol=1e-6)
    assert torch.equal(stickmen, torch.cat([terms.target_stickmen] * 2))
    # weights: L1 ×10 between masked LF and masked GT; BCE ×10 against the soft GT mask (unmasked logits)
    assert named["G_L1"].item() == pytest.approx(10 * np.abs(lf_np - real_np).mean(), rel=1e-5)
    x, z = _np(terms.mask_logits), _np(terms.target_masks)
    bce = (np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))).mean()
    assert named["G_BCE"].item() == pytest.approx(10 * bce, rel=1e-5)
    # warp regulariser at iteration 50: weight 9
    assert named["G_WPR"].item() == pytest.approx(9 * np.abs(_np(terms.delta_uv)).mean(), rel=1e-5)
    # adversarial ×0.5 and FM ×10 on D's outputs
    scores, feats = d(torch.from_numpy(np.concatenate([real_np, fake_np])).float(), stickmen)
    rs, fs = _np(scores[:2]), _np(scores[2:])
    assert named["G_ADV"].item() == pytest.approx(0.5 * _hinge_g(rs, fs), rel=1e-5)
    fm = np.mean([np.abs(_np(f[2:]) - _np(f[:2])).mean() for f in feats])
    assert named["G_FM"].item() == pytest.approx(10 * fm, rel=1e-5)
    assert total.item() == pytest.approx(sum(v.item() for v in named.values()), rel=1e-6)


def test_objective_vgg19_gradient_reaches_hf_not_lf_and_mask_is_detached(objective):
    terms = _with_image(_terms())
    _, named, real, _ = objective(terms, RecordingDiscriminator(), iteration=0)
    # G_VGG19 = 10 · perceptual(mask(stopgrad(LF) + HF), mask(GT))
    m = torch.sigmoid(terms.mask_logits.detach())
    fake_lf_detached = (terms.lf.detach() + terms.hf.detach()) * m - (1 - m)
    expected = 10 * objective.vgg19(fake_lf_detached, real.detach())
    assert named["G_VGG19"].item() == pytest.approx(expected.item(), rel=1e-5)
    named["G_VGG19"].backward()
    assert terms.lf.grad is None or terms.lf.grad.abs().sum() == 0, "G_VGG19 must not train the LF layer"
    assert terms.hf.grad is not None and terms.hf.grad.abs().sum() > 0
    assert terms.mask_logits.grad is None, "the predicted mask used for masking is detached"


def test_objective_only_bce_trains_the_mask_logits(objective):
    terms = _with_image(_terms())
    d = RecordingDiscriminator().requires_grad_(False)
    _, named, _, _ = objective(terms, d, iteration=0)
    sum(v for k, v in named.items() if k != "G_BCE").backward(retain_graph=True)
    assert terms.mask_logits.grad is None
    assert terms.lf.grad is not None and terms.lf.grad.abs().sum() > 0  # G_L1, adversarial, FM reach LF
    named["G_BCE"].backward()
    assert terms.mask_logits.grad is not None and terms.mask_logits.grad.abs().sum() > 0


def test_objective_optional_terms():
    torch.manual_seed(0)
    obj = GeneratorObjective(LossWeights(vggface=0.0, warp=WarpSchedule(0.0)), "paper", perceptual_layers=1)
    terms = _with_image(_terms(pixel_terms=False))
    _, named, _, _ = obj(terms, RecordingDiscriminator(), iteration=0)
    # no pixel terms, no VGGFace; the switched-off warp regulariser is still logged, as 0 (as released, reference §3.2)
    assert set(named) == {"G_ADV", "G_FM", "G_VGG19", "G_WPR"} and float(named["G_WPR"].detach()) == 0.0
    terms = _with_image(_terms(delta_uv=False))
    _, named, _, _ = obj(terms, RecordingDiscriminator(), iteration=0)
    assert "G_WPR" not in named and {"G_L1", "G_BCE"} <= set(named)


def test_discriminator_objective_by_hand_and_fakes_detached():
    d = RecordingDiscriminator()
    g = torch.Generator().manual_seed(1)
    real = (torch.rand(2, 3, 8, 8, generator=g) * 2 - 1).requires_grad_(True)
    fake = (torch.rand(2, 3, 8, 8, generator=g) * 2 - 1).requires_grad_(True)
    stick = torch.rand(2, 3, 8, 8, generator=g)
    loss, named = discriminator_objective(d, real, fake, stick, weight=0.5)
    assert set(named) == {"D_ADV"} and named["D_ADV"] is loss
    scores, _ = d(torch.cat([real, fake]).detach(), torch.cat([stick, stick]))
    assert loss.item() == pytest.approx(0.5 * _hinge_d(_np(scores[:2]), _np(scores[2:])), rel=1e-5)
    loss.backward()
    assert real.grad is None and fake.grad is None
    assert d.conv1.weight.grad is not None and d.conv1.weight.grad.abs().sum() > 0


def test_objective_without_gan_terms_never_calls_the_discriminator():
    """Adversarial and feature-matching weights both 0 (the synth-quick preset): D is not run, and no G_ADV/G_FM."""
    torch.manual_seed(0)
    weights = LossWeights(adversarial=0.0, feature_matching=0.0, vggface=0.0)
    obj = GeneratorObjective(weights, "paper", perceptual_layers=1)
    assert not obj.uses_discriminator
    assert GeneratorObjective(LossWeights(adversarial=0.0), "paper", perceptual_layers=1).uses_discriminator
    assert GeneratorObjective(LossWeights(feature_matching=0.0), "paper", perceptual_layers=1).uses_discriminator
    terms = _with_image(_terms())
    d = RecordingDiscriminator()
    total, named, real, fake = obj(terms, d, iteration=0)
    assert d.seen == []
    assert set(named) == {"G_VGG19", "G_L1", "G_BCE", "G_WPR"}
    assert total.item() == pytest.approx(sum(v.item() for v in named.values()), rel=1e-6)
    # the same terms as with D present (D only adds G_ADV and G_FM)
    with_d = GeneratorObjective(LossWeights(vggface=0.0), "paper", perceptual_layers=1)
    with_d.load_state_dict(obj.state_dict())
    _, named_d, real_d, fake_d = with_d(_with_image(_terms()), RecordingDiscriminator(), iteration=0)
    assert set(named_d) == set(named) | {"G_ADV", "G_FM"}
    for k, v in named.items():
        assert v.item() == pytest.approx(named_d[k].item(), rel=1e-6), k
    assert torch.equal(real, real_d) and torch.equal(fake, fake_d)
    _, named_none, _, _ = obj(_with_image(_terms()), None, iteration=0)  # D may be absent altogether
    assert set(named_none) == set(named)


def test_adversarial_losses_are_float32_under_bf16_scores():
    """bfloat16 scores and features (bf16 autocast) give float32 losses equal to those of the same values in
    float32."""
    from bilayer.losses import adversarial

    torch.manual_seed(0)
    r, f = torch.randn(4, 1, 8, 8).bfloat16(), torch.randn(4, 1, 8, 8).bfloat16()
    feats = [torch.randn(4, 8, 4, 4).bfloat16() for _ in range(3)]
    for fn, args in ((adversarial.discriminator_loss, (r, f)), (adversarial.generator_loss, (r, f)),
                     (adversarial.feature_matching_loss, (feats, [x.flip(0) for x in feats]))):
        low = fn(*args)
        high = fn(*[[x.float() for x in a] if isinstance(a, list) else a.float() for a in args])
        assert low.dtype == torch.float32 and torch.equal(low, high)
