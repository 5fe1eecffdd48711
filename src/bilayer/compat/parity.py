"""Numerical parity with the authors' released networks.

    python -m bilayer.compat.parity VECTOR.npz VECTOR.json

A parity vector holds the released networks' state dicts (``state/<network>/<key>``), inputs (``input/<name>``)
and what the released code produced (``output/<name>``); the JSON holds the released code's options. We convert
the states with the same code as ``bilayer convert-official``, run our model on the inputs in the released
code's inference order (embedder → texture generator → keypoint MLP → inference generator on targets and source
→ texture enhancer), and print max|ours − reference| / max|reference| for every output. Exit status 1 if any
exceeds the tolerance (1e-4) or an output cannot be produced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .official import ConversionError, convert_states

TOLERANCE = 1e-4


def load_vector(npz_path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor], dict[str, np.ndarray]]:
    npz_path = Path(npz_path)
    try:
        data = np.load(npz_path)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read parity vector {npz_path} ({exc}).") from None
    states: dict[str, dict[str, torch.Tensor]] = {}
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, np.ndarray] = {}
    for key in data.files:
        kind, _, rest = key.partition("/")
        if kind == "state":
            net, _, name = rest.partition("/")
            states.setdefault(net, {})[name] = torch.from_numpy(np.array(data[key]))
        elif kind == "input":
            inputs[rest] = torch.from_numpy(np.array(data[key]))
        elif kind == "output":
            outputs[rest] = np.array(data[key])
    for name in ("source_imgs", "source_poses", "source_segs", "target_poses"):
        if name not in inputs:
            raise ConversionError(f"parity vector {npz_path} has no input/{name}.")
    return states, inputs, outputs


@torch.no_grad()
def run_reference_order(model, inputs: dict[str, torch.Tensor], options: dict) -> dict[str, torch.Tensor]:
    """Our model on the vector's inputs, named like the released code's data_dict entries."""
    from ..nn.image import apply_mask

    src, src_kp, src_seg = inputs["source_imgs"], inputs["source_poses"], inputs["source_segs"]
    tgt_kp = inputs["target_poses"]
    stickmen = inputs.get("source_stickmen")
    out: dict[str, torch.Tensor] = {}

    embeds = model.identity_embeds(src, src_kp, src_seg, stickmen)
    for k, e in enumerate(embeds):
        out[f"source_idt_embeds/{k}"] = e
    state = model.personalize(src, src_kp, src_seg, stickmen)
    out["pred_tex_hf_rgbs"] = state.texture[:, None]

    b, t = tgt_kp.shape[:2]
    out["target_pose_embeds"] = model.keypoints_embedder(tgt_kp.flatten(0, 1)).view(b, t, -1, *model.keypoints_embedder.out_shape[1:])
    render = model.render(state, tgt_kp)
    image, lf = render.image, render.lf
    if options.get("inf_apply_masks", False):  # training configs mask outputs with the predicted mask
        image, lf = apply_mask(image, render.mask), apply_mask(lf, render.mask)
    out.update(
        pred_target_uvs=render.uv, pred_target_delta_lf_rgbs=lf, pred_target_delta_hf_rgbs=render.hf,
        pred_target_imgs=image, pred_target_segs=render.mask, pred_target_segs_logits=render.mask_logits,
    )
    source = model.render_layers(state.inference_params, src_kp)
    out.update(pred_source_uvs=source.uv, pred_source_delta_lf_rgbs=source.lf, pred_source_segs=source.mask)

    if model.texture_enhancer is not None:
        enhanced = model.enhance(state)
        out["pred_enh_tex_hf_rgbs"] = enhanced.texture[:, None].expand(-1, t, -1, -1, -1)
        enh = model.render(enhanced, tgt_kp)
        enh_image = apply_mask(enh.image, render.mask) if options.get("enh_apply_masks", False) else enh.image
        out["pred_enh_target_imgs"] = enh_image
        out["pred_enh_target_delta_hf_rgbs"] = enh.hf
    return out


def compare(npz_path: str | Path, json_path: str | Path | None = None) -> list[tuple[str, float | None]]:
    """Relative max error per reference output (None where we produced nothing comparable)."""
    from ..models.bilayer import BilayerModel

    states, inputs, outputs = load_vector(npz_path)
    options = json.loads(Path(json_path).read_text()) if json_path else {}
    conversion = convert_states(states, options)
    model = BilayerModel(conversion.config)
    model.load_state_dict(conversion.model_state)
    model.eval()
    ours = run_reference_order(model, inputs, options)
    results: list[tuple[str, float | None]] = []
    for name, ref in outputs.items():
        mine = ours.get(name)
        if mine is None or tuple(mine.shape) != ref.shape:
            results.append((name, None))
            continue
        scale = float(np.abs(ref).max()) or 1.0
        results.append((name, float(np.abs(mine.numpy().astype(np.float64) - ref).max()) / scale))
    return results


def random_inputs(config, batch: int, sources: int, targets: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Inputs in the vector format: images and stickmen in [-1, 1], poses in [-1, 1], masks in [0, 1]."""
    size, pose = config.image_size, config.pose_dim
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    inputs = {}
    for role, count in (("source", sources), ("target", targets)):
        inputs[f"{role}_imgs"] = u(batch, count, 3, size, size) * 2 - 1
        inputs[f"{role}_stickmen"] = u(batch, count, 3, size, size) * 2 - 1
        inputs[f"{role}_poses"] = u(batch, count, pose) * 2 - 1
        inputs[f"{role}_segs"] = u(batch, count, 1, size, size)
    return inputs


