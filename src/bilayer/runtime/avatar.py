"""Avatars: made once from one photo, rendered from keypoints every frame (paper §3, §A.3).

``Avatar.create(model, photo)`` runs everything the paper does once per person — face keypoints, the reference
crop (the same protocol as preprocessing), segmentation, the identity embedding, the texture and the adaptive
parameters, and optionally the texture enhancer — and keeps what every frame needs: the texture and the
inference generator's adaptive parameters, plus the crop transform (to paste results back into the photo) and
the source crop (for pictures).

``avatar.save(path)`` writes one safetensors file whose metadata carry the model's configuration and a hash of
the model weights it was made with; ``Avatar.load(path, model)`` refuses a different model with one sentence, and
a file whose tensors do not have the shapes the model's configuration gives them or hold NaN or inf values.

Per frame: ``avatar.render(keypoints)`` (the full model path, LF/HF/uv on request) or ``avatar.renderer(backend)``
(the baked plain module, optionally in bf16, compiled or in ONNX Runtime), both taking the model's normalised
(B, 136) keypoints of the avatar's crop.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import BilayerConfig
from ..keypoints import normalize_keypoints
from ..models.bilayer import BilayerModel
from ..vision.crop import CropBox, crop_box, crop_image, keypoints_to_crop
from ..structures import AdaptiveParams, AvatarState, Render
from ..weights import nonfinite, read_safetensors, write_safetensors

if TYPE_CHECKING:
    from ..vision.landmarks import LandmarkBackend

AVATAR_FORMAT = "bilayer-avatar"
AVATAR_FORMAT_VERSION = "1"


class AvatarError(ValueError):
    """An avatar cannot be made, read or used; the message is one sentence naming the file or value."""


def model_fingerprint(model: BilayerModel) -> str:
    """SHA-256 (hex, first 16 bytes) of every tensor the model saves, in name order: identifies the weights an
    avatar was made with. Cached on the model until a tensor changes (in-place updates bump tensor versions)."""
    state = sorted(model.state_dict().items())
    key = tuple((id(t), t._version) for _, t in state)
    cached = getattr(model, "_bilayer_fingerprint", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in state:
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    value = digest.hexdigest()[:32]
    object.__setattr__(model, "_bilayer_fingerprint", (key, value))  # a plain attribute, not a module buffer
    return value


def _check_config(config: BilayerConfig, model: BilayerModel, where: str) -> None:
    """``AvatarError`` naming what differs when an avatar made for ``config`` meets another model configuration."""
    if model.config == config:
        return
    differ = [f.name for f in fields(config) if getattr(config, f.name) != getattr(model.config, f.name)]
    detail = (f"image size {config.image_size} vs the model's {model.config.image_size}" if "image_size" in differ
              else f"{', '.join(differ)} differ{'s' if len(differ) == 1 else ''}")
    raise AvatarError(f"{where} was made for a different model configuration ({detail}); use the model it was made "
                      "with.")


def check_avatar_path(path: str | Path) -> Path:
    """``path`` as a ``Path`` if an avatar file can be written there; ``AvatarError`` (one sentence) when it is a
    folder or its folder does not exist or is not writable."""
    path = Path(path)
    if path.is_dir():
        raise AvatarError(f"cannot write {path}: it is a folder; give a file name such as {path / 'me.avatar'}.")
    if not path.parent.is_dir():
        raise AvatarError(f"cannot write {path}: folder {path.parent} does not exist.")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise AvatarError(f"cannot write {path}: folder {path.parent} is not writable.")
    return path


def read_photo(path: str | Path) -> np.ndarray:
    """An image file as H×W×3 RGB uint8; ``AvatarError`` (one sentence) when it cannot be read."""
    from ..vision.errors import VideoReadError
    from ..vision.video import read_image

    try:
        return read_image(path)
    except VideoReadError as exc:
        reason = str(exc).rstrip(". ")
        raise AvatarError(reason + ("." if "megapixels" in reason else "; expected a JPEG/PNG photo.")) from None


def _load_source_keypoints(path: str | Path) -> np.ndarray:
    """The photo's (68, 2) pixel keypoints from a .npy file; ``AvatarError`` naming the file otherwise."""
    from ..vision.errors import PreprocessError
    from ..vision.landmarks import load_keypoint_file

    try:
        kp = load_keypoint_file(path)  # (T, 68, 2), checked
    except PreprocessError as exc:
        raise AvatarError(str(exc)) from None
    if len(kp) != 1:
        raise AvatarError(f"keypoint file {path} holds {len(kp)} frames; expected the photo's 68 points, (68, 2).")
    return kp[0]


