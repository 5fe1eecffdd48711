"""SynthHeads parameters: who is rendered (identity), where (scene: background, light, clothes, framing) and how
they move (per-frame pose, expression and gaze), with samplers that draw them from a NumPy ``Generator``.

All three are frozen dataclasses of plain floats, ints, strings and tuples, so they are hashable (the renderer
caches per-identity meshes and textures on them), picklable (worker processes) and print readably. Angles in
``FrameParams`` are degrees. Colours are sRGB triples in [0, 1].

Face layout coordinates: features are placed in *direction space* (fx, fy) — the x and y components of the
unit vector from the head centre, x towards the subject's left (image right when frontal), y up — so that a
feature's 3-D position is wherever the head surface lies along that direction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

FPS = 25.0
HAIR_STYLES = ("bald", "buzz", "short", "medium", "long", "curly", "bun")
BACKGROUNDS = ("flat", "gradient", "textured")
CLOTH_PATTERNS = ("solid", "stripes", "vstripes", "checks", "dots", "heather")
NECKLINES = ("crew", "vneck", "collar")

Colour = tuple[float, float, float]

# sRGB skin albedos from very light to very dark; a tone is interpolated along this ramp
_SKIN_RAMP = np.array([(0.98, 0.86, 0.77), (0.94, 0.77, 0.65), (0.87, 0.67, 0.53), (0.76, 0.54, 0.40),
                       (0.62, 0.42, 0.29), (0.45, 0.30, 0.21), (0.30, 0.20, 0.15)])
_HAIR_COLOURS = {
    "black": (0.05, 0.045, 0.04), "dark_brown": (0.15, 0.10, 0.07), "brown": (0.30, 0.20, 0.12),
    "light_brown": (0.47, 0.34, 0.21), "blond": (0.80, 0.66, 0.43), "auburn": (0.45, 0.19, 0.09),
    "red": (0.64, 0.27, 0.11), "grey": (0.56, 0.55, 0.53), "white": (0.86, 0.85, 0.81),
}
_EYE_COLOURS = (
    (0.30, 0.17, 0.08), (0.20, 0.12, 0.06), (0.45, 0.34, 0.17), (0.32, 0.46, 0.27),
    (0.27, 0.43, 0.62), (0.45, 0.50, 0.55),
)


@dataclass(frozen=True)
class IdentityParams:
    """Everything that makes one synthetic person; deterministic from the sampler's generator."""

    seed: int  # drives the texture noise (freckle positions, skin grain, hair strands)
    masculinity: float
    # head shape (multipliers around 1)
    head_width: float
    head_height: float
    head_depth: float
    jaw_width: float
    chin_width: float
    chin_length: float
    chin_forward: float
    cheekbones: float
    brow_ridge: float
    ear_size: float
    ear_out: float
    neck_width: float
    # eyes (direction-space units)
    eye_spacing: float  # half the distance between the eye centres
    eye_y: float
    eye_width: float  # half width of the eye opening
    eye_open: float  # half height of the eye opening
    eye_tilt: float  # outer corner raised by this much
    iris_size: float  # iris radius as a fraction of the eye half-width
    iris_colour: Colour
    # eyebrows
    brow_offset: float  # above the eye centre
    brow_thickness: float
    brow_arch: float
    brow_density: float
    # nose
    nose_tip_y: float
    nose_width: float
    nose_projection: float
    nose_hump: float
    # mouth
    mouth_y: float
    mouth_width: float  # half width
    upper_lip: float
    lower_lip: float
    cupid_bow: float
    mouth_curve: float  # > 0 raises the mouth corners at rest
    lip_colour: Colour
    # skin
    skin_colour: Colour
    skin_redness: float
    skin_gloss: float
    freckles: float
    moles: int
    stubble: float
    # hair
    hair_style: str
    hair_colour: Colour
    brow_colour: Colour
    hair_volume: float
    hairline: float  # fy of the front hairline
    fringe: bool
    parting: float  # -1 … 1, 0 = centre
    curl: float
    hair_length: float  # long styles: how far the hair falls below the head centre


