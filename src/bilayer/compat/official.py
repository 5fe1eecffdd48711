"""Load the authors' released checkpoints (reference §7) into our model.

The released files are ``<epoch>_<network>.pth``: flat state dicts of the code's network wrappers, with
spectral-normalised layers stored as ``weight_orig``, ``weight_u``, ``weight_v`` (or, from PyTorch 1.0, a
normalised ``weight`` buffer). We read them with ``torch.load(weights_only=True)`` (never unpickling code),
fold spectral norm from the stored vectors (no new power iteration: reference §6.1 step 4), infer the
configuration from tensor shapes, translate the names to ours, and check that every tensor is accounted for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import (
    BilayerConfig,
    DiscriminatorConfig,
    EmbedderConfig,
    EnhancerConfig,
    InferenceGeneratorConfig,
    KeypointsEmbedderConfig,
    TextureGeneratorConfig,
)
from ..nn.spectral import fold_reference_weight

NETWORKS = (
    "identity_embedder",
    "texture_generator",
    "keypoints_embedder",
    "inference_generator",
    "texture_enhancer",
    "discriminator",
)
REQUIRED = NETWORKS[:4]
_FILE = re.compile(r"^(\d+)_(" + "|".join(NETWORKS) + r")\.pth$")


class ConversionError(ValueError):
    """The released checkpoint cannot be converted; the message names the file or tensor."""


@dataclass
class Conversion:
    """The result of a conversion: our config, our state dicts, and what did not map."""

    config: BilayerConfig
    model_state: dict[str, torch.Tensor]
    discriminator_state: dict[str, torch.Tensor] | None
    unexpected: list[str] = field(default_factory=list)  # released tensors with no place in our model
    dropped: list[str] = field(default_factory=list)  # released tensors we leave out on purpose (dead or derived)
    sources: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- reading
def find_checkpoints(runs_dir: str | Path, epoch: int | None = None) -> dict[str, Path]:
    """Find ``<epoch>_<network>.pth`` below ``runs_dir``; per network the given or the latest epoch."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ConversionError(f"{runs_dir} is not a directory; expected the released runs/ folder.")
    found: dict[str, tuple[int, Path]] = {}
    for path in sorted(runs_dir.rglob("*.pth")):
        m = _FILE.match(path.name)
        if not m:
            continue
        ep, net = int(m.group(1)), m.group(2)
        if epoch is not None and ep != epoch and net != "texture_enhancer":
            continue
        if net not in found or ep > found[net][0]:
            found[net] = (ep, path)
    missing = [n for n in REQUIRED if n not in found]
    if missing:
        raise ConversionError(
            f"no checkpoint for {', '.join(missing)} under {runs_dir}; expected files named "
            f"<epoch>_<network>.pth, e.g. 2225_{missing[0]}.pth."
        )
    return {net: path for net, (_, path) in found.items()}


#: What a released checkpoint must be, for the messages of ``read_checkpoint``.
RELEASED_STATE = "a flat PyTorch state dict of tensors as released, read with weights_only=True"


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """One released ``.pth`` file as a flat state dict, read without running pickled code; ``ConversionError``
    (one sentence naming the file) when it is not a plain tensor checkpoint or holds NaN / inf values."""
    from ..losses.vgg import read_tensor_file
    from ..weights import nonfinite

    try:
        state = read_tensor_file(path, ConversionError, RELEASED_STATE)
    except FileNotFoundError as exc:
        raise ConversionError(f"{exc}".rstrip(".") + f"; expected {RELEASED_STATE}.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path} does not hold a flat state dict of tensors; expected {RELEASED_STATE}.")
    for key, value in state.items():
        bad = nonfinite(value)
        if bad is not None:
            raise ConversionError(f"{path}: tensor {key} holds {bad} values; expected finite weights.")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