def write_vector(model, npz_path: str | Path, json_path: str | Path, inputs: dict[str, torch.Tensor], discriminator=None) -> None:
    """Write a parity vector of *our* spectral-normalised model in the released format (for configurations the
    authors never shipped: other sizes, n > 1 sources, harmonic encoding). Outputs come from eval mode."""
    from .official import export_released_states

    model.eval()
    arrays = {}
    for net, state in export_released_states(model, discriminator).items():
        arrays.update({f"state/{net}/{k}": v.numpy() for k, v in state.items()})
    arrays.update({f"input/{k}": v.numpy() for k, v in inputs.items()})
    options = {
        "eps": model.config.eps, "num_keypoints": model.config.num_keypoints,
        "emb_apply_masks": model.config.embedder.apply_masks, "inf_apply_masks": False, "enh_apply_masks": False,
        "pse_use_harmonic_enc": bool(model.config.keypoints.num_harmonics),
        "pse_num_harmonics": model.config.keypoints.num_harmonics,
    }
    if model.config.enhancer is not None:
        options.update(enh_unrolling_depth=model.config.enhancer.steps, enh_guiding_rgb_loss_type=model.config.enhancer.guiding_loss)
    outputs = run_reference_order(model, inputs, options)
    arrays.update({f"output/{k}": v.detach().numpy() for k, v in outputs.items()})
    np.savez(npz_path, **arrays)
    Path(json_path).write_text(json.dumps(options, indent=1, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bilayer.compat.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("vector", help="parity vector .npz (state/, input/, output/)")
    parser.add_argument("options", nargs="?", help="the released code's options for this vector (.json)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    try:
        results = compare(args.vector, args.options)
    except (ConversionError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    width = max(len(n) for n, _ in results)
    failed = 0
    for name, err in results:
        if err is None:
            print(f"{name:<{width}}  not produced (or shape differs)  FAIL")
            failed += 1
        else:
            ok = err <= args.tolerance
            failed += not ok
            print(f"{name:<{width}}  {err:.3e}  {'ok' if ok else 'FAIL'}")
    print(f"{len(results) - failed} of {len(results)} outputs within {args.tolerance:g} of the reference.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