@dataclass(frozen=True)
class SceneParams:
    """Per-video surroundings: background, lighting, clothes and camera framing."""

    seed: int
    background: str
    background_colours: tuple[Colour, Colour, Colour]
    light_direction: tuple[float, float, float]  # towards the light; x right, y up, z towards the camera
    light_colour: Colour
    fill: float
    ambient: float
    ambient_colour: Colour
    cloth_colour: Colour
    cloth_colour2: Colour
    cloth_pattern: str
    pattern_scale: float
    neckline: str
    extent: float  # landmark box side as a fraction of the image side (the crop protocol uses 0.5)
    centre: tuple[float, float]  # landmark box centre as a fraction of the image side
    camera_distance: float  # in head units (1 ≈ 10 cm)


@dataclass(frozen=True)
class FrameParams:
    """One frame's pose (degrees, head units), expression and gaze; all zero = neutral, frontal, eyes open."""

    yaw: float = 0.0  # > 0 turns the face towards the image right
    pitch: float = 0.0  # > 0 raises the chin
    roll: float = 0.0  # > 0 tilts the head clockwise in the image
    tx: float = 0.0
    ty: float = 0.0
    scale: float = 1.0
    jaw: float = 0.0  # 0 closed … 1 wide open
    smile: float = 0.0
    blink: float = 0.0  # 0 open … 1 closed
    brow: float = 0.0  # brow raise
    gaze_x: float = 0.0  # -1 … 1, > 0 looks towards the image right
    gaze_y: float = 0.0  # > 0 looks up
    body_x: float = 0.0
    body_yaw: float = 0.0


def _pick(rng: np.random.Generator, options, probs):
    probs = np.asarray(probs, np.float64)
    return options[int(rng.choice(len(options), p=probs / probs.sum()))]