def check_source_keypoints(keypoints: np.ndarray, width: int, height: int, subject: str) -> np.ndarray:
    """A photo's keypoints as (68, 2) float32 when they are 68 finite points that describe a face of at least
    ``MIN_FACE_SIZE`` pixel whose centre (the middle of the points' bounding box) lies inside the ``width`` ×
    ``height`` photo; else ``AvatarError``, one sentence starting with ``subject`` (e.g. "the keypoints in
    kp.npy")."""
    from ..keypoints import MIN_FACE_SIZE

    expected = "expected 68 (x, y) landmarks of a face in pixels of that photo"
    kp = np.asarray(keypoints)
    if kp.dtype.kind not in "fiu":
        raise AvatarError(f"{subject} hold {kp.dtype} values; {expected}.")
    kp = kp.astype(np.float64)
    if kp.ndim != 2 or kp.shape[0] != 68 or kp.shape[1] not in (2, 3):
        raise AvatarError(f"{subject} have shape {kp.shape}; {expected}, (68, 2).")
    kp = kp[:, :2]
    bad = nonfinite(torch.from_numpy(kp))
    if bad is not None:
        raise AvatarError(f"{subject} hold {bad}; {expected}.")
    lo, hi = kp.min(0), kp.max(0)
    span = float((hi - lo).max())
    if span < MIN_FACE_SIZE:
        raise AvatarError(f"{subject} describe a face of no size (their 68 points span {span:.3g} px); {expected}.")
    cx, cy = (lo + hi) / 2
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise AvatarError(f"{subject} lie outside the {width}×{height} photo (the face's centre is at "
                          f"({cx:.4g}, {cy:.4g})); {expected}.")
    return kp.astype(np.float32)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 RGB → (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1).float().div(127.5).sub(1.0)


