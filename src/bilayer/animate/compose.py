"""Output composition: putting a rendered head crop back into the photo, RGBA crops, side-by-side previews.

The avatar renders a ``size`` × ``size`` crop (the crop protocol of reference §6.2) and a soft person mask. For
an output the size of the photo, the crop is mapped back through the inverse of the crop transform and blended
over the photo with the mask. Two details make the seam invisible:

* the mask is feathered in crop space: multiplied by a ramp that falls to 0 at the crop border (so a mask that
  is 1 up to the border — hair, shoulders — does not leave a hard square edge) and blurred;
* the warp is bilinear in continuous pixel coordinates (pixel j covers [j, j + 1)), the same convention as
  ``crop_image`` and the keypoints, so a crop of the photo pasted back lands on itself.

Only the photo region under the crop box is warped and blended, so the cost does not grow with the photo size.
All images are RGB uint8 numpy arrays (H × W × 3); masks are float in [0, 1].
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..vision.crop import CropBox

__all__ = ["crop_to_photo_matrix", "even_size", "feather_mask", "pad_even", "paste_back", "rgba", "side_by_side",
           "to_mask", "to_uint8"]


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def _check_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "crop_mask") -> np.ndarray:
    mask = np.asarray(mask, np.float32)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (or {shape + (1,)}), got {mask.shape}")
    return np.clip(mask, 0.0, 1.0)


def crop_to_photo_matrix(box: CropBox, size: int) -> np.ndarray:
    """The 2×3 affine matrix (OpenCV pixel-index convention: pixel centres at integers) that maps a pixel of the
    ``size``-pixel crop of ``box`` to the photo: continuous x_photo = left + x_crop · side / size, so index
    j_photo = k · i_crop + left + (k − 1) / 2 with k = side / size."""
    k = box.side / size
    left, top, _, _ = box.ltrb
    return np.array([[k, 0.0, left + 0.5 * k - 0.5], [0.0, k, top + 0.5 * k - 0.5]], np.float64)


def feather_mask(mask: np.ndarray, feather: float) -> np.ndarray:
    """``mask`` (s × s, [0, 1]) with its border faded out over ``feather`` pixels and blurred (σ = feather / 2).
    ``feather = 0`` returns the mask unchanged."""
    mask = np.asarray(mask, np.float32)
    if feather <= 0:
        return mask
    h, w = mask.shape
    ramp_x = np.clip((np.minimum(np.arange(w), w - 1 - np.arange(w)) + 0.5) / feather, 0.0, 1.0)
    ramp_y = np.clip((np.minimum(np.arange(h), h - 1 - np.arange(h)) + 0.5) / feather, 0.0, 1.0)
    out = mask * ramp_y[:, None].astype(np.float32) * ramp_x[None, :].astype(np.float32)
    sigma = feather / 2.0
    out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    return np.clip(out, 0.0, 1.0)


def paste_back(photo: np.ndarray, crop_rgb: np.ndarray, crop_mask: np.ndarray, box: CropBox, *,
               feather: float = 4.0) -> np.ndarray:
    """The photo with the rendered crop warped back into ``box`` and alpha-blended with the (feathered) mask.

    ``photo``: H × W × 3 uint8; ``crop_rgb``: s × s × 3 uint8 rendered for the crop ``box`` of the photo;
    ``crop_mask``: s × s (or s × s × 1) float in [0, 1]; ``feather``: the border fade and blur in crop pixels
    (0: a hard paste). Returns a new uint8 array; the photo is not modified. Where the mask is 0 the photo is
    returned bit for bit.
    """
    photo = _check_rgb(photo, "photo")
    crop_rgb = _check_rgb(crop_rgb, "crop_rgb")
    s = crop_rgb.shape[0]
    if crop_rgb.shape[1] != s:
        raise ValueError(f"crop_rgb must be square, got {crop_rgb.shape}")
    mask = feather_mask(_check_mask(crop_mask, (s, s)), feather)
    if box.half <= 0:
        raise ValueError("crop box has no area")
    out = photo.copy()
    h, w = photo.shape[:2]
    # the photo region the crop covers (one pixel of margin for the bilinear support), clipped to the photo
    x0, y0, x1, y1 = box.ltrb
    rx0, ry0 = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
    rx1, ry1 = min(int(math.ceil(x1)) + 1, w), min(int(math.ceil(y1)) + 1, h)
    if rx1 <= rx0 or ry1 <= ry0:
        return out
    m = crop_to_photo_matrix(box, s)
    m[0, 2] -= rx0
    m[1, 2] -= ry0
    inverse = cv2.invertAffineTransform(m)
    roi = (rx1 - rx0, ry1 - ry0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(crop_rgb, inverse, roi, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, inverse, roi, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    region = out[ry0:ry1, rx0:rx1].astype(np.float32)
    blended = region + alpha * (warped.astype(np.float32) - region)
    out[ry0:ry1, rx0:rx1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def rgba(crop_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """s × s × 3 uint8 RGB and an s × s [0, 1] mask → s × s × 4 uint8 RGBA (straight alpha)."""
    crop_rgb = _check_rgb(crop_rgb, "crop_rgb")
    alpha = _check_mask(mask, crop_rgb.shape[:2], "mask")
    a = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    return np.concatenate([crop_rgb, a[..., None]], axis=2)


def even_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) rounded up to even numbers (H.264 in yuv420p needs both even)."""
    return width + (width % 2), height + (height % 2)


def pad_even(image: np.ndarray) -> np.ndarray:
    """``image`` (H × W × C) padded by one replicated row / column where H / W is odd; returned as is otherwise."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def _resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(2, 2 * round(w * height / h / 2))  # even
    if (width, height) == (w, h):
        return image
    interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def side_by_side(left: np.ndarray, right: np.ndarray, height: int) -> np.ndarray:
    """``left`` and ``right`` (H × W × 3 uint8, any sizes) resized to ``height`` (rounded up to even) with their
    aspect ratios kept (each width rounded to even), side by side: an even-sized H.264-ready frame."""
    left, right = _check_rgb(left, "left"), _check_rgb(right, "right")
    if height <= 0:
        raise ValueError(f"height must be positive, got {height}")
    height += height % 2
    return np.concatenate([_resize_to_height(left, height), _resize_to_height(right, height)], axis=1)


def to_uint8(image) -> np.ndarray:
    """A (3, H, W) image in [-1, 1] (torch tensor or numpy; a leading batch dimension of 1 is accepted) → H × W × 3
    RGB uint8."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image, np.float32)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {image.shape}")
    out = (np.transpose(image, (1, 2, 0)) + 1.0) * 127.5
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def to_mask(mask) -> np.ndarray:
    """A mask (H, W), (1, H, W) or (1, 1, H, W) in [0, 1] (torch tensor or numpy) → H × W float32 in [0, 1]."""
    if hasattr(mask, "detach"):
        mask = mask.detach().float().cpu().numpy()
    mask = np.asarray(mask, np.float32)
    while mask.ndim > 2 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) or (1, H, W) mask, got shape {mask.shape}")
    return np.clip(mask, 0.0, 1.0)