def _colour(c) -> Colour:
    return tuple(float(np.clip(v, 0.0, 1.0)) for v in c)  # type: ignore[return-value]


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> Colour:
    import colorsys

    return _colour(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)))


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    """Draw one person: head shape, face features, skin, hair and fine detail."""
    u = rng.uniform
    masc = float(u(0, 1))
    male = masc > 0.5
    tone = float(rng.beta(1.3, 1.3))
    ramp = tone * (len(_SKIN_RAMP) - 1)
    lo = int(np.floor(ramp))
    hi = min(lo + 1, len(_SKIN_RAMP) - 1)
    skin = _SKIN_RAMP[lo] * (1 - (ramp - lo)) + _SKIN_RAMP[hi] * (ramp - lo)
    skin = skin * (1 + rng.normal(0, 0.025, 3))

    if male:
        style = _pick(rng, HAIR_STYLES, (0.10, 0.18, 0.40, 0.15, 0.06, 0.08, 0.03))
    else:
        style = _pick(rng, HAIR_STYLES, (0.01, 0.03, 0.14, 0.25, 0.38, 0.09, 0.10))
    names = list(_HAIR_COLOURS)
    if tone > 0.55:
        hair_probs = (0.65, 0.25, 0.06, 0.0, 0.0, 0.0, 0.0, 0.03, 0.01)
    else:
        hair_probs = (0.12, 0.22, 0.20, 0.14, 0.12, 0.06, 0.04, 0.07, 0.03)
    hair_name = _pick(rng, names, hair_probs)
    natural = np.array(_HAIR_COLOURS[hair_name]) * (1 + rng.normal(0, 0.05, 3))
    hair = natural
    if rng.uniform() < 0.04:  # the occasional dyed head (brows and stubble keep the natural colour)
        hair = np.array(_hsv(rng, (0.5, 0.9), (0.35, 0.8)))
    brow = natural
    if hair_name in ("grey", "white", "blond") and rng.uniform() < 0.5:  # pale hair often keeps darker brows
        brow = np.array(_HAIR_COLOURS["dark_brown"])
    brow = brow * 0.8

    iris = np.array(_EYE_COLOURS[int(rng.integers(len(_EYE_COLOURS)))]) if tone < 0.5 else \
        np.array(_EYE_COLOURS[int(rng.integers(0, 3))])
    iris = iris * (1 + rng.normal(0, 0.06, 3))

    lip = skin * np.array([0.86, 0.60, 0.60]) * u(0.85, 1.0)
    if not male and rng.uniform() < 0.3:  # lipstick
        lip = np.array([(0.62, 0.10, 0.14), (0.78, 0.38, 0.42), (0.50, 0.16, 0.26)][int(rng.integers(3))])

    volume = {"bald": 0.0, "buzz": 0.012, "short": u(0.05, 0.10), "medium": u(0.08, 0.14),
              "long": u(0.07, 0.13), "curly": u(0.20, 0.34), "bun": u(0.06, 0.10)}[style]
    nose_tip = u(-0.35, -0.27)
    return IdentityParams(
        seed=int(rng.integers(0, 2**31 - 1)),
        masculinity=masc,
        head_width=u(0.94, 1.06),
        head_height=u(0.96, 1.04),
        head_depth=u(0.95, 1.05),
        jaw_width=u(0.86, 1.02) + 0.08 * masc,
        chin_width=u(0.85, 1.15),
        chin_length=u(0.92, 1.08),
        chin_forward=u(0.85, 1.15),
        cheekbones=u(0, 1),
        brow_ridge=u(0, 1) * (0.4 + masc),
        ear_size=u(0.9, 1.15),
        ear_out=u(0.7, 1.3),
        neck_width=u(0.9, 1.05) + 0.12 * masc,
        eye_spacing=u(0.31, 0.35),
        eye_y=u(0.0, 0.05),
        eye_width=u(0.125, 0.145),
        eye_open=u(0.05, 0.064),
        eye_tilt=u(-0.008, 0.02),
        iris_size=u(0.40, 0.46),
        iris_colour=_colour(iris),
        brow_offset=u(0.14, 0.17),
        brow_thickness=u(0.03, 0.045) + 0.015 * masc,
        brow_arch=u(0.0, 0.035),
        brow_density=u(0.65, 1.0),
        nose_tip_y=nose_tip,
        nose_width=u(0.85, 1.2) + 0.1 * masc,
        nose_projection=u(0.85, 1.15),
        nose_hump=u(0, 1),
        mouth_y=nose_tip - u(0.19, 0.25),
        mouth_width=u(0.19, 0.235),
        upper_lip=u(0.028, 0.05),
        lower_lip=u(0.038, 0.065),
        cupid_bow=u(0.2, 0.8),
        mouth_curve=u(-0.01, 0.015),
        lip_colour=_colour(lip),
        skin_colour=_colour(skin),
        skin_redness=u(0, 1),
        skin_gloss=u(0.04, 0.16),
        freckles=float(u(0.2, 1.0)) if rng.uniform() < (0.55 - 0.5 * tone) else 0.0,
        moles=int(rng.poisson(1.3)),
        stubble=float(u(0.35, 1.0)) if male and rng.uniform() < 0.65 else 0.0,
        hair_style=style,
        hair_colour=_colour(hair),
        brow_colour=_colour(brow),
        hair_volume=float(volume),
        hairline=u(0.50, 0.66) if style != "bald" else 0.9,
        fringe=bool(style in ("short", "medium", "long") and rng.uniform() < 0.3),
        parting=u(-1, 1),
        curl=1.0 if style == "curly" else float(u(0, 0.3)),
        hair_length=u(1.1, 2.3) if style == "long" else 0.0,
    )