@dataclass
class Avatar:
    """One person's avatar for one model.

    texture (1, 3, S, S), params: the inference generator's adaptive parameters (batch 1); source_image
    (3, S, S) in [-1, 1] and source_mask (1, S, S) the crop it was made from; source_keypoints (68, 2) crop
    pixels; box: the crop square in photo pixels; photo_size (W, H) of the photo (0, 0 when made from a crop).
    """

    config: BilayerConfig
    model_hash: str
    texture: torch.Tensor
    params: AdaptiveParams
    source_image: torch.Tensor
    source_mask: torch.Tensor
    source_keypoints: np.ndarray
    box: CropBox
    photo_size: tuple[int, int]
    enhanced: bool
    base_texture: torch.Tensor | None = None

    # ---------------------------------------------------------------------------------- creation
    @classmethod
    @torch.no_grad()
    def create(
        cls,
        model: BilayerModel,
        photo: np.ndarray | str | Path,
        *,
        keypoints: np.ndarray | str | Path | None = None,
        mask: np.ndarray | None = None,
        landmarks: str | LandmarkBackend = "mediapipe",
        segmentation: str = "mediapipe",
        enhance: bool = True,
        enhancer_steps: int | None = None,
        crop: bool = True,
        name: str | None = None,
    ) -> "Avatar":
        """Make an avatar from one photo (an H×W×3 RGB uint8 array or an image file).

        keypoints: the photo's (68, 2|3) landmarks in pixels, or a .npy file holding them; detected with
        ``landmarks`` (a backend name or instance) when omitted. Given keypoints must describe a face (68 finite
        points spanning at least ``MIN_FACE_SIZE`` pixel) whose centre lies inside the photo
        (``check_source_keypoints``).
        mask: the crop's (S, S) foreground mask in [0, 1]; computed with ``segmentation`` ("mediapipe" or
        "none" = the whole crop) when omitted. ``crop=False`` takes a photo that already is the model's crop
        (S × S, e.g. a preprocessed frame). ``enhance`` runs the texture enhancer when the model has one.
        ``name``: what messages call the photo (default: its path when a file is given, else "the photo").
        """
        if isinstance(photo, (str, Path)):
            name, photo = name or str(photo), read_photo(photo)
        name = name or "the photo"
        photo = np.asarray(photo)
        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise AvatarError(f"{name} must be an H×W×3 RGB uint8 image, got shape {photo.shape} {photo.dtype}.")
        size = model.config.image_size
        if not crop and photo.shape[:2] != (size, size):
            raise AvatarError(f"{name} is {photo.shape[1]}×{photo.shape[0]}; a photo that already is the crop must "
                              f"be the model's {size}×{size} crop.")
        if keypoints is None:
            from ..vision.landmarks import detect_keypoints

            keypoints = detect_keypoints(photo, landmarks, name=name)
            if keypoints is None:
                raise AvatarError(f"no face found in {name}; expected a photo with one clearly visible face.")
            subject = f"the keypoints found in {name}"
        elif isinstance(keypoints, (str, Path)):
            subject, keypoints = f"the keypoints in {keypoints}", _load_source_keypoints(keypoints)
        else:
            subject = f"the keypoints given for {name}"
        keypoints = check_source_keypoints(keypoints, photo.shape[1], photo.shape[0], subject)
        if crop:
            box = crop_box(keypoints)
            image = crop_image(photo, box, size)
        else:
            box, image = CropBox(size / 2, size / 2, size / 2), photo
        kp_crop = keypoints_to_crop(keypoints, box, size)
        if mask is None:
            if segmentation == "none":
                mask = np.ones((size, size), np.float32)
            else:
                from ..vision.segmentation import create_segmentation_backend

                with create_segmentation_backend(segmentation) as seg:
                    mask = seg.segment(image)
        mask = np.asarray(mask, np.float32)
        if mask.shape != (size, size):
            raise AvatarError(f"the mask for {name} must be {size}×{size}, got {mask.shape}.")
        bad = nonfinite(torch.tensor(mask))
        if bad is not None:
            raise AvatarError(f"the mask for {name} holds {bad}; expected values from 0 to 1.")

        device = next(model.parameters()).device
        model.eval()
        source_image = _image_tensor(image).to(device)
        source_mask = torch.from_numpy(np.clip(mask, 0, 1))[None].to(device)
        kp = torch.from_numpy(normalize_keypoints(kp_crop, float(size))).to(device)
        state = model.personalize(source_image[None, None], kp[None, None], source_mask[None, None])
        if enhance and model.texture_enhancer is not None:
            state = model.enhance(state, enhancer_steps)
        return cls(
            config=model.config, model_hash=model_fingerprint(model), texture=state.texture.detach(),
            params=state.inference_params.map(lambda t: t.detach()), source_image=source_image,
            source_mask=source_mask, source_keypoints=kp_crop, box=box,
            photo_size=(int(photo.shape[1]), int(photo.shape[0])) if crop else (0, 0), enhanced=state.enhanced,
            base_texture=None if state.base_texture is None else state.base_texture.detach(),
        )

    # ---------------------------------------------------------------------------------- per frame
    @property
    def size(self) -> int:
        return self.config.image_size

    @property
    def source_keypoints_normalized(self) -> np.ndarray:
        """The source pose as the model's (136,) input."""
        return normalize_keypoints(self.source_keypoints, float(self.size)).astype(np.float32)

    def state(self) -> AvatarState:
        """The avatar as the model's ``AvatarState`` (batch 1)."""
        kp = torch.from_numpy(self.source_keypoints_normalized).to(self.texture.device)
        return AvatarState(
            texture=self.texture, inference_params=self.params, source_images=self.source_image[None, None],
            source_keypoints=kp[None, None], source_masks=self.source_mask[None, None],
            base_texture=self.base_texture, enhanced=self.enhanced,
        )

    def check_model(self, model: BilayerModel, where: str = "this avatar") -> None:
        """``AvatarError`` unless ``model`` has the configuration and the weights the avatar was made with."""
        _check_config(self.config, model, where)
        if model_fingerprint(model) != self.model_hash:
            raise AvatarError(f"{where} was made with other model weights (hash {self.model_hash[:12]}…, the model "
                              f"has {model_fingerprint(model)[:12]}…); recreate the avatar with this model.")

    @torch.no_grad()
    def render(self, model: BilayerModel, keypoints: torch.Tensor | np.ndarray) -> Render:
        """Render one frame ((136,)) or a batch ((T, 136)) of normalised crop keypoints with the full model:
        a ``Render`` with (1, T, …) tensors (image, LF, HF, uv, mask)."""
        self.check_model(model)
        kp = torch.as_tensor(np.asarray(keypoints, np.float32) if isinstance(keypoints, np.ndarray) else keypoints)
        kp = kp.float().reshape(1, -1, self.config.pose_dim).to(self.texture.device)
        return model.eval().render(self.state(), kp)

    def bake(self, model: BilayerModel):
        """The plain per-frame module (``BakedRenderer``): keypoints (B, 136) → image, mask."""
        from .bake import bake

        self.check_model(model)
        return bake(model.eval(), self.state())

    def calibration(self, poses=None) -> torch.Tensor:
        """int8's calibration keypoints (N, 136): this avatar's own in jittered poses (``jittered_keypoints``),
        followed by ``poses`` (M, 136) when given: ``bilayer animate`` gives the driver's
        (``animate.pipeline.calibration_poses``), which keeps its wide expressions from being clipped."""
        from .backends import jittered_keypoints

        own = jittered_keypoints(self.source_keypoints_normalized)
        if poses is None:
            return own
        return torch.cat([own, torch.as_tensor(poses, dtype=torch.float32).reshape(-1, own.shape[1])])

    def renderer(self, model: BilayerModel, backend: str = "eager", **options):
        """A per-frame callable for ``backend`` (see ``bilayer.runtime.backends``). int8 is calibrated on
        ``self.calibration()`` unless ``calibration=`` is given."""
        from .backends import make_renderer

        if backend == "int8" and options.get("calibration") is None:
            options["calibration"] = self.calibration()
        return make_renderer(self.bake(model), backend, **options)

    # ---------------------------------------------------------------------------------- files
    def _metadata(self) -> dict[str, str]:
        return {
            "format": AVATAR_FORMAT, "format_version": AVATAR_FORMAT_VERSION, "config": self.config.to_json(),
            "model_hash": self.model_hash, "box": json.dumps(list(self.box.to_array())),
            "photo_size": json.dumps(list(self.photo_size)), "enhanced": json.dumps(self.enhanced),
        }

    def save(self, path: str | Path) -> Path:
        """One safetensors file (written atomically)."""
        path = check_avatar_path(path)
        tensors = {
            "texture": self.texture, "source_image": self.source_image, "source_mask": self.source_mask,
            "source_keypoints": torch.from_numpy(np.asarray(self.source_keypoints, np.float32)),
        }
        if self.base_texture is not None:
            tensors["base_texture"] = self.base_texture
        tensors.update(self.params.named_tensors("params"))
        write_safetensors({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, path, self._metadata())
        return path

    @classmethod
    def load(cls, path: str | Path, model: BilayerModel) -> "Avatar":
        """Read an avatar file made for ``model``; refuses another model (configuration or weights) and a damaged
        file: every tensor must have the shape the model's configuration gives it and hold finite floating-point
        numbers, the source keypoints must describe a face inside the crop, and the crop box must be finite with
        a positive size. The tensors are returned in the model's floating-point type, on its device."""
        from safetensors import safe_open

        from ..keypoints import MIN_FACE_SIZE
        from ..weights import WeightsError

        path = Path(path)
        try:
            tensors = read_safetensors(path)
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except WeightsError as exc:
            raise AvatarError(str(exc).replace("weights file", "avatar file")) from None
        if meta.get("format") != AVATAR_FORMAT:
            raise AvatarError(f"{path} is not a bilayer avatar file; expected a file made by `bilayer avatar`.")
        try:
            config = BilayerConfig.from_dict(json.loads(meta["config"]))
            box = CropBox.from_array(json.loads(meta["box"]))
            photo_size = tuple(int(v) for v in json.loads(meta["photo_size"]))
            enhanced = json.loads(meta["enhanced"])
            model_hash = meta["model_hash"]
        except KeyError as exc:
            raise AvatarError(f"{path} has damaged metadata (no {exc.args[0]!r} entry); make the avatar "
                              "again.") from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            reason = str(exc).splitlines()[0].rstrip(". ") if str(exc).strip() else type(exc).__name__
            raise AvatarError(f"{path} has damaged metadata ({reason}); make the avatar again.") from None
        if not (np.isfinite(box.to_array()).all() and box.half > 0):
            raise AvatarError(f"{path} has damaged metadata (crop box {list(box.to_array())} is not finite with a "
                              "positive size); make the avatar again.")
        if len(photo_size) != 2 or min(photo_size) < 0 or not isinstance(enhanced, bool):
            raise AvatarError(f"{path} has damaged metadata (photo size {list(photo_size)}, enhanced {enhanced!r}); "
                              "make the avatar again.")
        _check_config(config, model, f"avatar {path}")
        first = next(model.parameters())
        device, dtype = first.device, first.dtype
        # The parameter structure comes from the model (the configurations agree); the file's tensors are put into
        # it by name.
        skeleton = model.params_skeleton()
        expected = dict(skeleton.named_tensors("params"))
        missing = sorted({"texture", "source_image", "source_mask", "source_keypoints", *expected} - set(tensors))
        unexpected = sorted({k for k in tensors if k.startswith("params.")} - set(expected))
        if missing or unexpected:
            name = (missing or unexpected)[0]
            raise AvatarError(f"{path} is damaged (tensor {name!r} is {'missing' if missing else 'unexpected'}); "
                              "make the avatar again.")
        s = config.image_size
        shapes = {"texture": (1, 3, s, s), "base_texture": (1, 3, s, s), "source_image": (3, s, s),
                  "source_mask": (1, s, s), "source_keypoints": (config.num_keypoints, 2),
                  **{name: tuple(ref.shape) for name, ref in expected.items()}}
        for name, shape in shapes.items():
            if name not in tensors:
                continue  # only base_texture is optional
            tensor = tensors[name]
            if tuple(tensor.shape) != shape:
                raise AvatarError(f"{path} is damaged (tensor {name!r} has shape {tuple(tensor.shape)} where the "
                                  f"model's configuration gives {shape}); make the avatar again.")
            if not tensor.is_floating_point():
                kind = str(tensor.dtype).removeprefix("torch.")
                raise AvatarError(f"{path} is damaged (tensor {name!r} holds {kind} values where floating-point "
                                  "numbers were expected); make the avatar again.")
            bad = nonfinite(tensor)
            if bad is not None:
                count = int((~torch.isfinite(tensor)).sum())
                raise AvatarError(f"{path} is damaged (tensor {name!r} holds {bad}, {count} of {tensor.numel()} "
                                  "values); make the avatar again.")
        source_keypoints = tensors["source_keypoints"].float().numpy()
        lo, hi = source_keypoints.min(0), source_keypoints.max(0)
        centre = (lo + hi) / 2
        if (hi - lo).max() < MIN_FACE_SIZE or not ((centre >= 0) & (centre <= s)).all():
            raise AvatarError(f"{path} is damaged (tensor 'source_keypoints' does not describe a face inside the "
                              f"{s}×{s} crop); make the avatar again.")
        names = iter(expected)
        params = skeleton.map(lambda _: tensors[next(names)].to(device, dtype))
        avatar = cls(
            config=config, model_hash=model_hash, texture=tensors["texture"].to(device, dtype), params=params,
            source_image=tensors["source_image"].to(device, dtype),
            source_mask=tensors["source_mask"].to(device, dtype), source_keypoints=source_keypoints, box=box,
            photo_size=photo_size, enhanced=enhanced,
            base_texture=tensors["base_texture"].to(device, dtype) if "base_texture" in tensors else None,
        )
        avatar.check_model(model, f"avatar {path}")
        return avatar

    def to(self, device: str | torch.device) -> "Avatar":
        return replace(
            self, texture=self.texture.to(device), params=self.params.map(lambda t: t.to(device)),
            source_image=self.source_image.to(device), source_mask=self.source_mask.to(device),
            base_texture=None if self.base_texture is None else self.base_texture.to(device),
        )


def landmark_context(name: str, weights_dir: str | Path | None = None):
    """A context giving the landmark backend for a photo and a driving video: ``name`` itself, or with
    ``weights_dir`` a face-alignment or dlib backend reading its weights there (closed when the context ends)."""
    import contextlib

    if weights_dir is None or name == "mediapipe":
        return contextlib.nullcontext(name)
    from ..vision.landmarks import create_landmark_backend

    return create_landmark_backend(name, weights_dir=weights_dir)


def avatar_from(model: BilayerModel, *, source: str | Path | None = None, avatar: str | Path | None = None,
                source_keypoints: str | Path | None = None, source_mask: str | Path | None = None,
                source_is_crop: bool = False, landmarks="mediapipe", segmentation: str = "mediapipe",
                enhance: bool = True) -> tuple["Avatar", np.ndarray | None]:
    """The avatar saved in ``avatar`` (an ``.avatar`` file), or made now from the photo ``source``, and that photo
    (None for a saved avatar). ``landmarks``: a backend name or object (``landmark_context``)."""
    if avatar:
        if source:
            raise AvatarError("give either --source PHOTO or --avatar FILE, not both.")
        return Avatar.load(avatar, model), None
    if not source:
        raise AvatarError("give --source PHOTO (or --avatar FILE made by `bilayer avatar`).")
    photo = read_photo(source)
    mask = None
    if source_mask:
        from ..vision.errors import VideoReadError
        from ..vision.video import read_image

        try:
            mask = read_image(source_mask)[..., 0].astype("float32") / 255.0
        except VideoReadError as exc:
            raise AvatarError(f"{str(exc).rstrip('. ')}; expected the crop's mask as a grey-scale PNG.") from None
    # the keypoint file is read and checked by Avatar.create, which names it in its errors
    made = Avatar.create(model, photo, keypoints=source_keypoints, mask=mask, landmarks=landmarks,
                         segmentation=segmentation, enhance=enhance, crop=not source_is_crop, name=str(source))
    return made, photo