# ------------------------------------------------------------------------------------ name translation
def _block_layout(norm: bool, up: bool, down: bool, efficient: bool) -> dict[str, str]:
    """Sub-module indices of the released residual block (reference §2.1) → our attribute names."""
    conv1 = (1 if norm else 0) + 1 + (1 if up and not efficient else 0)
    layout = {f"block_feats.{conv1}": "conv1", f"block.{1 if up and efficient else 0}": "conv2"}
    layout[f"skip.{1 if up else 0}"] = "skip"
    if norm:
        layout["block_feats.0"] = "norm1"
        layout[f"block_feats.{conv1 + 1}"] = "norm2"
    return layout


def _block(table: dict[str, str], ref: str, ours: str, **layout) -> None:
    for a, b in _block_layout(**layout).items():
        table[f"{ref}.{a}"] = f"{ours}.{b}"


def _indices(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def _name_table(net: str, config: BilayerConfig) -> dict[str, str]:
    """Released layer prefix → our layer prefix for one network, from the config alone."""
    t: dict[str, str] = {}
    k_blocks = config.num_generator_blocks
    if net == "identity_embedder":
        t["net.enc.0"] = "identity_embedder.stem"
        for i in range(1, len(config.embedder_encoder_channels)):
            _block(t, f"net.enc.{i}", f"identity_embedder.down.{i - 1}", norm=False, up=False, down=True, efficient=False)
        for k in range(k_blocks):
            _block(t, f"net.dec_blocks.{k}", f"identity_embedder.decoder.{k}", norm=False, up=False, down=False, efficient=False)
    elif net == "texture_generator":
        t["gen_tex_input"] = "texture_generator.input"
        for k in range(k_blocks):
            _block(t, f"gen_tex.blocks.{k}", f"texture_generator.blocks.{k}", norm=True, up=True, down=False, efficient=False)
        t[f"gen_tex.blocks.{k_blocks}"] = "texture_generator.final_norm"
        t["gen_tex.heads.0.0"] = "texture_generator.head"
        t["prj_tex.fc_blocks"] = "texture_projector.heads"
    elif net == "keypoints_embedder":
        for i in range(config.keypoints.num_layers):
            t[f"net.mlp.{2 * i}"] = f"keypoints_embedder.layers.{i}"
    elif net == "inference_generator":
        eff = config.inference.efficient_upsampling
        for k in range(k_blocks):
            _block(t, f"gen_inf.blocks.{k}", f"inference_generator.blocks.{k}", norm=True, up=True, down=False, efficient=eff)
        t[f"gen_inf.blocks.{k_blocks}"] = "inference_generator.final_norm"
        for i, head in enumerate(("head_uv", "head_lf", "head_mask")):
            t[f"gen_inf.heads.{i}.0"] = f"inference_generator.{head}"
        t["prj_inf.fc_blocks"] = "inference_projector.heads"
    elif net == "texture_enhancer":
        e = config.enhancer
        n_down = int(math.log2(config.image_size // e.bottleneck_size))
        t["net.blocks.0"] = "texture_enhancer.stem"
        idx = 1
        for i in range(n_down):
            _block(t, f"net.blocks.{idx}", f"texture_enhancer.down.{i}", norm=False, up=False, down=True, efficient=False)
            idx += 1
        for i in range(e.num_blocks):
            _block(t, f"net.blocks.{idx}", f"texture_enhancer.bottleneck.{i}", norm=False, up=False, down=False, efficient=False)
            idx += 1
        for i in range(n_down):
            _block(t, f"net.blocks.{idx}", f"texture_enhancer.up.{i}", norm=False, up=True, down=False, efficient=False)
            idx += 1
        t[f"net.blocks.{idx + 2}"] = "texture_enhancer.head"  # after an Identity (norm 'none') and the LReLU
    elif net == "discriminator":
        d = config.discriminator
        n_down = int(math.log2(config.image_size // d.output_size))
        t["net.first_conv"] = "stem"
        for i in range(d.num_blocks):
            _block(t, f"net.blocks.{i}", f"blocks.{i}", norm=True, up=False, down=i < n_down, efficient=False)
        t["net.final_block.0"] = "final_norm"
        t["net.linear"] = "score"
    return t


_DERIVED = {"identity_grid", "frequencies"}  # buffers we compute instead of storing


def _translate(net: str, state: dict[str, torch.Tensor], config: BilayerConfig, out: dict, conv: Conversion) -> None:
    table = _name_table(net, config)
    prefixes = sorted(table, key=len, reverse=True)
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _DERIVED:
            conv.dropped.append(f"{net}/{key}")
            continue
        ref = next((p for p in prefixes if key.startswith(p + ".") or key == p), None)
        if ref is None:
            conv.unexpected.append(f"{net}/{key}")
            continue
        suffix = key[len(ref) + 1 :] if key != ref else ""
        target = table[ref] + ("." + suffix if suffix else "")
        target = target.replace(".norm_layer.", ".")
        layer, _, param = target.rpartition(".")
        if param in ("weight_orig", "weight_u", "weight_v") or (param == "weight" and key.endswith(".weight")):
            layers.setdefault(layer, {})[param] = value
        else:
            out[target] = value
    for layer, params in layers.items():
        if "weight_orig" in params:
            if "weight_u" not in params or "weight_v" not in params:
                if "weight" not in params:
                    raise ConversionError(f"{net}: layer {layer} has weight_orig but no weight_u/weight_v to fold spectral norm.")
                out[layer + ".weight"] = params["weight"]  # PyTorch 1.0 stored the normalised weight
            else:
                out[layer + ".weight"] = fold_reference_weight(params["weight_orig"], params["weight_u"], params["weight_v"])
        else:
            out[layer + ".weight"] = params["weight"]


# ------------------------------------------------------------------------------- config from shapes
def _w(state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    for suffix in (".weight_orig", ".weight"):
        if prefix + suffix in state:
            return state[prefix + suffix]
    raise ConversionError(f"expected a tensor {prefix}.weight_orig (or .weight) in the released checkpoint; it is missing.")


def infer_config(states: dict[str, dict[str, torch.Tensor]], options: dict | None = None) -> BilayerConfig:
    """Our config from the released tensors' shapes (``options`` = the released code's args, optional)."""
    opts = options or {}
    emb, tex, kp, inf = (states[n] for n in REQUIRED)
    pixel = [v for k, v in tex.items() if k.endswith("pixel_feats")]
    if "identity_grid" in inf:
        image_size = int(inf["identity_grid"].shape[1])
    elif pixel:
        image_size = max(int(p.shape[-1]) for p in pixel)
    else:
        image_size = int(opts.get("image_size", 256))

    enc_blocks = _indices(emb, r"net\.enc\.(\d+)\.")
    emb_out = [int(_w(emb, "net.enc.0").shape[0])] + [int(_w(emb, f"net.enc.{i}.block_feats.1").shape[0]) for i in enc_blocks[1:]]
    dec = _indices(emb, r"net\.dec_blocks\.(\d+)\.")
    embeds = [int(_w(emb, f"net.dec_blocks.{k}.block_feats.1").shape[0]) for k in dec]
    embedder = EmbedderConfig(
        num_channels=emb_out[0], max_channels=max(emb_out + embeds), output_size=image_size >> (len(enc_blocks) - 1),
        apply_masks=bool(opts.get("emb_apply_masks", True)),
    )

    tex_in = tex["gen_tex_input"]
    tex_first = int(_w(tex, "gen_tex.blocks.0.block_feats.3").shape[0])
    d_in_tex = int(_w(tex, "prj_tex.fc_blocks.0.0.0").shape[1])
    texture = TextureGeneratorConfig(
        num_channels=int(_w(tex, "gen_tex.heads.0.0").shape[1]), max_channels=int(tex_in.shape[1]),
        input_size=int(tex_in.shape[-1]), projection_size=int(round(math.sqrt(d_in_tex / (embeds[0] // tex_first)))),
    )

    mlp = _indices(kp, r"net\.mlp\.(\d+)\.")
    first, last = _w(kp, f"net.mlp.{mlp[0]}"), _w(kp, f"net.mlp.{mlp[-1]}")
    num_keypoints = int(opts.get("num_keypoints", 68))
    in_dim = int(first.shape[1])
    harmonics = 0 if in_dim == 2 * num_keypoints else in_dim // (4 * num_keypoints)
    if harmonics and in_dim != 4 * num_keypoints * harmonics:
        raise ConversionError(f"keypoints_embedder input width {in_dim} is neither {2 * num_keypoints} nor a harmonic encoding of it.")
    if "frequencies" in kp:
        expected = torch.tensor([math.pi * 2.0**i for i in range(harmonics)])
        if not torch.allclose(kp["frequencies"].flatten().float(), expected):
            raise ConversionError(f"keypoints_embedder 'frequencies' {kp['frequencies'].flatten().tolist()} differ from π·2^i.")
    keypoints = KeypointsEmbedderConfig(hidden_channels=int(first.shape[0]), num_layers=len(mlp), num_harmonics=harmonics)

    inf_max = int(inf["gen_inf.blocks.0.block_feats.0.weight"].shape[0])
    efficient = "gen_inf.blocks.0.block.1.weight_orig" in inf or "gen_inf.blocks.0.block.1.weight" in inf
    conv1 = "gen_inf.blocks.0.block_feats.2" if efficient else "gen_inf.blocks.0.block_feats.3"
    inf_first = int(_w(inf, conv1).shape[0])
    d_in_inf = int(_w(inf, "prj_inf.fc_blocks.0.0.0").shape[1])
    inference = InferenceGeneratorConfig(
        num_channels=int(_w(inf, "gen_inf.heads.0.0").shape[1]), max_channels=inf_max,
        input_size=int(round(math.sqrt(int(last.shape[0]) / inf_max))),
        projection_size=int(round(math.sqrt(d_in_inf / (embeds[0] // inf_first)))), efficient_upsampling=efficient,
    )

    enhancer = None
    if "texture_enhancer" in states:
        enh = states["texture_enhancer"]
        idx = _indices(enh, r"net\.blocks\.(\d+)\.")
        downs = [i for i in idx if any(k.startswith(f"net.blocks.{i}.skip.0.") for k in enh)]
        ups = [i for i in idx if any(k.startswith(f"net.blocks.{i}.skip.1.") for k in enh)]
        plain = [i for i in idx if i not in downs + ups and any(k.startswith(f"net.blocks.{i}.block.0.") for k in enh)]
        outs = [int(v.shape[0]) for k, v in enh.items() if k.endswith(("weight_orig", ".weight")) and v.dim() == 4]
        enhancer = EnhancerConfig(
            num_channels=int(_w(enh, "net.blocks.0").shape[0]), max_channels=max(outs),
            bottleneck_size=image_size >> len(downs), num_blocks=len(plain),
            steps=int(opts.get("enh_unrolling_depth", 4)), guiding_loss=str(opts.get("enh_guiding_rgb_loss_type", "sse")),
        )

    discriminator = DiscriminatorConfig()
    if "discriminator" in states:
        dis = states["discriminator"]
        blocks = _indices(dis, r"net\.blocks\.(\d+)\.")
        outs = [int(_w(dis, f"net.blocks.{i}.block_feats.2").shape[0]) for i in blocks]
        discriminator = DiscriminatorConfig(
            num_channels=int(_w(dis, "net.first_conv").shape[0]), max_channels=max(outs), num_blocks=len(blocks),
            output_size=image_size >> sum(1 for i in blocks if f"net.blocks.{i}.skip.0.weight_orig" in dis or f"net.blocks.{i}.skip.0.weight" in dis),
        )
    elif "dis_num_channels" in opts:
        discriminator = DiscriminatorConfig(
            num_channels=int(opts["dis_num_channels"]), max_channels=int(opts["dis_max_channels"]),
            num_blocks=int(opts["dis_num_blocks"]), output_size=int(opts["dis_output_tensor_size"]),
        )

    return BilayerConfig(
        image_size=image_size, num_keypoints=num_keypoints, eps=float(opts.get("eps", 1e-7)),
        bn_momentum=float(opts.get("bn_momentum", 1.0)), spectral_norm=False,
        embedder=embedder, texture=texture, keypoints=keypoints, inference=inference,
        discriminator=discriminator, enhancer=enhancer,
    )


# ---------------------------------------------------------------------------------------- conversion
def convert_states(states: dict[str, dict[str, torch.Tensor]], options: dict | None = None) -> Conversion:
    """Convert in-memory released state dicts (keyed by network name) into our format, checking coverage."""
    from ..models.bilayer import BilayerModel
    from ..models.discriminator import Discriminator

    missing = [n for n in REQUIRED if n not in states]
    if missing:
        raise ConversionError(f"the released checkpoint set lacks {', '.join(missing)}.")
    config = infer_config(states, options)
    conv = Conversion(config=config, model_state={}, discriminator_state=None)
    for net in NETWORKS:
        if net in states and net != "discriminator":
            _translate(net, states[net], config, conv.model_state, conv)

    model = BilayerModel(config)
    expected = model.state_dict()
    # The embedder's last decoder block: the released code computes its second half and discards it.
    last_dec = f"identity_embedder.decoder.{config.num_generator_blocks - 1}."
    for key in list(conv.model_state):
        if key not in expected and key.startswith(last_dec) and (".conv2." in key or ".skip." in key):
            conv.dropped.append(key)
            del conv.model_state[key]
    for key in list(conv.model_state):
        if key not in expected:
            conv.unexpected.append(key)
            del conv.model_state[key]
        elif tuple(conv.model_state[key].shape) != tuple(expected[key].shape):
            raise ConversionError(
                f"released tensor for {key} has shape {tuple(conv.model_state[key].shape)}; the inferred config "
                f"builds {tuple(expected[key].shape)}."
            )
    absent = sorted(set(expected) - set(conv.model_state))
    # num_batches_tracked is bookkeeping that some exports omit; everything else must be present.
    for key in absent:
        if key.endswith("num_batches_tracked"):
            conv.model_state[key] = expected[key]
        else:
            raise ConversionError(f"the released checkpoint has no tensor for {key}.")

    if "discriminator" in states:
        dis = Discriminator.from_config(config)
        dstate: dict[str, torch.Tensor] = {}
        _translate("discriminator", states["discriminator"], config, dstate, conv)
        dexp = dis.state_dict()
        for key in list(dstate):
            if key not in dexp:
                conv.unexpected.append("discriminator/" + key)
                del dstate[key]
        lacking = [k for k in dexp if k not in dstate and not k.endswith("num_batches_tracked")]
        if lacking:
            raise ConversionError(f"the released discriminator has no tensor for {lacking[0]}.")
        conv.discriminator_state = {k: dstate.get(k, dexp[k]) for k in dexp}
    return conv


def read_options(path: str | Path) -> dict:
    """Parse a released ``args.txt`` ("key: value" per line) into typed values."""
    opts: dict = {}
    for line in Path(path).read_text().splitlines():
        if ": " not in line:
            continue
        key, value = line.split(": ", 1)
        for cast in (int, float):
            try:
                opts[key] = cast(value)
                break
            except ValueError:
                pass
        else:
            opts[key] = {"True": True, "False": False}.get(value, value)
    return opts


def convert_official(runs_dir: str | Path, out_dir: str | Path, epoch: int | None = None) -> Conversion:
    """Convert a released ``runs/`` folder into our ``save_pretrained`` directory (plus the discriminator)."""
    from ..models.bilayer import BilayerModel
    from ..models.discriminator import Discriminator
    from ..weights import save_pretrained

    paths = find_checkpoints(runs_dir, epoch)
    states = {net: read_checkpoint(path) for net, path in paths.items()}
    options: dict = {}
    for args in sorted(Path(runs_dir).rglob("args.txt")):
        options.update(read_options(args))
    conv = convert_states(states, options)
    conv.sources = {net: str(path) for net, path in paths.items()}
    model = BilayerModel(conv.config)
    model.load_state_dict(conv.model_state)
    extra = {}
    if conv.discriminator_state is not None:
        dis = Discriminator.from_config(conv.config)
        dis.load_state_dict(conv.discriminator_state)
        extra["discriminator"] = dis
    save_pretrained(model, out_dir, extra)
    return conv


# ------------------------------------------------------------------------------------------- export
def export_released_states(model, discriminator=None) -> dict[str, dict[str, torch.Tensor]]:
    """Our spectral-normalised model as the released code's state dicts (the inverse of the conversion).

    Used to build parity vectors for configurations the authors never shipped (other sizes, n > 1, harmonics)
    and to test the converter. Requires ``config.spectral_norm``: the released format stores weight_orig/u/v.
    """
    from ..models.bilayer import identity_grid
    from ..nn.adaptive import AdaptiveBatchNorm2d, AdaptiveSpadeBatchNorm2d

    config = model.config
    if not config.spectral_norm:
        raise ConversionError("export_released_states needs a model with spectral norm (config.spectral_norm=True).")
    nets = [n for n in NETWORKS if n != "discriminator" and (n != "texture_enhancer" or model.texture_enhancer is not None)]
    modules = dict(model.named_modules())
    out: dict[str, dict[str, torch.Tensor]] = {}
    sources = [(net, model, _name_table(net, config)) for net in nets]
    if discriminator is not None:
        modules.update({k: v for k, v in discriminator.named_modules() if k})
        sources.append(("discriminator", discriminator, _name_table("discriminator", config)))
    for net, root, table in sources:
        inverse = {ours: ref for ref, ours in table.items()}
        prefixes = sorted(inverse, key=len, reverse=True)
        owned = tuple(p.split(".")[0] for p in inverse)
        state: dict[str, torch.Tensor] = {}
        for key, value in root.state_dict().items():
            if root is model and not key.startswith(owned):
                continue
            if key in inverse:  # a bare parameter, e.g. the texture generator's learned input
                state[inverse[key]] = value.detach().clone()
                continue
            ours = next((p for p in prefixes if key.startswith(p + ".")), None)
            if ours is None:
                raise ConversionError(f"no released name for {key}.")
            rest = key[len(ours) + 1 :]
            rest = (
                rest.replace("parametrizations.weight.original", "weight_orig")
                .replace("parametrizations.weight.0.u", "weight_u")
                .replace("parametrizations.weight.0.v", "weight_v")
            )
            layer, _, param = rest.rpartition(".")
            module_name = ours + ("." + layer if layer else "")
            module = modules.get(module_name)
            if isinstance(module, (AdaptiveBatchNorm2d, AdaptiveSpadeBatchNorm2d)) and param != "pixel_feats":
                rest = (layer + "." if layer else "") + "norm_layer." + param
            state[inverse[ours] + "." + rest] = value.detach().clone()
        out[net] = state
    out["inference_generator"]["identity_grid"] = identity_grid(config.image_size)
    if config.keypoints.num_harmonics:
        h = config.keypoints.num_harmonics
        out["keypoints_embedder"]["frequencies"] = torch.tensor([math.pi * 2.0**i for i in range(h)]).view(1, 1, -1)
    return out