def sample_scene(rng: np.random.Generator) -> SceneParams:
    """Draw one video's background, lighting, clothes and framing."""
    u = rng.uniform
    background = _pick(rng, BACKGROUNDS, (0.3, 0.3, 0.4))
    bg = tuple(_hsv(rng, (0.0, 0.45), (0.15, 0.9)) for _ in range(3))
    az, el = np.radians(u(-70, 70)), np.radians(u(-5, 50))
    light = (float(np.sin(az) * np.cos(el)), float(np.sin(el)), float(np.cos(az) * np.cos(el)))
    warmth = u(-1, 1)
    light_colour = _colour(np.array([1.0 + 0.08 * warmth, 1.0, 1.0 - 0.10 * warmth]) * u(0.85, 1.2))
    ambient_colour = _colour(np.array([1.0 - 0.05 * warmth, 1.0, 1.0 + 0.08 * warmth]))
    return SceneParams(
        seed=int(rng.integers(0, 2**31 - 1)),
        background=background,
        background_colours=bg,  # type: ignore[arg-type]
        light_direction=light,
        light_colour=light_colour,
        fill=u(0.08, 0.35),
        ambient=u(0.16, 0.34),
        ambient_colour=ambient_colour,
        cloth_colour=_hsv(rng, (0.0, 0.8), (0.1, 0.9)),
        cloth_colour2=_hsv(rng, (0.0, 0.6), (0.2, 0.95)),
        cloth_pattern=_pick(rng, CLOTH_PATTERNS, (0.35, 0.2, 0.1, 0.15, 0.1, 0.1)),
        pattern_scale=u(0.6, 1.5),
        neckline=_pick(rng, NECKLINES, (0.5, 0.3, 0.2)),
        extent=u(0.42, 0.50),
        centre=(0.5 + u(-0.02, 0.02), 0.5 + 1 / 12 + u(-0.02, 0.02)),
        camera_distance=u(8, 14),
    )


def default_scene(identity: IdentityParams) -> SceneParams:
    """A fixed, plainly lit scene for an identity (used when ``render_frame`` gets no scene)."""
    scene = sample_scene(np.random.default_rng([identity.seed, 7]))
    return replace(scene, extent=0.46, centre=(0.5, 0.5 + 1 / 12), light_direction=(0.35, 0.35, 0.868))


# ------------------------------------------------------------------------------------------ trajectories
def _smooth(rng: np.random.Generator, n: int, f_lo: float, f_hi: float, waves: int = 4,
            fps: float = FPS) -> np.ndarray:
    """A smooth zero-mean signal of roughly unit amplitude: a sum of sinusoids with random frequencies (Hz),
    sampled at ``fps``."""
    t = np.arange(n) / fps
    freq = rng.uniform(f_lo, f_hi, waves)
    phase = rng.uniform(0, 2 * np.pi, waves)
    amp = rng.uniform(0.4, 1.0, waves)
    x = (amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None] + phase[:, None])).sum(0)
    return x / np.sqrt((amp**2).sum() / 2)


def _bounded(rng: np.random.Generator, n: int, limit: float, f_lo: float, f_hi: float, fps: float = FPS) -> np.ndarray:
    """A smooth signal inside (-limit, limit) that uses most of the range: tanh of a biased smooth signal."""
    bias = rng.uniform(-0.5, 0.5)
    gain = rng.uniform(0.8, 1.4)
    return limit * np.tanh(gain * _smooth(rng, n, f_lo, f_hi, fps=fps) + bias)


def sample_trajectory(rng: np.random.Generator, frames: int, fps: float = FPS) -> list[FrameParams]:
    """A smooth random talking-head performance of ``frames`` frames sampled at ``fps`` frames per second.

    The motion's speed is set in seconds, so a lower ``fps`` spans more of the performance in the same number of
    frames (at 5 fps, 20 frames cover 4 s of head motion, as far apart as a video's frames sampled sparsely); at
    the default 25 fps consecutive frames are a smooth video.

    Pose: yaw within ±40°, pitch ±20°, roll ±15°, small translation, scale and body sway (sums of slow
    sinusoids, squashed by tanh so they stay in range). Expression: speech-like jaw motion (3–5 Hz syllables
    under a slow talking/pause envelope), slow smiles and brow raises, blinks every few seconds, and gaze that
    jumps between fixation targets (saccades)."""
    n = int(frames)
    if n < 1:
        raise ValueError(f"a trajectory needs at least 1 frame, got {frames}.")
    fps = float(fps)
    if not fps > 0:
        raise ValueError(f"a trajectory needs a positive frame rate, got {fps}.")
    smooth = functools.partial(_smooth, fps=fps)
    yaw = _bounded(rng, n, 40.0, 0.05, 0.3, fps)
    pitch = _bounded(rng, n, 20.0, 0.07, 0.4, fps)
    roll = _bounded(rng, n, 15.0, 0.04, 0.3, fps)
    tx = 0.06 * np.tanh(smooth(rng, n, 0.05, 0.3))
    ty = 0.04 * np.tanh(smooth(rng, n, 0.05, 0.3))
    scale = 1.0 + 0.04 * np.tanh(smooth(rng, n, 0.03, 0.2))
    body_x = 0.05 * np.tanh(smooth(rng, n, 0.03, 0.15))
    body_yaw = 5.0 * np.tanh(smooth(rng, n, 0.03, 0.15))

    talking = 1 / (1 + np.exp(-4 * (smooth(rng, n, 0.05, 0.25) + rng.uniform(-0.2, 1.0))))
    syllables = np.clip(smooth(rng, n, 2.5, 5.5, waves=5) * 0.55 + 0.25, 0, None)
    jaw = np.clip(talking * syllables * rng.uniform(0.7, 1.2), 0, 1)
    mood = np.tanh(1.5 * smooth(rng, n, 0.03, 0.2) + rng.uniform(-1, 0.5))  # slow: smiles come and go
    smile = np.clip(rng.uniform(0.1, 0.7) * (0.5 + 0.5 * mood), 0, 1)
    brow = np.clip(0.8 * np.tanh(1.2 * smooth(rng, n, 0.1, 0.5)) - 0.2, 0, 1)

    blink = np.zeros(n)
    # one blink lasts 0.2 s: five frames at 25 fps, sampled at the frames' centres at other rates (at 5 fps a
    # blink is one frame with the eyes shut)
    profile = np.array([0.35, 0.85, 1.0, 0.7, 0.3])
    if fps != FPS:
        length = max(1, round(len(profile) * fps / FPS))
        at = np.clip((np.arange(length) + 0.5) * FPS / fps - 0.5, 0, len(profile) - 1)
        profile = np.interp(at, np.arange(len(profile)), profile)
    rate = rng.uniform(0.2, 0.5)  # blinks per second
    t = rng.exponential(fps / rate) * rng.uniform(0, 1)
    while t < n:
        start = int(t)
        span = min(len(profile), n - start)
        blink[start:start + span] = np.maximum(blink[start:start + span], profile[:span])
        t += rng.exponential(fps / rate) + len(profile)

    gaze = np.zeros((n, 2))
    target = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.5, 0.5)])
    current = target.copy()
    # a saccade settles within two or three frames at 25 fps (60 % of the way per frame), in the same time at other rates
    settle = 0.6 if fps == FPS else 1.0 - 0.4 ** (FPS / fps)
    nxt = rng.uniform(0.4, 2.5) * fps
    for i in range(n):
        if i >= nxt:
            target = np.array([rng.uniform(-0.9, 0.9), rng.uniform(-0.6, 0.6)])
            nxt = i + rng.uniform(0.4, 2.5) * fps
        current = current + settle * (target - current)
        gaze[i] = current

    return [
        FrameParams(
            yaw=float(yaw[i]), pitch=float(pitch[i]), roll=float(roll[i]), tx=float(tx[i]), ty=float(ty[i]),
            scale=float(scale[i]), jaw=float(jaw[i]), smile=float(smile[i]), blink=float(blink[i]),
            brow=float(brow[i]), gaze_x=float(gaze[i, 0]), gaze_y=float(gaze[i, 1]), body_x=float(body_x[i]),
            body_yaw=float(body_yaw[i]),
        )
        for i in range(n)
    ]
